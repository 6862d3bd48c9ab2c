// SPDX-License-Identifier: GPL-2.0
/* An fentry program: needs BPF trampolines and kernel BTF for its target. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 calls;

SEC("fentry/do_nanosleep")
int BPF_PROG(on_nanosleep)
{
	__sync_fetch_and_add(&calls, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
