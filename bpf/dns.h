/* SPDX-License-Identifier: GPL-2.0 */
/* dns: the event and counters of the XDP DNS parser (dns.bpf.c), shared
 * with the user-space readers. Include after vmlinux.h or <linux/types.h>. */
#ifndef GRAIND_BPF_DNS_H
#define GRAIND_BPF_DNS_H

#include "net.h"

#define DNS_PORT	53
#define DNS_QNAME_MAX	255	/* RFC 1035: a name is at most 255 bytes on the wire */
#define DNS_LABEL_MAX	63

enum dns_opcode {
	QUERY	= 0,
	IQUERY	= 1,
	STATUS	= 2,
	NOTIFY	= 4,
	UPDATE	= 5,
};

enum dns_rcode {
	NOERROR		= 0,
	FORMERR		= 1,
	SERVFAIL	= 2,
	NXDOMAIN	= 3,
	NOTIMP		= 4,
	REFUSED		= 5,
};

enum dns_qtype {
	A	= 1,
	NS	= 2,
	CNAME	= 5,
	SOA	= 6,
	PTR	= 12,
	MX	= 15,
	TXT	= 16,
	AAAA	= 28,
	SRV	= 33,
	NAPTR	= 35,
	OPT	= 41,
	DS	= 43,
	DNSKEY	= 48,
	SVCB	= 64,
	HTTPS	= 65,
	AXFR	= 252,
	ANY	= 255,
	CAA	= 257,
};

/* Why a DNS packet produced no event: the keys of the `errors` map.
 * They start at 1 so that the parser can return 0 or -reason. */
enum dns_error {
	TRUNCATED		= 1,	/* ends inside the DNS header or question */
	BAD_LABEL		= 2,	/* label length 64..191 (reserved bits) */
	COMPRESSION_POINTER	= 3,	/* pointer in the question's name */
	TOO_LONG		= 4,	/* name longer than 255 bytes */
	RINGBUF_FULL		= 5,	/* parsed, but the event could not be queued */
};

/* One DNS message (query or response) seen on UDP port 53. Addresses and
 * ports are in network byte order; saddr/daddr are set for IPv4,
 * saddr6/daddr6 for IPv6 (the others stay zero). */
struct dns_event {
	__u32 ifindex;
	enum l3_proto l3_proto;
	__u32 saddr;
	__u32 daddr;
	__u8 saddr6[16];
	__u8 daddr6[16];
	__u16 sport;
	__u16 dport;
	__u16 vlan_id;		/* outer 802.1Q/802.1ad tag, 0 when untagged */
	__u16 id;
	__u16 flags;		/* the header's flags word, host order */
	__u8 response;		/* QR bit: 0 query, 1 response */
	__u8 truncated;		/* TC bit */
	enum dns_opcode opcode;
	enum dns_rcode rcode;
	__u16 qdcount;
	__u16 ancount;
	enum dns_qtype qtype;	/* of the first question; 0 when qdcount is 0 */
	__u16 qclass;
	__u16 qname_len;	/* strlen(qname) */
	char qname[256];	/* dotted, "." for the root, "" without a question */
};

#endif
