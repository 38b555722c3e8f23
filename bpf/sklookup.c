// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * regedge sk_lookup program (the tubular model): a TCP connection to one of
 * the configured (prefix, port) destinations is handed to the proxy's
 * listening socket, kept in a SOCKMAP, whatever address and port that socket
 * is bound to. Destinations not in the tries take the normal lookup.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

/* LPM keys: the port is matched exactly (its 16 bits count in prefixlen),
 * the address by prefix. */
struct dest_v4 {
	__u32 prefixlen; /* 16 + address bits */
	__u16 port;      /* network order */
	__u8 addr[4];
} __attribute__((packed));

struct dest_v6 {
	__u32 prefixlen;
	__u16 port;
	__u8 addr[16];
} __attribute__((packed));

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

/* [0] the proxy's IPv4 socket, [1] its IPv6 socket. A dual-stack IPv6
 * socket in [1] serves IPv4 too when [0] is empty. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} proxy_socket SEC(".maps");

/* [0] connections steered, [1] steering wanted but no socket registered */
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
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;

	__u16 port = bpf_htons((__u16)ctx->local_port);
	void *hit;
	if (ctx->family == 2 /* AF_INET */) {
		struct dest_v4 k = {.prefixlen = 16 + 32, .port = port};
		__builtin_memcpy(k.addr, &ctx->local_ip4, 4);
		hit = bpf_map_lookup_elem(&steer_v4, &k);
	} else {
		struct dest_v6 k = {.prefixlen = 16 + 128, .port = port};
		__u32 ip6[4] = {ctx->local_ip6[0], ctx->local_ip6[1], ctx->local_ip6[2], ctx->local_ip6[3]};
		__builtin_memcpy(k.addr, ip6, 16);
		hit = bpf_map_lookup_elem(&steer_v6, &k);
	}
	if (!hit)
		return SK_PASS;

	__u32 slot = ctx->family == 2 ? 0 : 1;
	struct bpf_sock *sk = bpf_map_lookup_elem(&proxy_socket, &slot);
	if (!sk && slot == 0) {
		slot = 1;
		sk = bpf_map_lookup_elem(&proxy_socket, &slot);
	}
	if (!sk) {
		steer_count(1);
		return SK_PASS; /* no proxy socket yet: the normal lookup decides */
	}
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err == 0)
		steer_count(0);
	return SK_PASS;
}
