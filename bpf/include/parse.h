/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing for the XDP program: Ethernet, up to two VLAN tags, IPv4 or
 * IPv6 (extension headers to a fixed depth), then the L4 ports. A straight
 * line of small functions; each bounds check sits next to the access it
 * protects.
 *
 * The parser only locates: it finds the ports so that the caller can tell
 * whether a packet is addressed to the agent at all. Packets that are not
 * (or whose ports cannot be found) are someone else's and pass untouched;
 * the stack judges them. The L3/L4 sanity checks (l3_bad, udp_len) are for
 * the caller to run on its own packets only, and each one mirrors a check
 * after which Linux itself drops the packet. The IPv4 header checksum is
 * left to the stack.
 */
#ifndef REGEDGE_PARSE_H
#define REGEDGE_PARSE_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT 4

#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff

enum parse_result {
	PARSE_OK = 0,      /* ports found (or a fragment without them) */
	PARSE_UNKNOWN = 1, /* not IP, or the ports cannot be found: not ours to judge */
};

struct pkt {
	__u8 family;     /* 4 or 6 */
	__u8 l4proto;    /* IPPROTO_UDP, IPPROTO_TCP or other */
	__u8 frag;       /* any fragment */
	__u8 frag_first; /* fragment with offset 0: L4 ports readable */
	__u8 tcp_flags;  /* byte 13 of the TCP header */
	__u8 has_ports;
	/* Set when Linux would drop the packet for its IP header: IPv4 version
	 * other than 4, total length below the header or past the frame; IPv6
	 * payload length past the frame. Only meaningful for our own packets. */
	__u8 l3_bad;
	__u8 ihl;           /* IPv4 header words */
	__u16 sport, dport; /* host order */
	__u32 saddr[4];     /* network order; IPv4 in saddr[0] */
	__u32 daddr[4];
	__u32 l3off;        /* offset of the IP header from data */
	__u32 l4off;        /* offset of the L4 header from data */
	__u32 l4len;        /* L4 bytes per the IP header (header + payload) */
};

struct vlan_hdr_ {
	__be16 tci;
	__be16 proto;
};

/* parse_l4 reads the ports (and TCP flags) at off. */
static __always_inline int parse_l4(void *data, void *data_end, struct pkt *p, __u32 off)
{
	p->l4off = off;
	if (p->frag && !p->frag_first)
		return PARSE_OK; /* no L4 header in this fragment */
	if (p->l4proto != IPPROTO_UDP && p->l4proto != IPPROTO_TCP)
		return PARSE_OK;
	__u8 *l4 = data + off;
	if (p->l4proto == IPPROTO_TCP) {
		if ((void *)(l4 + 14) > data_end) /* through the flags */
			return PARSE_UNKNOWN;
		p->tcp_flags = l4[13];
	} else if ((void *)(l4 + 8) > data_end) {
		return PARSE_UNKNOWN;
	}
	p->sport = ((__u16)l4[0] << 8) | l4[1];
	p->dport = ((__u16)l4[2] << 8) | l4[3];
	p->has_ports = 1;
	return PARSE_OK;
}

static __always_inline int parse_ipv4(void *data, void *data_end, struct pkt *p, __u32 off)
{
	struct iphdr *ip = data + off;
	if ((void *)(ip + 1) > data_end)
		return PARSE_UNKNOWN;
	__u32 ihl = ip->ihl;
	if (ihl < 5)
		return PARSE_UNKNOWN; /* no place for the ports */
	__u32 tot = bpf_ntohs(ip->tot_len);
	__u32 avail = (__u32)(data_end - data) - off;
	p->family = 4;
	p->ihl = ihl;
	p->l3off = off;
	p->l4proto = ip->protocol;
	p->saddr[0] = ip->saddr;
	p->daddr[0] = ip->daddr;
	if (ip->version != 4 || tot < ihl * 4 || tot > avail)
		p->l3_bad = 1;
	else
		p->l4len = tot - ihl * 4;
	__u16 frag = bpf_ntohs(ip->frag_off);
	if (frag & (IP_MF | IP_OFFMASK)) {
		p->frag = 1;
		p->frag_first = (frag & IP_OFFMASK) == 0;
	}
	return parse_l4(data, data_end, p, off + ihl * 4);
}

