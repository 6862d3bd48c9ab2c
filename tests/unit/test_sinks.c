/* Unit tests for the sinks: their rows in the store (create, replace,
 * delete, cursor and counters, pruning of delivered samples), the
 * configuration checks, and the StatsD lines as a local UDP socket
 * receives them (types, deltas, dialects, sanitising, datagram size,
 * histogram buckets as timers, a refused peer), and the forwarders: StatsD
 * end to end, an S3 peer that never answers, a pending batch sent again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto/graind.pb-c.h"
#include "server/agent.h"
#include "server/sink/sink.h"
#include "server/sink/statsd.h"
#include "server/util/clock.h"
#include "store/store.h"
#include "tests/unit/tmpdb.h"

/* ---------------------------------------------------------------- store */

static void put_ok(struct store *st, const char *name, const char *config, bool want_created)
{
	struct gerr err = { 0 };
	bool created = !want_created;

	if (store_sink_put(st, name, config, strlen(config), 0, &created, &err) < 0)
		fail_msg("store_sink_put %s: %s", name, err.msg);
	assert_int_equal(created, want_created);
}

static void get_ok(struct store *st, const char *name, struct store_sink *row)
{
	struct gerr err = { 0 };

	if (store_sink_get(st, name, row, &err) < 0)
		fail_msg("store_sink_get %s: %s", name, err.msg);
}

static void test_put_get_replace_delete(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct store_sink row = { 0 };
	struct gerr err = { 0 };

	put_ok(fx->st, "a", "one", true);
	get_ok(fx->st, "a", &row);
	assert_string_equal(row.name, "a");
	assert_int_equal(row.config_len, 3);
	assert_memory_equal(row.config, "one", 3);
	assert_int_equal(row.cursor, 0);
	assert_int_equal(row.last_success_ms, 0);
	assert_string_equal(row.last_error, "");
	store_sink_clear(&row);

	/* Replacing keeps the delivery state. */
	assert_int_equal(store_sink_delivered(fx->st, "a", 42, 40, 1000, &err), 0);
	put_ok(fx->st, "a", "second", false);
	get_ok(fx->st, "a", &row);
	assert_int_equal(row.config_len, 6);
	assert_memory_equal(row.config, "second", 6);
	assert_int_equal(row.cursor, 42);
	assert_int_equal(row.samples_sent, 40);
	store_sink_clear(&row);
	assert_int_equal(store_sink_count(fx->st), 1);

	assert_int_equal(store_sink_delete(fx->st, "a", &err), 0);
	assert_int_equal(store_sink_get(fx->st, "a", &row, &err), -1);
	assert_int_equal(err.status, 404);
	assert_int_equal(store_sink_delete(fx->st, "a", &err), -1);
	assert_int_equal(err.status, 404);
	assert_int_equal(store_sink_count(fx->st), 0);
}

static int list_name(const struct store_sink *sink, const char *owner, void *ctx)
{
	(void)owner;
	strcat(ctx, sink->name);
	strcat(ctx, ",");
	return 0;
}

static void test_list_ordered(void **state)
{
	struct tmpdb_fixture *fx = *state;
	char names[64] = "";

	put_ok(fx->st, "zeta", "z", true);
	put_ok(fx->st, "alpha", "a", true);
	put_ok(fx->st, "mid", "m", true);
	assert_int_equal(store_sink_list(fx->st, list_name, names), 0);
	assert_string_equal(names, "alpha,mid,zeta,");
}

/* What store_sink_list walks is the summary: each change shows in it as
 * soon as the call that made it returns, owners included. */
struct listed {
	char text[256];
};

static int list_state(const struct store_sink *sink, const char *owner, void *ctx)
{
	struct listed *l = ctx;
	size_t at = strlen(l->text);

	snprintf(l->text + at, sizeof(l->text) - at, "%s@%llu:%s;", sink->name,
		 (unsigned long long)sink->cursor, owner);
	return 0;
}

static const char *listing(struct store *st, struct listed *l)
{
	l->text[0] = '\0';
	assert_int_equal(store_sink_list(st, list_state, l), 0);
	return l->text;
}

