// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * regedge TC programs (TCX ingress/egress, or clsact direct-action): count
 * the packets and bytes of proxy connections per registry hash, by socket
 * (include/sockacct.h). Neither reads a payload nor drops anything; packets
 * that are not the proxy's pass uncounted.
 *   ingress: TCP to a proxy port: the connection's socket by a lookup of
 *            the 4-tuple (skb->sk is not set yet at ingress).
 *   egress:  TCP from a proxy port: skb->sk, the sending socket.
 * Only the headers are parsed, and they are in the skb's linear head (or
 * pulled into it): sizes come from skb->len and skb->gso_segs, never from
 * data_end, so GSO/TSO and GRO skbs count in full.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "include/reason.h"
#include "include/protocol.h"
#include "include/parse.h"
#include "include/maps.h"
#include "include/ports.h"
#include "include/sockacct.h"

char __license[] SEC("license") = "Dual BSD/GPL";

struct stats_map tc_stats SEC(".maps");

#define TC_NEXT -1 /* TCX_NEXT / TC_ACT_UNSPEC: let the packet go on */
#define TCP_LISTEN_ 10
#define HEADERS_MAX (14 + 8 + 60 + 14) /* Ethernet, 2 VLAN tags, IPv4 with options, TCP through flags */

static __always_inline int tc_count(void)
{
	__u32 key = REASON_OK;
	__u64 *c = bpf_map_lookup_elem(&tc_stats, &key);
	if (c)
		*c += 1;
	return TC_NEXT;
}

/* ingress_socket finds the established socket a packet to a proxy port is
 * for; NULL for other packets, listeners (handshakes) and unknown flows.
 * The returned socket holds a reference: release it. */
static __always_inline struct bpf_sock *ingress_socket(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (parse_packet(data, data_end, p) != PARSE_OK) {
		/* Headers beyond the linear head: pull them in and look again. */
		__u32 need = skb->len < HEADERS_MAX ? skb->len : HEADERS_MAX;
		if (data_end - data >= need || bpf_skb_pull_data(skb, need) < 0)
			return 0;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		__builtin_memset(p, 0, sizeof(*p));
		if (parse_packet(data, data_end, p) != PARSE_OK)
			return 0;
	}
	if (p->l4proto != IPPROTO_TCP || !p->has_ports || p->frag || !is_proxy_port(p->dport))
		return 0;

	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	if (p->family == 4) {
		t.ipv4.saddr = p->saddr[0];
		t.ipv4.daddr = p->daddr[0];
		t.ipv4.sport = bpf_htons(p->sport);
		t.ipv4.dport = bpf_htons(p->dport);
		sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	} else {
		__builtin_memcpy(t.ipv6.saddr, p->saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, p->daddr, 16);
		t.ipv6.sport = bpf_htons(p->sport);
		t.ipv6.dport = bpf_htons(p->dport);
		sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	}
	if (sk && sk->state == TCP_LISTEN_) {
		bpf_sk_release(sk); /* a handshake: no connection yet */
		return 0;
	}
	return sk;
}

SEC("tc")
int regedge_tc_ingress(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct bpf_sock *sk = ingress_socket(skb, &p);
	if (!sk)
		return TC_NEXT;
	/* The client's FIN or RST: the connection is ending, count what it holds. */
	account(skb, sk, DIR_INGRESS, (p.tcp_flags & 0x05) != 0);
	bpf_sk_release(sk);
	return tc_count();
}

SEC("tc")
int regedge_tc_egress(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return TC_NEXT;
	sk = bpf_sk_fullsock(sk); /* not a request or timewait socket */
	if (!sk || sk->protocol != IPPROTO_TCP || !is_proxy_port(sk->src_port))
		return TC_NEXT;
	account(skb, sk, DIR_EGRESS, 1);
	return tc_count();
}
