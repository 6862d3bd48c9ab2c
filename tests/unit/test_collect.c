/* Unit tests of server/collect against the running kernel (needs root):
 * tests/bpf/emit.bpf.c attached by the real probe manager, counting and
 * emitting on every getpid() of this process; the collector turns it into
 * samples in a real store. The BPF objects come from $GRAIND_TEST_BPF
 * (default build/tests/bpf). */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "server/util/pbmsg.h"
#include "server/agent.h"
#include "server/collect/collect.h"
#include "server/collect/collect_int.h"
#include "server/collect/decode.h"
#include "server/features.h"
#include "server/probe/probe.h"
#include "server/util/sha256.h"
#include "store/store.h"
#include "store/store_int.h"

/* Pins of this run, apart from another run's on the same machine. */
static char pin_root[64];
#define PROBE "ut-emit"
#define AGG_PROBE "ut-emit-agg"

static struct agent ag;
static char state_dir[] = "/tmp/graind-collect-XXXXXX";
static char sha[SHA256_HEX_LEN + 1];
static const char comm[] = "emit-caller";    /* the calling thread's name */
static unsigned char *object;
static size_t object_len;
static uint64_t calls_made;     /* getpid() calls since the last attach */

/* ================================================================ wall clock */

/* CLOCK_REALTIME as this process sees it, moved by clock_shift_s: a test
 * sets it to play a jump of the wall clock. Defined here, it is the
 * clock_gettime() the agent's code calls. */
static volatile long clock_shift_s;

int clock_gettime(clockid_t id, struct timespec *ts)
{
	int ret = (int)syscall(SYS_clock_gettime, id, ts);

	if (ret == 0 && id == CLOCK_REALTIME)
		ts->tv_sec += clock_shift_s;
	return ret;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ================================================================ calls */

static void on_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	assert_int_equal(sched_setaffinity(0, sizeof(set), &set), 0);
}

static void any_cpu(void)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	for (int i = 0; i < CPU_SETSIZE; i++)
		CPU_SET(i, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

/* The calls come from a thread of their own, whose id is the probe's
 * target: the store and libbpf call getpid() on the other threads. */
static struct {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pid_t tid;
	int todo;               /* calls asked for; -1: exit */
} caller = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

/* n getpid() calls, half on CPU 0 and half on the last CPU. */
static void make_calls(int n)
{
	int last = libbpf_num_possible_cpus() - 1;

	for (int i = 0; i < n; i++) {
		on_cpu(i < n / 2 ? 0 : last);
		syscall(SYS_getpid);
	}
	any_cpu();
}

static void *caller_main(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, comm);
	pthread_mutex_lock(&caller.lock);
	caller.tid = gettid();
	pthread_cond_broadcast(&caller.cond);
	for (;;) {
		while (caller.todo == 0)
			pthread_cond_wait(&caller.cond, &caller.lock);
		if (caller.todo < 0)
			break;
		make_calls(caller.todo);
		caller.todo = 0;
		pthread_cond_broadcast(&caller.cond);
	}
	pthread_mutex_unlock(&caller.lock);
	return NULL;
}

static void caller_start(void)
{
	assert_int_equal(pthread_create(&caller.thread, NULL, caller_main, NULL), 0);
	pthread_mutex_lock(&caller.lock);
	while (!caller.tid)
		pthread_cond_wait(&caller.cond, &caller.lock);
	pthread_mutex_unlock(&caller.lock);
}

static void caller_stop(void)
{
	pthread_mutex_lock(&caller.lock);
	caller.todo = -1;
	pthread_cond_broadcast(&caller.cond);
	pthread_mutex_unlock(&caller.lock);
	pthread_join(caller.thread, NULL);
}

static void call_getpid(int n)
{
	pthread_mutex_lock(&caller.lock);
	caller.todo = n;
	pthread_cond_broadcast(&caller.cond);
	while (caller.todo)
		pthread_cond_wait(&caller.cond, &caller.lock);
	pthread_mutex_unlock(&caller.lock);
	calls_made += n;
}

/* ================================================================ fixtures */

static void read_object(void)
{
	const char *dir = getenv("GRAIND_TEST_BPF");
	char path[512];
	struct stat st;
	FILE *f;

	snprintf(path, sizeof(path), "%s/emit.bpf.o", dir && *dir ? dir : "build/tests/bpf");
	f = fopen(path, "rb");
	if (!f || fstat(fileno(f), &st) < 0)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	object = malloc(st.st_size);
	assert_non_null(object);
	object_len = fread(object, 1, st.st_size, f);
	assert_int_equal(object_len, (size_t)st.st_size);
	fclose(f);
}

#define NEW(type, desc) ((type *)pbmsg_new(&desc))

static void set(char **field, const char *value)
{
	assert_int_equal(pbmsg_set_string(field, value), 0);
}

static void add_output(Graind__ProbeSpec *s, Graind__OutputSpec *o)
{
	s->outputs = realloc(s->outputs, (s->n_outputs + 1) * sizeof(*s->outputs));
	assert_non_null(s->outputs);
	s->outputs[s->n_outputs++] = o;
}

static void add_none_output(Graind__ProbeSpec *s, const char *map)
{
	Graind__OutputSpec *o = NEW(Graind__OutputSpec, graind__output_spec__descriptor);

	set(&o->map, map);
	o->kind_case = GRAIND__OUTPUT_SPEC__KIND_NONE;
	o->none = true;
	add_output(s, o);
}

static void add_metric_output(Graind__ProbeSpec *s, const char *map, uint32_t poll_ms,
			      Graind__MetricKind kind)
{
	Graind__OutputSpec *o = NEW(Graind__OutputSpec, graind__output_spec__descriptor);

	set(&o->map, map);
	o->kind_case = GRAIND__OUTPUT_SPEC__KIND_METRIC;
	o->metric = NEW(Graind__MetricOutput, graind__metric_output__descriptor);
	o->metric->poll_interval_ms = poll_ms;
	o->metric->kind = kind;
	add_output(s, o);
}

