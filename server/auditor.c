/* auditor: writes queued audit records in batches and prunes the audit
 * log (see auditor.h). */
#define _GNU_SOURCE
#include "server/auditor.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "server/util/clock.h"
#include "server/util/log.h"
#include "store/store.h"

/* After a failed write, the next try. */
#define RETRY_MS 1000

struct auditor {
	struct store *store;
	int64_t max_age_ms;             /* 0: no age bound */
	unsigned prune_ms;
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;           /* what follows */
	pthread_cond_t wake;            /* CLOCK_MONOTONIC */
	bool stop;
	uint64_t flush_at_ms;           /* monotonic; 0: nothing waits */
};

static uint64_t mono_ms(void)
{
	return clock_mono_us() / 1000;
}

/* Called by the store, store locked, when a record starts waiting. */
static void record_waits(void *ctx)
{
	struct auditor *a = ctx;

	pthread_mutex_lock(&a->lock);
	if (!a->flush_at_ms) {
		a->flush_at_ms = mono_ms() + AUDITOR_FLUSH_MS;
		pthread_cond_signal(&a->wake);
	}
	pthread_mutex_unlock(&a->lock);
}

/* Lock held on entry and exit, dropped around the store. */
static void flush(struct auditor *a)
{
	struct gerr err;
	int rc;

	a->flush_at_ms = 0;     /* a record queued from now on asks again */
	pthread_mutex_unlock(&a->lock);
	rc = store_audit_flush(a->store, &err);
	if (rc < 0 && err.status != 503)        /* storage faults: the store logs them */
		log_error("msg=\"cannot write audit records\" error=\"%s\"", err.msg);
	pthread_mutex_lock(&a->lock);
	if (rc < 0 && !a->flush_at_ms)
		a->flush_at_ms = mono_ms() + RETRY_MS;
}

/* Lock held on entry and exit, dropped around the store. */
static void prune(struct auditor *a)
{
	int64_t older = a->max_age_ms ? clock_unix_ms() - a->max_age_ms : 0;
	uint64_t pruned = 0;
	struct gerr err;
	int rc;

	pthread_mutex_unlock(&a->lock);
	rc = store_audit_prune(a->store, older, &pruned, &err);
	if (rc < 0 && err.status != 503)
		log_error("msg=\"cannot prune the audit log\" error=\"%s\"", err.msg);
	else if (pruned)
		log_debug("msg=\"audit log pruned\" rows=%llu", (unsigned long long)pruned);
	pthread_mutex_lock(&a->lock);
}

static void deadline_at(struct timespec *ts, uint64_t mono_ms_at)
{
	ts->tv_sec = (time_t)(mono_ms_at / 1000);
	ts->tv_nsec = (long)(mono_ms_at % 1000) * 1000000;
}

static void *auditor_main(void *arg)
{
	struct auditor *a = arg;
	uint64_t prune_at = 0, now, until;
	struct timespec ts;

	pthread_mutex_lock(&a->lock);
	while (!a->stop) {
		now = mono_ms();
		if (a->flush_at_ms && now >= a->flush_at_ms)
			flush(a);
		if (now >= prune_at) {
			prune(a);
			prune_at = mono_ms() + a->prune_ms;
		}
		until = a->flush_at_ms && a->flush_at_ms < prune_at ? a->flush_at_ms : prune_at;
		deadline_at(&ts, until);
		if (!a->stop)
			pthread_cond_timedwait(&a->wake, &a->lock, &ts);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

int auditor_start(struct store *st, uint64_t max_rows, uint64_t max_age_s,
		  struct auditor **out, struct gerr *err)
{
	struct auditor *a = calloc(1, sizeof(*a));
	pthread_condattr_t attr;

	*out = NULL;
	if (!a)
		return gerr_set(err, 500, "out of memory");
	a->store = st;
	a->max_age_ms = (int64_t)max_age_s * 1000;
	a->prune_ms = AUDITOR_PRUNE_MS;
	if (a->max_age_ms && a->max_age_ms / 4 < a->prune_ms)
		a->prune_ms = a->max_age_ms / 4 > 1000 ? (unsigned)(a->max_age_ms / 4) : 1000;
	pthread_mutex_init(&a->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&a->wake, &attr);
	pthread_condattr_destroy(&attr);
	store_audit_set_bounds(st, max_rows);
	store_audit_set_notify(st, record_waits, a);
	if (pthread_create(&a->thread, NULL, auditor_main, a) != 0) {
		auditor_stop(a);
		return gerr_set(err, 500, "cannot start the audit log writer");
	}
	a->running = true;
	pthread_setname_np(a->thread, "graind-audit");
	*out = a;
	return 0;
}

void auditor_stop(struct auditor *a)
{
	struct gerr err;

	if (!a)
		return;
	store_audit_set_notify(a->store, NULL, NULL);
	pthread_mutex_lock(&a->lock);
	a->stop = true;
	pthread_cond_signal(&a->wake);
	pthread_mutex_unlock(&a->lock);
	if (a->running)
		pthread_join(a->thread, NULL);
	if (store_audit_flush(a->store, &err) < 0)
		log_error("msg=\"cannot write audit records\" error=\"%s\"", err.msg);
	pthread_cond_destroy(&a->wake);
	pthread_mutex_destroy(&a->lock);
	free(a);
}
