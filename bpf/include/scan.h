/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The request-head scan of the TC program: finds X-Bun-Config-Dump or
 * X-Bun-Registry-Hash and fills a flow tag. Included by tc.c after the
 * declaration of head_scratch_map, which the bpf_loop callback reads.
 */
#ifndef REGEDGE_SCAN_H
#define REGEDGE_SCAN_H

#include <bpf/bpf_helpers.h>
#include "flow.h"

/*
 * The scan avoids branches per byte: the verifier walks every path, and a
 * branchy 1024-byte scan or 26-digit parse is more than it will take. Case
 * folding and hex digits come from tables; comparisons are XORs OR-ed
 * together; the scan runs in a bpf_loop callback, verified once.
 */

/* lower_t[c]: c with A-Z folded to a-z. */
static const __u8 lower_t[256] = {
#define L(c) [c] = c
#define U(c) [c] = c + 32
	U('A'), U('B'), U('C'), U('D'), U('E'), U('F'), U('G'), U('H'), U('I'), U('J'), U('K'),
	U('L'), U('M'), U('N'), U('O'), U('P'), U('Q'), U('R'), U('S'), U('T'), U('U'), U('V'),
	U('W'), U('X'), U('Y'), U('Z'),
	L('a'), L('b'), L('c'), L('d'), L('e'), L('f'), L('g'), L('h'), L('i'), L('j'), L('k'),
	L('l'), L('m'), L('n'), L('o'), L('p'), L('q'), L('r'), L('s'), L('t'), L('u'), L('v'),
	L('w'), L('x'), L('y'), L('z'), L('-'), L(':'), L('\r'), L('\n'), L(' '), L('\t'),
	L('0'), L('1'), L('2'), L('3'), L('4'), L('5'), L('6'), L('7'), L('8'), L('9'),
#undef L
#undef U
};

/* hexp1[c]: the digit's value plus 1, 0 for a byte that is not a hex digit. */
static const __u8 hexp1[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
	['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15,
	['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* Nonzero unless b[i..] equals the lower-case string s, ignoring case. */
#define DIFF1(b, i, s, k) ((__u32)(lower_t[(b)[(i) + (k)]] ^ (__u8)(s)[k]))
#define DIFF6(b, i, s)                                                                             \
	(DIFF1(b, i, s, 0) | DIFF1(b, i, s, 1) | DIFF1(b, i, s, 2) | DIFF1(b, i, s, 3) |           \
	 DIFF1(b, i, s, 4) | DIFF1(b, i, s, 5))

struct scan_ctx {
	__u32 n;
	int dump_at;
	int hash_at;
};

static long scan_line(__u64 idx, void *vctx)
{
	struct scan_ctx *c = vctx;
	__u32 zero = 0;
	__u32 i = idx;
	if (i >= c->n || i >= HEAD_SCAN)
		return 1;
	struct head_scratch *hs = bpf_map_lookup_elem(&head_scratch_map, &zero);
	if (!hs)
		return 1;
	const __u8 *b = hs->b;
	i &= HEAD_SCAN - 1; /* a no-op after the check above; the verifier needs the bound on this register */
	if (b[i] != '\n')
		return 0;
	if (b[i + 1] == '\r' || b[i + 1] == '\n')
		return 1; /* end of the head */
	if (DIFF6(b, i + 1, "x-bun-"))
		return 0;
	/* "config-dump:" (12) or "registry-hash:" (14) after "x-bun-" */
	__u32 dump = DIFF6(b, i + 7, "config") | DIFF6(b, i + 13, "-dump:");
	if (dump == 0) {
		c->dump_at = i + 19;
		return 1; /* the dump wins: stop */
	}
	__u32 hash = DIFF6(b, i + 7, "regist") | DIFF6(b, i + 13, "ry-has") | DIFF1(b, i + 19, "h:", 0) |
		     DIFF1(b, i + 19, "h:", 1);
	if (hash == 0 && c->hash_at < 0)
		c->hash_at = i + 21;
	return 0;
}

/* Skips up to three spaces or tabs (HTTP OWS) and a "0x"; returns the offset
 * of the first hex digit, or -1. */
static __always_inline int value_start(const __u8 *b, int pos)
{
#pragma clang loop unroll(full)
	for (int k = 0; k < 3; k++)
		if (b[pos] == ' ' || b[pos] == '\t')
			pos++;
	if ((DIFF1(b, pos, "0x", 0) | DIFF1(b, pos, "0x", 1)) != 0)
		return -1;
	return pos + 2;
}

/* Parses 2*n hex digits at b[pos] into out[0..n-1]; 0 on success. */
static __always_inline int parse_hex(const __u8 *b, int pos, __u8 *out, int n)
{
	__u32 bad = 0;
#pragma clang loop unroll(full)
	for (int j = 0; j < STATE_SIZE; j++) {
		if (j < n) {
			__u32 hi = hexp1[b[pos + 2 * j]];
			__u32 lo = hexp1[b[pos + 2 * j + 1]];
			bad |= ((hi - 1) | (lo - 1)) >> 31; /* 1 when either was 0 */
			out[j] = (((hi - 1) & 15) << 4) | ((lo - 1) & 15);
		}
	}
	/* The value must end after its digits. */
	__u8 end = b[pos + 2 * n];
	if (bad || !(end == '\r' || end == '\n' || end == ' ' || end == '\t'))
		return -1;
	return 0;
}

/* find_config fills tag from the request head in hs (n bytes): the dump wins
 * over the registry hash header; without either, the agent's own state. */
static __always_inline void find_config(const struct head_scratch *hs, __u32 n,
					const struct regedge_cfg *cfg, struct flow_tag *tag)
{
	const __u8 *b = hs->b;
	struct scan_ctx sc = {.n = n, .dump_at = -1, .hash_at = -1};
	bpf_loop(HEAD_SCAN, scan_line, &sc, 0);

	__u8 st[16] = {};
	int at = -1, want = 0;
	if (sc.dump_at >= 0) {
		tag->source = TAG_SOURCE_DUMP;
		at = sc.dump_at;
		want = STATE_SIZE;
	} else if (sc.hash_at >= 0) {
		tag->source = TAG_SOURCE_HASH;
		at = sc.hash_at;
		want = 4;
	} else {
		tag->source = TAG_SOURCE_NONE;
	}
	__builtin_memcpy(st, cfg->own, STATE_SIZE);
	if (at >= 0) {
		if (at > HEAD_SCAN + 24)
			return; /* unreachable: bounds the offsets for the verifier */
		int v = value_start(b, at);
		if (v < 0) {
			tag->verdict = REASON_MALFORMED;
			return;
		}
		if (v > HEAD_SCAN + 29)
			return; /* unreachable, as above */
		if (want == STATE_SIZE ? parse_hex(b, v, st, STATE_SIZE) : parse_hex(b, v, st + 1, 4)) {
			tag->verdict = REASON_MALFORMED;
			return;
		}
	}
	tag->version = st[0];
	tag->hash = be32_at(st + 1);
	tag->flags = be32_at(st + 5);
	if (state_reason(st) != REASON_OK)
		tag->verdict = REASON_STATE;
	else if (!version_ok(cfg, st[0]))
		tag->verdict = REASON_VERSION;
	else
		tag->verdict = REASON_OK;
}

#endif
