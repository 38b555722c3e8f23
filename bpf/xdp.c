// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * regedge XDP program, on ingress of each configured interface. It judges
 * only packets addressed to the agent: UDP to the bus port and TCP to a proxy
 * port. Everything else (including what it cannot parse far enough to find
 * the ports) passes untouched and uncounted: on a shared node it is someone
 * else's traffic, and the stack judges it. For our own packets:
 *   - TCP to a proxy port from a source on the block list
 *     (not expired)                                     -> drop (blocked)
 *   - first fragment of a UDP datagram to the bus port  -> drop (fragment)
 *   - TCP SYN to a proxy port over the per-source rate  -> drop (synflood)
 *   - bus datagram whose IP or UDP lengths Linux would drop -> drop (malformed)
 *   - UDP to the bus port from outside the allow-list   -> drop (source)
 *   - an invalid config bus datagram (docs/protocol.md §2.3) -> drop (its reason)
 *   - a valid one without a signature trailer (§3.1a), when the
 *     agent has bus keys (CFG_REQUIRE_TRAILER)           -> drop (unsigned)
 * TCP to a proxy port is otherwise passed: its header checks are the stack's,
 * as the IPv4 header checksum is (Katran's choice: a corrupt header is
 * judged on its content, then dropped by the stack). Valid bus datagrams are
 * counted per registry hash (as passes in xdp_stats only when the registry
 * counters are full).
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

/*
 * config_map's one value, read by address (a direct map value load: one
 * instruction, never NULL) instead of through a lookup. This placeholder
 * is never loaded: the loader points every reference to its section at
 * config_map itself (internal/loader xdpSpec), so the program reads the
 * same (pinned) map as the agent writes.
 */
static struct regedge_cfg config_value SEC(".data.config");

static __always_inline const struct regedge_cfg *config(void)
{
	const struct regedge_cfg *c = &config_value;
	asm volatile("" : "+r"(c)); /* what it points to is the loader's business, not the zeroes above */
	return c;
}

/* Set by the loader through CollectionSpec.Variables before load. */
volatile const __u16 bus_port = 4874;
volatile const __u64 syn_rate = 0; /* SYNs per second per source; 0 = guard off */
volatile const __u64 syn_burst = 0;

static __always_inline int count_verdict(int reason)
{
	__u32 key = reason;
	__u64 *c = bpf_map_lookup_elem(&xdp_stats, &key);
	if (c)
		*c += 1;
	return reason == REASON_OK ? XDP_PASS : XDP_DROP;
}

#define AF_INET_ 2
#define AF_INET6_ 10

/*
 * addressed_here: the stack would deliver the packet in ctx to this host,
 * not forward it. The ports alone do not make a packet ours: a node that
 * routes for pods or VMs sees their traffic on its interfaces, and a
 * Verdaccio pod listens on 4873 too. Asked only before a drop (the passes,
 * the hot path, never pay for it) to a destination not on the local list
 * (to_local_address): a FIB lookup as the stack's input route,
 * which finds a unicast route out only for a packet it forwards. Forwarding
 * off on the interface, local, broadcast and multicast routes, no route, a
 * blackhole: the packet is not forwarded, so it is ours to judge.
 */
static __always_inline int addressed_here(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};
	if (parse_packet(data, data_end, &p) != PARSE_OK)
		return 1;
	struct bpf_fib_lookup f = {};
	f.ifindex = ctx->ingress_ifindex;
	f.l4_protocol = p.l4proto;
	f.sport = bpf_htons(p.sport);
	f.dport = bpf_htons(p.dport);
	if (p.family == 4) {
		f.family = AF_INET_;
		f.ipv4_src = p.saddr[0];
		f.ipv4_dst = p.daddr[0];
	} else {
		f.family = AF_INET6_;
		__builtin_memcpy(f.ipv6_src, p.saddr, 16);
		__builtin_memcpy(f.ipv6_dst, p.daddr, 16);
	}
	switch (bpf_fib_lookup(ctx, &f, sizeof(f), 0)) {
	case BPF_FIB_LKUP_RET_SUCCESS:
	case BPF_FIB_LKUP_RET_NO_NEIGH:
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
	case BPF_FIB_LKUP_RET_UNSUPP_LWT:
		return 0; /* a unicast route out: the node forwards it */
	}
	return 1;
}

#define ETH_IPV4_LOAD16 0x0008 /* EtherType 0x0800 as a little-endian load reads it */
#define ETH_IPV6_LOAD16 0xdd86 /* 0x86dd */

