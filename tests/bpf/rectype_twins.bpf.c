// SPDX-License-Identifier: GPL-2.0
/* A third-party object in which two structs of its own have the size of
 * the records of ring buffer `rb` (16 bytes): `struct pair_a`, kept in
 * BTF by a global pointer, and `struct pair_b`, the value of hash map
 * `last`. Which one the records are cannot be told by size, so they stay
 * hex. `last`'s key, `struct pair_key`, is 16 bytes too but is no
 * candidate: keys are not records. Driven by getpid() of `target_tid`. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct pair_a {
	__u64 seq;
	__u64 pid;
};

struct pair_b {
	__u32 hi;
	__u32 lo;
	__u64 stamp;
};

struct pair_key {
	__u64 tid;
	__u64 zero;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, struct pair_key);
	__type(value, struct pair_b);
} last SEC(".maps");

const volatile __u32 target_tid = 0;
__u64 seq = 0;

struct pair_a *unused_pair_a __attribute__((unused));

SEC("tracepoint/syscalls/sys_enter_getpid")
int on_getpid(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pair_key key = {};
	struct pair_b b = {};
	struct pair_a *r;
	__u64 n;

	if ((__u32)pid_tgid != target_tid)
		return 0;
	n = ++seq;
	r = bpf_ringbuf_reserve(&rb, sizeof(*r), 0);
	if (r) {
		r->seq = n;
		r->pid = (__u32)pid_tgid;
		bpf_ringbuf_submit(r, 0);
	}
	key.tid = (__u32)pid_tgid;
	b.lo = (__u32)n;
	bpf_map_update_elem(&last, &key, &b, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
