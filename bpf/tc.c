// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * regedge TC programs (TCX ingress/egress, or clsact direct-action):
 *   ingress: TCP to a proxy port. On a flow's first payload segment, find
 *            X-Bun-Config-Dump (else X-Bun-Registry-Hash) in the request head
 *            (case-insensitive names, bounded scan), check the state by §1 and
 *            write a flow tag keyed by the 4-tuple. Tagged flows are counted
 *            per registry hash.
 *   egress:  TCP from a proxy port: counted per registry hash of its flow.
 * Neither drops: the tag is a hint the proxy re-checks.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "include/reason.h"
#include "include/protocol.h"
#include "include/parse.h"
#include "include/maps.h"
#include "include/ports.h"
#include "include/flow.h"

char __license[] SEC("license") = "Dual BSD/GPL";

struct stats_map tc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_tag);
} flow_tags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct head_scratch);
} head_scratch_map SEC(".maps");

#include "include/scan.h"

/* tcp_payload finds the TCP payload of a parsed packet in the linear head. */
static __always_inline int tcp_payload(void *data, void *data_end, const struct pkt *p, __u32 *off,
				       __u32 *len)
{
	__u8 *tcp = data + (p->l4off & 0xffff);
	if ((void *)(tcp + 20) > data_end || p->l3_bad)
		return -1;
	__u32 doff = (tcp[12] >> 4) * 4;
	if (doff < 20 || doff > p->l4len)
		return -1;
	*off = p->l4off + doff;
	*len = p->l4len - doff;
	return 0;
}

#define TC_NEXT -1 /* TCX_NEXT / TC_ACT_UNSPEC: let the packet go on */

static __always_inline int tc_count(int reason)
{
	__u32 key = reason;
	__u64 *c = bpf_map_lookup_elem(&tc_stats, &key);
	if (c)
		*c += 1;
	return TC_NEXT;
}

/* flow_key_of builds the key with the client as source, the proxy as dest. */
static __always_inline void flow_key_of(const struct pkt *p, int from_client, struct flow_key *k)
{
	k->family = p->family;
	if (from_client) {
		__builtin_memcpy(k->client, p->saddr, 16);
		__builtin_memcpy(k->server, p->daddr, 16);
		k->client_port = p->sport;
		k->server_port = p->dport;
	} else {
		__builtin_memcpy(k->client, p->daddr, 16);
		__builtin_memcpy(k->server, p->saddr, 16);
		k->client_port = p->dport;
		k->server_port = p->sport;
	}
}

static __always_inline void tag_flow(struct __sk_buff *skb, const struct pkt *p, struct flow_key *k,
				     __u32 payload_off, __u32 payload_len)
{
	__u32 zero = 0;
	struct head_scratch *hs = bpf_map_lookup_elem(&head_scratch_map, &zero);
	struct regedge_cfg *cfg = bpf_map_lookup_elem(&config_map, &zero);
	if (!hs || !cfg)
		return;
	__u32 n = payload_len < HEAD_SCAN ? payload_len : HEAD_SCAN;
	n = ((n - 1) & (HEAD_SCAN - 1)) + 1; /* 1..HEAD_SCAN in a form the verifier follows */
	if (n < 1 || n > HEAD_SCAN)
		return;
	if (bpf_skb_load_bytes(skb, payload_off, hs->b, n) < 0)
		return;
	/* Bytes past n must not match: zero the slack the scan may read. */
	__builtin_memset(hs->b + HEAD_SCAN, 0, HEAD_SLACK);

	struct flow_tag tag = {};
	find_config(hs, n, cfg, &tag);
	tag.last_ns = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&flow_tags, k, &tag, BPF_ANY);
}

SEC("tc")
int regedge_tc_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct pkt p = {};

	__u32 payload_off = 0, payload_len = 0;
	if (parse_packet(data, data_end, &p) != PARSE_OK || p.l4proto != IPPROTO_TCP || p.frag ||
	    !p.has_ports || !is_proxy_port(p.dport))
		return TC_NEXT; /* not ours */
	if (tcp_payload(data, data_end, &p, &payload_off, &payload_len) < 0)
		return tc_count(REASON_OK);

	struct flow_key k = {};
	flow_key_of(&p, 1, &k);
	struct flow_tag *tag = bpf_map_lookup_elem(&flow_tags, &k);
	if (!tag && payload_len > 0) {
		tag_flow(skb, &p, &k, payload_off, payload_len);
		tag = bpf_map_lookup_elem(&flow_tags, &k);
	}
	if (!tag)
		return tc_count(REASON_OK);

	tag->last_ns = bpf_ktime_get_boot_ns();
	count_registry(tag->hash, DIR_INGRESS, skb->len);
	/* FIN or RST from the client: the flow is ending, drop its tag. */
	if (p.tcp_flags & 0x05)
		bpf_map_delete_elem(&flow_tags, &k);
	return tc_count(REASON_OK);
}

SEC("tc")
int regedge_tc_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct pkt p = {};

	if (parse_packet(data, data_end, &p) != PARSE_OK || p.l4proto != IPPROTO_TCP || p.frag ||
	    !p.has_ports || !is_proxy_port(p.sport))
		return TC_NEXT; /* not ours */

	struct flow_key k = {};
	flow_key_of(&p, 0, &k);
	struct flow_tag *tag = bpf_map_lookup_elem(&flow_tags, &k);
	if (tag)
		count_registry(tag->hash, DIR_EGRESS, skb->len);
	return tc_count(REASON_OK);
}
