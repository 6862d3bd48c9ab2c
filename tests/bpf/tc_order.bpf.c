// SPDX-License-Identifier: GPL-2.0
/* Where a TC program runs among others on one hook, told by the packets:
 * each counted packet arrives with the mark the programs before it left,
 * and leaves with mark * 10 + `stamp` (set through the probe's
 * constants). `marks` counts the packets by the mark they arrived with,
 * so with stamps 1, 2, 3 run in the order 2, 1, 3 the programs see the
 * marks 0, 2 and 21. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "counted.h"

#define TCX_NEXT (-1)

const volatile __u32 stamp = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} marks SEC(".maps");

SEC("tc")
int order_tc(struct __sk_buff *skb)
{
	__u32 mark = skb->mark;
	__u64 one = 1, *n;

	if (!is_counted_frame((void *)(long)skb->data, (void *)(long)skb->data_end))
		return TCX_NEXT;
	n = bpf_map_lookup_elem(&marks, &mark);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&marks, &mark, &one, BPF_NOEXIST);
	skb->mark = mark * 10 + stamp;
	return TCX_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
