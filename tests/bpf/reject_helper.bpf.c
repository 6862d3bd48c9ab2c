// SPDX-License-Identifier: GPL-2.0
/* The verifier must refuse this: a socket filter may read packets but not
 * write them, so bpf_skb_store_bytes is not among its helpers. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("socket")
int scrub_first_byte(struct __sk_buff *skb)
{
	__u8 zero = 0;

	bpf_skb_store_bytes(skb, 0, &zero, sizeof(zero), 0);
	return skb->len;
}

char LICENSE[] SEC("license") = "GPL";
