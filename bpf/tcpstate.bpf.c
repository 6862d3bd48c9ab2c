// SPDX-License-Identifier: GPL-2.0
/* tcpstate: one event per TCP state change (tracepoint
 * sock/inet_sock_set_state), with the states by name. */

/* vmlinux.h names the states in an anonymous enum; rename those so that
 * enum tcp_state_name below can carry the same names into BTF. */
#define TCP_ESTABLISHED		TCP_ESTABLISHED__kernel
#define TCP_SYN_SENT		TCP_SYN_SENT__kernel
#define TCP_SYN_RECV		TCP_SYN_RECV__kernel
#define TCP_FIN_WAIT1		TCP_FIN_WAIT1__kernel
#define TCP_FIN_WAIT2		TCP_FIN_WAIT2__kernel
#define TCP_TIME_WAIT		TCP_TIME_WAIT__kernel
#define TCP_CLOSE		TCP_CLOSE__kernel
#define TCP_CLOSE_WAIT		TCP_CLOSE_WAIT__kernel
#define TCP_LAST_ACK		TCP_LAST_ACK__kernel
#define TCP_LISTEN		TCP_LISTEN__kernel
#define TCP_CLOSING		TCP_CLOSING__kernel
#define TCP_NEW_SYN_RECV	TCP_NEW_SYN_RECV__kernel
#define TCP_BOUND_INACTIVE	TCP_BOUND_INACTIVE__kernel
#include "vmlinux.h"
#undef TCP_ESTABLISHED
#undef TCP_SYN_SENT
#undef TCP_SYN_RECV
#undef TCP_FIN_WAIT1
#undef TCP_FIN_WAIT2
#undef TCP_TIME_WAIT
#undef TCP_CLOSE
#undef TCP_CLOSE_WAIT
#undef TCP_LAST_ACK
#undef TCP_LISTEN
#undef TCP_CLOSING
#undef TCP_NEW_SYN_RECV
#undef TCP_BOUND_INACTIVE

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "net.h"

#define AF_INET		2
#define AF_INET6	10

enum tcp_state_name {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT,
	TCP_SYN_RECV,
	TCP_FIN_WAIT1,
	TCP_FIN_WAIT2,
	TCP_TIME_WAIT,
	TCP_CLOSE,
	TCP_CLOSE_WAIT,
	TCP_LAST_ACK,
	TCP_LISTEN,
	TCP_CLOSING,
	TCP_NEW_SYN_RECV,
	TCP_BOUND_INACTIVE,
};

/* Addresses and ports in network byte order; saddr/daddr for IPv4,
 * saddr6/daddr6 for IPv6. */
struct tcpstate_event {
	__u32 saddr;
	__u32 daddr;
	__u8 saddr6[16];
	__u8 daddr6[16];
	__u16 sport;
	__u16 dport;
	enum l3_proto l3_proto;
	enum tcp_state_name oldstate;
	enum tcp_state_name newstate;
	__u32 pid;		/* the process running when the state changed */
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("tracepoint/sock/inet_sock_set_state")
int trace_tcp_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct tcpstate_event *ev;

	if (ctx->protocol != TCP)
		return 0;
	if (ctx->family != AF_INET && ctx->family != AF_INET6)
		return 0;
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev)
		return 0;
	__builtin_memset(ev, 0, sizeof(*ev));
	/* Tracepoint context may only be read at fixed offsets, word by
	 * word: the address arrays are copied with a helper. */
	if (ctx->family == AF_INET) {
		ev->l3_proto = IPV4;
		bpf_probe_read_kernel(&ev->saddr, sizeof(ev->saddr), ctx->saddr);
		bpf_probe_read_kernel(&ev->daddr, sizeof(ev->daddr), ctx->daddr);
	} else {
		ev->l3_proto = IPV6;
		bpf_probe_read_kernel(ev->saddr6, sizeof(ev->saddr6), ctx->saddr_v6);
		bpf_probe_read_kernel(ev->daddr6, sizeof(ev->daddr6), ctx->daddr_v6);
	}
	/* The tracepoint gives the ports in host order. */
	ev->sport = bpf_htons(ctx->sport);
	ev->dport = bpf_htons(ctx->dport);
	ev->oldstate = ctx->oldstate;
	ev->newstate = ctx->newstate;
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* Ring buffers carry no value type: this keeps struct tcpstate_event in the
 * object's BTF, where the collector finds the records' layout. */
const struct tcpstate_event *unused_tcpstate_event __attribute__((unused));

char LICENSE[] SEC("license") = "GPL";