/*
 * to_local_address: the packet in ctx (Ethernet without a VLAN tag, IPv4 or
 * IPv6) is to one of the node's own addresses in config_map's local list:
 * the stack delivers it here, so it is ours without a parse or a FIB
 * lookup. The destination's offset does not depend on IPv4 options or IPv6
 * extension headers. 0 means "not known here", never "not ours".
 */
static __always_inline int to_local_address(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const struct regedge_cfg *cfg = config();
	if (data + 14 + 20 > data_end)
		return 0;
	__u16 proto = *(__u16 *)(data + 12);
	if (proto == ETH_IPV4_LOAD16) {
		__u32 dst = load32(data + 14 + 16);
		__u32 n = cfg->local4_n;
		for (__u32 i = 0; i < LOCAL_V4; i++) {
			if (i >= n)
				break;
			if (cfg->local4[i] == dst)
				return 1;
		}
		return 0;
	}
	if (proto == ETH_IPV6_LOAD16 && data + 14 + 40 <= data_end) {
		__u64 hi = load64(data + 14 + 24), lo = load64(data + 14 + 32);
		__u32 n = cfg->local6_n;
		for (__u32 i = 0; i < LOCAL_V6; i++) {
			if (i >= n)
				break;
			if (cfg->local6[i].addr[0] == hi && cfg->local6[i].addr[1] == lo)
				return 1;
		}
	}
	return 0;
}

/* fib_judged_verdict counts and returns the verdict of reason, a drop, on
 * the packet in ctx unless the FIB says the node forwards it. A global
 * function: the verifier checks the parse and the lookup once, not at each
 * of the many places a verdict is given. */
__noinline int fib_judged_verdict(struct xdp_md *ctx, int reason)
{
	if (reason < 0 || reason >= REASON_MAX)
		return XDP_ABORTED;
	if (!addressed_here(ctx))
		return XDP_PASS; /* someone else's: untouched, uncounted */
	return count_verdict(reason);
}

/* judged_verdict counts and returns the verdict of reason on the packet in
 * ctx. Inlined, with reason a constant at each place: a pass is counted as
 * before the FIB check existed, and a drop to one of the node's own
 * addresses (the common case: a flood aimed at the agent) is known to be
 * ours in a few compares. Only the other drops call fib_judged_verdict: a
 * call to a global function costs about a third of the floor by itself
 * (docs/benchmarks.md), the parse and the FIB lookup far more. */
static __always_inline int judged_verdict(struct xdp_md *ctx, int reason)
{
	if (reason == REASON_OK || to_local_address(ctx))
		return count_verdict(reason);
	return fib_judged_verdict(ctx, reason);
}

/* verdict(reason) in a function of the packet's ctx. */
#define verdict(reason) judged_verdict(ctx, (reason))

/* bus_pass passes a valid bus datagram. It is counted once, in its sender's
 * registry counters (DIR_BUS), not also in xdp_stats: userspace adds those
 * to the passes (loader Counters). One per-CPU update on the hottest path
 * instead of two. A registry userspace does not know (count_registry) is
 * counted as a plain pass. */
static __always_inline int bus_pass(__u32 hash, __u64 bytes)
{
	if (!count_registry(hash, DIR_BUS, 1, bytes, 0))
		return count_verdict(REASON_OK); /* an unknown registry: a pass all the same */
	return XDP_PASS;
}

static __always_inline int block_live(const struct block_entry *b)
{
	if (!b)
		return 0;
	return b->expires_ns == 0 || b->expires_ns > bpf_ktime_get_boot_ns();
}

static __always_inline int is_blocked4(__u32 saddr)
{
	struct lpm_v4 k = {.prefixlen = 32, .addr = saddr};
	return block_live(bpf_map_lookup_elem(&block_v4, &k));
}

static __always_inline int is_allowed4(__u32 saddr, const struct regedge_cfg *cfg)
{
	__u32 n = cfg->allow4_n;
	if (n != ALLOW_USE_TRIE) {
		/* The first entry apart: most edges allow one prefix. */
		if (n == 0)
			return 0;
		if ((saddr & cfg->allow4[0].mask) == cfg->allow4[0].addr)
			return 1;
		for (__u32 i = 1; i < ALLOW_FAST_V4; i++) {
			if (i >= n)
				break;
			if ((saddr & cfg->allow4[i].mask) == cfg->allow4[i].addr)
				return 1;
		}
		return 0;
	}
	struct lpm_v4 k = {.prefixlen = 32, .addr = saddr};
	return bpf_map_lookup_elem(&allow_v4, &k) != NULL;
}

