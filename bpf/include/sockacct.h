/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-registry accounting by socket. The proxy knows each request's
 * registry hash; it writes it into sock_registry, socket-local storage of
 * the accepted connection (internal/loader TagSocket, a map update with the
 * socket's fd as key). TC finds the connection's socket (egress: skb->sk;
 * ingress: a socket lookup by the 4-tuple) and counts skb->len bytes and
 * gso_segs packets, so TLS, keep-alive, split heads and GSO/GRO skbs count
 * exactly: nothing reads the payload.
 *
 * A request arrives before the proxy can know its hash, so ingress packets
 * are held per socket (sock_pending) and counted under the hash in force
 * when the next egress packet leaves: the response to a request begins
 * after the proxy has told the kernel that request's hash. Egress packets
 * before the first hash (ACKs of the first request) are held likewise. The
 * client's FIN or RST counts what is held at once.
 */
#ifndef REGEDGE_SOCKACCT_H
#define REGEDGE_SOCKACCT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "maps.h"

#define SOCK_TAGGED 1 /* sock_registry.flags: the hash is set */

/* Written by userspace only. */
struct sock_registry {
	__u32 hash;
	__u32 flags;
};

/* Written by TC only. */
struct sock_pending {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 in_packets, in_bytes;
	__u64 out_packets, out_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_registry);
} sock_registry SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_pending);
} sock_pending SEC(".maps");

static __always_inline __u64 skb_segs(const struct __sk_buff *skb)
{
	return skb->gso_segs > 1 ? skb->gso_segs : 1;
}

/*
 * account counts one skb of a proxy connection. sk is a full socket (a
 * referenced one from a lookup, or skb->sk through bpf_sk_fullsock).
 * flush: count what the socket holds now (egress, or the client's FIN/RST).
 */
static __always_inline void account(struct __sk_buff *skb, struct bpf_sock *sk, __u32 dir, int flush)
{
	struct sock_pending *p = bpf_sk_storage_get(&sock_pending, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!p)
		return;
	struct sock_registry *r = bpf_sk_storage_get(&sock_registry, sk, 0, 0);
	int tagged = r && (r->flags & SOCK_TAGGED);
	__u64 segs = skb_segs(skb), len = skb->len;
	__u64 in_p = 0, in_b = 0, out_p = 0, out_b = 0;

	bpf_spin_lock(&p->lock);
	if (dir == DIR_INGRESS) {
		p->in_packets += segs;
		p->in_bytes += len;
	} else {
		p->out_packets += segs;
		p->out_bytes += len;
	}
	if (tagged && (flush || dir == DIR_EGRESS)) {
		in_p = p->in_packets;
		in_b = p->in_bytes;
		out_p = p->out_packets;
		out_b = p->out_bytes;
		p->in_packets = p->in_bytes = p->out_packets = p->out_bytes = 0;
	}
	bpf_spin_unlock(&p->lock);

	if (!tagged)
		return;
	__u32 hash = r->hash;
	if (in_p)
		count_registry(hash, DIR_INGRESS, in_p, in_b, 1);
	if (out_p)
		count_registry(hash, DIR_EGRESS, out_p, out_b, 1);
}

#endif
