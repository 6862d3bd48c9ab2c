// SPDX-License-Identifier: GPL-2.0
/* Everything the collector turns into samples, driven by getpid() of the
 * thread `target_tid` (one thread: the test's own store writer calls
 * getpid() too): a hash map of call counts keyed by a struct, a
 * per-CPU array of counters, a ring buffer of events and a perf event
 * array of records. `seq` (in .bss) numbers the calls from 1. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

enum emit_state {
	EMIT_IDLE,
	EMIT_ODD,
	EMIT_EVEN,
};

struct call_key {
	__u32 pid;
	char comm[16];
};

struct pcpu_stat {
	__u64 hits;
	__u64 weight;
};

/* The record types of `events` and `records`, found by the collector under
 * the map's name in the singular. */
struct event {
	__u32 pid;
	__u64 seq;
	char comm[16];
	__u32 saddr;
	enum emit_state state;
};

struct record {
	__u32 pid;
	__s32 delta;
	__u64 seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct call_key);
	__type(value, __u64);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pcpu_stat);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} records SEC(".maps");

const volatile __u32 target_tid = 0;
__u64 seq = 0;

/* Keep the record types in the object's BTF. */
struct event *unused_event __attribute__((unused));
struct record *unused_record __attribute__((unused));

SEC("tracepoint/syscalls/sys_enter_getpid")
int on_getpid(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	struct call_key key = {};
	struct record rec = {};
	struct pcpu_stat *stat;
	__u64 *count, one = 1, n;
	struct event *e;
	__u32 zero = 0;

	if ((__u32)pid_tgid != target_tid)
		return 0;
	key.pid = pid;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	count = bpf_map_lookup_elem(&calls, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&calls, &key, &one, BPF_NOEXIST);

	stat = bpf_map_lookup_elem(&stats, &zero);
	if (stat) {
		stat->hits += 1;
		stat->weight += 2;
	}

	n = ++seq;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->pid = pid;
		e->seq = n;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		e->saddr = bpf_htonl(0x0a000001 + (__u32)n);   /* 10.0.0.1 + n */
		e->state = n & 1 ? EMIT_ODD : EMIT_EVEN;
		bpf_ringbuf_submit(e, 0);
	}
	rec.pid = pid;
	rec.delta = -(__s32)n;
	rec.seq = n;
	bpf_perf_event_output(ctx, &records, BPF_F_CURRENT_CPU, &rec, sizeof(rec));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
