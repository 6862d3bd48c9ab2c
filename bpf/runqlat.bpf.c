// SPDX-License-Identifier: GPL-2.0
/* runqlat: how long runnable tasks wait for a CPU, as a log2 histogram.
 *
 * A task is stamped when it is woken (sched_wakeup, sched_wakeup_new) or
 * preempted while still runnable (sched_switch, prev); when it is switched
 * in, the wait goes into slot log2(microseconds) of `latency_us`. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "output.h"

#define MAX_SLOTS	32
#define TASK_RUNNING	0

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);		/* pid */
	__type(value, __u64);		/* when it became runnable, ns */
} start SEC(".maps") GRAIND_OUTPUT_NONE;

/* Slot k counts waits of [2^k, 2^(k+1)) microseconds; slot 0 also 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} latency_us SEC(".maps") GRAIND_OUTPUT_LOG2_HISTOGRAM;

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

#pragma unroll
	for (int shift = 32; shift > 0; shift >>= 1) {
		if (v >= (1ULL << shift)) {
			v >>= shift;
			r += shift;
		}
	}
	return r;
}

static __always_inline void stamp(struct task_struct *task)
{
	__u32 pid = BPF_CORE_READ(task, pid);
	__u64 now = bpf_ktime_get_ns();

	if (pid)	/* the idle task waits for nothing */
		bpf_map_update_elem(&start, &pid, &now, BPF_ANY);
}

SEC("raw_tracepoint/sched_wakeup")
int runq_wakeup(struct bpf_raw_tracepoint_args *ctx)
{
	stamp((struct task_struct *)ctx->args[0]);
	return 0;
}

SEC("raw_tracepoint/sched_wakeup_new")
int runq_wakeup_new(struct bpf_raw_tracepoint_args *ctx)
{
	stamp((struct task_struct *)ctx->args[0]);
	return 0;
}

/* sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...) */
SEC("raw_tracepoint/sched_switch")
int runq_switch(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *prev = (struct task_struct *)ctx->args[1];
	struct task_struct *next = (struct task_struct *)ctx->args[2];
	__u64 *then, *count;
	__u32 pid, slot;

	if (BPF_CORE_READ(prev, __state) == TASK_RUNNING)
		stamp(prev);
	pid = BPF_CORE_READ(next, pid);
	then = bpf_map_lookup_elem(&start, &pid);
	if (!then)
		return 0;
	slot = log2_u64((bpf_ktime_get_ns() - *then) / 1000);
	bpf_map_delete_elem(&start, &pid);
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	count = bpf_map_lookup_elem(&latency_us, &slot);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
