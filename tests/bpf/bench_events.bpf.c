// SPDX-License-Identifier: GPL-2.0
/* The two event sources of the samples pipeline benchmark
 * (tests/bench/ringbuf_bench.c), each reserving one 64-byte record per run
 * in the ring buffer `events`:
 *   emit_xdp     run by BPF_PROG_TEST_RUN with repeat, on a packet of
 *                ethertype 0x88b5 (local experimental) only, so that real
 *                traffic where it is attached gives nothing. It wakes the
 *                consumer once per 64 KiB of records, as producers of high
 *                rates do (a wakeup per record costs microseconds in a
 *                VM), and at once for a packet whose byte 14 is 'F';
 *   emit_getpid  getpid() of the process `target_pid`, waking the consumer
 *                the default way (when it has caught up).
 * `counts` holds the runs that made a record (slot 0) and the records the
 * full ring buffer refused (slot 1). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define BENCH_ETH_P 0x88b5

struct event {
	__u32 pid;
	__u32 cpu;
	char comm[16];
	__u64 ts;
	__u64 seq;
	__u32 a, b, c, d;
	__u32 e, f;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

const volatile __u32 target_pid = 0;

/* Keep the record type in the object's BTF. */
struct event *unused_event __attribute__((unused));

static __always_inline void count(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&counts, &slot);

	if (n)
		*n += 1;
}

#define WAKE_SAMPLED 1
#define WAKE_NOW     2

/* How the record just reserved wakes the consumer. */
static __always_inline __u64 wake_flags(int wake)
{
	if (wake == WAKE_NOW)
		return BPF_RB_FORCE_WAKEUP;
	if (wake != WAKE_SAMPLED)
		return 0;
	/* The record that crosses a 64 KiB boundary of the producer. */
	if ((bpf_ringbuf_query(&events, BPF_RB_PROD_POS) & 0xffff) < sizeof(struct event) + 8)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* pid and comm are the task's on a tracepoint; XDP has no task to ask
 * (6.1 refuses the helpers there), so it names itself. */
static __always_inline void emit(__u32 pid, __u32 a, int wake, int task)
{
	struct event *e;
	__u64 seq;

	count(0);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(1);
		return;
	}
	seq = bpf_ktime_get_ns();
	e->pid = pid;
	e->cpu = bpf_get_smp_processor_id();
	if (task)
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	else
		__builtin_memcpy(e->comm, "xdp-producer\0\0\0", sizeof(e->comm));
	e->ts = seq;
	e->seq = seq >> 10;
	e->a = a;
	e->b = a * 3;
	e->c = pid & 0xff;
	e->d = 42;
	e->e = 0;
	e->f = 1;
	bpf_ringbuf_submit(e, wake_flags(wake));
}

SEC("xdp")
int emit_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 *mark;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(BENCH_ETH_P))
		return XDP_PASS;
	mark = (__u8 *)(eth + 1);
	if ((void *)(mark + 1) > end)
		return XDP_PASS;
	emit(0, ctx->rx_queue_index, *mark == 'F' ? WAKE_NOW : WAKE_SAMPLED, 0);
	return XDP_PASS;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int emit_getpid(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (pid != target_pid)
		return 0;
	emit(pid, 7, 0, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
