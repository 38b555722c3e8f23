// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * regedge sk_lookup program (the tubular model): a new connection (TCP) or
 * datagram (UDP) to a steered (protocol, port, prefix) destination goes to
 * the socket the running agent registered for that service in a pinned
 * SOCKMAP, whatever address and port that socket is bound to. A new agent
 * registers its own sockets and takes every new connection from then on,
 * while the old one drains: a rollout refuses nothing. Destinations not in
 * the tries, or whose service has no socket, take the normal lookup.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define SERVICES 3 /* proxy, bus, websocket: internal/loader Service */

/* LPM keys: the protocol and port are matched exactly (their 24 bits count
 * in prefixlen), the address by prefix. */
struct dest_v4 {
	__u32 prefixlen; /* 24 + address bits */
	__u8 proto;
	__u16 port; /* network order */
	__u8 addr[4];
} __attribute__((packed));

struct dest_v6 {
	__u32 prefixlen;
	__u8 proto;
	__u16 port;
	__u8 addr[16];
} __attribute__((packed));

/* The value is the service whose socket takes the destination. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct dest_v4);
	__type(value, __u8);
} steer_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct dest_v6);
	__type(value, __u8);
} steer_v6 SEC(".maps");

/* Slot 2*service is the service's IPv4 socket, 2*service+1 its IPv6 one. A
 * dual-stack IPv6 socket serves IPv4 too when the IPv4 slot is empty. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2 * SERVICES);
	__type(key, __u32);
	__type(value, __u64);
} sockets SEC(".maps");

/* [0] steered, [1] steering wanted but no socket registered */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} steer_stats SEC(".maps");

static __always_inline void steer_count(__u32 i)
{
	__u64 *c = bpf_map_lookup_elem(&steer_stats, &i);
	if (c)
		*c += 1;
}

SEC("sk_lookup")
int regedge_sk_lookup(struct bpf_sk_lookup *ctx)
{
	__u8 proto = ctx->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SK_PASS;

	__u16 port = bpf_htons((__u16)ctx->local_port);
	__u8 *service;
	if (ctx->family == 2 /* AF_INET */) {
		struct dest_v4 k = {.prefixlen = 24 + 32, .proto = proto, .port = port};
		__builtin_memcpy(k.addr, &ctx->local_ip4, 4);
		service = bpf_map_lookup_elem(&steer_v4, &k);
	} else {
		struct dest_v6 k = {.prefixlen = 24 + 128, .proto = proto, .port = port};
		__u32 ip6[4] = {ctx->local_ip6[0], ctx->local_ip6[1], ctx->local_ip6[2], ctx->local_ip6[3]};
		__builtin_memcpy(k.addr, ip6, 16);
		service = bpf_map_lookup_elem(&steer_v6, &k);
	}
	if (!service || *service >= SERVICES)
		return SK_PASS;

	__u32 v4slot = 2 * (__u32)*service;
	__u32 slot = ctx->family == 2 ? v4slot : v4slot + 1;
	struct bpf_sock *sk = bpf_map_lookup_elem(&sockets, &slot);
	if (!sk && slot == v4slot) {
		slot = v4slot + 1;
		sk = bpf_map_lookup_elem(&sockets, &slot);
	}
	if (!sk) {
		steer_count(1);
		return SK_PASS; /* no socket registered: the normal lookup decides */
	}
	/* NO_REUSEPORT: the registered socket itself, never another member of
	 * its reuseport group (the agent it replaces binds the same port). */
	long err = bpf_sk_assign(ctx, sk, BPF_SK_LOOKUP_F_NO_REUSEPORT);
	bpf_sk_release(sk);
	if (err == 0)
		steer_count(0);
	return SK_PASS;
}
