/* Unit tests of the built-in probes, run in the kernel with
 * BPF_PROG_TEST_RUN (needs root): dns and netstat fed crafted packets,
 * their events and counters checked field by field. The objects come from
 * $GRAIND_BUILTIN_BPF (default build/bpf). Then the registration of the
 * embedded objects in a store (server/builtin). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/types.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/dns.h"
#include "bpf/netstat.h"
#include "proto/graind.pb-c.h"
#include "server/builtin.h"
#include "store/store.h"
#include "tests/unit/tmpdb.h"

#define LO_IFINDEX	1
#define MAX_EVENTS	8
#define ETH_HLEN	14

/* ================================================================ packets */

struct pkt {
	uint8_t data[1500];
	size_t len;
	size_t l4_off;          /* where the UDP/TCP header starts */
};

struct pkt_opts {
	bool ipv6;
	int vlans;              /* 0, 1 or 2 tags */
	uint16_t vlan_id;
	uint8_t l4;             /* UDP or TCP */
	uint16_t sport, dport;
	int ip_options;         /* IPv4 header words beyond 5 */
	uint16_t frag_off;      /* IPv4, host order */
};

static const uint8_t saddr6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x01 };
static const uint8_t daddr6[16] = { 0x20, 0x01, 0x0d, 0xb8, [14] = 0x53, [15] = 0x53 };

static void put(struct pkt *p, const void *bytes, size_t n)
{
	assert_true(p->len + n <= sizeof(p->data));
	memcpy(p->data + p->len, bytes, n);
	p->len += n;
}

static void put16(struct pkt *p, uint16_t host)
{
	uint16_t be = htons(host);

	put(p, &be, 2);
}

static void put_eth(struct pkt *p, const struct pkt_opts *o, uint16_t ethertype)
{
	static const uint8_t macs[12] = { 2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2 };

	put(p, macs, sizeof(macs));
	for (int i = 0; i < o->vlans; i++) {
		put16(p, i == 0 && o->vlans == 2 ? 0x88A8 : 0x8100);
		put16(p, (uint16_t)(o->vlan_id + i));
	}
	put16(p, ethertype);
}

/* A complete Ethernet frame carrying `payload` over UDP or TCP. */
static struct pkt make_packet(const struct pkt_opts *o, const void *payload, size_t n)
{
	size_t l4_len = (o->l4 == TCP ? 20 : 8) + n;
	struct pkt p = { .len = 0 };

	put_eth(&p, o, o->ipv6 ? 0x86DD : 0x0800);
	if (o->ipv6) {
		put(&p, (uint8_t[]){ 0x60, 0, 0, 0 }, 4);
		put16(&p, (uint16_t)l4_len);
		put(&p, (uint8_t[]){ o->l4, 64 }, 2);
		put(&p, saddr6, 16);
		put(&p, daddr6, 16);
	} else {
		int ihl = 5 + o->ip_options;

		put(&p, (uint8_t[]){ (uint8_t)(0x40 | ihl), 0 }, 2);
		put16(&p, (uint16_t)(ihl * 4 + l4_len));
		put16(&p, 0x1234);
		put16(&p, o->frag_off);
		put(&p, (uint8_t[]){ 64, o->l4, 0, 0, 192, 0, 2, 1, 192, 0, 2, 53 }, 12);
		for (int i = 0; i < o->ip_options; i++)
			put(&p, (uint8_t[]){ 1, 1, 1, 1 }, 4);     /* NOPs */
	}
	p.l4_off = p.len;
	put16(&p, o->sport);
	put16(&p, o->dport);
	if (o->l4 == TCP) {
		put(&p, (uint8_t[]){ 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0 },
		    16);
	} else {
		put16(&p, (uint16_t)l4_len);
		put16(&p, 0);
	}
	put(&p, payload, n);
	return p;
}

/* A DNS message with one question: `name` dotted ("." for the root). */
static size_t dns_message(uint8_t *out, uint16_t id, uint16_t flags, uint16_t ancount,
			  const char *name, uint16_t qtype)
{
	uint16_t header[6] = { htons(id), htons(flags), htons(1), htons(ancount), 0, 0 };
	size_t n = sizeof(header);

	memcpy(out, header, n);
	while (*name && strcmp(name, ".") != 0) {
		size_t label = strcspn(name, ".");

		out[n++] = (uint8_t)label;
		memcpy(out + n, name, label);
		n += label;
		name += label + (name[label] == '.');
	}
	out[n++] = 0;
	out[n++] = 0;
	out[n++] = (uint8_t)qtype;
	out[n++] = 0;
	out[n++] = 1;   /* IN */
	return n;
}