static Graind__ProbeSpec *emit_spec(void)
{
	Graind__ProbeSpec *s = NEW(Graind__ProbeSpec, graind__probe_spec__descriptor);
	Graind__Constant *c = NEW(Graind__Constant, graind__constant__descriptor);
	char pid[16];

	s->object_case = GRAIND__PROBE_SPEC__OBJECT_OBJECT_SHA256;
	s->object_sha256 = strdup(sha);
	snprintf(pid, sizeof(pid), "%d", caller.tid);
	set(&c->name, "target_tid");
	set(&c->value, pid);
	s->constants = calloc(1, sizeof(*s->constants));
	s->constants[s->n_constants++] = c;
	add_metric_output(s, "calls", 50, GRAIND__METRIC_KIND__COUNTER);
	add_metric_output(s, "stats", 50, GRAIND__METRIC_KIND__GAUGE);
	return s;
}

/* Attach `name` running `s` and record it in the store as attached. */
static void attach_spec(const char *name, Graind__ProbeSpec *s)
{
	struct gerr err = { 0 };
	bool adopted, created, changed;
	size_t len = protobuf_c_message_get_packed_size(&s->base);
	uint8_t *packed = malloc(len);

	protobuf_c_message_pack(&s->base, packed);
	if (probe_attach(ag.probes, name, 1, s, object, object_len, &adopted, NULL, NULL, &err) < 0)
		fail_msg("probe_attach: %d %s", err.status, err.msg);
	if (store_probe_put(ag.store, name, sha, packed, len, true, NULL, &created, &changed,
			    &err) < 0)
		fail_msg("store_probe_put: %s", err.msg);
	free(packed);
	pbmsg_free(&s->base);
}

static void attach_probe(void)
{
	attach_spec(PROBE, emit_spec());
	calls_made = 0;
}

static int setup(void **state)
{
	struct gerr err = { 0 };
	char path[PATH_MAX];
	bool created;

	(void)state;
	read_object();
	sha256_hex(object, object_len, sha);
	assert_non_null(mkdtemp(state_dir));
	snprintf(path, sizeof(path), "%s/graind.db", state_dir);
	if (store_open(path, &ag.store, &err) < 0)
		fail_msg("store_open: %s", err.msg);
	snprintf(pin_root, sizeof(pin_root), "/sys/fs/bpf/graind-collect-unit-%d", (int)getpid());
	/* A fresh host may not have bpffs (or tracefs) mounted yet. */
	if (features_mount(&err) < 0)
		fail_msg("features_mount: %s", err.msg);
	if (probe_mgr_new(pin_root, &ag.probes, &err) < 0)
		fail_msg("probe_mgr_new: %s", err.msg);
	probe_detach(ag.probes, PROBE, NULL, NULL);
	probe_detach(ag.probes, AGG_PROBE, NULL, NULL);
	if (store_object_put(ag.store, sha, "emit.bpf.o", object, object_len, "", 0, false,
			     &created, &err) < 0)
		fail_msg("store_object_put: %s", err.msg);
	pthread_mutex_init(&ag.probe_lock, NULL);
	caller_start();
	attach_probe();
	if (collect_start(&ag, &ag.collector, &err) < 0)
		fail_msg("collect_start: %s", err.msg);
	return 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 96];

	(void)state;
	collect_stop(ag.collector);
	caller_stop();
	probe_detach(ag.probes, PROBE, NULL, NULL);
	probe_detach(ag.probes, AGG_PROBE, NULL, NULL);
	probe_mgr_free(ag.probes);
	store_close(ag.store);
	snprintf(cmd, sizeof(cmd), "rm -rf %s %s", state_dir, pin_root);
	if (system(cmd) != 0)
		return -1;
	free(object);
	return 0;
}

/* ================================================================ helpers */

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Samples of one map, copied out of the store. */
struct samples {
	Graind__Sample **s;
	size_t n;
	uint64_t after;
};

static int keep_sample(const Graind__Sample *s, void *ctx)
{
	struct samples *list = ctx;
	size_t len = protobuf_c_message_get_packed_size(&s->base);
	uint8_t *buf = malloc(len ? len : 1);

	protobuf_c_message_pack(&s->base, buf);
	list->s = realloc(list->s, (list->n + 1) * sizeof(*list->s));
	list->s[list->n] = (Graind__Sample *)protobuf_c_message_unpack(
		&graind__sample__descriptor, NULL, len, buf);
	list->s[list->n]->id = s->id;
	list->n++;
	list->after = s->id;
	free(buf);
	return 0;
}

static void samples_free(struct samples *list)
{
	for (size_t i = 0; i < list->n; i++)
		protobuf_c_message_free_unpacked(&list->s[i]->base, NULL);
	free(list->s);
	memset(list, 0, sizeof(*list));
}

/* Every sample of `map` of `probe` with an id after `after`. */
static void samples_of_probe(const char *probe, const char *map, uint64_t after,
			     struct samples *out)
{
	struct gerr err = { 0 };
	bool more = true;

	memset(out, 0, sizeof(*out));
	out->after = after;
	while (more)
		if (store_samples_list(ag.store, probe, map, out->after, 1000, keep_sample, NULL, out,
				       &more, &err) < 0)
			fail_msg("store_samples_list: %s", err.msg);
}

static void samples_of(const char *map, uint64_t after, struct samples *out)
{
	samples_of_probe(PROBE, map, after, out);
}

/* Wait up to 5 s for `want` samples of `map` after `after`. */
static void wait_samples(const char *map, uint64_t after, size_t want, struct samples *out)
{
	for (int i = 0; i < 100; i++) {
		samples_of(map, after, out);
		if (out->n >= want)
			return;
		samples_free(out);
		sleep_ms(50);
	}
	samples_of(map, after, out);
	fail_msg("%zu samples of %s after id %llu, expected %zu", out->n, map,
		 (unsigned long long)after, want);
}

