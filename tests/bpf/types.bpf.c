// SPDX-License-Identifier: GPL-2.0
/* BTF shapes for the decoder's tests: one event struct with every kind of
 * field the decoder knows, a key struct, and a map of plain numbers. The
 * program only makes the types part of a loadable object. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum types_color {
	TYPES_RED = 1,
	TYPES_GREEN = 2,
	TYPES_BLUE = 40,
};

struct types_pair {
	__u16 a;
	__u16 b;
};

struct types_event {
	__s8 s8;
	__s16 s16;
	__s32 s32;
	__s64 s64;
	__u8 u8;
	__u16 u16;
	__u32 u32;
	__u64 u64;
	bool flag;
	enum types_color color;
	char comm[16];
	__u32 saddr;
	__u8 daddr6[16];
	__u16 dport;
	int ifindex;
	int err;
	long syscall_nr;
	__u64 func_ip;
	__u64 cgroup_id;
	struct types_pair pair;
	struct {
		__u32 x;
		struct types_pair deep;
	} nest;
	union {
		__u32 word;
		__u16 halves[2];
	} u;
	__u32 lo : 3, mid : 9, hi : 20;
	__s32 sneg : 5, : 3, spos : 8;
	enum types_color shade : 8;
	__u32 counts[3];
	struct {
		__u32 anon_a;
	};
	char names[2][4];
	__u8 mac[6];
	void *ptr;
	__u64 cookie;
	int ret;
	__u32 last_errno;
	union {
		__u8 u6_addr8[16];
		__u32 u6_addr32[4];
	} src6;
	__u32 dst_ip4;
	struct types_pair pairs[2];
	double ratio;
	bool done : 1;
};

struct types_key {
	__u32 ifindex;
	__u16 sport;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct types_key);
	__type(value, struct types_event);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} totals SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int types_touch(void *ctx)
{
	__u32 zero = 0;
	__u64 *total = bpf_map_lookup_elem(&totals, &zero);

	if (total)
		__sync_fetch_and_add(total, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
