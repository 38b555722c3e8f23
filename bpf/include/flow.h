/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow tags: what the TC program learns from a request head, keyed by the
 * connection's 4-tuple, for the proxy to read after it accepts (a hint it
 * re-checks) and for per-registry counting of the flow's packets.
 */
#ifndef REGEDGE_FLOW_H
#define REGEDGE_FLOW_H

#include <linux/types.h>
#include "reason.h"
#include "protocol.h"

#define HEAD_SCAN 1024 /* bytes of the first payload segment scanned */
#define HEAD_SLACK 64  /* zeroed bytes after the scan window */

#define TAG_SOURCE_NONE 0 /* no config header: the agent's own state */
#define TAG_SOURCE_DUMP 1 /* X-Bun-Config-Dump */
#define TAG_SOURCE_HASH 2 /* X-Bun-Registry-Hash */

struct flow_key {
	__u32 client[4]; /* network order; IPv4 in [0] */
	__u32 server[4];
	__u16 client_port; /* host order */
	__u16 server_port;
	__u8 family; /* 4 or 6 */
	__u8 pad[3];
};

struct flow_tag {
	__u32 hash;  /* registry hash, host order */
	__u32 flags; /* feature flags */
	__u8 version;
	__u8 verdict; /* REASON_OK, REASON_STATE, REASON_VERSION, REASON_MALFORMED */
	__u8 source;  /* TAG_SOURCE_* */
	__u8 pad;
	__u32 pad2;
	__u64 last_ns; /* CLOCK_BOOTTIME of the last packet */
};

struct head_scratch {
	__u8 b[HEAD_SCAN + HEAD_SLACK];
};

#endif