static const Graind__Field *field(Graind__Field **fields, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(fields[i]->name, name) == 0)
			return fields[i];
	fail_msg("no field %s", name);
	return NULL;
}

static uint64_t uint_field(Graind__Field **fields, size_t n, const char *name)
{
	const Graind__Field *f = field(fields, n, name);

	assert_int_equal(f->value_case, GRAIND__FIELD__VALUE_UINT);
	return f->uint;
}

static const char *text_field(Graind__Field **fields, size_t n, const char *name)
{
	const Graind__Field *f = field(fields, n, name);

	assert_int_equal(f->value_case, GRAIND__FIELD__VALUE_TEXT);
	return f->text;
}

static const char *tag(const Graind__Sample *s, const char *key)
{
	for (size_t i = 0; i < s->n_tags; i++)
		if (strcmp(s->tags[i]->key, key) == 0)
			return s->tags[i]->value;
	fail_msg("sample %s has no tag %s", s->name, key);
	return NULL;
}

static void assert_time_format(const char *t)
{
	/* 2026-01-02T03:04:05.678Z */
	assert_int_equal(strlen(t), 24);
	assert_int_equal(t[4], '-');
	assert_int_equal(t[10], 'T');
	assert_int_equal(t[19], '.');
	assert_int_equal(t[23], 'Z');
}

/* The newest sample named `name`, waiting until its value is `want`. */
static void wait_metric(const char *map, const char *name, double want,
			Graind__Sample **out, struct samples *keep)
{
	for (int i = 0; i < 100; i++) {
		samples_of(map, 0, keep);
		for (size_t j = keep->n; j-- > 0;)
			if (strcmp(keep->s[j]->name, name) == 0) {
				if (keep->s[j]->value == want) {
					*out = keep->s[j];
					return;
				}
				break;
			}
		samples_free(keep);
		sleep_ms(50);
	}
	fail_msg("metric %s never reached %g", name, want);
}

/* ================================================================ tests */

#define N_CALLS 40

static void test_events_every_field(void **state)
{
	struct samples ev, rec;
	char want[32];

	(void)state;
	call_getpid(N_CALLS);
	wait_samples("events", 0, N_CALLS, &ev);
	wait_samples("records", 0, N_CALLS, &rec);
	sleep_ms(200);          /* none beyond N_CALLS */
	samples_free(&ev);
	samples_free(&rec);
	samples_of("events", 0, &ev);
	samples_of("records", 0, &rec);
	assert_int_equal(ev.n, N_CALLS);
	assert_int_equal(rec.n, N_CALLS);

	for (size_t i = 0; i < ev.n; i++) {
		Graind__Sample *s = ev.s[i];

		assert_string_equal(s->probe, PROBE);
		assert_string_equal(s->map, "events");
		assert_string_equal(s->name, "events");
		assert_int_equal(s->kind, GRAIND__SAMPLE_KIND__EVENT);
		assert_true(s->value == 1);
		assert_time_format(s->time);
		assert_int_equal(s->n_fields, 5);
		assert_int_equal(uint_field(s->fields, s->n_fields, "pid"), getpid());
		assert_int_equal(uint_field(s->fields, s->n_fields, "seq"), i + 1);
		assert_string_equal(text_field(s->fields, s->n_fields, "comm"), comm);
		snprintf(want, sizeof(want), "10.0.0.%zu", i + 2);
		assert_string_equal(text_field(s->fields, s->n_fields, "saddr"), want);
		assert_string_equal(text_field(s->fields, s->n_fields, "state"),
				    (i + 1) % 2 ? "EMIT_ODD" : "EMIT_EVEN");
	}
	/* Perf records come per CPU: in order within a CPU, every seq once. */
	{
		bool seen[N_CALLS + 1] = { false };

		for (size_t i = 0; i < rec.n; i++) {
			Graind__Sample *s = rec.s[i];
			uint64_t seq;
			const Graind__Field *delta;

			assert_string_equal(s->name, "records");
			assert_int_equal(s->kind, GRAIND__SAMPLE_KIND__EVENT);
			assert_int_equal(s->n_fields, 3);
			assert_int_equal(uint_field(s->fields, s->n_fields, "pid"), getpid());
			seq = uint_field(s->fields, s->n_fields, "seq");
			assert_in_range(seq, 1, N_CALLS);
			assert_false(seen[seq]);
			seen[seq] = true;
			delta = field(s->fields, s->n_fields, "delta");
			assert_int_equal(delta->value_case, GRAIND__FIELD__VALUE_INT);
			assert_int_equal(delta->int_, -(int64_t)seq);
		}
	}
	samples_free(&ev);
	samples_free(&rec);

	/* Internal maps give nothing. */
	samples_of(".bss", 0, &ev);
	assert_int_equal(ev.n, 0);
	samples_free(&ev);
}

static void test_metrics_counter_and_percpu_sum(void **state)
{
	struct samples calls, stats;
	Graind__Sample *s;
	char pid[16];

	(void)state;
	snprintf(pid, sizeof(pid), "%d", getpid());
	wait_metric("calls", "calls", (double)calls_made, &s, &calls);
	assert_int_equal(s->kind, GRAIND__SAMPLE_KIND__METRIC);
	assert_int_equal(s->metric_kind, GRAIND__METRIC_KIND__COUNTER);
	assert_int_equal(s->n_tags, 2);
	assert_string_equal(tag(s, "pid"), pid);
	assert_string_equal(tag(s, "comm"), comm);
	assert_int_equal(s->n_fields, 0);
	assert_time_format(s->time);
	samples_free(&calls);

	/* Summed over CPUs: the calls ran on two of them. */
	wait_metric("stats", "stats.hits", (double)calls_made, &s, &stats);
	assert_int_equal(s->metric_kind, GRAIND__METRIC_KIND__GAUGE);
	assert_int_equal(s->n_tags, 1);
	assert_string_equal(tag(s, "key"), "0");
	samples_free(&stats);
	wait_metric("stats", "stats.weight", 2.0 * (double)calls_made, &s, &stats);
	samples_free(&stats);
}