static void test_list_follows_changes(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct gerr err = { 0 };
	struct listed l;
	bool created;

	assert_string_equal(listing(fx->st, &l), "");
	put_ok(fx->st, "b", "x", true);
	put_ok(fx->st, "a", "y", true);
	assert_string_equal(listing(fx->st, &l), "a@0:;b@0:;");
	assert_int_equal(store_sink_delivered(fx->st, "b", 7, 7, 70, &err), 0);
	assert_int_equal(store_managed_set(fx->st, STORE_MANAGED_SINK, "a", "file:/etc/s.yaml",
					   &err), 0);
	/* A probe's owner is no sink's. */
	assert_int_equal(store_managed_set(fx->st, STORE_MANAGED_PROBE, "b", "file:/p.yaml",
					   &err), 0);
	assert_string_equal(listing(fx->st, &l), "a@0:file:/etc/s.yaml;b@7:;");
	assert_int_equal(store_managed_set(fx->st, STORE_MANAGED_SINK, "a", NULL, &err), 0);
	assert_int_equal(store_sink_delete(fx->st, "b", &err), 0);
	assert_string_equal(listing(fx->st, &l), "a@0:;");
	/* A refused change leaves it as it was. */
	assert_int_equal(store_sink_put(fx->st, "a", "z", 1, 99, &created, &err), -1);
	assert_string_equal(listing(fx->st, &l), "a@0:;");
}

static void test_delivered_and_failed(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct store_sink row = { 0 };
	struct gerr err = { 0 };

	put_ok(fx->st, "s", "x", true);
	assert_int_equal(store_sink_failed(fx->st, "s", "connection refused", &err), 0);
	get_ok(fx->st, "s", &row);
	assert_string_equal(row.last_error, "connection refused");
	assert_int_equal(row.cursor, 0);
	store_sink_clear(&row);

	assert_int_equal(store_sink_delivered(fx->st, "s", 10, 7, 300, &err), 0);
	assert_int_equal(store_sink_delivered(fx->st, "s", 20, 5, 200, &err), 0);
	/* A cursor never goes back; the counters still add up. */
	assert_int_equal(store_sink_delivered(fx->st, "s", 15, 1, 10, &err), 0);
	get_ok(fx->st, "s", &row);
	assert_int_equal(row.cursor, 20);
	assert_int_equal(row.samples_sent, 13);
	assert_int_equal(row.bytes_sent, 510);
	assert_true(row.last_success_ms > 1700000000000LL);
	assert_string_equal(row.last_error, "");
	store_sink_clear(&row);

	assert_int_equal(store_sink_delivered(fx->st, "gone", 1, 1, 1, &err), -1);
	assert_int_equal(err.status, 404);
	assert_int_equal(store_sink_failed(fx->st, "gone", "x", &err), -1);
	assert_int_equal(err.status, 404);
}

static void test_pending_batch(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct store_sink row = { 0 };
	struct gerr err = { 0 };

	put_ok(fx->st, "s", "cfg", true);
	get_ok(fx->st, "s", &row);
	assert_int_equal(row.pending, 0);
	store_sink_clear(&row);

	/* Recorded before a send, cleared with its delivery. */
	assert_int_equal(store_sink_pending(fx->st, "s", 17, &err), 0);
	get_ok(fx->st, "s", &row);
	assert_int_equal(row.pending, 17);
	assert_int_equal(row.cursor, 0);
	store_sink_clear(&row);
	assert_int_equal(store_sink_delivered(fx->st, "s", 17, 5, 100, &err), 0);
	get_ok(fx->st, "s", &row);
	assert_int_equal(row.pending, 0);
	assert_int_equal(row.cursor, 17);
	store_sink_clear(&row);

	/* The same configuration again keeps it; another one forgets it. */
	assert_int_equal(store_sink_pending(fx->st, "s", 30, &err), 0);
	put_ok(fx->st, "s", "cfg", false);
	get_ok(fx->st, "s", &row);
	assert_int_equal(row.pending, 30);
	store_sink_clear(&row);
	put_ok(fx->st, "s", "cfg2", false);
	get_ok(fx->st, "s", &row);
	assert_int_equal(row.pending, 0);
	assert_int_equal(row.cursor, 17);
	store_sink_clear(&row);

	assert_int_equal(store_sink_pending(fx->st, "gone", 1, &err), -1);
	assert_int_equal(err.status, 404);
}