static __always_inline int is_blocked(const struct pkt *p)
{
	struct block_entry *b;
	if (p->family == 4) {
		return is_blocked4(p->saddr[0]);
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
	if (p->family == 4)
		return is_allowed4(p->saddr[0], cfg);
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

static __always_inline int check_bus_datagram(struct xdp_md *ctx, __u32 payload_off,
					      const struct regedge_cfg *cfg, __u32 len)
{
	__u32 zero = 0;
	if (len < MIN_DATAGRAM)
		return verdict(REASON_LENGTH);

	__u64 bytes = ctx->data_end - ctx->data;
	if (len == MIN_DATAGRAM) {
		/* The common case is judged in place: no copy. */
		const __u8 *d = (void *)(long)ctx->data + (payload_off & 0xffff);
		if ((void *)(d + MIN_DATAGRAM) <= (void *)(long)ctx->data_end) {
			int r = small_datagram_reason(d, cfg);
			if (r != REASON_OK)
				return verdict(r);
			return bus_pass(be32_at(d + 1), bytes);
		}
	}

	/* Longer datagrams (BULK) or a frame in several buffers: copy first. */
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return XDP_ABORTED;
	/* 64 bits wide, so the register checked is the register passed. */
	__u64 n = len < MAX_DATAGRAM ? len : MAX_DATAGRAM;
	asm volatile("" : "+r"(n)); /* keep the check below for the verifier */
	if (n < 1 || n > MAX_DATAGRAM)
		return XDP_ABORTED; /* unreachable; bounds n for the verifier */
	if (bpf_xdp_load_bytes(ctx, payload_off, sc->b, n) < 0)
		return verdict(REASON_MALFORMED);

	int r = datagram_reason(sc, len, cfg);
	if (r != REASON_OK)
		return verdict(r);
	return bus_pass(be32_at(sc->b + 1), bytes);
}

/* judge decides on a parsed packet: ours (UDP to the bus port, TCP to a
 * proxy port) or not, then the checks of the header comment. */
static __always_inline int judge(struct xdp_md *ctx, void *data, void *data_end, struct pkt *p)
{
	int bus = p->l4proto == IPPROTO_UDP && p->has_ports && p->dport == bus_port;
	int proxy = p->l4proto == IPPROTO_TCP && p->has_ports && is_proxy_port(p->dport);
	if (!bus && !proxy)
		return XDP_PASS; /* includes later fragments: their ports are unknown */

	const struct regedge_cfg *cfg = config();

	if (proxy) {
		/* Most edges block nobody: skip the trie lookup then. The block
		 * list (token failures at the proxy) covers the proxy's ports
		 * alone: a blocked source still reaches every other service of
		 * the node, the config bus included. */
		if (cfg->block_count != 0 && is_blocked(p))
			return verdict(REASON_BLOCKED);
		/* SYN without ACK, unfragmented */
		if (syn_rate != 0 && !p->frag && (p->tcp_flags & 0x12) == 0x02 && syn_over_limit(p))
			return verdict(REASON_SYNFLOOD);
		return verdict(REASON_OK);
	}

	/* A first fragment to the bus: the bus never needs fragments, and the
	 * later ones cannot reassemble into a datagram once this is gone. */
	if (p->frag)
		return verdict(REASON_FRAGMENT);
	if (p->l3_bad)
		return verdict(REASON_MALFORMED);
	int ulen = udp_len(data, data_end, p);
	if (ulen < 0)
		return verdict(REASON_MALFORMED);
	if (!is_allowed(p, cfg))
		return verdict(REASON_SOURCE);
	return check_bus_datagram(ctx, p->l4off + sizeof(struct udphdr), cfg, ulen - sizeof(struct udphdr));
}

#define FAST_L3 14       /* Ethernet, no VLAN tag */
#define FAST_L4 (14 + 20) /* IPv4 without options */

/*
 * The fast section's shape as two masked words (little-endian loads, as
 * everywhere here): frame bytes 12..14 are the EtherType 0x0800 and the
 * version/IHL byte 0x45; bytes 20..23 are the fragment field (MF bit and
 * offset: zero for an unfragmented packet), the TTL (not looked at) and the
 * protocol.
 */
#define FAST_IPV4_MASK 0x00ffffffu
#define FAST_IPV4 0x00450008u
#define FAST_PROTO_MASK 0xff00ff3fu
#define FAST_UDP ((__u32)IPPROTO_UDP << 24)
#define FAST_TCP ((__u32)IPPROTO_TCP << 24)

/* The common bus datagram, a state and a fixed frame, as its IP total length
 * and UDP length read on the wire (network order), in the fast shape. */
#define FAST_BUS_TOT (20 + 8 + MIN_DATAGRAM)
#define FAST_BUS_ULEN (8 + MIN_DATAGRAM)

/* bus_fast is judge for a bus datagram in the fast section's shape: the
 * same checks in the same order, every offset a constant. */
static __always_inline int bus_fast(struct xdp_md *ctx, void *data, void *data_end)
{
	struct iphdr *ip = data + FAST_L3;
	__u8 *udp = data + FAST_L4;
	const __u8 *d = udp + 8;
	const struct regedge_cfg *cfg = config();
	__u32 saddr = ip->saddr; /* the block list is the proxy's alone: not checked here */

	/* The common case: both lengths exactly those of a state and a fixed
	 * frame, the frame holding all of it. Compared in network order; it
	 * implies the length checks below (none fails) and len == MIN_DATAGRAM. */
	if (ip->tot_len == bpf_htons(FAST_BUS_TOT) && *(__u16 *)(udp + 4) == bpf_htons(FAST_BUS_ULEN) &&
	    (void *)(d + MIN_DATAGRAM) <= data_end) {
		if (!is_allowed4(saddr, cfg))
			return verdict(REASON_SOURCE);
		int r = small_datagram_reason(d, cfg);
		if (r != REASON_OK)
			return verdict(r);
		return bus_pass(be32_at(d + 1), data_end - data);
	}

	/* What Linux drops (parse.h): total length, UDP length. */
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (tot < 20 || tot > (__u32)(data_end - (void *)ip))
		return verdict(REASON_MALFORMED);
	__u32 ulen = ((__u32)udp[4] << 8) | udp[5];
	if (ulen < 8 || ulen > tot - 20)
		return verdict(REASON_MALFORMED);
	if (!is_allowed4(saddr, cfg))
		return verdict(REASON_SOURCE);
	__u32 len = ulen - 8;
	if (len == MIN_DATAGRAM && (void *)(d + MIN_DATAGRAM) <= data_end) {
		int r = small_datagram_reason(d, cfg);
		if (r != REASON_OK)
			return verdict(r);
		return bus_pass(be32_at(d + 1), data_end - data);
	}
	return check_bus_datagram(ctx, FAST_L4 + 8, cfg, len);
}

SEC("xdp")
int regedge_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	/*
	 * The fast section, Katran's shape: the common frame (Ethernet,
	 * IPv4 without options, not a fragment) read at fixed offsets, its
	 * shape tested on two words. What is not ours passes after a few
	 * compares, with no map access and no struct to fill; ours goes to
	 * judge with the parse done. Every other shape takes the general
	 * parser below.
	 */
	if (data + FAST_L4 + 14 <= data_end) {
		__u8 *l4 = data + FAST_L4;
		__u32 proto = load32(data + 20) & FAST_PROTO_MASK;
		if ((load32(data + 12) & FAST_IPV4_MASK) == FAST_IPV4) {
			__u16 dport = bpf_ntohs(*(__u16 *)(l4 + 2));
			if (proto == FAST_UDP) {
				if (dport != bus_port)
					return XDP_PASS;
				return bus_fast(ctx, data, data_end);
			}
			if (proto == FAST_TCP) {
				if (!is_proxy_port(dport))
					return XDP_PASS;
				struct iphdr *ip = data + FAST_L3;
				__u32 tot = bpf_ntohs(ip->tot_len);
				struct pkt p = {
					.family = 4,
					.l4proto = IPPROTO_TCP,
					.has_ports = 1,
					.ihl = 5,
					.tcp_flags = l4[13],
					.sport = ((__u16)l4[0] << 8) | l4[1],
					.dport = dport,
					.l3off = FAST_L3,
					.l4off = FAST_L4,
				};
				p.saddr[0] = ip->saddr;
				if (tot < 20 || tot > (__u32)(data_end - (void *)ip))
					p.l3_bad = 1;
				else
					p.l4len = tot - 20;
				return judge(ctx, data, data_end, &p);
			}
			if ((proto & 0xffff) == 0)
				return XDP_PASS; /* neither UDP nor TCP, not a fragment: not ours */
		}
	}

	struct pkt p = {};
	if (parse_packet(data, data_end, &p) != PARSE_OK)
		return XDP_PASS; /* not IP, or no ports to be found: not ours */
	return judge(ctx, data, data_end, &p);
}
