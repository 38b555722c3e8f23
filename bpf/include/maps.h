/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the regedge programs. The XDP, TC and sk_lookup objects each
 * declare the maps they use; maps that two objects share (registry_stats,
 * config_map) have identical definitions here and the loader hands the first
 * object's map to the second (MapReplacements). Every map is bounded; the
 * loader may change max_entries before load.
 */
#ifndef REGEDGE_MAPS_H
#define REGEDGE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "reason.h"
#include "protocol.h"

#define MAX_PROXY_PORTS 4
#define DIR_INGRESS 0
#define DIR_EGRESS 1

struct lpm_v4 {
	__u32 prefixlen;
	__u32 addr; /* network order */
};

struct lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct block_entry {
	__u64 expires_ns; /* CLOCK_BOOTTIME; 0 = never */
};

struct addr_key {
	__u32 addr[4];
};

struct syn_bucket {
	__u64 tokens; /* nano-tokens */
	__u64 last_ns;
};

struct registry_key {
	__u32 hash;
	__u32 dir; /* DIR_INGRESS, DIR_EGRESS */
};

struct registry_counters {
	__u64 packets;
	__u64 bytes;
};

/* Per-reason counters of one hook; index 0 counts passed packets. */
struct stats_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct registry_key);
	__type(value, struct registry_counters);
} registry_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct regedge_cfg);
} config_map SEC(".maps");

#endif