static void append_kind(struct store *st, size_t n, Graind__MetricKind kind)
{
	Graind__Sample *samples[64], *ptrs[64];
	struct gerr err = { 0 };

	assert_true(n <= 64);
	for (size_t i = 0; i < n; i++) {
		samples[i] = calloc(1, sizeof(Graind__Sample));
		graind__sample__init(samples[i]);
		samples[i]->probe = "p";
		samples[i]->map = "m";
		samples[i]->name = "m.v";
		samples[i]->kind = GRAIND__SAMPLE_KIND__METRIC;
		samples[i]->value = (double)i;
		samples[i]->metric_kind = kind;
		ptrs[i] = samples[i];
	}
	if (store_samples_append(st, ptrs, n, &err) < 0)
		fail_msg("append: %s", err.msg);
	for (size_t i = 0; i < n; i++)
		free(samples[i]);
}

static void append_samples(struct store *st, size_t n)
{
	append_kind(st, n, GRAIND__METRIC_KIND__COUNTER);
}

static int count_listed(const Graind__Sample *s, void *ctx)
{
	uint64_t *first = ctx;

	if (!*first)
		*first = s->id;
	return 0;
}

static void test_prune_delivered(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct gerr err = { 0 };
	uint64_t pruned = 99, first = 0;
	bool more;

	append_samples(fx->st, 10);
	assert_int_equal(store_sample_count(fx->st), 10);
	/* Without sinks nothing is pruned. */
	assert_int_equal(store_samples_prune_delivered(fx->st, INT64_MAX / 2000000, &pruned, &err), 0);
	assert_int_equal(pruned, 0);

	put_ok(fx->st, "a", "x", true);
	put_ok(fx->st, "b", "x", true);
	assert_int_equal(store_sink_delivered(fx->st, "a", 8, 8, 1, &err), 0);
	assert_int_equal(store_sink_delivered(fx->st, "b", 5, 5, 1, &err), 0);
	/* Delivered everywhere, but not old enough. */
	assert_int_equal(store_samples_prune_delivered(fx->st, 1000, &pruned, &err), 0);
	assert_int_equal(pruned, 0);
	/* Old enough: only what the slowest sink has. */
	assert_int_equal(store_samples_prune_delivered(fx->st, INT64_MAX / 2000000, &pruned, &err), 0);
	assert_int_equal(pruned, 5);
	assert_int_equal(store_sample_count(fx->st), 5);
	assert_int_equal(store_samples_list(fx->st, NULL, NULL, 0, 100, count_listed, NULL, &first,
					    &more, &err), 0);
	assert_int_equal(first, 6);
}

/* ---------------------------------------------------------------- checks */

static void expect_refused(const Graind__Sink *sink, const char *words)
{
	struct gerr err = { 0 };

	assert_int_equal(sinks_check_config(sink, &err), -1);
	assert_int_equal(err.status, 400);
	if (!strstr(err.msg, words))
		fail_msg("'%s' does not mention '%s'", err.msg, words);
}

static void test_check_config(void **state)
{
	Graind__Sink sink = GRAIND__SINK__INIT;
	Graind__StatsdSink sd = GRAIND__STATSD_SINK__INIT;
	Graind__S3Sink s3 = GRAIND__S3_SINK__INIT;
	struct gerr err = { 0 };

	(void)state;
	expect_refused(&sink, "'statsd' or an 's3'");
	sink.kind_case = GRAIND__SINK__KIND_STATSD;
	sink.statsd = &sd;
	expect_refused(&sink, "statsd.host");
	sd.host = "localhost";
	expect_refused(&sink, "statsd.port");
	sd.port = 8125;
	assert_int_equal(sinks_check_config(&sink, &err), 0);
	sd.max_datagram = 63;
	expect_refused(&sink, "maxDatagram");
	sd.max_datagram = 65508;
	expect_refused(&sink, "maxDatagram");
	sd.max_datagram = 64;
	assert_int_equal(sinks_check_config(&sink, &err), 0);

	sink.kind_case = GRAIND__SINK__KIND_S3;
	sink.s3 = &s3;
	expect_refused(&sink, "s3.endpoint");
	s3.endpoint = "http://127.0.0.1:9000";
	expect_refused(&sink, "s3.bucket");
	s3.bucket = "Bad_Bucket";
	expect_refused(&sink, "s3.bucket");
	s3.bucket = "samples";
	s3.access_key_id = "AKIA";
	expect_refused(&sink, "exactly one");
	s3.secret_access_key = "k";
	s3.secret_file = "/etc/hostname";
	expect_refused(&sink, "exactly one");
	s3.secret_access_key = "";
	s3.secret_file = "/nonexistent/secret";
	expect_refused(&sink, "s3.secretFile");
	s3.secret_file = "/etc/hostname";
	assert_int_equal(sinks_check_config(&sink, &err), 0);
}