/* A DNS message whose question name is the given wire bytes. */
static size_t dns_raw_name(uint8_t *out, const uint8_t *wire, size_t wire_len)
{
	uint16_t header[6] = { htons(7), htons(0x0100), htons(1), 0, 0, 0 };
	size_t n = sizeof(header);

	memcpy(out, header, n);
	memcpy(out + n, wire, wire_len);
	n += wire_len;
	memcpy(out + n, (uint8_t[]){ 0, 1, 0, 1 }, 4);
	return n + 4;
}

static const struct pkt_opts udp4_query = { .l4 = UDP, .sport = 40000, .dport = 53 };

/* ================================================================ fixture */

struct fixture {
	struct bpf_object *obj;
	struct ring_buffer *ring;
	struct dns_event events[MAX_EVENTS];
	int n_events;
	int ncpus;
};

static int on_event(void *ctx, void *data, size_t size)
{
	struct fixture *f = ctx;

	assert_int_equal(size, sizeof(struct dns_event));
	if (f->n_events < MAX_EVENTS)
		memcpy(&f->events[f->n_events], data, sizeof(struct dns_event));
	f->n_events++;
	return 0;
}

static struct fixture *fixture_open(const char *file)
{
	const char *dir = getenv("GRAIND_BUILTIN_BPF");
	struct fixture *f = calloc(1, sizeof(*f));
	char path[512];

	assert_non_null(f);
	snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "build/bpf", file);
	f->obj = bpf_object__open_file(path, NULL);
	if (!f->obj)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	if (bpf_object__load(f->obj) < 0)
		fail_msg("%s does not load: %s", path, strerror(errno));
	f->ncpus = libbpf_num_possible_cpus();
	assert_true(f->ncpus > 0);
	return f;
}

static int setup_dns(void **state)
{
	struct fixture *f = fixture_open("dns.bpf.o");
	struct bpf_map *events = bpf_object__find_map_by_name(f->obj, "events");

	assert_non_null(events);
	f->ring = ring_buffer__new(bpf_map__fd(events), on_event, f, NULL);
	assert_non_null(f->ring);
	*state = f;
	return 0;
}

static int setup_netstat(void **state)
{
	*state = fixture_open("netstat.bpf.o");
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	ring_buffer__free(f->ring);
	bpf_object__close(f->obj);
	free(f);
	return 0;
}

static int prog_fd(struct fixture *f, const char *name)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(f->obj, name);

	assert_non_null(prog);
	return bpf_program__fd(prog);
}

static int map_fd(struct fixture *f, const char *name)
{
	struct bpf_map *map = bpf_object__find_map_by_name(f->obj, name);

	assert_non_null(map);
	return bpf_map__fd(map);
}

/* Run an XDP program once on lo's queue 0; the verdict, or -errno when
 * the kernel refuses the run. */
static int run_xdp(struct fixture *f, const char *prog, const void *data, size_t len)
{
	struct xdp_md ctx = { .data_end = (__u32)len, .ingress_ifindex = LO_IFINDEX };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data, .data_size_in = (__u32)len,
		    .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .repeat = 1);
	int ret = bpf_prog_test_run_opts(prog_fd(f, prog), &opts);

	return ret < 0 ? -errno : (int)opts.retval;
}

/* Run the DNS parser on a packet and collect its events. */
static void run_dns(struct fixture *f, const void *data, size_t len)
{
	f->n_events = 0;
	assert_int_equal(run_xdp(f, "dns_parse", data, len), XDP_PASS);
	assert_true(ring_buffer__consume(f->ring) >= 0);
}

static uint64_t dns_errors(struct fixture *f, enum dns_error reason)
{
	uint64_t values[f->ncpus], sum = 0;

	if (bpf_map_lookup_elem(map_fd(f, "errors"), &reason, values) < 0)
		return 0;
	for (int i = 0; i < f->ncpus; i++)
		sum += values[i];
	return sum;
}

