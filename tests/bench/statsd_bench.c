/* StatsD lines formed and sent by server/sink/statsd.c on loopback, and
 * the bare socket path it is measured against.
 *
 *   statsd_bench SECONDS
 *
 * A reader thread drains a UDP socket on 127.0.0.1 and counts datagrams
 * and lines. Two runs of SECONDS each, one line of key=value each:
 *   statsd  statsd_send() of batches of 1000 metric samples (counters,
 *           gauges, histogram buckets, dogstatsd tags), every sample one
 *           line; datagrams and bytes counted at send() (--wrap=send)
 *   bare    send() of pre-formatted datagrams of the mean size the
 *           statsd run sent, in a loop
 * Keys: batches, lines (formed), datagrams, bytes, seconds (sending),
 * recv_lines, recv_datagrams (what the reader got). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "server/sink/statsd.h"

#define BATCH      1000   /* the forwarder's StatsD batch */
#define N_COUNTERS 600
#define N_GAUGES   300
#define N_HISTS    10     /* each with 10 buckets: 100 samples */
#define N_BUCKETS  10
#define RCVBUF     (32 << 20)
#define RECV_VLEN  64

/* ---------------------------------------------------------------- send() */

static uint64_t sent_datagrams, sent_bytes;

ssize_t __real_send(int fd, const void *buf, size_t len, int flags);

/* statsd.c's send(), counted. */
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags)
{
	ssize_t n = __real_send(fd, buf, len, flags);

	if (n > 0) {
		sent_datagrams++;
		sent_bytes += (uint64_t)n;
	}
	return n;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "statsd_bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---------------------------------------------------------------- reader */

struct reader {
	int fd;
	uint16_t port;
	atomic_bool stop;
	uint64_t datagrams, lines, bytes;
	pthread_t thread;
};

static void *reader_main(void *arg)
{
	static char bufs[RECV_VLEN][65536];
	struct reader *r = arg;
	struct mmsghdr msgs[RECV_VLEN];
	struct iovec iov[RECV_VLEN];
	int n;

	for (int i = 0; i < RECV_VLEN; i++) {
		iov[i] = (struct iovec){ .iov_base = bufs[i], .iov_len = sizeof(bufs[i]) };
		msgs[i] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &iov[i], .msg_iovlen = 1 } };
	}
	for (;;) {
		n = recvmmsg(r->fd, msgs, RECV_VLEN, MSG_WAITFORONE, NULL);
		if (n < 0) {
			/* The receive timeout: done once told to stop. */
			if ((errno == EAGAIN || errno == EINTR) && !atomic_load(&r->stop))
				continue;
			if (errno == EAGAIN || errno == EINTR)
				break;
			die("recvmmsg");
		}
		for (int i = 0; i < n; i++) {
			const char *p = bufs[i], *end = p + msgs[i].msg_len;

			r->datagrams++;
			r->bytes += msgs[i].msg_len;
			r->lines += msgs[i].msg_len > 0;
			while ((p = memchr(p, '\n', (size_t)(end - p)))) {
				r->lines++;
				p++;
			}
		}
	}
	return NULL;
}

