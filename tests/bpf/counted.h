// SPDX-License-Identifier: GPL-2.0
/* What the packet test programs count: IPv4 UDP to port 9 (discard), so
 * that ARP and IPv6 noise stays out. Include after vmlinux.h and
 * bpf_endian.h. */
#ifndef GRAIND_TEST_COUNTED_H
#define GRAIND_TEST_COUNTED_H

#define ETH_P_IP	0x0800
#define IPPROTO_UDP_NR	17
#define COUNT_PORT	9

/* An IPv4 header at ip (bounded by end) carrying UDP to COUNT_PORT. */
static __always_inline int is_counted_udp(void *ip_start, void *end)
{
	struct iphdr *ip = ip_start;
	struct udphdr *udp;

	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP_NR || ip->ihl != 5)
		return 0;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return 0;
	return udp->dest == bpf_htons(COUNT_PORT);
}

static __always_inline int is_counted_frame(void *data, void *end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	return is_counted_udp(eth + 1, end);
}

#endif