/* ---------------------------------------------------------------- statsd */

struct peer {
	int fd;
	unsigned port;
};

static void peer_open(struct peer *p)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p->fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(p->fd >= 0);
	assert_int_equal(bind(p->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(p->fd, (struct sockaddr *)&sin, &len), 0);
	p->port = ntohs(sin.sin_port);
}

/* Every datagram waiting, joined by '\n' into buf; *n_dgrams counts them
 * and *max_len is the largest. */
static void peer_read(struct peer *p, char *buf, size_t size, size_t *n_dgrams, size_t *max_len)
{
	struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
	size_t at = 0;
	ssize_t n;

	*n_dgrams = 0;
	*max_len = 0;
	buf[0] = '\0';
	while (poll(&pfd, 1, 200) == 1) {
		n = recv(p->fd, buf + at, size - at - 2, 0);
		assert_true(n >= 0);
		(*n_dgrams)++;
		if ((size_t)n > *max_len)
			*max_len = (size_t)n;
		at += (size_t)n;
		buf[at++] = '\n';
		buf[at] = '\0';
	}
}

static struct statsd *open_sd(struct peer *p, Graind__TagDialect dialect, const char *prefix,
			      unsigned max_datagram)
{
	Graind__StatsdSink cfg = GRAIND__STATSD_SINK__INIT;
	struct statsd *sd = NULL;
	struct gerr err = { 0 };

	cfg.host = "127.0.0.1";
	cfg.port = p->port;
	cfg.prefix = (char *)prefix;
	cfg.dialect = dialect;
	cfg.max_datagram = max_datagram;
	if (statsd_open(&cfg, NULL, &sd, &err) < 0)
		fail_msg("statsd_open: %s", err.msg);
	return sd;
}

/* A metric sample with tags given as "k", "v", "k2", "v2", ..., NULL. */
static Graind__Sample *metric(const char *map, const char *name, Graind__MetricKind kind,
			      double value, ...)
{
	Graind__Sample *s = calloc(1, sizeof(*s));
	const char *k;
	va_list ap;

	graind__sample__init(s);
	s->probe = "p";
	s->map = (char *)map;
	s->name = (char *)name;
	s->kind = GRAIND__SAMPLE_KIND__METRIC;
	s->metric_kind = kind;
	s->value = value;
	s->tags = calloc(8, sizeof(*s->tags));
	va_start(ap, value);
	while ((k = va_arg(ap, const char *)) != NULL) {
		Graind__Tag *t = calloc(1, sizeof(*t));

		graind__tag__init(t);
		t->key = (char *)k;
		t->value = (char *)va_arg(ap, const char *);
		s->tags[s->n_tags++] = t;
	}
	va_end(ap);
	return s;
}

static Graind__Sample *event(const char *map)
{
	Graind__Sample *s = metric(map, "e", GRAIND__METRIC_KIND__COUNTER, 1, NULL);

	s->kind = GRAIND__SAMPLE_KIND__EVENT;
	return s;
}

static void free_samples(Graind__Sample **s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t t = 0; t < s[i]->n_tags; t++)
			free(s[i]->tags[t]);
		free(s[i]->tags);
		free(s[i]);
	}
}

static void send_ok(struct statsd *sd, Graind__Sample **s, size_t n)
{
	struct gerr err = { 0 };
	size_t bytes = 0;

	if (statsd_send(sd, s, n, &bytes, &err) < 0)
		fail_msg("statsd_send: %s", err.msg);
}

static void test_statsd_types_and_deltas(void **state)
{
	struct peer p;
	struct statsd *sd;
	Graind__Sample *s[6];
	char buf[4096];
	size_t n, max;

	(void)state;
	peer_open(&p);
	sd = open_sd(&p, GRAIND__TAG_DIALECT__TAG_DIALECT_DOGSTATSD, "gr", 0);
	s[0] = metric("counts", "counts.count", GRAIND__METRIC_KIND__COUNTER, 10,
		      "syscall", "read", NULL);
	s[1] = metric("mem", "mem.used", GRAIND__METRIC_KIND__GAUGE, 7.5, "host", "a b|c", NULL);
	s[2] = event("events");
	s[3] = event("events");
	s[4] = event("other");
	send_ok(sd, s, 5);
	peer_read(&p, buf, sizeof(buf), &n, &max);
	/* The counter's first value only records; the others go out, with
	 * the '|' and ' ' of the tag value made safe. */
	assert_string_equal(buf, "gr.mem.used:7.5|g|#host:a_b_c\n"
				 "gr.events.events:2|c\ngr.other.events:1|c\n");
	assert_int_equal(n, 1);

	s[0]->value = 25;
	send_ok(sd, s, 1);
	peer_read(&p, buf, sizeof(buf), &n, &max);
	assert_string_equal(buf, "gr.counts.count:15|c|#syscall:read\n");
	/* No change, no line; a smaller value is a reset counting from 0. */
	send_ok(sd, s, 1);
	s[5] = metric("counts", "counts.count", GRAIND__METRIC_KIND__COUNTER, 4,
		      "syscall", "read", NULL);
	send_ok(sd, &s[5], 1);
	peer_read(&p, buf, sizeof(buf), &n, &max);
	assert_string_equal(buf, "gr.counts.count:4|c|#syscall:read\n");
	free_samples(s, 6);
	statsd_close(sd);
	close(p.fd);
}