static void test_stats_add_up(void **state)
{
	struct collect_stats st;

	(void)state;
	/* The counters are read while the collector runs: once it is idle
	 * (quickly here, within seconds on an emulated CPU) they add up. */
	for (int waited = 0;; waited += 50) {
		sleep_ms(50);
		collect_get_stats(ag.collector, &st);
		if (st.stored + st.queue_depth == st.collected || waited >= 10000)
			break;
	}
	assert_true(st.collected > 2 * N_CALLS);
	assert_int_equal(st.queue_dropped, 0);
	assert_int_equal(st.events_lost, 0);
	assert_int_equal(st.decode_errors, 0);
	assert_true(st.batches > 0);
	/* What was collected is stored, or waiting. */
	assert_true(st.stored + st.queue_depth == st.collected);
	assert_true(store_sample_count(ag.store) <= st.stored);
	assert_true(store_sample_count(ag.store) + 200 >= st.stored);
}

/* The store stalls (its lock held): the probe's queue grows to half its
 * bound, then its sources stop reading instead of dropping samples; once
 * the store is back, everything queued is stored and reading resumes. */
static void test_stalled_store_pauses_sources(void **state)
{
	struct collect_stats st, before;
	uint64_t depth = 0;

	(void)state;
	collect_get_stats(ag.collector, &before);
	store_lock(ag.store);
	for (int round = 0; round < 40 && depth < COLLECT_QUEUE_MAX / 2; round++) {
		call_getpid(10000);
		sleep_ms(20);
		collect_get_stats(ag.collector, &st);
		depth = st.queue_depth;
	}
	/* Paused: 20000 more calls (40000 samples of two event maps) add at
	 * most the chunk each source was filling. */
	call_getpid(20000);
	sleep_ms(100);
	collect_get_stats(ag.collector, &st);
	store_unlock(ag.store);
	assert_true(depth >= COLLECT_QUEUE_MAX / 2);
	assert_true(st.queue_depth <= depth + 10000);
	assert_true(st.queue_depth < COLLECT_QUEUE_MAX);
	assert_int_equal(st.queue_dropped, before.queue_dropped);

	/* Draining takes a second here and minutes on an emulated CPU: wait
	 * while the queue still shrinks, give up after 10 s without progress. */
	for (int idle = 0; idle < 200;) {
		uint64_t left = st.queue_depth;

		sleep_ms(50);
		collect_get_stats(ag.collector, &st);
		if (!st.queue_depth && st.stored == st.collected)
			break;
		idle = st.queue_depth < left ? 0 : idle + 1;
	}
	assert_int_equal(st.queue_depth, 0);
	assert_int_equal(st.stored, st.collected);
	assert_int_equal(st.queue_dropped, before.queue_dropped);
	assert_true(st.stored - before.stored >= COLLECT_QUEUE_MAX / 2);
}

static void test_dump_hash_percpu_and_bss(void **state)
{
	Graind__MapDump *d = NULL;
	struct gerr err = { 0 };
	Graind__MapEntry *e;
	char pid[16];
	int cpus = libbpf_num_possible_cpus();

	(void)state;
	snprintf(pid, sizeof(pid), "%d", getpid());
	if (collect_dump_map(&ag, PROBE, "calls", &d, &err) < 0)
		fail_msg("dump calls: %s", err.msg);
	assert_string_equal(d->probe, PROBE);
	assert_string_equal(d->map, "calls");
	assert_true(d->decoded);
	assert_int_equal(d->n_entries, 1);
	e = d->entries[0];
	assert_int_equal(e->n_key, 2);
	assert_int_equal(uint_field(e->key, e->n_key, "pid"), getpid());
	assert_string_equal(text_field(e->key, e->n_key, "comm"), comm);
	assert_int_equal(e->n_value, 1);
	assert_int_equal(uint_field(e->value, e->n_value, ""), calls_made);
	assert_int_equal(e->raw_key.len, 20);
	assert_int_equal(e->raw_value.len, 8);
	assert_memory_equal(e->raw_value.data, &calls_made, 8);
	pbmsg_free(&d->base);

	if (collect_dump_map(&ag, PROBE, "stats", &d, &err) < 0)
		fail_msg("dump stats: %s", err.msg);
	assert_int_equal(d->n_entries, 1);
	e = d->entries[0];
	assert_int_equal(uint_field(e->key, e->n_key, ""), 0);
	assert_int_equal(uint_field(e->value, e->n_value, "hits"), calls_made);
	assert_int_equal(uint_field(e->value, e->n_value, "weight"), 2 * calls_made);
	assert_int_equal(e->raw_value.len, 16 * (size_t)cpus);
	pbmsg_free(&d->base);

	/* An internal map, by the name a person writes. */
	if (collect_dump_map(&ag, PROBE, ".bss", &d, &err) < 0)
		fail_msg("dump .bss: %s", err.msg);
	assert_string_equal(d->map, ".bss");
	assert_int_equal(d->n_entries, 1);
	e = d->entries[0];
	assert_int_equal(uint_field(e->value, e->n_value, "seq"), calls_made);
	pbmsg_free(&d->base);
}

static void test_dump_errors(void **state)
{
	Graind__MapDump *d = NULL;
	struct gerr err = { 0 };

	(void)state;
	assert_int_equal(collect_dump_map(&ag, PROBE, "events", &d, &err), -1);
	assert_int_equal(err.status, 400);
	assert_non_null(strstr(err.msg, "ringbuf"));
	assert_null(d);
	assert_int_equal(collect_dump_map(&ag, PROBE, "nope", &d, &err), -1);
	assert_int_equal(err.status, 404);
	assert_non_null(strstr(err.msg, "nope"));
	assert_int_equal(collect_dump_map(&ag, "no-such-probe", "calls", &d, &err), -1);
	assert_int_equal(err.status, 404);
}

