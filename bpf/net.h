/* SPDX-License-Identifier: GPL-2.0 */
/* Protocol names shared by the packet probes and their user-space readers.
 * The enums carry the names into BTF, so keys and events decode as "IPV4",
 * "UDP", ... instead of bare numbers. Values are the wire numbers: an
 * EtherType for L3, an IP protocol number for L4, so a protocol without a
 * name here still reads as its number. */
#ifndef GRAIND_BPF_NET_H
#define GRAIND_BPF_NET_H

enum l3_proto {
	L3_NONE	= 0,		/* no EtherType: too short to tell */
	IPV4	= 0x0800,
	ARP	= 0x0806,
	IPV6	= 0x86DD,
};

enum l4_proto {
	HOPOPT	= 0,
	ICMP	= 1,
	IGMP	= 2,
	TCP	= 6,
	UDP	= 17,
	GRE	= 47,
	ESP	= 50,
	ICMPV6	= 58,
	SCTP	= 132,
	L4_NONE	= 256,		/* not IP, or the IP header is cut short */
};

enum direction {
	INGRESS	= 0,
	EGRESS	= 1,
};

#endif