/* Samples the collector already made deltas (outputs with delta) go out
 * as they are, from the first one: no baseline, no second difference. */
static void test_statsd_collector_deltas(void **state)
{
	struct peer p;
	struct statsd *sd;
	Graind__Sample *s[1];
	char buf[4096];
	size_t n, max;

	(void)state;
	peer_open(&p);
	sd = open_sd(&p, GRAIND__TAG_DIALECT__TAG_DIALECT_NONE, "gr", 0);
	s[0] = metric("counts", "counts.count", GRAIND__METRIC_KIND__COUNTER, 6, NULL);
	s[0]->delta = true;
	send_ok(sd, s, 1);
	peer_read(&p, buf, sizeof(buf), &n, &max);
	assert_string_equal(buf, "gr.counts.count:6|c\n");
	s[0]->value = 4;
	send_ok(sd, s, 1);
	peer_read(&p, buf, sizeof(buf), &n, &max);
	assert_string_equal(buf, "gr.counts.count:4|c\n");
	free_samples(s, 1);
	statsd_close(sd);
	close(p.fd);
}

static void test_statsd_dialects(void **state)
{
	static const struct {
		Graind__TagDialect dialect;
		const char *want;
	} cases[] = {
		{ GRAIND__TAG_DIALECT__TAG_DIALECT_NONE, "x.m.v.eth0.10_0_0_1:3|g\n" },
		{ GRAIND__TAG_DIALECT__TAG_DIALECT_DOGSTATSD, "x.m.v:3|g|#if:eth0,ip:10.0.0.1\n" },
		{ GRAIND__TAG_DIALECT__TAG_DIALECT_INFLUX, "x.m.v,if=eth0,ip=10.0.0.1:3|g\n" },
		{ GRAIND__TAG_DIALECT__TAG_DIALECT_GRAPHITE, "x.m.v;if=eth0;ip=10.0.0.1:3|g\n" },
	};
	Graind__Sample *s = metric("m", "m.v", GRAIND__METRIC_KIND__GAUGE, 3,
				   "if", "eth0", "ip", "10.0.0.1", NULL);
	struct peer p;
	char buf[1024];
	size_t n, max;

	(void)state;
	peer_open(&p);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct statsd *sd = open_sd(&p, cases[i].dialect, "x", 0);

		send_ok(sd, &s, 1);
		peer_read(&p, buf, sizeof(buf), &n, &max);
		assert_string_equal(buf, cases[i].want);
		statsd_close(sd);
	}
	free_samples(&s, 1);
	close(p.fd);
}

static void test_statsd_datagram_limit(void **state)
{
	enum { N = 50 };
	Graind__Sample *s[N];
	char buf[16384], name[32], value[16];
	struct statsd *sd;
	struct peer p;
	size_t n, max, lines = 0;

	(void)state;
	peer_open(&p);
	sd = open_sd(&p, GRAIND__TAG_DIALECT__TAG_DIALECT_INFLUX, "", 100);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "map.gauge%d", i);
		snprintf(value, sizeof(value), "%d", i);
		s[i] = metric("map", strdup(name), GRAIND__METRIC_KIND__GAUGE, i,
			      "k", strdup(value), NULL);
	}
	/* One line alone over the limit is left out, the rest still go. */
	free(s[7]->tags[0]->value);
	s[7]->tags[0]->value = strdup("a-very-long-tag-value-that-makes-this-line-longer-than-"
				      "one-hundred-bytes-on-its-own-xxxxxxxxxxxxxx");
	send_ok(sd, s, N);
	peer_read(&p, buf, sizeof(buf), &n, &max);
	assert_true(max <= 100);
	assert_true(n >= 10);
	for (char *c = buf; *c; c++)
		lines += *c == '\n';
	/* n datagram ends plus the separators inside them. */
	assert_int_equal(lines, N - 1);
	assert_null(strstr(buf, "gauge7,"));
	assert_non_null(strstr(buf, "map.gauge49,k=49:49|g"));
	for (int i = 0; i < N; i++) {
		free(s[i]->name);
		free(s[i]->tags[0]->value);
	}
	free_samples(s, N);
	statsd_close(sd);
	close(p.fd);
}

