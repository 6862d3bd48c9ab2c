/* ticker: a periodic thread (ticker.h). */
#define _GNU_SOURCE             /* pthread_setname_np */
#include "server/util/ticker.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "server/util/clock.h"

struct ticker {
	void (*fn)(void *ctx);
	void *ctx;
	unsigned period_ms;
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;           /* stop */
	pthread_cond_t wake;            /* CLOCK_MONOTONIC */
	bool stop;
};

static void *ticker_main(void *arg)
{
	struct ticker *t = arg;

	pthread_mutex_lock(&t->lock);
	while (!t->stop) {
		uint64_t at = clock_mono_us() / 1000 + t->period_ms;
		struct timespec ts = { .tv_sec = (time_t)(at / 1000),
				       .tv_nsec = (long)(at % 1000) * 1000000 };

		while (!t->stop && clock_mono_us() / 1000 < at)
			pthread_cond_timedwait(&t->wake, &t->lock, &ts);
		if (t->stop)
			break;
		pthread_mutex_unlock(&t->lock);
		t->fn(t->ctx);
		pthread_mutex_lock(&t->lock);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

int ticker_start(const char *thread_name, unsigned period_ms, void (*fn)(void *ctx), void *ctx,
		 struct ticker **out, struct gerr *err)
{
	struct ticker *t = calloc(1, sizeof(*t));
	pthread_condattr_t attr;

	*out = NULL;
	if (!t)
		return gerr_set(err, 500, "out of memory");
	t->fn = fn;
	t->ctx = ctx;
	t->period_ms = period_ms;
	pthread_mutex_init(&t->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&t->wake, &attr);
	pthread_condattr_destroy(&attr);
	if (pthread_create(&t->thread, NULL, ticker_main, t) != 0) {
		ticker_stop(t);
		return gerr_set(err, 500, "cannot start the %s thread", thread_name);
	}
	t->running = true;
	pthread_setname_np(t->thread, thread_name);
	*out = t;
	return 0;
}

void ticker_stop(struct ticker *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	t->stop = true;
	pthread_cond_signal(&t->wake);
	pthread_mutex_unlock(&t->lock);
	if (t->running)
		pthread_join(t->thread, NULL);
	pthread_cond_destroy(&t->wake);
	pthread_mutex_destroy(&t->lock);
	free(t);
}
