// SPDX-License-Identifier: GPL-2.0
/* The verifier must refuse this: it reads past the end of a map value. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("xdp")
int read_past_end(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *arr;

	arr = bpf_map_lookup_elem(&counters, &key);
	if (!arr)
		return XDP_PASS;
	return arr[8] ? XDP_DROP : XDP_PASS;	/* the value holds one __u64 */
}

char LICENSE[] SEC("license") = "GPL";
