/* Unit tests of the ring reader (server/collect/ringread.h) on a real
 * ring buffer: tests/bpf/bench_events.bpf.o's emit_xdp, run with
 * BPF_PROG_TEST_RUN, reserves one 64-byte record per run. What matters:
 * reading frees nothing, and the consumer position moves past a span only
 * once every span before it is done. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "server/collect/ringread.h"

#define RECORD_SPAN 72          /* a 64-byte record and its 8-byte header */

struct ring_fixture {
	struct bpf_object *obj;
	int prog_fd, map_fd;
};

static int setup(void **state)
{
	const char *dir = getenv("GRAIND_TEST_BPF");
	struct ring_fixture *fx = calloc(1, sizeof(*fx));
	char path[512];

	snprintf(path, sizeof(path), "%s/bench_events.bpf.o", dir && *dir ? dir : "build/tests/bpf");
	fx->obj = bpf_object__open_file(path, NULL);
	assert_non_null(fx->obj);
	/* Only the XDP program: the tracepoint one is not needed here. */
	bpf_program__set_autoload(bpf_object__find_program_by_name(fx->obj, "emit_getpid"), false);
	assert_int_equal(bpf_object__load(fx->obj), 0);
	fx->prog_fd = bpf_program__fd(bpf_object__find_program_by_name(fx->obj, "emit_xdp"));
	fx->map_fd = bpf_map__fd(bpf_object__find_map_by_name(fx->obj, "events"));
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct ring_fixture *fx = *state;

	bpf_object__close(fx->obj);
	free(fx);
	return 0;
}

/* n records into the ring. */
static void emit(struct ring_fixture *fx, int n)
{
	uint8_t packet[64] = { [12] = 0x88, [13] = 0xb5, [14] = 'x' };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = packet, .data_size_in = sizeof(packet),
		    .repeat = (unsigned)n);

	assert_int_equal(bpf_prog_test_run_opts(fx->prog_fd, &opts), 0);
}

struct seen {
	int n, stop_after;
	uint64_t pos[16];
	struct ringread *r;
};

static int count(void *ctx, void *data, size_t len)
{
	struct seen *s = ctx;

	(void)data;
	assert_int_equal(len, 64);
	if (s->n < 16)
		s->pos[s->n] = ringread_position(s->r);
	s->n++;
	return s->stop_after && s->n == s->stop_after;
}

/* A new reader of the ring, whose records count() puts into s. */
static struct ringread *reader(struct ring_fixture *fx, struct seen *s)
{
	struct ringread *r;

	assert_int_equal(ringread_open(fx->map_fd, &r), 0);
	s->r = r;
	return r;
}

/* Records not released yet, as a fresh reader of the ring sees them. */
static int unreleased(struct ring_fixture *fx)
{
	struct ringread *r;
	struct seen s = { 0 };

	r = reader(fx, &s);
	ringread_consume(r, count, &s);
	ringread_unref(r);
	return s.n;
}

static void drain(struct ring_fixture *fx)
{
	struct ringread *r;
	struct seen s = { 0 };

	r = reader(fx, &s);
	ringread_consume(r, count, &s);
	ringread_idle(r, ringread_position(r));
	ringread_unref(r);
	assert_int_equal(unreleased(fx), 0);
}

static void test_reading_frees_nothing(void **state)
{
	struct ring_fixture *fx = *state;
	struct ringread *r;
	struct seen s = { 0 };

	drain(fx);
	emit(fx, 5);
	r = reader(fx, &s);
	assert_int_equal(ringread_consume(r, count, &s), 5);
	assert_int_equal(s.n, 5);
	assert_int_equal(ringread_unreleased(r), 5 * RECORD_SPAN);
	assert_int_equal(ringread_consume(r, count, &s), 0);       /* caught up */
	ringread_unref(r);
	assert_int_equal(unreleased(fx), 5);    /* another reader finds them all */
	drain(fx);
}

static void test_fn_stops_the_reading(void **state)
{
	struct ring_fixture *fx = *state;
	struct ringread *r;
	struct seen s = { .stop_after = 2 };

	emit(fx, 4);
	r = reader(fx, &s);
	assert_int_equal(ringread_consume(r, count, &s), 2);
	s.stop_after = 0;
	assert_int_equal(ringread_consume(r, count, &s), 2);       /* the rest */
	assert_int_equal(s.n, 4);
	assert_true(s.pos[0] < s.pos[1] && s.pos[1] < s.pos[2]);
	ringread_unref(r);
	drain(fx);
}

/* Spans A, B, then idle records: B done first releases nothing; A done
 * releases all three, the idle records included. */
static void test_spans_release_in_order(void **state)
{
	struct ring_fixture *fx = *state;
	struct ringread *r;
	struct seen s = { 0 };

	emit(fx, 3);
	r = reader(fx, &s);
	assert_int_equal(ringread_consume(r, count, &s), 3);
	assert_int_equal(ringread_hold(r, s.pos[0]), 0);        /* A: record 1 */
	assert_int_equal(ringread_hold(r, s.pos[1]), 0);        /* B: record 2 */
	ringread_idle(r, s.pos[2]);                             /* record 3 */
	assert_int_equal(unreleased(fx), 3);
	ringread_done(r, s.pos[1]);
	assert_int_equal(unreleased(fx), 3);                    /* A still held */
	ringread_done(r, s.pos[0]);
	assert_int_equal(unreleased(fx), 0);
	ringread_unref(r);
}

/* Idle records with nothing held are released at once; a done span
 * releases up to its end. */
static void test_idle_and_done_release(void **state)
{
	struct ring_fixture *fx = *state;
	struct ringread *r;
	struct seen s = { 0 };

	emit(fx, 3);
	r = reader(fx, &s);
	ringread_consume(r, count, &s);
	ringread_idle(r, s.pos[0]);
	assert_int_equal(unreleased(fx), 2);
	assert_int_equal(ringread_hold(r, s.pos[1]), 0);
	ringread_done(r, s.pos[1]);
	assert_int_equal(unreleased(fx), 1);
	ringread_idle(r, s.pos[2]);
	assert_int_equal(unreleased(fx), 0);
	ringread_unref(r);
}

/* A stored position after the consumer's (a commit whose release was
 * lost) is where reading goes on; one outside the ring's records is not. */
static void test_resume_after_stored_samples(void **state)
{
	struct ring_fixture *fx = *state;
	struct ringread *r;
	struct seen s = { 0 };
	uint64_t start;

	emit(fx, 4);
	r = reader(fx, &s);
	start = ringread_position(r);
	assert_false(ringread_resume(r, start));                        /* not past it */
	assert_false(ringread_resume(r, start + 5 * RECORD_SPAN));      /* past the producer */
	assert_false(ringread_resume(r, start + 3));                    /* not a record's end */
	assert_true(ringread_resume(r, start + 2 * RECORD_SPAN));
	assert_int_equal(ringread_consume(r, count, &s), 2);
	ringread_unref(r);
	assert_int_equal(unreleased(fx), 2);    /* the first two are released */
	drain(fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reading_frees_nothing),
		cmocka_unit_test(test_fn_stops_the_reading),
		cmocka_unit_test(test_spans_release_in_order),
		cmocka_unit_test(test_idle_and_done_release),
		cmocka_unit_test(test_resume_after_stored_samples),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
