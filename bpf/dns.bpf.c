// SPDX-License-Identifier: GPL-2.0
/* dns: an XDP parser of DNS messages on UDP port 53.
 *
 * eth → up to two VLAN tags → IPv4 or IPv6 → UDP → DNS header and first
 * question. Each message becomes a dns_event in the `events` ring buffer;
 * each DNS packet that cannot be parsed is counted by reason in `errors`.
 * Every packet passes: the parser only watches. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "dns.h"

#define ETH_P_8021Q	0x8100
#define ETH_P_8021AD	0x88A8
#define VLAN_MAX_DEPTH	2
#define VLAN_VID_MASK	0x0fff
#define IP_OFFSET_MASK	0x1fff

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8);
	__type(key, enum dns_error);
	__type(value, __u64);
} errors SEC(".maps");

/* Where the parser is in the packet. */
struct cursor {
	void *pos;
	void *end;
};

static __always_inline void count_error(enum dns_error reason)
{
	__u64 one = 1, *count;

	count = bpf_map_lookup_elem(&errors, &reason);
	if (count)
		*count += 1;	/* per-CPU: no other writer */
	else
		bpf_map_update_elem(&errors, &reason, &one, BPF_NOEXIST);
}

/* The EtherType after the Ethernet header and any VLAN tags; 0 when cut. */
static __always_inline __u16 parse_eth(struct cursor *c, __u16 *vlan_id)
{
	struct ethhdr *eth = c->pos;
	__u16 proto;

	if ((void *)(eth + 1) > c->end)
		return 0;
	c->pos = eth + 1;
	proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		struct vlan_hdr *vlan = c->pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > c->end)
			return 0;
		if (i == 0)
			*vlan_id = bpf_ntohs(vlan->h_vlan_TCI) & VLAN_VID_MASK;
		proto = vlan->h_vlan_encapsulated_proto;
		c->pos = vlan + 1;
	}
	return bpf_ntohs(proto);
}

/* Step over the IP header; true when its payload is a UDP header. */
static __always_inline bool skip_ip(struct cursor *c, __u16 l3)
{
	if (l3 == IPV4) {
		struct iphdr *ip = c->pos;
		__u32 hdr_len;

		if ((void *)(ip + 1) > c->end)
			return false;
		hdr_len = ip->ihl * 4;
		/* Later fragments carry no UDP header. */
		if (hdr_len < sizeof(*ip) || ip->protocol != UDP ||
		    (ip->frag_off & bpf_htons(IP_OFFSET_MASK)))
			return false;
		c->pos += hdr_len;
		return true;
	}
	if (l3 == IPV6) {
		struct ipv6hdr *ip6 = c->pos;

		/* Extension headers before UDP are not followed. */
		if ((void *)(ip6 + 1) > c->end || ip6->nexthdr != UDP)
			return false;
		c->pos = ip6 + 1;
		return true;
	}
	return false;
}

/* The addresses of the IP header skip_ip() accepted. */
static __always_inline void copy_addrs(struct dns_event *ev, __u16 l3, void *ip_hdr)
{
	if (l3 == IPV4) {
		struct iphdr *ip = ip_hdr;

		ev->saddr = ip->saddr;
		ev->daddr = ip->daddr;
	} else {
		struct ipv6hdr *ip6 = ip_hdr;

		__builtin_memcpy(ev->saddr6, &ip6->saddr, sizeof(ev->saddr6));
		__builtin_memcpy(ev->daddr6, &ip6->daddr, sizeof(ev->daddr6));
	}
}

/* Decode the first question's name from wire labels into dotted text.
 * Byte i of the wire name lands at qname[i - 1]: a length byte becomes
 * the dot before its label, and the final zero ends the string. Returns
 * the wire length, or a negative dns_error. */
static __always_inline int parse_qname(struct cursor *c, char *qname)
{
	__u32 label_left = 0;
	__u8 *wire = c->pos;

#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < DNS_QNAME_MAX; i++) {
		__u8 *p = wire + i;
		__u8 b;

		if ((void *)(p + 1) > c->end)
			return -TRUNCATED;
		b = *p;
		if (label_left) {
			if (i > 0)
				qname[(i - 1) & 0xff] = b;
			label_left--;
			continue;
		}
		if (b == 0) {
			if (i == 0)
				qname[0] = '.';
			else
				qname[(i - 1) & 0xff] = 0;
			return i + 1;
		}
		if ((b & 0xc0) == 0xc0)
			return -COMPRESSION_POINTER;
		if (b > DNS_LABEL_MAX)
			return -BAD_LABEL;
		if (i > 0)
			qname[(i - 1) & 0xff] = '.';
		label_left = b;
	}
	return -TOO_LONG;
}

/* Parse the DNS message at c->pos into ev; 0 or a negative dns_error. */
static __always_inline int parse_dns(struct cursor *c, struct dns_event *ev)
{
	struct dns_hdr {
		__be16 id, flags, qdcount, ancount, nscount, arcount;
	} *hdr = c->pos;
	struct dns_question_tail {
		__be16 qtype, qclass;
	} *tail;
	__u16 flags;
	int len;

	if ((void *)(hdr + 1) > c->end)
		return -TRUNCATED;
	flags = bpf_ntohs(hdr->flags);
	ev->id = bpf_ntohs(hdr->id);
	ev->flags = flags;
	ev->response = flags >> 15;
	ev->opcode = (flags >> 11) & 0xf;
	ev->truncated = (flags >> 9) & 1;
	ev->rcode = flags & 0xf;
	ev->qdcount = bpf_ntohs(hdr->qdcount);
	ev->ancount = bpf_ntohs(hdr->ancount);
	if (ev->qdcount == 0)
		return 0;
	c->pos = hdr + 1;
	len = parse_qname(c, ev->qname);
	if (len < 0)
		return len;
	ev->qname_len = len > 1 ? len - 2 : 1;
	tail = c->pos + (len & 0x1ff);
	if ((void *)(tail + 1) > c->end)
		return -TRUNCATED;
	ev->qtype = bpf_ntohs(tail->qtype);
	ev->qclass = bpf_ntohs(tail->qclass);
	return 0;
}

SEC("xdp")
int dns_parse(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct dns_event *ev;
	struct udphdr *udp;
	__u16 vlan_id = 0, l3;
	void *ip;
	int ret;

	l3 = parse_eth(&c, &vlan_id);
	ip = c.pos;
	if (!skip_ip(&c, l3))
		return XDP_PASS;
	udp = c.pos;
	if ((void *)(udp + 1) > c.end)
		return XDP_PASS;
	if (udp->source != bpf_htons(DNS_PORT) && udp->dest != bpf_htons(DNS_PORT))
		return XDP_PASS;
	c.pos = udp + 1;

	/* Parse straight into the ring buffer; a failure discards the slot. */
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_error(RINGBUF_FULL);
		return XDP_PASS;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ifindex = ctx->ingress_ifindex;
	ev->l3_proto = l3;
	ev->vlan_id = vlan_id;
	copy_addrs(ev, l3, ip);
	ev->sport = udp->source;
	ev->dport = udp->dest;
	ret = parse_dns(&c, ev);
	if (ret < 0) {
		count_error(-ret);
		bpf_ringbuf_discard(ev, 0);
		return XDP_PASS;
	}
	bpf_ringbuf_submit(ev, 0);
	return XDP_PASS;
}

/* Ring buffers carry no value type: this keeps struct dns_event in the
 * object's BTF, where the collector finds the records' layout. */
const struct dns_event *unused_dns_event __attribute__((unused));

char LICENSE[] SEC("license") = "GPL";