/* The value of the line starting with `series` (name and labels). */
static bool metric_value(const char *text, const char *series, double *value)
{
	size_t len = strlen(series);

	for (const char *line = text; line && *line;) {
		const char *end = strchr(line, '\n');

		if (strncmp(line, series, len) == 0 && line[len] == ' ') {
			*value = strtod(line + len + 1, NULL);
			return true;
		}
		line = end ? end + 1 : NULL;
	}
	return false;
}

static double metric(const char *text, const char *series)
{
	double v = 0;

	if (!metric_value(text, series, &v))
		fail_msg("no line %s in:\n%s", series, text);
	return v;
}

/* Every line is a comment or `name{labels} number`; one TYPE per family. */
static void assert_well_formed(char *text)
{
	char *save = NULL, *types = calloc(1, strlen(text) + 2);
	size_t types_len = 0;

	assert_non_null(types);
	types[0] = '\n';
	types_len = 1;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *end, *value;

		if (strncmp(line, "# TYPE ", 7) == 0) {
			char name[256];

			snprintf(name, sizeof(name), "\n%.*s\n", (int)strcspn(line + 7, " "), line + 7);
			if (strstr(types, name))
				fail_msg("family typed twice: %s", line);
			memcpy(types + types_len, name + 1, strlen(name + 1) + 1);
			types_len += strlen(name + 1);
			continue;
		}
		if (line[0] == '#')
			continue;
		for (char *p = line; *p && *p != '{' && *p != ' '; p++)
			if (!(isalnum((unsigned char)*p) || *p == '_' || *p == ':'))
				fail_msg("bad metric name in: %s", line);
		value = strrchr(line, ' ');
		assert_non_null(value);
		strtod(value + 1, &end);
		if (*end || end == value + 1)
			fail_msg("bad value in: %s", line);
	}
	free(types);
}

static void test_metrics_text(void **state)
{
	char series[256];
	size_t len = 0;
	char *text;

	(void)state;
	text = collect_metrics_text(&ag, &len);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);

	assert_non_null(strstr(text, "# TYPE graind_probe_calls_total counter\n"));
	snprintf(series, sizeof(series),
		 "graind_probe_calls_total{probe=\"" PROBE "\",pid=\"%d\",comm=\"%s\"}", getpid(), comm);
	assert_true(metric(text, series) == (double)calls_made);
	assert_non_null(strstr(text, "# TYPE graind_probe_stats_hits gauge\n"));
	assert_true(metric(text, "graind_probe_stats_hits{probe=\"" PROBE "\",key=\"0\"}") ==
		    (double)calls_made);
	assert_true(metric(text, "graind_probe_stats_weight{probe=\"" PROBE "\",key=\"0\"}") ==
		    2.0 * (double)calls_made);
	assert_true(metric(text, "graind_metric_series_dropped{probe=\"" PROBE "\",map=\"calls\"}") == 0);
	assert_true(metric(text, "graind_program_run_count_total{probe=\"" PROBE
			   "\",program=\"on_getpid\"}") >= (double)calls_made);
	assert_true(metric(text, "graind_program_attach_failed{probe=\"" PROBE
			   "\",program=\"on_getpid\"}") == 0);
	assert_true(metric(text, "graind_samples_stored_total") > 2 * N_CALLS);
	assert_true(metric(text, "graind_samples_dropped_total") == 0);
	assert_true(metric(text, "graind_database_bytes") > 0);
	assert_true(metric(text, "graind_queue_dropped_total{probe=\"" PROBE "\"}") == 0);
	/* Event maps are not families. */
	assert_null(strstr(text, "graind_probe_events_seq"));
	assert_null(strstr(text, "graind_probe_records_seq"));
	if (getenv("SHOW_METRICS"))
		fputs(text, stderr);
	assert_well_formed(text);
	free(text);
}

/* Detached: no samples, dumps are 404; attached again: collected again. */
static void test_follows_detach_and_attach(void **state)
{
	Graind__MapDump *d = NULL;
	struct gerr err = { 0 };
	struct samples ev;
	uint64_t last;

	(void)state;
	assert_int_equal(probe_detach(ag.probes, PROBE, NULL, &err), 0);
	assert_int_equal(store_probe_set_attached(ag.store, PROBE, false, &err), 0);
	collect_probe_changed(ag.collector, PROBE);
	sleep_ms(300);          /* the kernel lets go of the program */
	samples_of("events", 0, &ev);
	last = ev.after;
	samples_free(&ev);
	call_getpid(5);
	sleep_ms(300);
	samples_of("events", last, &ev);
	assert_int_equal(ev.n, 0);
	samples_free(&ev);
	assert_int_equal(collect_dump_map(&ag, PROBE, "calls", &d, &err), -1);
	assert_int_equal(err.status, 404);

	attach_probe();
	collect_probe_changed(ag.collector, PROBE);
	sleep_ms(200);          /* the perf buffer is open again */
	call_getpid(3);
	wait_samples("events", last, 3, &ev);
	assert_int_equal(ev.n, 3);
	assert_int_equal(uint_field(ev.s[0]->fields, ev.s[0]->n_fields, "seq"), 1);
	assert_int_equal(uint_field(ev.s[2]->fields, ev.s[2]->n_fields, "seq"), 3);
	samples_free(&ev);
	wait_samples("records", 0, N_CALLS + 3, &ev);
	samples_free(&ev);
}

/* collect_probe_changed() in a thread of its own, so that a call that
 * does not come back fails the test instead of hanging it. */
struct change_call {
	pthread_t thread;
	int64_t took_ms;
};

static void *change_main(void *arg)
{
	struct change_call *call = arg;
	int64_t t0 = mono_ms();

	collect_probe_changed(ag.collector, PROBE);
	call->took_ms = mono_ms() - t0;
	return NULL;
}