static void test_statsd_histogram_as_timers(void **state)
{
	Graind__Sample *s[3];
	struct statsd *sd;
	struct peer p;
	char buf[1024];
	size_t n, max;

	(void)state;
	peer_open(&p);
	sd = open_sd(&p, GRAIND__TAG_DIALECT__TAG_DIALECT_DOGSTATSD, "", 0);
	s[0] = metric("lat", "lat.us_bucket", GRAIND__METRIC_KIND__COUNTER, 1, "cpu", "0", "le", "1", NULL);
	s[1] = metric("lat", "lat.us_bucket", GRAIND__METRIC_KIND__COUNTER, 3, "cpu", "0", "le", "2", NULL);
	s[2] = metric("lat", "lat.us_bucket", GRAIND__METRIC_KIND__COUNTER, 3, "cpu", "0", "le", "4", NULL);
	send_ok(sd, s, 3);              /* first values: recorded */
	peer_read(&p, buf, sizeof(buf), &n, &max);
	assert_string_equal(buf, "");
	/* 2 more at le=1, 1 more at le=2 (cumulative 3 → 6), 4 more at le=4. */
	s[0]->value = 3;
	s[1]->value = 6;
	s[2]->value = 10;
	send_ok(sd, s, 3);
	peer_read(&p, buf, sizeof(buf), &n, &max);
	assert_string_equal(buf, "lat.us:1|ms|@0.5|#cpu:0\nlat.us:2|ms|#cpu:0\n"
				 "lat.us:4|ms|@0.25|#cpu:0\n");
	free_samples(s, 3);
	statsd_close(sd);
	close(p.fd);
}

static void test_statsd_refused(void **state)
{
	Graind__Sample *s = metric("m", "m.v", GRAIND__METRIC_KIND__GAUGE, 1, NULL);
	struct gerr err = { 0 };
	struct statsd *sd;
	struct peer p;
	size_t bytes;
	int rc;

	(void)state;
	peer_open(&p);
	sd = open_sd(&p, GRAIND__TAG_DIALECT__TAG_DIALECT_NONE, "", 0);
	close(p.fd);                    /* nobody listens any more */
	rc = statsd_send(sd, &s, 1, &bytes, &err);
	if (rc == 0)                    /* the refusal may come with the next send */
		rc = statsd_send(sd, &s, 1, &bytes, &err);
	assert_int_equal(rc, -1);
	assert_int_equal(err.status, 502);
	assert_non_null(strstr(err.msg, "refused"));
	free_samples(&s, 1);
	statsd_close(sd);
}

/* ---------------------------------------------------------------- forwarder */

