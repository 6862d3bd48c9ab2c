/* Cost of the built-in DNS parser per packet, measured in the kernel with
 * BPF_PROG_TEST_RUN, against an XDP program that only returns XDP_PASS.
 * Usage: dns_bench DNS_BPF_OBJECT. Prints one line per packet kind. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#define BATCH	256	/* runs between two ring-buffer drains */
#define BATCHES	200

static int count_event(void *ctx, void *data, size_t size)
{
	(void)data;
	(void)size;
	(*(long *)ctx)++;
	return 0;
}

/* r0 = XDP_PASS; exit */
static int load_pass_only(void)
{
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_PASS },
		{ .code = BPF_JMP | BPF_EXIT },
	};

	return bpf_prog_load(BPF_PROG_TYPE_XDP, "pass_only", "GPL", insns, 2, NULL);
}

/* An IPv4 UDP query for www.example.com A, or the same bytes to port 123. */
static size_t make_packet(uint8_t *p, uint16_t dport)
{
	static const uint8_t head[] = {
		2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00,
		0x45, 0, 0, 61, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 53,
		0x9c, 0x40, 0, 0, 0, 41, 0, 0,
		0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
		3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0,
		0, 1, 0, 1,
	};
	uint16_t port = htons(dport);

	memcpy(p, head, sizeof(head));
	memcpy(p + 36, &port, 2);
	return sizeof(head);
}

/* Mean ns per run of `fd` on the packet, draining `ring` between batches
 * so that every DNS run takes the full path. */
static double ns_per_packet(int fd, const uint8_t *pkt, size_t len, struct ring_buffer *ring)
{
	uint64_t total = 0;

	for (int b = 0; b < BATCHES; b++) {
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = (uint32_t)len,
			    .repeat = BATCH);

		if (bpf_prog_test_run_opts(fd, &opts) < 0 || opts.retval != XDP_PASS) {
			fprintf(stderr, "test run failed: %s (retval %u)\n", strerror(errno),
				opts.retval);
			return -1;
		}
		total += opts.duration;	/* mean ns of this batch */
		if (ring)
			ring_buffer__consume(ring);
	}
	return (double)total / BATCHES;
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct ring_buffer *ring;
	uint8_t dns[128], other[128];
	size_t dns_len = make_packet(dns, 53), other_len = make_packet(other, 123);
	long events = 0;
	int dns_fd, pass_fd;
	double pass_ns, dns_ns, other_ns, pass2_ns;

	if (argc != 2) {
		fprintf(stderr, "usage: %s dns.bpf.o\n", argv[0]);
		return 2;
	}
	libbpf_set_print(NULL);
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj) < 0) {
		fprintf(stderr, "cannot load %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	dns_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "dns_parse"));
	ring = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "events")),
				count_event, &events, NULL);
	pass_fd = load_pass_only();
	if (dns_fd < 0 || pass_fd < 0 || !ring) {
		fprintf(stderr, "cannot set up: %s\n", strerror(errno));
		return 1;
	}
	/* The reference twice, before and after, to see the noise. */
	pass_ns = ns_per_packet(pass_fd, dns, dns_len, NULL);
	dns_ns = ns_per_packet(dns_fd, dns, dns_len, ring);
	other_ns = ns_per_packet(dns_fd, other, other_len, ring);
	pass2_ns = ns_per_packet(pass_fd, dns, dns_len, NULL);
	ring_buffer__consume(ring);
	if (pass_ns <= 0 || dns_ns <= 0 || other_ns <= 0 || pass2_ns <= 0)
		return 1;
	pass_ns = (pass_ns + pass2_ns) / 2;
	printf("dns parser: DNS query %.1f ns/packet, other UDP %.1f ns/packet, "
	       "XDP_PASS-only %.1f ns/packet; ratio %.2f (query), %.2f (other); %ld events\n",
	       dns_ns, other_ns, pass_ns, dns_ns / pass_ns, other_ns / pass_ns, events);
	ring_buffer__free(ring);
	bpf_object__close(obj);
	return events == (long)BATCH * BATCHES ? 0 : 1;
}