/* How long the call took; fails when it is not back within limit_ms. */
static int64_t timed_change(int limit_ms)
{
	struct change_call *call = calloc(1, sizeof(*call));  /* left to a call not back */
	struct timespec deadline;
	int64_t took;

	assert_non_null(call);
	assert_int_equal(pthread_create(&call->thread, NULL, change_main, call), 0);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += limit_ms / 1000;
	deadline.tv_nsec += (long)(limit_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	if (pthread_clockjoin_np(call->thread, NULL, CLOCK_MONOTONIC, &deadline) != 0) {
		pthread_detach(call->thread);
		fail_msg("collect_probe_changed() not back after %d ms", limit_ms);
	}
	took = call->took_ms;
	free(call);
	return took;
}

/* Holds the store (so that the collector, reading the probe's spec, is
 * stuck) for hold_ms, from a thread of its own. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool held;
	int hold_ms;
} holder = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static void *hold_main(void *arg)
{
	(void)arg;
	store_lock(ag.store);
	pthread_mutex_lock(&holder.lock);
	holder.held = true;
	pthread_cond_broadcast(&holder.cond);
	pthread_mutex_unlock(&holder.lock);
	sleep_ms(holder.hold_ms);
	store_unlock(ag.store);
	return NULL;
}

static pthread_t hold_store(int ms)
{
	pthread_t t;

	holder.held = false;
	holder.hold_ms = ms;
	assert_int_equal(pthread_create(&t, NULL, hold_main, NULL), 0);
	pthread_mutex_lock(&holder.lock);
	while (!holder.held)
		pthread_cond_wait(&holder.cond, &holder.lock);
	pthread_mutex_unlock(&holder.lock);
	return t;
}

/* A probe change waits for the collector on the monotonic clock: with the
 * collector stuck and the wall clock an hour ahead, the caller (who holds
 * the probe lock) is back after COLLECT_CHANGE_WAIT_MS, not an hour; with
 * the wall clock an hour behind, it still waits for the collector to take
 * the change in rather than giving up at once. */
static void test_probe_change_waits_on_the_monotonic_clock(void **state)
{
	pthread_t holding;
	int64_t took;

	(void)state;
	clock_shift_s = 3600;
	holding = hold_store(COLLECT_CHANGE_WAIT_MS + 1500);
	took = timed_change(COLLECT_CHANGE_WAIT_MS + 1000);
	clock_shift_s = 0;
	pthread_join(holding, NULL);
	assert_true(took >= COLLECT_CHANGE_WAIT_MS - 50);
	assert_true(took <= COLLECT_CHANGE_WAIT_MS + 500);
	timed_change(COLLECT_CHANGE_WAIT_MS + 1000);     /* the collector is free again */

	clock_shift_s = -3600;
	holding = hold_store(600);
	took = timed_change(COLLECT_CHANGE_WAIT_MS + 1000);
	clock_shift_s = 0;
	pthread_join(holding, NULL);
	assert_true(took >= 550);
	assert_true(took < COLLECT_CHANGE_WAIT_MS);

	/* Still collected after both. */
	{
		struct samples ev;
		uint64_t last;

		samples_of("events", 0, &ev);
		last = ev.after;
		samples_free(&ev);
		call_getpid(2);
		wait_samples("events", last, 2, &ev);
		assert_int_equal(ev.n, 2);
		samples_free(&ev);
	}
}

/* The newest value of `name` tagged state=`state` (and le=`le`). */
static double agg_value(struct samples *list, const char *name, const char *state,
			const char *le)
{
	for (size_t i = list->n; i-- > 0;) {
		Graind__Sample *s = list->s[i];

		if (strcmp(s->name, name) != 0 || strcmp(tag(s, "state"), state) != 0 ||
		    (le && strcmp(tag(s, "le"), le) != 0))
			continue;
		assert_int_equal(s->kind, GRAIND__SAMPLE_KIND__METRIC);
		assert_int_equal(s->metric_kind, GRAIND__METRIC_KIND__COUNTER);
		return s->value;
	}
	return -1;
}

/* Events counted by state with a histogram of seq, in the agent; a
 * counter exported as deltas; silenced maps. */
static void test_events_aggregated(void **state)
{
	Graind__ProbeSpec *s = emit_spec();
	Graind__OutputSpec *o = NEW(Graind__OutputSpec, graind__output_spec__descriptor);
	struct samples list = { 0 };
	int i;

	(void)state;
	set(&o->map, "events");
	o->kind_case = GRAIND__OUTPUT_SPEC__KIND_EVENTS;
	o->events = NEW(Graind__EventOutput, graind__event_output__descriptor);
	o->events->count_by = calloc(1, sizeof(char *));
	o->events->count_by[o->events->n_count_by++] = strdup("state");
	set(&o->events->histogram_field, "seq");
	add_output(s, o);
	add_none_output(s, "records");
	/* calls and stats: the metric outputs of emit_spec are replaced */
	pbmsg_free(&s->outputs[0]->base);
	pbmsg_free(&s->outputs[1]->base);
	memmove(s->outputs, s->outputs + 2, (s->n_outputs - 2) * sizeof(*s->outputs));
	s->n_outputs -= 2;
	add_metric_output(s, "calls", 50, GRAIND__METRIC_KIND__COUNTER);
	s->outputs[s->n_outputs - 1]->metric->delta = true;
	add_none_output(s, "stats");
	attach_spec(AGG_PROBE, s);
	collect_probe_changed(ag.collector, AGG_PROBE);
	sleep_ms(200);
	call_getpid(6);

	for (i = 0; i < 60; i++) {
		samples_of_probe(AGG_PROBE, "events", 0, &list);
		if (agg_value(&list, "events.count", "EMIT_ODD", NULL) == 3 &&
		    agg_value(&list, "events.count", "EMIT_EVEN", NULL) == 3)
			break;
		samples_free(&list);
		sleep_ms(100);
	}
	assert_true(i < 60);
	/* seq 1, 3, 5 and 2, 4, 6: cumulative buckets up to 2^k. */
	assert_true(agg_value(&list, "events.seq_sum", "EMIT_ODD", NULL) == 9);
	assert_true(agg_value(&list, "events.seq_sum", "EMIT_EVEN", NULL) == 12);
	assert_true(agg_value(&list, "events.seq_bucket", "EMIT_ODD", "1") == 1);
	assert_true(agg_value(&list, "events.seq_bucket", "EMIT_ODD", "2") == 1);
	assert_true(agg_value(&list, "events.seq_bucket", "EMIT_ODD", "4") == 2);
	assert_true(agg_value(&list, "events.seq_bucket", "EMIT_ODD", "8") == 3);
	assert_true(agg_value(&list, "events.seq_bucket", "EMIT_EVEN", "1") == 0);
	assert_true(agg_value(&list, "events.seq_bucket", "EMIT_EVEN", "2") == 1);
	assert_true(agg_value(&list, "events.seq_bucket", "EMIT_EVEN", "8") == 3);
	for (size_t j = 0; j < list.n; j++)
		assert_int_not_equal(list.s[j]->kind, GRAIND__SAMPLE_KIND__EVENT);
	samples_free(&list);
	/* Silenced maps gave nothing. */
	samples_of_probe(AGG_PROBE, "records", 0, &list);
	assert_int_equal(list.n, 0);
	samples_free(&list);
	samples_of_probe(AGG_PROBE, "stats", 0, &list);
	assert_int_equal(list.n, 0);
	samples_free(&list);

	/* calls as deltas: they add up to the calls, none is 0. */
	{
		double sum = 0;

		sleep_ms(150);
		samples_of_probe(AGG_PROBE, "calls", 0, &list);
		assert_true(list.n >= 1);
		for (size_t j = 0; j < list.n; j++) {
			assert_true(list.s[j]->value > 0);
			sum += list.s[j]->value;
		}
		assert_true(sum == 6);
		samples_free(&list);
	}
}

/* ================================================================ aggregation */

/* emit.bpf.c's struct event, checked against its BTF. */
struct emit_event {
	uint32_t pid;
	uint64_t seq;
	char comm[16];
	uint32_t saddr;
	uint32_t state;         /* 1: EMIT_ODD, 2: EMIT_EVEN */
};

/* What collect_agg_flush() emitted: "name{tag=value,...}" and its value. */
struct emitted {
	char (*series)[256];
	double *value;
	size_t n, cap;
};

static void keep_emitted(void *ctx, const char *name, const char *const *tag_names,
			 const char *const *tag_values, size_t n_tags, double value)
{
	struct emitted *e = ctx;
	char *series;
	size_t used;

	if (e->n == e->cap) {
		e->cap = e->cap ? 2 * e->cap : 64;
		e->series = realloc(e->series, e->cap * sizeof(*e->series));
		e->value = realloc(e->value, e->cap * sizeof(*e->value));
		assert_non_null(e->series);
		assert_non_null(e->value);
	}
	series = e->series[e->n];
	used = snprintf(series, sizeof(*e->series), "%s{", name);
	for (size_t i = 0; i < n_tags; i++)
		used += snprintf(series + used, sizeof(*e->series) - used, "%s%s=%s",
				 i ? "," : "", tag_names[i], tag_values[i]);
	snprintf(series + used, sizeof(*e->series) - used, "}");
	e->value[e->n++] = value;
}

static void emitted_free(struct emitted *e)
{
	free(e->series);
	free(e->value);
	*e = (struct emitted){ 0 };
}

static double emitted(const struct emitted *e, const char *series)
{
	for (size_t i = 0; i < e->n; i++)
		if (strcmp(e->series[i], series) == 0)
			return e->value[i];
	return -1;
}

static void flush(struct collect_agg *a, struct emitted *e)
{
	emitted_free(e);
	collect_agg_flush(a, keep_emitted, e);
}

static struct decoder *event_decoder(struct bpf_object **obj)
{
	struct decoder *dec = NULL;
	struct gerr err = { 0 };
	const struct btf *btf;
	int id;

	*obj = bpf_object__open_mem(object, object_len, NULL);
	assert_non_null(*obj);
	btf = bpf_object__btf(*obj);
	assert_non_null(btf);
	id = btf__find_by_name_kind(btf, "event", BTF_KIND_STRUCT);
	assert_true(id > 0);
	assert_int_equal(btf__resolve_size(btf, id), sizeof(struct emit_event));
	if (decode_new(btf, id, sizeof(struct emit_event), &dec, &err) < 0)
		fail_msg("decode_new: %s", err.msg);
	return dec;
}

static void add_event(struct collect_agg *a, const struct decoder *dec, uint32_t pid,
		      uint32_t state, const char *comm_, uint64_t seq)
{
	struct emit_event ev = { .pid = pid, .seq = seq, .state = state };

	strncpy(ev.comm, comm_, sizeof(ev.comm) - 1);
	assert_int_equal(collect_agg_add(a, dec, &ev, sizeof(ev)), 0);
}

/* Records grouped by the text of their count_by fields (a missing one
 * counts as ""), seq in power-of-two buckets; a flush gives the groups
 * that changed since the last one, as totals. */
static void test_agg_groups_and_histogram(void **state)
{
	char *by[] = { "state", "comm", "missing" };
	struct collect_map m = {
		.shown = "events",
		.out = COLLECT_OUT_EVENTS,
		.count_by = by,
		.n_count_by = 3,
		.histogram_field = "seq",
	};
	const char odd[] = "{state=EMIT_ODD,comm=a,missing=}";
	const uint8_t short_record[4] = { 0 };
	struct bpf_object *obj;
	struct emitted e = { 0 };
	struct collect_agg *a;
	char series[256];

	(void)state;
	m.value_dec = event_decoder(&obj);
	assert_true(collect_agg_wanted(&m));
	a = collect_agg_new(&m);
	assert_non_null(a);
	for (uint64_t seq = 1; seq <= 6; seq++)
		add_event(a, m.value_dec, 7, seq % 2 ? 1 : 2, "a", seq);
	add_event(a, m.value_dec, 7, 2, "b", 1000);
	flush(a, &e);

	snprintf(series, sizeof(series), "events.count%s", odd);
	assert_true(emitted(&e, series) == 3);
	snprintf(series, sizeof(series), "events.seq_sum%s", odd);
	assert_true(emitted(&e, series) == 9);
	assert_true(emitted(&e, "events.seq_sum{state=EMIT_EVEN,comm=a,missing=}") == 12);
	assert_true(emitted(&e, "events.count{state=EMIT_EVEN,comm=b,missing=}") == 1);
	/* seq 1, 3, 5: cumulative up to 8, the highest bucket used. */
	assert_true(emitted(&e, "events.seq_bucket{state=EMIT_ODD,comm=a,missing=,le=1}") == 1);
	assert_true(emitted(&e, "events.seq_bucket{state=EMIT_ODD,comm=a,missing=,le=2}") == 1);
	assert_true(emitted(&e, "events.seq_bucket{state=EMIT_ODD,comm=a,missing=,le=4}") == 2);
	assert_true(emitted(&e, "events.seq_bucket{state=EMIT_ODD,comm=a,missing=,le=8}") == 3);
	assert_true(emitted(&e, "events.seq_bucket{state=EMIT_ODD,comm=a,missing=,le=16}") == -1);
	assert_true(emitted(&e, "events.seq_bucket{state=EMIT_EVEN,comm=b,missing=,le=512}") == 0);
	assert_true(emitted(&e, "events.seq_bucket{state=EMIT_EVEN,comm=b,missing=,le=1024}") == 1);
	/* 3 groups: count, sum, and 4, 4 and 11 buckets. */
	assert_int_equal(e.n, 3 * 2 + 4 + 4 + 11);

	/* Nothing changed, nothing emitted; then only the group that did. */
	flush(a, &e);
	assert_int_equal(e.n, 0);
	add_event(a, m.value_dec, 8, 1, "a", 7);
	flush(a, &e);
	snprintf(series, sizeof(series), "events.count%s", odd);
	assert_true(emitted(&e, series) == 4);
	snprintf(series, sizeof(series), "events.seq_sum%s", odd);
	assert_true(emitted(&e, series) == 16);
	assert_int_equal(e.n, 2 + 4);

	/* A record too short for its type is raw: none of the fields. */
	assert_int_equal(collect_agg_add(a, m.value_dec, short_record, sizeof(short_record)),
			 0);
	flush(a, &e);
	assert_true(emitted(&e, "events.count{state=,comm=,missing=}") == 1);
	assert_true(emitted(&e, "events.seq_sum{state=,comm=,missing=}") == 0);
	assert_true(emitted(&e, "events.seq_bucket{state=,comm=,missing=,le=1}") == 0);

	emitted_free(&e);
	collect_agg_free(a);
	decode_free(m.value_dec);
	bpf_object__close(obj);
}

/* Past 10000 groups, new values count in one group tagged "_other";
 * known ones still count in their own. Numbers group by their decimal
 * text; a text histogram field adds no buckets. */
static void test_agg_bounded_groups(void **state)
{
	char *by[] = { "pid" };
	struct collect_map m = {
		.shown = "events",
		.out = COLLECT_OUT_EVENTS,
		.count_by = by,
		.n_count_by = 1,
		.histogram_field = "comm",
	};
	struct bpf_object *obj;
	struct emitted e = { 0 };
	struct collect_agg *a;

	(void)state;
	m.value_dec = event_decoder(&obj);
	a = collect_agg_new(&m);
	assert_non_null(a);
	for (uint32_t pid = 0; pid < 10001; pid++)
		add_event(a, m.value_dec, pid, 1, "a", 1);
	add_event(a, m.value_dec, 4294967295U, 1, "a", 1);
	add_event(a, m.value_dec, 5, 1, "a", 1);
	flush(a, &e);
	assert_true(emitted(&e, "events.count{pid=0}") == 1);
	assert_true(emitted(&e, "events.count{pid=5}") == 2);
	assert_true(emitted(&e, "events.count{pid=9999}") == 1);
	assert_true(emitted(&e, "events.count{pid=10000}") == -1);
	assert_true(emitted(&e, "events.count{pid=_other}") == 2);
	assert_true(emitted(&e, "events.comm_sum{pid=5}") == 0);
	assert_true(emitted(&e, "events.comm_bucket{pid=5,le=1}") == 0);
	assert_true(emitted(&e, "events.comm_bucket{pid=5,le=2}") == -1);
	/* Count, sum and one bucket for each of 10000 groups and _other. */
	assert_int_equal(e.n, 10001 * 3);

	emitted_free(&e);
	collect_agg_free(a);
	decode_free(m.value_dec);
	bpf_object__close(obj);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_events_every_field),
		cmocka_unit_test(test_metrics_counter_and_percpu_sum),
		cmocka_unit_test(test_stats_add_up),
		cmocka_unit_test(test_dump_hash_percpu_and_bss),
		cmocka_unit_test(test_dump_errors),
		cmocka_unit_test(test_metrics_text),
		cmocka_unit_test(test_follows_detach_and_attach),
		cmocka_unit_test(test_probe_change_waits_on_the_monotonic_clock),
		cmocka_unit_test(test_events_aggregated),
		cmocka_unit_test(test_agg_groups_and_histogram),
		cmocka_unit_test(test_agg_bounded_groups),
		/* Last: it leaves the store holding 130000 samples more. */
		cmocka_unit_test(test_stalled_store_pauses_sources),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
