// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * regedge XDP program, on ingress of each configured interface:
 *   - malformed L3/L4 headers                         -> drop (malformed)
 *   - TCP to a proxy port from a source on the block list
 *     (not expired)                                    -> drop (blocked)
 *   - fragment of a UDP datagram to the bus port      -> drop (fragment)
 *   - TCP SYN to a proxy port over the per-source rate -> drop (synflood)
 *   - UDP to the bus port from outside the allow-list -> drop (source)
 *   - an invalid config bus datagram (PROTOCOL.md §2.3) -> drop (its reason)
 *   - a valid one without a signature trailer (§3.1a), when the
 *     agent has bus keys (CFG_REQUIRE_TRAILER)          -> drop (unsigned)
 * Everything else passes. Valid bus datagrams are counted per registry hash.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "include/reason.h"
#include "include/protocol.h"
#include "include/parse.h"
#include "include/maps.h"
#include "include/ports.h"

char __license[] SEC("license") = "Dual BSD/GPL";

struct stats_map xdp_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, struct block_entry);
} block_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6);
	__type(value, struct block_entry);
} block_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, __u8);
} allow_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6);
	__type(value, __u8);
} allow_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr_key);
	__type(value, struct syn_bucket);
} syn_buckets SEC(".maps");

/* Set by the loader through CollectionSpec.Variables before load. */
volatile const __u16 bus_port = 4874;
volatile const __u64 syn_rate = 0; /* SYNs per second per source; 0 = guard off */
volatile const __u64 syn_burst = 0;

static __always_inline int verdict(int reason)
{
	__u32 key = reason;
	__u64 *c = bpf_map_lookup_elem(&xdp_stats, &key);
	if (c)
		*c += 1;
	return reason == REASON_OK ? XDP_PASS : XDP_DROP;
}

static __always_inline int is_blocked(const struct pkt *p)
{
	struct block_entry *b;
	if (p->family == 4) {
		struct lpm_v4 k = {.prefixlen = 32, .addr = p->saddr[0]};
		b = bpf_map_lookup_elem(&block_v4, &k);
	} else {
		struct lpm_v6 k = {.prefixlen = 128};
		__builtin_memcpy(k.addr, p->saddr, 16);
		b = bpf_map_lookup_elem(&block_v6, &k);
	}
	if (!b)
		return 0;
	return b->expires_ns == 0 || b->expires_ns > bpf_ktime_get_boot_ns();
}

static __always_inline int is_allowed(const struct pkt *p, const struct regedge_cfg *cfg)
{
	if (p->family == 4) {
		if (cfg->allow4_n != ALLOW_USE_TRIE) {
			for (__u32 i = 0; i < ALLOW_FAST_V4; i++) {
				if (i >= cfg->allow4_n)
					break;
				if ((p->saddr[0] & cfg->allow4[i].mask) == cfg->allow4[i].addr)
					return 1;
			}
			return 0;
		}
		struct lpm_v4 k = {.prefixlen = 32, .addr = p->saddr[0]};
		return bpf_map_lookup_elem(&allow_v4, &k) != NULL;
	}
	if (cfg->allow6_n != ALLOW_USE_TRIE) {
		for (__u32 i = 0; i < ALLOW_FAST_V6; i++) {
			if (i >= cfg->allow6_n)
				break;
			const struct allow6 *a = &cfg->allow6[i];
			if ((p->saddr[0] & a->mask[0]) == a->addr[0] && (p->saddr[1] & a->mask[1]) == a->addr[1] &&
			    (p->saddr[2] & a->mask[2]) == a->addr[2] && (p->saddr[3] & a->mask[3]) == a->addr[3])
				return 1;
		}
		return 0;
	}
	struct lpm_v6 k = {.prefixlen = 128};
	__builtin_memcpy(k.addr, p->saddr, 16);
	return bpf_map_lookup_elem(&allow_v6, &k) != NULL;
}