static void peer_bind(struct peer *p, unsigned port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p->fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(p->fd >= 0);
	assert_int_equal(bind(p->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	p->port = port;
}

/* Wait up to 5 s for the sink's row to satisfy `done`. */
static void wait_row(struct store *st, bool (*done)(const struct store_sink *, uint64_t),
		     uint64_t arg, struct store_sink *row)
{
	for (int i = 0; i < 500; i++) {
		get_ok(st, "sd", row);
		if (done(row, arg))
			return;
		store_sink_clear(row);
		usleep(10000);
	}
	fail_msg("sink row not as expected in time");
}

static bool cursor_at(const struct store_sink *row, uint64_t cursor)
{
	return row->cursor == cursor;
}

static bool has_error(const struct store_sink *row, uint64_t unused)
{
	(void)unused;
	return row->last_error[0] != '\0';
}

static void test_forwarder_statsd(void **state)
{
	struct tmpdb_fixture *fx = *state;
	Graind__Sink sink = GRAIND__SINK__INIT;
	Graind__StatsdSink sd = GRAIND__STATSD_SINK__INIT;
	Graind__SinkSelector sel = GRAIND__SINK_SELECTOR__INIT;
	char *probes[] = { "p" };
	struct agent ag = { 0 };
	struct store_sink row = { 0 };
	struct sinks *sinks = NULL;
	struct gerr err = { 0 };
	uint8_t packed[256];
	char buf[4096];
	size_t n, max, len;
	bool created;
	struct peer p;

	peer_open(&p);
	sd.host = "127.0.0.1";
	sd.port = p.port;
	sd.flush_interval_ms = 20;
	sink.kind_case = GRAIND__SINK__KIND_STATSD;
	sink.statsd = &sd;
	sel.probes = probes;
	sel.n_probes = 1;
	sink.selector = &sel;
	len = graind__sink__pack(&sink, packed);
	assert_int_equal(store_sink_put(fx->st, "sd", packed, len, 0, &created, &err), 0);
	ag.store = fx->st;
	ag.cfg.sink_retention_s = 3600;
	if (sinks_start(&ag, &sinks, &err) < 0)
		fail_msg("sinks_start: %s", err.msg);

	append_kind(fx->st, 3, GRAIND__METRIC_KIND__GAUGE);
	wait_row(fx->st, cursor_at, 3, &row);
	assert_int_equal(row.samples_sent, 3);
	store_sink_clear(&row);
	peer_read(&p, buf, sizeof(buf), &n, &max);
	assert_string_equal(buf, "m.v:0|g\nm.v:1|g\nm.v:2|g\n");

	/* The peer goes away: the cursor waits, the error shows. */
	close(p.fd);
	append_kind(fx->st, 2, GRAIND__METRIC_KIND__GAUGE);
	wait_row(fx->st, has_error, 0, &row);
	assert_int_equal(row.cursor, 3);
	assert_non_null(strstr(row.last_error, "refused"));
	store_sink_clear(&row);
	assert_true(sinks_errors(sinks, "sd") >= 1);

	/* It comes back: the same samples arrive, at least once. */
	peer_bind(&p, p.port);
	wait_row(fx->st, cursor_at, 5, &row);
	assert_string_equal(row.last_error, "");
	store_sink_clear(&row);
	peer_read(&p, buf, sizeof(buf), &n, &max);
	assert_non_null(strstr(buf, "m.v:0|g\nm.v:1|g\n"));

	sink.name = "sd";
	sink.selector = NULL;
	sink.statsd = NULL;
	get_ok(fx->st, "sd", &row);
	assert_int_equal(sinks_health(sinks, &sink, &row, &err), 0);
	store_sink_clear(&row);
	assert_int_equal(sink.health->cursor, 5);
	assert_int_equal(sink.health->lag_rows, 0);
	assert_int_equal(sink.health->samples_sent, 5);
	assert_non_null(strstr(sink.health->last_success, "T"));
	graind__sink_health__free_unpacked(sink.health, NULL);
	sinks_stop(sinks);
	close(p.fd);
}

/* ---------------------------------------------------------------- stuck S3 */

/* An S3 "endpoint" whose kernel takes connections and requests, and that
 * never answers (nothing accepts). */
static int blackhole(char *endpoint, size_t size)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t alen = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &alen), 0);
	snprintf(endpoint, size, "http://127.0.0.1:%d", ntohs(addr.sin_port));
	return fd;
}

/* Wait up to 10 s for a connection to the listening fd. */
static void wait_connection(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	assert_int_equal(poll(&p, 1, 10000), 1);
}

static void put_s3_sink(struct store *st, const char *endpoint, unsigned rows)
{
	Graind__Sink sink = GRAIND__SINK__INIT;
	Graind__S3Sink s3 = GRAIND__S3_SINK__INIT;
	struct gerr err = { 0 };
	uint8_t packed[512];
	bool created;
	size_t len;

	s3.endpoint = (char *)endpoint;
	s3.bucket = "bkt";
	s3.access_key_id = "AKID";
	s3.secret_access_key = "secret";
	s3.path_style = 1;
	s3.batch_max_rows = rows;
	s3.batch_max_age_ms = 50;
	sink.kind_case = GRAIND__SINK__KIND_S3;
	sink.s3 = &s3;
	assert_true(graind__sink__get_packed_size(&sink) <= sizeof(packed));
	len = graind__sink__pack(&sink, packed);
	assert_int_equal(store_sink_put(st, "s3", packed, len, 0, &created, &err), 0);
}