static __always_inline int parse_ipv6(void *data, void *data_end, struct pkt *p, __u32 off)
{
	struct ipv6hdr *ip6 = data + off;
	if ((void *)(ip6 + 1) > data_end)
		return PARSE_UNKNOWN;
	__u32 plen = bpf_ntohs(ip6->payload_len);
	__u32 avail = (__u32)(data_end - data) - off - sizeof(*ip6);
	p->family = 6;
	p->l3off = off;
	if (ip6->version != 6 || plen > avail)
		p->l3_bad = 1;
	__builtin_memcpy(p->saddr, &ip6->saddr, 16);
	__builtin_memcpy(p->daddr, &ip6->daddr, 16);
	__u8 next = ip6->nexthdr;
	off += sizeof(*ip6);
	__u32 used = 0; /* extension header bytes */

#pragma clang loop unroll(full)
	for (int i = 0; i < MAX_IPV6_EXT; i++) {
		__u8 *h = data + off;
		__u32 hlen;
		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if ((void *)(h + 2) > data_end)
				return PARSE_UNKNOWN;
			hlen = ((__u32)h[1] + 1) * 8;
			break;
		case IPPROTO_AH:
			if ((void *)(h + 2) > data_end)
				return PARSE_UNKNOWN;
			hlen = ((__u32)h[1] + 2) * 4;
			break;
		case IPPROTO_FRAGMENT: {
			if ((void *)(h + 8) > data_end)
				return PARSE_UNKNOWN;
			__u16 fo = ((__u16)h[2] << 8) | h[3];
			p->frag = 1;
			p->frag_first = (fo & 0xfff8) == 0;
			hlen = 8;
			break;
		}
		default:
			goto done;
		}
		next = h[0];
		off += hlen;
		used += hlen;
		if (used > plen)
			return PARSE_UNKNOWN; /* Linux drops it; we cannot tell whose it was */
	}
	/* Still an extension header after MAX_IPV6_EXT: deeper than we look.
	 * Legal (Linux accepts any number), so the stack decides. */
	if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS ||
	    next == IPPROTO_AH || next == IPPROTO_FRAGMENT)
		return PARSE_UNKNOWN;
done:
	p->l4proto = next;
	p->l4len = plen - used;
	return parse_l4(data, data_end, p, off);
}

/* parse_packet fills p from an Ethernet frame. */
static __always_inline int parse_packet(void *data, void *data_end, struct pkt *p)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return PARSE_UNKNOWN;
	__u16 proto = bpf_ntohs(eth->h_proto);
	__u32 off = sizeof(*eth);

#pragma clang loop unroll(full)
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		if (proto != ETH_P_8021Q_ && proto != ETH_P_8021AD_)
			break;
		struct vlan_hdr_ *vh = data + off;
		if ((void *)(vh + 1) > data_end)
			return PARSE_UNKNOWN;
		proto = bpf_ntohs(vh->proto);
		off += sizeof(*vh);
	}

	if (proto == ETH_P_IP)
		return parse_ipv4(data, data_end, p, off);
	if (proto == ETH_P_IPV6)
		return parse_ipv6(data, data_end, p, off);
	return PARSE_UNKNOWN;
}

/*
 * udp_len returns the UDP length of one of our datagrams as Linux takes it,
 * or -1 when Linux drops the datagram for it (udp_rcv, __udp6_lib_rcv): a
 * length below 8 or past the IP payload is dropped; a shorter one trims the
 * payload (trailing bytes are not part of the datagram); 0 over IPv6 means
 * the IP payload length (RFC 2675).
 */
static __always_inline int udp_len(void *data, void *data_end, const struct pkt *p)
{
	__u8 *udp = data + (p->l4off & 0xffff);
	if ((void *)(udp + 8) > data_end)
		return -1;
	__u32 ulen = ((__u32)udp[4] << 8) | udp[5];
	if (ulen == 0 && p->family == 6)
		ulen = p->l4len;
	if (ulen < 8 || ulen > p->l4len)
		return -1;
	return ulen;
}

#endif
