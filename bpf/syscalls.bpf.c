// SPDX-License-Identifier: GPL-2.0
/* syscalls: system calls counted by number at sys_enter.
 *
 * The raw tracepoint sees every system call of the host; the read-only
 * constants target_pid and target_cgroup (set through the probe's
 * constants, 0 meaning any) narrow it to one process or one cgroup. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct syscall_key {
	__u32 syscall_nr;
};

struct syscall_count {
	__u64 count;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct syscall_key);
	__type(value, struct syscall_count);
} counts SEC(".maps");

const volatile __u32 target_pid = 0;		/* a process id (tgid); 0: all */
const volatile __u64 target_cgroup = 0;		/* a cgroup v2 id; 0: all */

SEC("raw_tracepoint/sys_enter")
int count_syscalls(struct bpf_raw_tracepoint_args *ctx)
{
	struct syscall_key key = { .syscall_nr = (__u32)ctx->args[1] };
	struct syscall_count *value, first = { .count = 1 };

	if (target_pid && (bpf_get_current_pid_tgid() >> 32) != target_pid)
		return 0;
	if (target_cgroup && bpf_get_current_cgroup_id() != target_cgroup)
		return 0;
	value = bpf_map_lookup_elem(&counts, &key);
	if (value)
		value->count++;		/* per-CPU: no other writer */
	else
		bpf_map_update_elem(&counts, &key, &first, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
