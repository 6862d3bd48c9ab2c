// SPDX-License-Identifier: GPL-2.0
/* One link of an XDP chain in libxdp's dispatcher: chain_count counts the
 * frames hooks.bpf.c counts (IPv4 UDP to port 9) and gives them the
 * verdict `verdict`; everything else passes. Written for libxdp, with a run
 * config of its own (priority 40, the chain goes on after XDP_PASS) that
 * a probe's spec may override. chain_pass only passes: a second XDP
 * program of the same object. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "counted.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

const volatile __u32 verdict = XDP_PASS;

/* XDP_RUN_CONFIG(chain_count) of libxdp's xdp/xdp_helpers.h, spelled out. */
struct {
	__uint(priority, 40);
	__uint(XDP_PASS, 1);
} _chain_count SEC(".xdp_run_config");

SEC("xdp")
int chain_count(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *n;

	if (!is_counted_frame((void *)(long)ctx->data, (void *)(long)ctx->data_end))
		return XDP_PASS;
	n = bpf_map_lookup_elem(&counts, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	return verdict;
}

SEC("xdp")
int chain_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
