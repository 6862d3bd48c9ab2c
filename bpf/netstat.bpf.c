// SPDX-License-Identifier: GPL-2.0
/* netstat: packets and bytes by interface, direction, L3 and L4 protocol.
 *
 * netstat_xdp counts what arrives (XDP); netstat_tc_ingress and
 * netstat_tc_egress count both directions from TC. The counters live in a
 * per-CPU hash: no atomics on the packet path, summed when read. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "netstat.h"

#define ETH_P_8021Q	0x8100
#define ETH_P_8021AD	0x88A8
#define VLAN_MAX_DEPTH	2
#define TC_ACT_UNSPEC	(-1)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct netstat_key);
	__type(value, struct netstat_value);
} traffic SEC(".maps");

/* Fill the protocols of the packet in [data, end) into key. */
static __always_inline void classify(void *data, void *end, struct netstat_key *key)
{
	struct ethhdr *eth = data;
	void *pos = eth + 1;
	__u16 proto;

	key->l3_proto = L3_NONE;
	key->l4_proto = L4_NONE;
	if (pos > end)
		return;
	proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		struct vlan_hdr *vlan = pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > end)
			return;
		proto = vlan->h_vlan_encapsulated_proto;
		pos = vlan + 1;
	}
	key->l3_proto = bpf_ntohs(proto);
	if (key->l3_proto == IPV4) {
		struct iphdr *ip = pos;

		if ((void *)(ip + 1) <= end)
			key->l4_proto = ip->protocol;
	} else if (key->l3_proto == IPV6) {
		struct ipv6hdr *ip6 = pos;

		if ((void *)(ip6 + 1) <= end)
			key->l4_proto = ip6->nexthdr;
	}
}

static __always_inline void count(void *data, void *end, __u32 ifindex,
				  enum direction direction, __u64 bytes)
{
	struct netstat_key key = {
		.ifindex = ifindex,
		.direction = direction,
	};
	struct netstat_value *value, first = { .packets = 1, .bytes = bytes };

	classify(data, end, &key);
	value = bpf_map_lookup_elem(&traffic, &key);
	if (value) {
		value->packets++;
		value->bytes += bytes;
	} else {
		bpf_map_update_elem(&traffic, &key, &first, BPF_NOEXIST);
	}
}

SEC("xdp")
int netstat_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	count(data, end, ctx->ingress_ifindex, INGRESS, end - data);
	return XDP_PASS;
}

static __always_inline int count_skb(struct __sk_buff *skb, enum direction direction)
{
	count((void *)(long)skb->data, (void *)(long)skb->data_end, skb->ifindex,
	      direction, skb->len);
	return TC_ACT_UNSPEC;	/* let the next filter, or the kernel, decide */
}

SEC("tc")
int netstat_tc_ingress(struct __sk_buff *skb)
{
	return count_skb(skb, INGRESS);
}

SEC("tc")
int netstat_tc_egress(struct __sk_buff *skb)
{
	return count_skb(skb, EGRESS);
}

char LICENSE[] SEC("license") = "GPL";
