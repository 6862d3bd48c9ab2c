// SPDX-License-Identifier: GPL-2.0
/* One small counting program per hook kind, each adding to its own slot of
 * `counts`. Packet programs count only IPv4 UDP to port 9 (discard) so
 * that ARP and IPv6 noise stays out; task programs count only the process
 * `target_pid`, set through the probe's constants. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "counted.h"

enum hook_slot {
	SLOT_XDP,
	SLOT_TC,
	SLOT_TRACEPOINT,
	SLOT_RAW_TRACEPOINT,
	SLOT_UPROBE,
	SLOT_CGROUP_SKB,
	SLOT_PERF_EVENT,
	SLOT_KPROBE,
	SLOT_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

const volatile __u32 target_pid = 0;
const volatile char label[8] = "hooks";

static __always_inline void bump(__u32 slot)
{
	__u64 *value = bpf_map_lookup_elem(&counts, &slot);

	if (value)
		__sync_fetch_and_add(value, 1);
}

static __always_inline int is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_pid;
}

SEC("xdp")
int count_xdp(struct xdp_md *ctx)
{
	if (is_counted_frame((void *)(long)ctx->data, (void *)(long)ctx->data_end))
		bump(SLOT_XDP);
	return XDP_PASS;
}

SEC("tc")
int count_tc(struct __sk_buff *skb)
{
	if (is_counted_frame((void *)(long)skb->data, (void *)(long)skb->data_end))
		bump(SLOT_TC);
	return 0;	/* TCX_NEXT */
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int count_getpid(void *ctx)
{
	if (is_target())
		bump(SLOT_TRACEPOINT);
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int count_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	if (is_target())
		bump(SLOT_RAW_TRACEPOINT);
	return 0;
}

SEC("uprobe")
int count_uprobe(struct pt_regs *ctx)
{
	bump(SLOT_UPROBE);
	return 0;
}

SEC("cgroup_skb/ingress")
int count_cgroup_skb(struct __sk_buff *skb)
{
	struct iphdr ip;
	struct udphdr udp;

	/* The skb starts at the network header here. */
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) == 0 &&
	    ip.version == 4 && ip.protocol == IPPROTO_UDP_NR &&
	    bpf_skb_load_bytes(skb, ip.ihl * 4, &udp, sizeof(udp)) == 0 &&
	    udp.dest == bpf_htons(COUNT_PORT))
		bump(SLOT_CGROUP_SKB);
	return 1;
}

SEC("perf_event")
int count_perf_event(struct bpf_perf_event_data *ctx)
{
	bump(SLOT_PERF_EVENT);
	return 0;
}

SEC("kprobe/do_nanosleep")
int count_kprobe(struct pt_regs *ctx)
{
	bump(SLOT_KPROBE);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