static void reader_start(struct reader *r)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_usec = 200000 };
	socklen_t len = sizeof(sa);
	int size = RCVBUF;

	memset(r, 0, sizeof(*r));
	r->fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (r->fd < 0)
		die("socket");
	/* Past rmem_max as root; the plain option otherwise. */
	if (setsockopt(r->fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0)
		setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (bind(r->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(r->fd, (struct sockaddr *)&sa, &len) < 0)
		die("bind");
	r->port = ntohs(sa.sin_port);
	if (pthread_create(&r->thread, NULL, reader_main, r))
		die("pthread_create");
}

/* Wait for the reader to drain its socket, then stop it. */
static void reader_stop(struct reader *r)
{
	atomic_store(&r->stop, true);
	pthread_join(r->thread, NULL);
	close(r->fd);
}

/* ---------------------------------------------------------------- samples */

struct sample_set {
	Graind__Sample samples[BATCH];
	Graind__Sample *ptrs[BATCH];
	Graind__Tag tags[BATCH][3];
	Graind__Tag *tag_ptrs[BATCH][3];
	char text[BATCH][3][32];
};

static void set_tag(struct sample_set *set, size_t i, size_t t, const char *key,
		    const char *fmt, unsigned v)
{
	Graind__Tag *tag = &set->tags[i][t];

	graind__tag__init(tag);
	tag->key = (char *)key;
	snprintf(set->text[i][t], sizeof(set->text[i][t]), fmt, v);
	tag->value = set->text[i][t];
	set->tag_ptrs[i][t] = tag;
	set->samples[i].tags = set->tag_ptrs[i];
	set->samples[i].n_tags = t + 1;
}

/* Metric samples as a probe's metric outputs make them: per-process
 * syscall counters, per-CPU gauges, latency histograms. */
static void samples_build(struct sample_set *set)
{
	for (size_t i = 0; i < BATCH; i++) {
		Graind__Sample *s = &set->samples[i];

		graind__sample__init(s);
		s->id = i + 1;
		s->probe = "sys/activity";
		s->map = "counts";
		s->time = "2026-11-25T14:58:20.947Z";
		s->kind = GRAIND__SAMPLE_KIND__METRIC;
		if (i < N_COUNTERS) {
			s->name = "counts.syscalls";
			s->metric_kind = GRAIND__METRIC_KIND__COUNTER;
			set_tag(set, i, 0, "comm", "worker-%u", (unsigned)i / 6);
			set_tag(set, i, 1, "syscall", "nr_%u", (unsigned)i % 6);
		} else if (i < N_COUNTERS + N_GAUGES) {
			s->name = "runq.length";
			s->metric_kind = GRAIND__METRIC_KIND__GAUGE;
			set_tag(set, i, 0, "cpu", "%u", (unsigned)(i - N_COUNTERS));
		} else {
			size_t h = (i - N_COUNTERS - N_GAUGES) / N_BUCKETS;
			size_t b = (i - N_COUNTERS - N_GAUGES) % N_BUCKETS;

			s->name = "latency.us_bucket";
			s->metric_kind = GRAIND__METRIC_KIND__COUNTER;
			set_tag(set, i, 0, "op", "op%u", (unsigned)h);
			set_tag(set, i, 1, "le", "%u", 1u << (b + 2));
		}
		set->ptrs[i] = s;
	}
}

/* The values of batch `round`: counters move by 3, each histogram bucket
 * gets one more sample, gauges change; so that every sample is a line. */
static void samples_advance(struct sample_set *set, uint64_t round)
{
	for (size_t i = 0; i < BATCH; i++) {
		Graind__Sample *s = &set->samples[i];

		if (i < N_COUNTERS)
			s->value = (double)(round * 3 + i);
		else if (i < N_COUNTERS + N_GAUGES)
			s->value = (double)((round + i) % 97);
		else
			s->value = (double)(round * ((i - N_COUNTERS - N_GAUGES) % N_BUCKETS + 1));
	}
}

/* ---------------------------------------------------------------- runs */

static void run_statsd(double seconds, struct reader *r)
{
	Graind__StatsdSink cfg = GRAIND__STATSD_SINK__INIT;
	static struct sample_set set;
	struct statsd *sd = NULL;
	struct gerr err = { 0 };
	uint64_t round = 0, batches = 0, lines = 0;
	size_t bytes;
	double t0, t;

	cfg.host = "127.0.0.1";
	cfg.port = r->port;
	cfg.prefix = "graind";
	cfg.dialect = GRAIND__TAG_DIALECT__TAG_DIALECT_DOGSTATSD;
	if (statsd_open(&cfg, NULL, &sd, &err) < 0) {
		fprintf(stderr, "statsd_bench: %s\n", err.msg);
		exit(1);
	}
	samples_build(&set);
	/* The first values of counters only set where they start. */
	samples_advance(&set, ++round);
	if (statsd_send(sd, set.ptrs, BATCH, &bytes, &err) < 0)
		goto failed;
	usleep(100000);
	r->datagrams = r->lines = r->bytes = 0;
	sent_datagrams = sent_bytes = 0;
	t0 = now_s();
	do {
		samples_advance(&set, ++round);
		if (statsd_send(sd, set.ptrs, BATCH, &bytes, &err) < 0)
			goto failed;
		batches++;
		lines += BATCH;
		t = now_s();
	} while (t - t0 < seconds);
	reader_stop(r);
	statsd_close(sd);
	printf("statsd batches=%llu lines=%llu datagrams=%llu bytes=%llu seconds=%.4f "
	       "recv_lines=%llu recv_datagrams=%llu\n",
	       (unsigned long long)batches, (unsigned long long)lines,
	       (unsigned long long)sent_datagrams, (unsigned long long)sent_bytes, t - t0,
	       (unsigned long long)r->lines, (unsigned long long)r->datagrams);
	return;
failed:
	fprintf(stderr, "statsd_bench: statsd_send: %s\n", err.msg);
	exit(1);
}

/* Datagrams of `size` bytes of lines like the ones statsd.c forms. */
static void run_bare(double seconds, size_t size, double lines_per_datagram,
		     struct reader *r)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				  .sin_port = htons(r->port) };
	uint64_t datagrams = 0, bytes = 0;
	char dgram[65536];
	double t0, t;
	ssize_t n;
	int fd;

	memset(dgram, 'x', size);
	for (size_t at = 48; at < size; at += 48)
		dgram[at] = '\n';
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bare socket");
	t0 = now_s();
	do {
		/* The clock is read once per 64 sends: it costs as much as one. */
		for (int i = 0; i < 64; i++) {
			n = __real_send(fd, dgram, size, 0);
			if (n < 0)
				die("send");
			datagrams++;
			bytes += (uint64_t)n;
		}
		t = now_s();
	} while (t - t0 < seconds);
	reader_stop(r);
	close(fd);
	printf("bare datagrams=%llu bytes=%llu seconds=%.4f lines=%.0f recv_datagrams=%llu\n",
	       (unsigned long long)datagrams, (unsigned long long)bytes, t - t0,
	       (double)datagrams * lines_per_datagram, (unsigned long long)r->datagrams);
}

int main(int argc, char **argv)
{
	struct reader r;
	double seconds, per_dgram, lines_per_dgram;

	if (argc != 2 || (seconds = atof(argv[1])) <= 0) {
		fprintf(stderr, "usage: statsd_bench SECONDS\n");
		return 2;
	}
	reader_start(&r);
	run_statsd(seconds, &r);
	if (!sent_datagrams) {
		fprintf(stderr, "statsd_bench: statsd.c sent nothing\n");
		return 1;
	}
	per_dgram = (double)sent_bytes / (double)sent_datagrams;
	lines_per_dgram = (double)r.lines / (double)(r.datagrams ? r.datagrams : 1);
	reader_start(&r);
	run_bare(seconds, (size_t)(per_dgram + 0.5), lines_per_dgram, &r);
	return 0;
}
