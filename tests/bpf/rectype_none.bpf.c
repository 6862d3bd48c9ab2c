// SPDX-License-Identifier: GPL-2.0
/* A third-party object whose ring buffer `rb` carries `struct lone_rec`
 * (24 bytes) without keeping it in its BTF (no global of that type), so
 * nothing tells what the records are: they stay hex. Its only struct of
 * its own is `struct tune` (8 bytes), a constant. Driven by getpid() of
 * `target_tid`. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct lone_rec {
	__u64 seq;
	__u32 pid;
	__u32 flags;
	__u64 stamp;
};

struct tune {
	__u32 every;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} rb SEC(".maps");

const volatile __u32 target_tid = 0;
const volatile struct tune tune = { .every = 1, .flags = 5 };
__u64 seq = 0;

SEC("tracepoint/syscalls/sys_enter_getpid")
int on_getpid(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct lone_rec *r;
	__u64 n;

	if ((__u32)pid_tgid != target_tid)
		return 0;
	n = ++seq;
	r = bpf_ringbuf_reserve(&rb, sizeof(*r), 0);
	if (r) {
		r->seq = n;
		r->pid = (__u32)pid_tgid;
		r->flags = tune.flags;
		r->stamp = 0;
		bpf_ringbuf_submit(r, 0);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