static uint64_t dns_errors_total(struct fixture *f)
{
	uint64_t sum = 0;

	for (int r = TRUNCATED; r <= RINGBUF_FULL; r++)
		sum += dns_errors(f, r);
	return sum;
}

/* ================================================================ dns */

static void assert_v4_query_fields(const struct dns_event *ev)
{
	assert_int_equal(ev->ifindex, LO_IFINDEX);
	assert_int_equal(ev->l3_proto, IPV4);
	assert_int_equal(ev->saddr, htonl(0xc0000201));
	assert_int_equal(ev->daddr, htonl(0xc0000235));
	assert_int_equal(ev->sport, htons(40000));
	assert_int_equal(ev->dport, htons(53));
}

static void test_dns_query_a(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[512];
	size_t n = dns_message(msg, 0x1234, 0x0100, 0, "www.example.com", A);
	struct pkt p = make_packet(&udp4_query, msg, n);
	const struct dns_event *ev = &f->events[0];
	static const uint8_t zero6[16];

	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
	assert_v4_query_fields(ev);
	assert_memory_equal(ev->saddr6, zero6, 16);
	assert_memory_equal(ev->daddr6, zero6, 16);
	assert_int_equal(ev->vlan_id, 0);
	assert_int_equal(ev->id, 0x1234);
	assert_int_equal(ev->flags, 0x0100);
	assert_int_equal(ev->response, 0);
	assert_int_equal(ev->truncated, 0);
	assert_int_equal(ev->opcode, QUERY);
	assert_int_equal(ev->rcode, NOERROR);
	assert_int_equal(ev->qdcount, 1);
	assert_int_equal(ev->ancount, 0);
	assert_string_equal(ev->qname, "www.example.com");
	assert_int_equal(ev->qname_len, strlen("www.example.com"));
	assert_int_equal(ev->qtype, A);
	assert_int_equal(ev->qclass, 1);
	assert_int_equal(dns_errors_total(f), 0);
}

static void test_dns_response_aaaa(void **state)
{
	struct fixture *f = *state;
	struct pkt_opts o = { .l4 = UDP, .sport = 53, .dport = 40000 };
	uint8_t msg[512];
	size_t n = dns_message(msg, 0xbeef, 0x8583, 2, "no.such.example", AAAA);
	struct pkt p;

	/* The answer section is not parsed: bytes after the question are fine. */
	memset(msg + n, 0xc0, 40);
	p = make_packet(&o, msg, n + 40);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
	assert_int_equal(f->events[0].sport, htons(53));
	assert_int_equal(f->events[0].dport, htons(40000));
	assert_int_equal(f->events[0].id, 0xbeef);
	assert_int_equal(f->events[0].flags, 0x8583);
	assert_int_equal(f->events[0].response, 1);
	assert_int_equal(f->events[0].opcode, QUERY);
	assert_int_equal(f->events[0].rcode, NXDOMAIN);
	assert_int_equal(f->events[0].ancount, 2);
	assert_int_equal(f->events[0].qtype, AAAA);
	assert_string_equal(f->events[0].qname, "no.such.example");
	assert_int_equal(dns_errors_total(f), 0);
}

static void test_dns_ipv6_txt(void **state)
{
	struct fixture *f = *state;
	struct pkt_opts o = { .ipv6 = true, .l4 = UDP, .sport = 5353, .dport = 53 };
	uint8_t msg[512];
	size_t n = dns_message(msg, 1, 0x2800, 0, "_dmarc.example.org", TXT);
	struct pkt p = make_packet(&o, msg, n);
	const struct dns_event *ev = &f->events[0];

	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
	assert_int_equal(ev->l3_proto, IPV6);
	assert_memory_equal(ev->saddr6, saddr6, 16);
	assert_memory_equal(ev->daddr6, daddr6, 16);
	assert_int_equal(ev->saddr, 0);
	assert_int_equal(ev->daddr, 0);
	assert_int_equal(ev->sport, htons(5353));
	assert_int_equal(ev->opcode, UPDATE);
	assert_int_equal(ev->qtype, TXT);
	assert_string_equal(ev->qname, "_dmarc.example.org");
}