/* n event samples of probe "p", timed now (S3 keys need a time). */
static void append_events(struct store *st, size_t n)
{
	Graind__Sample samples[16], *ptrs[16];
	char now[CLOCK_TEXT_MAX];
	struct gerr err = { 0 };

	assert_true(n <= 16);
	clock_format(clock_unix_ms(), now);
	for (size_t i = 0; i < n; i++) {
		graind__sample__init(&samples[i]);
		samples[i].probe = "p";
		samples[i].map = "events";
		samples[i].time = now;
		samples[i].kind = GRAIND__SAMPLE_KIND__EVENT;
		ptrs[i] = &samples[i];
	}
	if (store_samples_append(st, ptrs, n, &err) < 0)
		fail_msg("append: %s", err.msg);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sinks *start_sinks(struct agent *ag, struct store *st)
{
	struct sinks *sinks = NULL;
	struct gerr err = { 0 };

	ag->store = st;
	ag->cfg.sink_retention_s = 3600;
	if (sinks_start(ag, &sinks, &err) < 0)
		fail_msg("sinks_start: %s", err.msg);
	return sinks;
}

/* A PUT that never gets an answer holds up neither a change of its sink,
 * nor its deletion, nor the end of every forwarder. */
static void test_forwarder_stuck_s3(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct agent ag = { 0 };
	struct sinks *sinks;
	struct gerr err = { 0 };
	char endpoint[64];
	int fd = blackhole(endpoint, sizeof(endpoint)), c;
	double t0;

	put_s3_sink(fx->st, endpoint, 100);
	sinks = start_sinks(&ag, fx->st);
	append_events(fx->st, 3);
	wait_connection(fd);
	c = accept(fd, NULL, NULL);

	put_s3_sink(fx->st, endpoint, 99);
	t0 = now_s();
	sinks_changed(sinks, "s3");
	assert_true(now_s() - t0 < 0.2);
	/* The new forwarder starts once the old one is out of its PUT. */
	wait_connection(fd);
	close(c);
	c = accept(fd, NULL, NULL);

	assert_int_equal(store_sink_delete(fx->st, "s3", &err), 0);
	t0 = now_s();
	sinks_changed(sinks, "s3");
	assert_true(now_s() - t0 < 0.2);

	put_s3_sink(fx->st, endpoint, 100);
	sinks_changed(sinks, "s3");
	wait_connection(fd);
	t0 = now_s();
	sinks_stop(sinks);
	assert_true(now_s() - t0 < 2.0);
	close(c);
	close(fd);
}

/* A forwarder that finds a pending batch (the agent stopped during its
 * PUT) sends exactly that batch first, at once, although more samples
 * came after it and the batch is not due by its size. */
static void test_forwarder_resends_pending_batch(void **state)
{
	struct tmpdb_fixture *fx = *state;
	struct agent ag = { 0 };
	struct sinks *sinks;
	struct gerr err = { 0 };
	char endpoint[64], req[512] = "";
	int fd = blackhole(endpoint, sizeof(endpoint)), c;
	size_t len = 0;
	ssize_t r;

	put_s3_sink(fx->st, endpoint, 100);
	append_events(fx->st, 6);
	assert_int_equal(store_sink_pending(fx->st, "s3", 3, &err), 0);
	sinks = start_sinks(&ag, fx->st);
	wait_connection(fd);
	c = accept(fd, NULL, NULL);
	while (!strstr(req, "\r\n") && (r = read(c, req + len, sizeof(req) - 1 - len)) > 0) {
		len += (size_t)r;
		req[len] = '\0';
	}
	assert_non_null(strstr(req, "/1-3.ndjson.gz HTTP/1.1\r\n"));
	sinks_stop(sinks);
	close(c);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get_replace_delete, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_list_ordered, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_list_follows_changes, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_delivered_and_failed, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_pending_batch, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_prune_delivered, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test(test_check_config),
		cmocka_unit_test(test_statsd_types_and_deltas),
		cmocka_unit_test(test_statsd_collector_deltas),
		cmocka_unit_test(test_statsd_dialects),
		cmocka_unit_test(test_statsd_datagram_limit),
		cmocka_unit_test(test_statsd_histogram_as_timers),
		cmocka_unit_test(test_statsd_refused),
		cmocka_unit_test_setup_teardown(test_forwarder_statsd, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_forwarder_stuck_s3, tmpdb_setup, tmpdb_teardown),
		cmocka_unit_test_setup_teardown(test_forwarder_resends_pending_batch, tmpdb_setup,
						tmpdb_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
