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
#define DIR_BUS 2 /* ingress too: valid bus datagrams, whose passes are counted here only */

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
	__u32 dir; /* DIR_INGRESS, DIR_EGRESS, DIR_BUS */
};

struct registry_counters {
	__u64 packets;
	__u64 bytes;
};

/* Per-reason counters of one hook; index 0 counts passed packets. The key's
 * type puts enum regedge_reason into the object's BTF, from which bpf2go
 * generates the Go constants (gen.go: -type regedge_reason). */
struct stats_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_MAX);
	__type(key, enum regedge_reason);
	__type(value, __u64);
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct registry_key);
	__type(value, struct registry_counters);
} registry_stats SEC(".maps");

/*
 * A direct-mapped, per-CPU cache in front of registry_stats: a registry's
 * counters live in the slot its hash maps to, claimed by the first registry
 * that lands there; only a registry whose slot another holds pays for the
 * hash map lookup. An array lookup costs a fraction of a hash lookup, and
 * the map work dominates the per-packet cost (docs/kernel.md, "Kernel facts
 * the design relies on"). Userspace adds slots and map together.
 */
#define REGISTRY_SLOTS 256

struct registry_slot {
	__u32 hash;
	__u32 dir;
	__u64 packets; /* 0: slot free */
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REGISTRY_SLOTS);
	__type(key, __u32);
	__type(value, struct registry_slot);
} registry_slots SEC(".maps");

/* count_registry adds to a registry's counters; 0 when it could not.
 *
 * insert: whether a registry new to the counters gets an entry. The TC
 * hooks count what the proxy told a socket, which is a configured registry
 * or the proxy's one stand-in for all others, so they may (and 0 means the
 * hash map is full and the registry has no slot). A bus datagram's registry
 * is whatever its sender wrote, and bus sources are addresses, which UDP
 * lets anyone forge: there a registry is counted only when userspace has
 * made its entry (loader KnowRegistries: the configured ones), never
 * given a slot or an entry otherwise, and 0 says so: a flood of made-up
 * hashes cannot fill the pinned map or take the slots. A constant at each
 * call: the compiler drops the branch not taken. */
static __always_inline int count_registry(__u32 hash, __u32 dir, __u64 packets, __u64 bytes, const int insert)
{
	/* Fibonacci hashing; the mask (a no-op on the 32-bit product) spares
	 * the 64-bit one the compiler would otherwise build. */
	__u32 slot = (((hash ^ (dir << 29)) * 2654435761u) >> 24) & 0xff;
	struct registry_key k = {.hash = hash, .dir = dir};
	struct registry_slot *s = bpf_map_lookup_elem(&registry_slots, &slot);
	if (s) {
		/* hash and dir compared as one word (little-endian: hash low) */
		if (*(__u64 *)s != (((__u64)dir << 32) | hash)) {
			if (s->packets != 0)
				goto held; /* another registry's slot */
			if (!insert && !bpf_map_lookup_elem(&registry_stats, &k))
				return 0; /* not a registry userspace knows */
			s->hash = hash;
			s->dir = dir;
		}
		s->packets += packets;
		s->bytes += bytes;
		return 1;
	}
held:;
	struct registry_counters *c = bpf_map_lookup_elem(&registry_stats, &k);
	if (c) {
		c->packets += packets;
		c->bytes += bytes;
		return 1;
	}
	if (!insert)
		return 0;
	struct registry_counters nc = {.packets = packets, .bytes = bytes};
	return bpf_map_update_elem(&registry_stats, &k, &nc, BPF_NOEXIST) == 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct regedge_cfg);
} config_map SEC(".maps");

#endif