static void test_dns_vlan(void **state)
{
	struct fixture *f = *state;
	struct pkt_opts o = udp4_query;
	uint8_t msg[512];
	size_t n = dns_message(msg, 9, 0x0100, 0, "tagged.example", A);
	struct pkt p;

	o.vlans = 1;
	o.vlan_id = 100;
	p = make_packet(&o, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
	assert_v4_query_fields(&f->events[0]);
	assert_int_equal(f->events[0].vlan_id, 100);
	assert_string_equal(f->events[0].qname, "tagged.example");

	/* 802.1ad outer tag and 802.1Q inner tag: the outer one is kept. */
	o.vlans = 2;
	o.vlan_id = 200;
	o.ipv6 = true;
	p = make_packet(&o, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
	assert_int_equal(f->events[0].vlan_id, 200);
	assert_int_equal(f->events[0].l3_proto, IPV6);
	assert_string_equal(f->events[0].qname, "tagged.example");
}

static void test_dns_ip_options_and_fragments(void **state)
{
	struct fixture *f = *state;
	struct pkt_opts o = udp4_query;
	uint8_t msg[512];
	size_t n = dns_message(msg, 9, 0x0100, 0, "opts.example", A);
	struct pkt p;

	o.ip_options = 2;
	p = make_packet(&o, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
	assert_string_equal(f->events[0].qname, "opts.example");

	/* A later fragment: its bytes are not a UDP header. */
	o.ip_options = 0;
	o.frag_off = 185;
	p = make_packet(&o, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	assert_int_equal(dns_errors_total(f), 0);
}

static void test_dns_root_and_no_question(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[512];
	size_t n = dns_message(msg, 3, 0x0000, 0, ".", NS);
	struct pkt p = make_packet(&udp4_query, msg, n);

	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
	assert_string_equal(f->events[0].qname, ".");
	assert_int_equal(f->events[0].qname_len, 1);
	assert_int_equal(f->events[0].qtype, NS);

	/* qdcount 0: the header alone is a whole message. */
	msg[5] = 0;
	p = make_packet(&udp4_query, msg, 12);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
	assert_int_equal(f->events[0].qdcount, 0);
	assert_string_equal(f->events[0].qname, "");
	assert_int_equal(f->events[0].qtype, 0);
	assert_int_equal(dns_errors_total(f), 0);
}

static void test_dns_not_dns(void **state)
{
	struct fixture *f = *state;
	struct pkt_opts ntp = { .l4 = UDP, .sport = 123, .dport = 123 };
	struct pkt_opts tcp = { .l4 = TCP, .sport = 40000, .dport = 53 };
	uint8_t msg[512];
	size_t n = dns_message(msg, 1, 0x0100, 0, "example.com", A);
	struct pkt p = make_packet(&ntp, msg, n);
	struct pkt arp = { .len = 0 };

	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	p = make_packet(&tcp, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	tcp.ipv6 = true;
	p = make_packet(&tcp, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	put_eth(&arp, &ntp, 0x0806);
	put(&arp, msg, 28);
	run_dns(f, arp.data, arp.len);
	assert_int_equal(f->n_events, 0);
	assert_int_equal(dns_errors_total(f), 0);
}

/* Every prefix of a query: before the UDP header ends it is not known to
 * be DNS (nothing counted); after, it is a truncated DNS message (one
 * TRUNCATED each). Never an event, never a drop. */
static void check_every_cut(struct fixture *f, const struct pkt_opts *o)
{
	uint8_t msg[512];
	size_t n = dns_message(msg, 1, 0x0100, 0, "cut.example", A);
	struct pkt p = make_packet(o, msg, n);
	size_t udp_end = p.l4_off + 8;
	uint64_t truncated = dns_errors(f, TRUNCATED);

	for (size_t cut = 0; cut < ETH_HLEN; cut++)
		assert_int_equal(run_xdp(f, "dns_parse", p.data, cut), -EINVAL);
	for (size_t cut = ETH_HLEN; cut < p.len; cut++) {
		run_dns(f, p.data, cut);
		if (f->n_events != 0)
			fail_msg("an event from a packet cut at byte %zu of %zu", cut, p.len);
		if (cut >= udp_end)
			truncated++;
		assert_int_equal(dns_errors(f, TRUNCATED), truncated);
	}
	assert_int_equal(dns_errors_total(f), truncated);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
}

static void test_dns_truncated_everywhere(void **state)
{
	struct fixture *f = *state;
	struct pkt_opts o = udp4_query;

	check_every_cut(f, &o);
	o.ipv6 = true;
	o.vlans = 1;
	check_every_cut(f, &o);
}

static void test_dns_bad_label(void **state)
{
	struct fixture *f = *state;
	uint8_t wire[80] = { 64 }, msg[512];
	size_t n;
	struct pkt p;

	memset(wire + 1, 'a', 64);
	n = dns_raw_name(msg, wire, 66);
	p = make_packet(&udp4_query, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	assert_int_equal(dns_errors(f, BAD_LABEL), 1);

	/* 0x80: the other reserved label type, after a good label. */
	n = dns_raw_name(msg, (uint8_t[]){ 1, 'x', 0x80, 'y', 0 }, 5);
	p = make_packet(&udp4_query, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	assert_int_equal(dns_errors(f, BAD_LABEL), 2);

	/* 63 is the longest label allowed. */
	wire[0] = 63;
	wire[64] = 0;
	n = dns_raw_name(msg, wire, 65);
	p = make_packet(&udp4_query, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
	assert_int_equal(f->events[0].qname_len, 63);
	assert_int_equal(dns_errors_total(f), 2);
}

/* A name of `labels` labels of 63 bytes then one of `last` bytes. */
static size_t long_name(uint8_t *wire, int labels, int last)
{
	size_t n = 0;

	for (int i = 0; i < labels; i++) {
		wire[n++] = 63;
		memset(wire + n, 'a' + i, 63);
		n += 63;
	}
	wire[n++] = (uint8_t)last;
	memset(wire + n, 'z', last);
	n += last;
	wire[n++] = 0;
	return n;
}

static void test_dns_name_too_long(void **state)
{
	struct fixture *f = *state;
	uint8_t wire[400], msg[600];
	size_t wire_len = long_name(wire, 3, 61), n;
	struct pkt p;

	/* Exactly 255 bytes on the wire, 253 as text: the longest name. */
	assert_int_equal(wire_len, 255);
	n = dns_raw_name(msg, wire, wire_len);
	p = make_packet(&udp4_query, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 1);
	assert_int_equal(f->events[0].qname_len, 253);
	assert_int_equal(strlen(f->events[0].qname), 253);
	assert_int_equal(f->events[0].qname[63], '.');
	assert_int_equal(f->events[0].qname[252], 'z');
	assert_int_equal(f->events[0].qtype, A);

	/* One byte more, and then far more. */
	wire_len = long_name(wire, 3, 62);
	n = dns_raw_name(msg, wire, wire_len);
	p = make_packet(&udp4_query, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	assert_int_equal(dns_errors(f, TOO_LONG), 1);

	wire_len = long_name(wire, 5, 20);
	n = dns_raw_name(msg, wire, wire_len);
	p = make_packet(&udp4_query, msg, n);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	assert_int_equal(dns_errors(f, TOO_LONG), 2);
	assert_int_equal(dns_errors_total(f), 2);
}

static void test_dns_compression_pointer(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[512];
	size_t n = dns_raw_name(msg, (uint8_t[]){ 3, 'w', 'w', 'w', 0xc0, 0x0c }, 6);
	struct pkt p = make_packet(&udp4_query, msg, n);

	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	assert_int_equal(dns_errors(f, COMPRESSION_POINTER), 1);
	assert_int_equal(dns_errors_total(f), 1);
}

static void test_dns_empty_packet(void **state)
{
	struct fixture *f = *state;
	struct pkt p = { .len = 0 };

	/* The kernel runs no XDP program on less than an Ethernet header. */
	assert_int_equal(run_xdp(f, "dns_parse", p.data, 0), -EINVAL);
	put_eth(&p, &udp4_query, 0x0800);
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	memset(p.data, 0, sizeof(p.data));
	p.len = 64;
	run_dns(f, p.data, p.len);
	assert_int_equal(f->n_events, 0);
	assert_int_equal(dns_errors_total(f), 0);
}

/* ================================================================ netstat */

static int run_tc(struct fixture *f, const char *prog, const void *data, size_t len)
{
	struct __sk_buff ctx = { .ifindex = LO_IFINDEX };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data, .data_size_in = (__u32)len,
		    .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .repeat = 1);
	int ret = bpf_prog_test_run_opts(prog_fd(f, prog), &opts);

	return ret < 0 ? -errno : (int)opts.retval;
}

/* The summed counters of one key; false when the key is absent. */
static bool traffic(struct fixture *f, enum direction dir, enum l3_proto l3,
		    enum l4_proto l4, struct netstat_value *sum)
{
	struct netstat_key key = {
		.ifindex = LO_IFINDEX, .direction = dir, .l3_proto = l3, .l4_proto = l4,
	};
	struct netstat_value values[f->ncpus];

	memset(sum, 0, sizeof(*sum));
	if (bpf_map_lookup_elem(map_fd(f, "traffic"), &key, values) < 0)
		return false;
	for (int i = 0; i < f->ncpus; i++) {
		sum->packets += values[i].packets;
		sum->bytes += values[i].bytes;
	}
	return true;
}

static int count_keys(struct fixture *f)
{
	struct netstat_key key, next;
	int n = 0, fd = map_fd(f, "traffic");

	for (void *prev = NULL; bpf_map_get_next_key(fd, prev, &next) == 0; prev = &key) {
		key = next;
		n++;
	}
	return n;
}

static void assert_traffic(struct fixture *f, enum direction dir, enum l3_proto l3,
			   enum l4_proto l4, uint64_t packets, uint64_t bytes)
{
	struct netstat_value v;

	if (!traffic(f, dir, l3, l4, &v))
		fail_msg("no counter for direction %d l3 0x%x l4 %d", dir, l3, l4);
	assert_int_equal(v.packets, packets);
	assert_int_equal(v.bytes, bytes);
}

static void test_netstat_xdp(void **state)
{
	struct fixture *f = *state;
	struct pkt_opts tcp6 = { .ipv6 = true, .l4 = TCP, .sport = 443, .dport = 50000 };
	struct pkt_opts vlan = udp4_query;
	uint8_t payload[100] = { 0 };
	struct pkt udp = make_packet(&udp4_query, payload, 10);
	struct pkt tcp = make_packet(&tcp6, payload, 100);
	struct pkt tagged, arp = { .len = 0 }, lldp = { .len = 0 };

	vlan.vlans = 1;
	vlan.vlan_id = 7;
	tagged = make_packet(&vlan, payload, 1);
	put_eth(&arp, &udp4_query, 0x0806);
	put(&arp, payload, 28);

	for (int i = 0; i < 3; i++)
		assert_int_equal(run_xdp(f, "netstat_xdp", udp.data, udp.len), XDP_PASS);
	for (int i = 0; i < 2; i++)
		assert_int_equal(run_xdp(f, "netstat_xdp", tcp.data, tcp.len), XDP_PASS);
	assert_int_equal(run_xdp(f, "netstat_xdp", arp.data, arp.len), XDP_PASS);
	assert_int_equal(run_xdp(f, "netstat_xdp", tagged.data, tagged.len), XDP_PASS);
	/* An IPv4 header cut short: L3 known, L4 not. */
	assert_int_equal(run_xdp(f, "netstat_xdp", udp.data, ETH_HLEN + 10), XDP_PASS);
	/* An Ethernet header alone, of an unnamed EtherType. */
	put_eth(&lldp, &udp4_query, 0x88cc);
	assert_int_equal(run_xdp(f, "netstat_xdp", lldp.data, lldp.len), XDP_PASS);

	assert_int_equal(udp.len, 14 + 20 + 8 + 10);
	assert_traffic(f, INGRESS, IPV4, UDP, 3 + 1, 3 * udp.len + tagged.len);
	assert_traffic(f, INGRESS, IPV6, TCP, 2, 2 * tcp.len);
	assert_traffic(f, INGRESS, ARP, L4_NONE, 1, arp.len);
	assert_traffic(f, INGRESS, IPV4, L4_NONE, 1, ETH_HLEN + 10);
	assert_traffic(f, INGRESS, 0x88cc, L4_NONE, 1, ETH_HLEN);
	assert_int_equal(count_keys(f), 5);
}

static void test_netstat_tc(void **state)
{
	struct fixture *f = *state;
	struct pkt_opts icmp6 = { .ipv6 = true, .l4 = ICMPV6 };
	uint8_t payload[64] = { 0 };
	struct pkt udp = make_packet(&udp4_query, payload, 64);
	struct pkt ping = make_packet(&icmp6, payload, 4);

	assert_int_equal(run_tc(f, "netstat_tc_ingress", udp.data, udp.len), -1);
	assert_int_equal(run_tc(f, "netstat_tc_egress", udp.data, udp.len), -1);
	assert_int_equal(run_tc(f, "netstat_tc_egress", udp.data, udp.len), -1);
	assert_int_equal(run_tc(f, "netstat_tc_egress", ping.data, ping.len), -1);

	assert_traffic(f, INGRESS, IPV4, UDP, 1, udp.len);
	assert_traffic(f, EGRESS, IPV4, UDP, 2, 2 * udp.len);
	assert_traffic(f, EGRESS, IPV6, ICMPV6, 1, ping.len);
	assert_int_equal(count_keys(f), 3);
}

/* ================================================================ registration */

static void test_builtin_register(void **state)
{
	char dir[] = "/tmp/graind-builtin-XXXXXX", path[64], sha256[SHA256_HEX_LEN + 1];
	struct store_object row = { 0 };
	struct gerr err = { 0 };
	struct store *st = NULL;
	Graind__Object *obj;
	void *bytes;
	size_t len;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/graind.db", dir);
	assert_int_equal(store_open(path, &st, &err), 0);
	assert_int_equal(builtin_register(st, &err), 0);
	assert_int_equal(builtin_register(st, &err), 0);        /* stored once */
	assert_int_equal(summary_of(st).objects, builtin_count());

	assert_int_equal(builtin_object_sha256("dns", sha256, &err), 0);
	assert_int_equal(store_object_get(st, sha256, &row, &err), 0);
	assert_true(row.builtin);
	assert_string_equal(row.name, "dns");
	obj = (Graind__Object *)protobuf_c_message_unpack(&graind__object__descriptor, NULL,
							  row.meta_len, row.meta);
	assert_non_null(obj);
	assert_non_null(strstr(obj->description, "DNS"));
	assert_int_equal(obj->n_programs, 1);
	assert_string_equal(obj->programs[0]->name, "dns_parse");
	assert_true(obj->has_btf);
	protobuf_c_message_free_unpacked(&obj->base, NULL);
	store_object_clear(&row);
	assert_int_equal(store_object_content(st, sha256, &bytes, &len, &err), 0);
	assert_memory_equal(bytes, "\177ELF", 4);
	free(bytes);

	for (size_t i = 0; i < builtin_count(); i++)
		assert_int_equal(builtin_object_sha256(builtin_name(i), sha256, &err), 0);
	assert_null(builtin_name(builtin_count()));
	assert_int_equal(builtin_object_sha256("nope", sha256, &err), -1);
	assert_int_equal(err.status, 404);
	assert_non_null(strstr(err.msg, "tcpstate"));
	store_close(st);
	snprintf(path, sizeof(path), "rm -rf %s", dir);
	assert_int_equal(system(path), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_dns_query_a, setup_dns, teardown),
		cmocka_unit_test_setup_teardown(test_dns_response_aaaa, setup_dns, teardown),
		cmocka_unit_test_setup_teardown(test_dns_ipv6_txt, setup_dns, teardown),
		cmocka_unit_test_setup_teardown(test_dns_vlan, setup_dns, teardown),
		cmocka_unit_test_setup_teardown(test_dns_ip_options_and_fragments, setup_dns,
						teardown),
		cmocka_unit_test_setup_teardown(test_dns_root_and_no_question, setup_dns,
						teardown),
		cmocka_unit_test_setup_teardown(test_dns_not_dns, setup_dns, teardown),
		cmocka_unit_test_setup_teardown(test_dns_truncated_everywhere, setup_dns, teardown),
		cmocka_unit_test_setup_teardown(test_dns_bad_label, setup_dns, teardown),
		cmocka_unit_test_setup_teardown(test_dns_name_too_long, setup_dns, teardown),
		cmocka_unit_test_setup_teardown(test_dns_compression_pointer, setup_dns,
						teardown),
		cmocka_unit_test_setup_teardown(test_dns_empty_packet, setup_dns, teardown),
		cmocka_unit_test_setup_teardown(test_netstat_xdp, setup_netstat, teardown),
		cmocka_unit_test_setup_teardown(test_netstat_tc, setup_netstat, teardown),
		cmocka_unit_test(test_builtin_register),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
