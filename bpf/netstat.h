/* SPDX-License-Identifier: GPL-2.0 */
/* netstat: key and value of the `traffic` map of netstat.bpf.c, shared
 * with the user-space readers. Include after vmlinux.h or <linux/types.h>. */
#ifndef GRAIND_BPF_NETSTAT_H
#define GRAIND_BPF_NETSTAT_H

#include "net.h"

struct netstat_key {
	__u32 ifindex;
	enum direction direction;
	enum l3_proto l3_proto;		/* EtherType after any VLAN tags */
	enum l4_proto l4_proto;		/* IP protocol; L4_NONE when not IP */
};

struct netstat_value {
	__u64 packets;
	__u64 bytes;
};

#endif
