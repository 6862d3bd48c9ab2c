// SPDX-License-Identifier: GPL-2.0
/* A probe that costs the host too much on purpose: on every system call
 * of thread `target_tid` it spins through `rounds` iterations of a
 * multiply-xorshift, so that a syscall-heavy workload makes its run time
 * a large share of a CPU. Other threads' calls return at once. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 target_tid = 0;
const volatile __u32 rounds = 4000;
__u64 churn = 0;

SEC("raw_tracepoint/sys_enter")
int on_sys_enter(void *ctx)
{
	__u64 x = bpf_get_current_pid_tgid();

	if ((__u32)x != target_tid)
		return 0;
	for (__u32 i = 0; i < 8192 && i < rounds; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x *= 0x2545f4914f6cdd1dULL;
	}
	churn += x;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