/* Token bucket per source, in nano-tokens: one SYN costs 1e9. */
static __always_inline int syn_over_limit(const struct pkt *p)
{
	const __u64 one = 1000000000ULL;
	struct addr_key k = {};
	__builtin_memcpy(k.addr, p->saddr, 16);
	__u64 now = bpf_ktime_get_boot_ns();
	struct syn_bucket *b = bpf_map_lookup_elem(&syn_buckets, &k);
	if (!b) {
		struct syn_bucket nb = {.tokens = (syn_burst - 1) * one, .last_ns = now};
		bpf_map_update_elem(&syn_buckets, &k, &nb, BPF_ANY);
		return syn_burst == 0;
	}
	__u64 elapsed = now - b->last_ns;
	if (elapsed > 10 * one)
		elapsed = 10 * one; /* keeps elapsed * rate within 64 bits */
	__u64 tokens = b->tokens + elapsed * syn_rate;
	if (tokens > syn_burst * one)
		tokens = syn_burst * one;
	b->last_ns = now;
	if (tokens < one) {
		b->tokens = tokens;
		return 1;
	}
	b->tokens = tokens - one;
	return 0;
}

static __always_inline int check_bus_datagram(struct xdp_md *ctx, const struct pkt *p,
					      const struct regedge_cfg *cfg)
{
	__u32 zero = 0;
	__u32 len = p->payload_len;
	if (len < MIN_DATAGRAM)
		return verdict(REASON_LENGTH);

	__u64 bytes = ctx->data_end - ctx->data;
	if (len == MIN_DATAGRAM) {
		/* The common case is judged in place: no copy. */
		const __u8 *d = (void *)(long)ctx->data + (p->payload_off & 0xffff);
		if ((void *)(d + MIN_DATAGRAM) <= (void *)(long)ctx->data_end) {
			int r = small_datagram_reason(d, cfg);
			if (r != REASON_OK)
				return verdict(r);
			count_registry(be32_at(d + 1), DIR_INGRESS, bytes);
			return verdict(REASON_OK);
		}
	}

	/* Longer datagrams (BULK) or a frame in several buffers: copy first. */
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return XDP_ABORTED;
	__u32 n = len < MAX_DATAGRAM ? len : MAX_DATAGRAM;
	if (n < 1 || n > MAX_DATAGRAM)
		return XDP_ABORTED; /* unreachable; bounds n for the verifier */
	if (bpf_xdp_load_bytes(ctx, p->payload_off, sc->b, n) < 0)
		return verdict(REASON_MALFORMED);

	int r = datagram_reason(sc, len, cfg);
	if (r != REASON_OK)
		return verdict(r);
	count_registry(be32_at(sc->b + 1), DIR_INGRESS, bytes);
	return verdict(REASON_OK);
}

SEC("xdp")
int regedge_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};

	int pr = parse_packet(data, data_end, &p);
	if (pr == PARSE_NOT_IP)
		return verdict(REASON_OK);
	if (pr != PARSE_OK)
		return verdict(REASON_MALFORMED);

	__u32 zero = 0;
	struct regedge_cfg *cfg = bpf_map_lookup_elem(&config_map, &zero);
	if (!cfg)
		return XDP_ABORTED;
	/* Most edges block nobody: skip the trie lookup then. The block list
	 * (token failures at the proxy) covers the proxy's ports alone: a
	 * blocked source still reaches every other service of the node. */
	if (cfg->block_count != 0 && p.l4proto == IPPROTO_TCP && p.has_ports && is_proxy_port(p.dport) &&
	    is_blocked(&p))
		return verdict(REASON_BLOCKED);

	if (p.frag) {
		/* A first fragment shows its ports; later ones cannot reassemble
		 * into a bus datagram once the first is gone. */
		if (p.frag_first && p.has_ports && p.l4proto == IPPROTO_UDP && p.dport == bus_port)
			return verdict(REASON_FRAGMENT);
		return verdict(REASON_OK);
	}

	if (p.l4proto == IPPROTO_TCP) {
		/* SYN without ACK to a proxy port */
		if (syn_rate != 0 && (p.tcp_flags & 0x12) == 0x02 && is_proxy_port(p.dport) &&
		    syn_over_limit(&p))
			return verdict(REASON_SYNFLOOD);
		return verdict(REASON_OK);
	}

	if (p.l4proto == IPPROTO_UDP && p.dport == bus_port) {
		if (!is_allowed(&p, cfg))
			return verdict(REASON_SOURCE);
		return check_bus_datagram(ctx, &p, cfg);
	}
	return verdict(REASON_OK);
}
