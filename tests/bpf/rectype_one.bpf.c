// SPDX-License-Identifier: GPL-2.0
/* A third-party object whose records are named unlike their maps: ring
 * buffer `rb` carries `struct sample_rec` and, after every second one, a
 * `struct tick_rec`; perf event array `out` carries `struct out_rec`.
 * Each is kept in the object's BTF by an unused global pointer, so
 * graind tells them apart by size alone. The program takes
 * its context as the kernel's 64-byte `struct trace_event_raw_sys_enter`
 * and reads the task with CO-RE, which puts kernel structs into the BTF
 * as well, one of them as large as `struct sample_rec`: neither counts
 * as a candidate. Driven by getpid() of thread `target_tid`. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct sample_rec {
	__u32 pid;
	__u32 tgid;
	__u64 seq;
	char comm[16];
	__u32 daddr;
	__u16 dport;
	__u16 kind;
	__u64 total;
	__s64 delta;
	__u64 cookie;
};

struct tick_rec {
	__u64 seq;
	__u64 half;
	__u32 pid;
	__u32 even;
};

/* 10 bytes: the kernel pads a perf record to 12. */
struct out_rec {
	__u32 pid;
	__u32 seq;
	__u16 code;
} __attribute__((packed));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} out SEC(".maps");

const volatile __u32 target_tid = 0;
__u64 seq = 0;

struct sample_rec *unused_sample_rec __attribute__((unused));
struct tick_rec *unused_tick_rec __attribute__((unused));
struct out_rec *unused_out_rec __attribute__((unused));

SEC("tracepoint/syscalls/sys_enter_getpid")
int on_getpid(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct out_rec o = {};
	struct sample_rec *r;
	struct tick_rec *t;
	__u64 n;

	if ((__u32)pid_tgid != target_tid)
		return 0;
	n = ++seq;
	r = bpf_ringbuf_reserve(&rb, sizeof(*r), 0);
	if (r) {
		r->pid = (__u32)pid_tgid;
		r->tgid = BPF_CORE_READ(task, tgid);
		r->seq = n;
		bpf_get_current_comm(r->comm, sizeof(r->comm));
		r->daddr = bpf_htonl(0xc6120000 + (__u32)n);   /* 198.18.0.n */
		r->dport = bpf_htons(8000 + (__u16)n);
		r->kind = 2;
		r->total = n * 10;
		r->delta = -(__s64)n;
		r->cookie = 0xabcd0000 + n;
		bpf_ringbuf_submit(r, 0);
	}
	if (!(n & 1) && (t = bpf_ringbuf_reserve(&rb, sizeof(*t), 0))) {
		t->seq = n;
		t->half = n / 2;
		t->pid = (__u32)pid_tgid;
		t->even = 1;
		bpf_ringbuf_submit(t, 0);
	}
	o.pid = (__u32)pid_tgid;
	o.seq = (__u32)n;
	o.code = 7;
	bpf_perf_event_output(ctx, &out, BPF_F_CURRENT_CPU, &o, sizeof(o));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
