// SPDX-License-Identifier: GPL-2.0
/* exec: one event per program started (tracepoint sched_process_exec). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct exec_event {
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	char comm[16];
	char filename[256];	/* as given to execve, cut at 255 bytes */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* An event that cannot be queued is counted here (key 0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int trace_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	/* The low 16 bits of a __data_loc are the offset of the string. */
	__u32 filename_off = ctx->__data_loc_filename & 0xffff;
	struct exec_event *ev;
	__u32 zero = 0;
	__u64 *count;

	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count = bpf_map_lookup_elem(&lost, &zero);
		if (count)
			*count += 1;
		return 0;
	}
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename),
				  (void *)ctx + filename_off);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* Ring buffers carry no value type: this keeps struct exec_event in the
 * object's BTF, where the collector finds the records' layout. */
const struct exec_event *unused_exec_event __attribute__((unused));

char LICENSE[] SEC("license") = "GPL";
