/* scanner: a rate-limited integrity scan of the store (see scanner.h). */
#define _GNU_SOURCE
#include "server/scanner.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "server/util/clock.h"
#include "server/util/log.h"
#include "store/store.h"

/* Bytes read per step: a tenth of a second's worth. */
#define STEP_BYTES (SCANNER_BYTES_PER_S / 10)

struct scanner {
	struct store *store;
	uint64_t interval_ms;
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;           /* stop */
	pthread_cond_t wake;            /* CLOCK_MONOTONIC */
	bool stop;
};

static uint64_t mono_ms(void)
{
	return clock_mono_us() / 1000;
}

/* Sleep until monotonic time `at`; false when told to stop. */
static bool wait_until(struct scanner *s, uint64_t at)
{
	struct timespec ts = { .tv_sec = (time_t)(at / 1000), .tv_nsec = (long)(at % 1000) * 1000000 };
	bool go;

	pthread_mutex_lock(&s->lock);
	while (!s->stop && mono_ms() < at)
		pthread_cond_timedwait(&s->wake, &s->lock, &ts);
	go = !s->stop;
	pthread_mutex_unlock(&s->lock);
	return go;
}

/* One pass, paced: each step of STEP_BYTES takes at least the time
 * SCANNER_BYTES_PER_S allows for it. False when told to stop. */
static bool pass(struct scanner *s)
{
	struct store_scan scan = { 0 };
	uint64_t started = mono_ms(), step_at;
	struct gerr err;

	while (!scan.done) {
		step_at = mono_ms();
		if (store_scan_step(s->store, &scan, STEP_BYTES, NULL, NULL, &err) < 0) {
			if (err.status != 503)          /* storage faults: the store logs them */
				log_error("msg=\"integrity scan stopped\" error=\"%s\"", err.msg);
			return true;
		}
		if (!scan.done && !wait_until(s, step_at + 1000ull * STEP_BYTES / SCANNER_BYTES_PER_S))
			return false;
	}
	if (scan.damage)
		log_error("msg=\"integrity scan found damage; see the lines above, or run graind check\" "
			  "damaged=%llu objects=%llu blocks=%llu",
			  (unsigned long long)scan.damage, (unsigned long long)scan.objects,
			  (unsigned long long)scan.blocks);
	else
		log_debug("msg=\"integrity scan done\" objects=%llu blocks=%llu bytes=%llu ms=%llu",
			  (unsigned long long)scan.objects, (unsigned long long)scan.blocks,
			  (unsigned long long)scan.bytes, (unsigned long long)(mono_ms() - started));
	return true;
}

static void *scanner_main(void *arg)
{
	struct scanner *s = arg;
	uint64_t first = s->interval_ms < SCANNER_FIRST_S * 1000ull ? s->interval_ms
								      : SCANNER_FIRST_S * 1000ull;
	uint64_t next = mono_ms() + first;

	while (wait_until(s, next)) {
		next = mono_ms() + s->interval_ms;
		if (!pass(s))
			break;
	}
	return NULL;
}

int scanner_start(struct store *st, uint64_t interval_s, struct scanner **out,
		  struct gerr *err)
{
	struct scanner *s;
	pthread_condattr_t attr;

	*out = NULL;
	if (!interval_s)
		return 0;
	s = calloc(1, sizeof(*s));
	if (!s)
		return gerr_set(err, 500, "out of memory");
	s->store = st;
	s->interval_ms = interval_s * 1000;
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wake, &attr);
	pthread_condattr_destroy(&attr);
	if (pthread_create(&s->thread, NULL, scanner_main, s) != 0) {
		scanner_stop(s);
		return gerr_set(err, 500, "cannot start the integrity scan");
	}
	s->running = true;
	pthread_setname_np(s->thread, "graind-scan");
	*out = s;
	return 0;
}

void scanner_stop(struct scanner *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
	if (s->running)
		pthread_join(s->thread, NULL);
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
