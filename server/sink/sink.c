/* sink: one forwarder thread per sink, and a pruner.
 *
 * A forwarder keeps a batch in memory: the samples after its cursor that
 * its selector takes, read a page at a time so that the store is never
 * held for long. It sends the batch when it is due (at once for StatsD;
 * for S3 when it reaches its rows, bytes or age limit), and on success
 * records the delivery and moves the cursor in one statement. A failed
 * batch is kept as it is and sent again after a backoff, so a retry sends
 * the same samples (and writes the same S3 keys); an S3 batch's range is
 * also stored before its first PUT, so that it survives a crash.
 *
 * Nothing that changes or stops forwarders waits for one: a forwarder is
 * told to stop (its `stop` flag, which the drivers also watch while they
 * wait on the network) and the one that replaces it joins it, in its own
 * thread, before it reads the cursor. Forwarders of deleted sinks are
 * joined at the next change, or at the end. */
#define _GNU_SOURCE
#include "server/sink/sink.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/agent.h"
#include "server/sink/s3.h"
#include "server/sink/statsd.h"
#include "server/util/arena.h"
#include "server/util/clock.h"
#include "server/util/log.h"
#include "store/store.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 60000
#define STATSD_DEFAULT_FLUSH_MS 1000
#define STATSD_BATCH_ROWS 1000
#define PAGE_ROWS 1000          /* samples read per store call */
#define RECALL_SAMPLES 100000   /* read back for counter values at a start */
#define S3_DEFAULT_BATCH_ROWS 10000
#define S3_DEFAULT_BATCH_BYTES (16ull << 20)
#define S3_DEFAULT_BATCH_AGE_MS 60000
#define S3_POLL_MS 1000
#define PRUNE_PERIOD_MS 10000

struct batch {
	Graind__Sample **samples;       /* unpacked into `arena` */
	size_t n, cap;
	struct arena arena;
	uint64_t bytes;                 /* packed size of the samples */
	uint64_t scanned;               /* the last id looked at */
	bool fixed;                     /* failed or recorded: sent again as it is */
	uint64_t recorded;              /* the range stored as pending (its last id) */
};

struct forwarder {
	struct forwarder *next;
	struct sinks *owner;
	char name[64];
	Graind__Sink *cfg;
	pthread_t thread;
	pthread_cond_t wake;
	atomic_bool stop;               /* set under owner->lock, read anywhere */
	bool exited;                    /* under owner->lock */
	/* The forwarder this one replaces, stopped: joined and freed by
	 * this one's thread before it starts. */
	struct forwarder *prev;
	/* Health kept in memory, under owner->lock. */
	uint64_t errors;
	int64_t pending_since_ms;       /* time of the oldest sample not sent */
};

struct sinks {
	struct agent *agent;
	pthread_mutex_t lock;           /* the list and every forwarder's flags */
	pthread_mutex_t change_lock;    /* one sinks_changed at a time; `retired` */
	pthread_cond_t prune_wake;
	struct forwarder *list;
	struct forwarder *retired;      /* stopped, of deleted sinks, not joined yet */
	pthread_t pruner;
	bool pruner_running, stop;
	char host[256];
};

/* ---------------------------------------------------------------- time */

static void deadline_in(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static int cond_init_monotonic(pthread_cond_t *cond)
{
	pthread_condattr_t attr;
	int rc;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	rc = pthread_cond_init(cond, &attr);
	pthread_condattr_destroy(&attr);
	return rc;
}

static bool stopped(const struct forwarder *fw)
{
	return atomic_load(&fw->stop);
}

/* Sleep up to ms unless told to stop; true when told to stop. */
static bool wait_or_stop(struct forwarder *fw, unsigned ms)
{
	struct sinks *s = fw->owner;
	struct timespec ts;

	deadline_in(&ts, ms);
	pthread_mutex_lock(&s->lock);
	while (!stopped(fw) && pthread_cond_timedwait(&fw->wake, &s->lock, &ts) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&s->lock);
	return stopped(fw);
}

/* "2026-11-25T13:52:36.123Z" as unix ms; 0 when it does not parse. */
static int64_t parse_time_ms(const char *text)
{
	struct tm tm = { 0 };
	const char *rest;
	int64_t ms = 0;

	rest = text ? strptime(text, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	if (!rest)
		return 0;
	if (*rest == '.') {
		int digits = 0;

		for (rest++; *rest >= '0' && *rest <= '9'; rest++)
			if (digits++ < 3)
				ms = ms * 10 + (*rest - '0');
		for (; digits < 3; digits++)
			ms *= 10;
	}
	return (int64_t)timegm(&tm) * 1000 + ms;
}

/* Unix ms as RFC 3339 UTC, malloc'd. */
static char *time_text(int64_t unix_ms)
{
	char buf[CLOCK_TEXT_MAX];

	clock_format(unix_ms, buf);
	return strdup(buf);
}

/* Exponential backoff with full jitter: uniform in [d/2, d]. */
static unsigned backoff_ms(unsigned failures)
{
	unsigned d = BACKOFF_MIN_MS;

	while (failures-- > 1 && d < BACKOFF_MAX_MS)
		d *= 2;
	if (d > BACKOFF_MAX_MS)
		d = BACKOFF_MAX_MS;
	return d / 2 + (unsigned)(random() % (d / 2 + 1));
}

/* ---------------------------------------------------------------- batch */

static bool name_listed(char **names, size_t n, const char *name)
{
	if (!n)
		return true;
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

static bool selected(const Graind__Sink *cfg, const Graind__Sample *s)
{
	const Graind__SinkSelector *sel = cfg->selector;

	return !sel || (name_listed(sel->probes, sel->n_probes, s->probe) &&
			name_listed(sel->maps, sel->n_maps, s->map));
}

static void batch_clear(struct batch *b)
{
	arena_reset(&b->arena);
	b->n = 0;
	b->bytes = 0;
	b->fixed = false;
	b->recorded = 0;
}

static void batch_free(struct batch *b)
{
	batch_clear(b);
	arena_free(&b->arena);
	free(b->samples);
}

struct fill_ctx {
	struct batch *batch;
	const Graind__Sink *cfg;
	uint64_t upto;                  /* the last id to read; 0: no end */
	bool past_upto;                 /* a sample after it was seen */
	size_t max_rows;
	uint64_t max_bytes;
	struct arena_mark kept;         /* the arena after the last sample kept */
};

/* store_samples_list_into callback: the sample, unpacked into the
 * batch's arena, is kept as it is, or its memory given back at once. 1
 * stops when the batch is full, -1 when out of memory. */
static int take_sample(const Graind__Sample *s, void *ctx)
{
	struct fill_ctx *fc = ctx;
	struct batch *b = fc->batch;
	uint64_t id = s->id;

	if (fc->upto && id > fc->upto) {
		arena_release(&b->arena, fc->kept);
		fc->past_upto = true;
		return 1;
	}
	if (!selected(fc->cfg, s)) {
		arena_release(&b->arena, fc->kept);     /* s is gone */
	} else {
		if (b->n == b->cap) {
			size_t cap = b->cap ? b->cap * 2 : 64;
			Graind__Sample **grown = realloc(b->samples, cap * sizeof(*grown));

			if (!grown)
				return -1;
			b->samples = grown;
			b->cap = cap;
		}
		b->samples[b->n++] = (Graind__Sample *)s;
		/* Only S3 batches are bounded in bytes. */
		if (fc->max_bytes != UINT64_MAX)
			b->bytes += graind__sample__get_packed_size(s);
		fc->kept = arena_mark(&b->arena);
	}
	b->scanned = id;
	return b->n >= fc->max_rows || b->bytes >= fc->max_bytes ? 1 : 0;
}

/* store_samples_list gap callback: samples damaged in the store are
 * skipped (the store counts and logs them), so the cursor moves past
 * them instead of sticking there. */
static int skip_gap(const struct store_damage *d, void *ctx)
{
	struct fill_ctx *fc = ctx;
	uint64_t last = d->last_id;

	if (fc->upto && d->first_id > fc->upto) {
		fc->past_upto = true;
		return 1;
	}
	if (fc->upto && last > fc->upto)
		last = fc->upto;
	if (last > fc->batch->scanned)
		fc->batch->scanned = last;
	return 0;
}

static void batch_limits(const Graind__Sink *cfg, size_t *rows, uint64_t *bytes)
{
	const Graind__S3Sink *s3 = cfg->s3;

	*rows = STATSD_BATCH_ROWS;
	*bytes = UINT64_MAX;
	if (cfg->kind_case == GRAIND__SINK__KIND_S3) {
		*rows = s3->batch_max_rows ? s3->batch_max_rows : S3_DEFAULT_BATCH_ROWS;
		*bytes = s3->batch_max_bytes ? s3->batch_max_bytes : S3_DEFAULT_BATCH_BYTES;
	}
}

/* Add to the batch the samples after b->scanned, up to its limits and
 * up to id `upto` (0: no end), PAGE_ROWS at a time: the store is locked
 * for one page only. *full is set when the batch is at a limit or at
 * `upto`. When every sample is read, b->scanned moves to the last id
 * that existed before reading (or to `upto`, when before it), so that
 * samples the selector skips do not count as lag. A forwarder told to
 * stop reads no further page. */
static int batch_fill(struct forwarder *fw, struct batch *b, uint64_t upto, bool *full,
		      struct gerr *err)
{
	struct store *st = fw->owner->agent->store;
	const Graind__SinkSelector *sel = fw->cfg->selector;
	struct fill_ctx fc = { .batch = b, .cfg = fw->cfg, .upto = upto,
			       .kept = arena_mark(&b->arena) };
	uint64_t last_id = store_sample_last_id(st);
	bool more = true;
	int rc = 0;

	batch_limits(fw->cfg, &fc.max_rows, &fc.max_bytes);
	*full = b->n >= fc.max_rows || b->bytes >= fc.max_bytes;
	/* Pages of rows the selector may mostly skip, until the batch is
	 * full or every sample is read. */
	while (!*full && more && rc == 0 && !stopped(fw)) {
		size_t room = fc.max_rows - b->n;

		rc = store_samples_list_into(st, sel && sel->n_probes == 1 ? sel->probes[0] : NULL,
					     sel && sel->n_maps == 1 ? sel->maps[0] : NULL,
					     b->scanned,
					     room < PAGE_ROWS ? (unsigned)room : PAGE_ROWS,
					     &b->arena.allocator, take_sample, skip_gap, &fc,
					     &more, err);
		*full = rc == 1 || fc.past_upto || b->n >= fc.max_rows ||
			b->bytes >= fc.max_bytes;
	}
	if (rc < 0 && !err->msg[0])
		gerr_set(err, 500, "out of memory reading samples for sink %s", fw->name);
	if (rc < 0)
		return -1;
	if (upto && upto < last_id)
		last_id = upto;
	if ((fc.past_upto || (rc == 0 && !more)) && last_id > b->scanned)
		b->scanned = last_id;
	return 0;
}

/* ---------------------------------------------------------------- send */

/* One object per probe; every object must be written before the
 * cursor may move past any of the batch. */
static int send_s3(struct forwarder *fw, struct batch *b, uint64_t *bytes, struct gerr *err)
{
	Graind__Sample **group;
	size_t n_group, put;
	bool *done;
	int ret = -1;

	*bytes = 0;
	group = malloc((b->n ? b->n : 1) * sizeof(*group));
	done = calloc(b->n ? b->n : 1, sizeof(*done));
	if (!group || !done) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < b->n; i++) {
		if (done[i])
			continue;
		n_group = 0;
		for (size_t j = i; j < b->n; j++) {
			if (!done[j] && strcmp(b->samples[j]->probe, b->samples[i]->probe) == 0) {
				group[n_group++] = b->samples[j];
				done[j] = true;
			}
		}
		if (s3_put_batch(fw->cfg->s3, fw->owner->host, b->samples[i]->probe, group,
				 n_group, &fw->stop, &put, err) < 0)
			goto out;
		*bytes += put;
	}
	ret = 0;
out:
	free(group);
	free(done);
	return ret;
}

/* StatsD counters go out as the change since their series' previous
 * value, which the driver keeps in memory. A new driver (after a restart,
 * or when the sink changed) reads those values back from the last samples
 * the sink delivered, up to RECALL_SAMPLES before its cursor, so the
 * first change after them is not lost. A series with no value in reach
 * (pruned, or older) starts again from its next value. */
static void recall_counters(struct forwarder *fw, struct statsd *sd, uint64_t cursor)
{
	struct batch b = { .scanned = cursor > RECALL_SAMPLES ? cursor - RECALL_SAMPLES : 0 };
	struct gerr err = { 0 };
	uint64_t before;
	bool full = true;

	arena_init(&b.arena);
	while (full && b.scanned < cursor && !stopped(fw)) {
		before = b.scanned;
		if (batch_fill(fw, &b, cursor, &full, &err) < 0) {
			log_warn("msg=\"counter values not recalled\" sink=%s error=\"%s\"",
				 fw->name, err.msg);
			break;
		}
		statsd_recall(sd, b.samples, b.n);
		batch_clear(&b);
		if (b.scanned == before)
			break;
	}
	batch_free(&b);
}

static int send_batch(struct forwarder *fw, struct statsd **sd, struct batch *b,
		      uint64_t cursor, uint64_t *bytes, struct gerr *err)
{
	size_t sent = 0;

	*bytes = 0;
	if (!b->n)
		return 0;
	if (fw->cfg->kind_case == GRAIND__SINK__KIND_S3)
		return send_s3(fw, b, bytes, err);
	/* The socket is opened lazily, so a name that does not resolve yet
	 * is retried like any failed send. */
	if (!*sd) {
		if (statsd_open(fw->cfg->statsd, &fw->stop, sd, err) < 0)
			return -1;
		recall_counters(fw, *sd, cursor);
	}
	if (statsd_send(*sd, b->samples, b->n, &sent, err) < 0) {
		*bytes = sent;
		return -1;
	}
	*bytes = sent;
	return 0;
}

/* Is the batch to be sent now? StatsD sends what it has; S3 waits for
 * a full batch or for its oldest sample to reach the age limit. */
static bool batch_due(const struct forwarder *fw, const struct batch *b, bool full)
{
	const Graind__S3Sink *s3 = fw->cfg->s3;
	unsigned max_age;
	int64_t first;

	if (fw->cfg->kind_case != GRAIND__SINK__KIND_S3 || full || !b->n)
		return true;
	max_age = s3->batch_max_age_ms ? s3->batch_max_age_ms : S3_DEFAULT_BATCH_AGE_MS;
	first = parse_time_ms(b->samples[0]->time);
	return !first || clock_unix_ms() - first >= (int64_t)max_age;
}

static unsigned poll_ms(const Graind__Sink *cfg)
{
	if (cfg->kind_case == GRAIND__SINK__KIND_S3) {
		unsigned age = cfg->s3->batch_max_age_ms;

		return age && age < S3_POLL_MS ? age : S3_POLL_MS;
	}
	return cfg->statsd->flush_interval_ms ? cfg->statsd->flush_interval_ms
					      : STATSD_DEFAULT_FLUSH_MS;
}

static void set_pending(struct forwarder *fw, const struct batch *b)
{
	pthread_mutex_lock(&fw->owner->lock);
	fw->pending_since_ms = b->n ? parse_time_ms(b->samples[0]->time) : 0;
	pthread_mutex_unlock(&fw->owner->lock);
}

static void note_failure(struct forwarder *fw, const struct gerr *cause)
{
	struct store *st = fw->owner->agent->store;
	struct gerr err;

	pthread_mutex_lock(&fw->owner->lock);
	fw->errors++;
	pthread_mutex_unlock(&fw->owner->lock);
	log_warn("msg=\"sink delivery failed\" sink=%s error=\"%s\"", fw->name, cause->msg);
	if (store_sink_failed(st, fw->name, cause->msg, &err) < 0 && err.status != 503)
		log_error("msg=\"cannot record sink failure\" sink=%s error=\"%s\"",
			  fw->name, err.msg);
}

/* An S3 batch's range is stored before its first PUT: after a crash the
 * next forwarder sends the same samples again, under the same keys. */
static int record_range(struct forwarder *fw, struct batch *b, struct gerr *err)
{
	if (fw->cfg->kind_case != GRAIND__SINK__KIND_S3 || !b->n || b->recorded == b->scanned)
		return 0;
	if (store_sink_pending(fw->owner->agent->store, fw->name, b->scanned, err) < 0)
		return -1;
	b->recorded = b->scanned;
	b->fixed = true;
	return 0;
}

/* One round: fill, maybe send and record. Returns how long to wait
 * before the next round, in ms (0: go on at once). */
static unsigned forward_once(struct forwarder *fw, struct statsd **sd, struct batch *b,
			     uint64_t *cursor, unsigned *failures)
{
	struct store *st = fw->owner->agent->store;
	bool full = false, fixed = b->fixed && b->n;
	struct gerr err = { 0 };
	uint64_t bytes = 0;

	/* A batch that failed, or whose range is stored, goes again as it was. */
	if (!fixed) {
		b->fixed = false;
		if (batch_fill(fw, b, 0, &full, &err) < 0)
			goto failed;
	}
	if (stopped(fw))
		return 0;                        /* the fill may have stopped short */
	set_pending(fw, b);
	if (b->scanned == *cursor)
		return poll_ms(fw->cfg);         /* nothing new */
	/* Such a batch was due when it was first sent; the backoff was its wait. */
	if (!fixed && !batch_due(fw, b, full))
		return poll_ms(fw->cfg);
	if (record_range(fw, b, &err) < 0 || send_batch(fw, sd, b, *cursor, &bytes, &err) < 0 ||
	    store_sink_delivered(st, fw->name, b->scanned, b->n, bytes, &err) < 0)
		goto failed;
	*cursor = b->scanned;
	*failures = 0;
	batch_clear(b);
	set_pending(fw, b);
	/* More may be waiting behind a full batch or a retried one. */
	return full || fixed ? 0 : poll_ms(fw->cfg);
failed:
	/* Told to stop: the send was cancelled, which is no failure of the
	 * sink's. */
	if (stopped(fw))
		return 0;
	/* The StatsD driver is kept: its counter memory was rolled back for
	 * this batch, and the retry must send the same deltas. (Reading
	 * SO_ERROR cleared the socket's error.) */
	b->fixed = true;
	note_failure(fw, &err);
	return backoff_ms(++*failures);
}

/* The S3 batch that was being sent when the agent stopped: the samples
 * after the cursor up to its stored last id, sent first and at once. */
static void resume_pending(struct forwarder *fw, struct batch *b, uint64_t pending)
{
	struct gerr err = { 0 };
	bool full;

	if (fw->cfg->kind_case != GRAIND__SINK__KIND_S3 || pending <= b->scanned)
		return;
	if (batch_fill(fw, b, pending, &full, &err) < 0) {
		log_warn("msg=\"pending batch not read back\" sink=%s error=\"%s\"", fw->name,
			 err.msg);
		batch_clear(b);
		return;
	}
	b->fixed = true;
	b->recorded = pending;
	log_info("msg=\"sending the pending batch again\" sink=%s samples=%zu last_id=%llu",
		 fw->name, b->n, (unsigned long long)pending);
}

static void forwarder_free(struct forwarder *fw)
{
	if (!fw)
		return;
	if (fw->cfg)
		graind__sink__free_unpacked(fw->cfg, NULL);
	pthread_cond_destroy(&fw->wake);
	free(fw);
}

/* Wait for a forwarder told to stop, and free it. */
static void forwarder_join(struct forwarder *fw)
{
	pthread_join(fw->thread, NULL);
	forwarder_free(fw);
}

static void *forwarder_main(void *arg)
{
	struct forwarder *fw = arg;
	struct store_sink row = { 0 };
	struct statsd *sd = NULL;
	struct batch b = { 0 };
	unsigned failures = 0, wait = 0;
	uint64_t cursor;
	struct gerr err;

	arena_init(&b.arena);
	/* The one replaced may still be on its way out of a send: the
	 * cursor is read once it has stopped moving it. */
	if (fw->prev) {
		forwarder_join(fw->prev);
		fw->prev = NULL;
	}
	if (stopped(fw))
		goto out;
	if (store_sink_get(fw->owner->agent->store, fw->name, &row, &err) < 0) {
		log_error("msg=\"sink forwarder cannot start\" sink=%s error=\"%s\"",
			  fw->name, err.msg);
		goto out;
	}
	cursor = b.scanned = row.cursor;
	log_info("msg=\"sink forwarder started\" sink=%s cursor=%llu", fw->name,
		 (unsigned long long)cursor);
	resume_pending(fw, &b, row.pending);
	store_sink_clear(&row);
	while (!wait_or_stop(fw, wait))
		wait = forward_once(fw, &sd, &b, &cursor, &failures);
	statsd_close(sd);
	batch_free(&b);
out:
	pthread_mutex_lock(&fw->owner->lock);
	fw->exited = true;
	pthread_mutex_unlock(&fw->owner->lock);
	return NULL;
}

/* ---------------------------------------------------------------- forwarders */

/* Start the forwarder of a stored sink and add it to the list. It takes
 * `prev` (stopped; may be NULL) when it starts, and not when it fails. */
static int forwarder_start(struct sinks *s, const struct store_sink *row,
			   struct forwarder *prev, struct gerr *err)
{
	struct forwarder *fw = calloc(1, sizeof(*fw));

	if (!fw)
		return gerr_set(err, 500, "out of memory");
	fw->owner = s;
	fw->prev = prev;
	atomic_init(&fw->stop, false);
	snprintf(fw->name, sizeof(fw->name), "%s", row->name);
	cond_init_monotonic(&fw->wake);
	/* Not checked again: what changed since (an unreadable secret file)
	 * shows as a failed delivery in the sink's health. */
	fw->cfg = graind__sink__unpack(NULL, row->config_len, row->config);
	if (!fw->cfg || (fw->cfg->kind_case != GRAIND__SINK__KIND_STATSD &&
			 fw->cfg->kind_case != GRAIND__SINK__KIND_S3)) {
		forwarder_free(fw);
		return gerr_set(err, 500, "stored configuration of sink %s does not decode",
				row->name);
	}
	if (pthread_create(&fw->thread, NULL, forwarder_main, fw) != 0) {
		forwarder_free(fw);
		return gerr_set(err, 500, "cannot start the forwarder of sink %s", row->name);
	}
	pthread_setname_np(fw->thread, "graind-sink");
	pthread_mutex_lock(&s->lock);
	fw->next = s->list;
	s->list = fw;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Tell a forwarder to stop, without waiting: a send in flight is
 * cancelled and nothing more is recorded. */
static void forwarder_cancel(struct sinks *s, struct forwarder *fw)
{
	pthread_mutex_lock(&s->lock);
	atomic_store(&fw->stop, true);
	pthread_cond_signal(&fw->wake);
	pthread_mutex_unlock(&s->lock);
}

/* Join the retired forwarders that have ended (all of them when `all`).
 * change_lock held. */
static void reap_retired(struct sinks *s, bool all)
{
	struct forwarder **p = &s->retired, *fw;
	bool exited;

	while ((fw = *p)) {
		pthread_mutex_lock(&s->lock);
		exited = fw->exited;
		pthread_mutex_unlock(&s->lock);
		if (all || exited) {
			*p = fw->next;
			forwarder_join(fw);
		} else {
			p = &fw->next;
		}
	}
}

/* change_lock held. */
static void retire(struct sinks *s, struct forwarder *fw)
{
	if (!fw)
		return;
	fw->next = s->retired;
	s->retired = fw;
}

/* The retired forwarder of a sink deleted and now created again: the new
 * one must not start before it has ended, as if it had been replaced.
 * There is at most one per name, as this takes it. change_lock held. */
static struct forwarder *unretire(struct sinks *s, const char *name)
{
	struct forwarder **p, *fw;

	for (p = &s->retired; (fw = *p); p = &fw->next) {
		if (strcmp(fw->name, name) == 0) {
			*p = fw->next;
			return fw;
		}
	}
	return NULL;
}

/* Take the forwarder of sink `name` off the list; NULL when none. */
static struct forwarder *forwarder_unlink(struct sinks *s, const char *name)
{
	struct forwarder **p, *fw = NULL;

	pthread_mutex_lock(&s->lock);
	for (p = &s->list; *p; p = &(*p)->next) {
		if (strcmp((*p)->name, name) == 0) {
			fw = *p;
			*p = fw->next;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return fw;
}

/* A sink whose stored configuration is refused is logged and skipped:
 * the others still run. */
static int start_row(const struct store_sink *row, const char *owner, void *ctx)
{
	struct gerr err;

	(void)owner;
	if (forwarder_start(ctx, row, NULL, &err) < 0)
		log_error("msg=\"sink not started\" sink=%s error=\"%s\"", row->name, err.msg);
	return 0;
}

/* ---------------------------------------------------------------- pruner */

static void *pruner_main(void *arg)
{
	struct sinks *s = arg;
	int64_t retention_ms = (int64_t)s->agent->cfg.sink_retention_s * 1000;
	unsigned period = PRUNE_PERIOD_MS;
	struct timespec ts;
	uint64_t pruned;
	struct gerr err;

	if (retention_ms / 2 < period)
		period = retention_ms / 2 > 1000 ? (unsigned)(retention_ms / 2) : 1000;
	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		deadline_in(&ts, period);
		while (!s->stop && pthread_cond_timedwait(&s->prune_wake, &s->lock, &ts) != ETIMEDOUT)
			;
		if (s->stop)
			break;
		pthread_mutex_unlock(&s->lock);
		if (store_samples_prune_delivered(s->agent->store, clock_unix_ms() - retention_ms,
						  &pruned, &err) < 0) {
			if (err.status != 503)  /* storage faults: the store logs them */
				log_error("msg=\"cannot prune delivered samples\" error=\"%s\"",
					  err.msg);
		}
		else if (pruned)
			log_debug("msg=\"delivered samples pruned\" rows=%llu",
				  (unsigned long long)pruned);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---------------------------------------------------------------- public */

int sinks_start(struct agent *agent, struct sinks **out, struct gerr *err)
{
	struct sinks *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (!s)
		return gerr_set(err, 500, "out of memory");
	s->agent = agent;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->change_lock, NULL);
	cond_init_monotonic(&s->prune_wake);
	if (gethostname(s->host, sizeof(s->host) - 1) < 0 || !s->host[0])
		snprintf(s->host, sizeof(s->host), "localhost");
	srandom((unsigned)clock_mono_us() ^ (unsigned)getpid());
	/* start_row itself never stops the walk: only memory can. */
	if (store_sink_list(agent->store, start_row, s) != 0) {
		sinks_stop(s);
		return gerr_set(err, 500, "out of memory reading the sinks");
	}
	if (pthread_create(&s->pruner, NULL, pruner_main, s) != 0) {
		sinks_stop(s);
		return gerr_set(err, 500, "cannot start the sample pruner");
	}
	s->pruner_running = true;
	pthread_setname_np(s->pruner, "graind-pruner");
	*out = s;
	return 0;
}

void sinks_stop(struct sinks *s)
{
	struct forwarder *fw;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_signal(&s->prune_wake);
	pthread_mutex_unlock(&s->lock);
	/* Every forwarder is told first, so that their sends are cancelled
	 * together rather than one after the other. */
	pthread_mutex_lock(&s->change_lock);
	for (fw = s->list; fw; fw = fw->next)
		forwarder_cancel(s, fw);
	if (s->pruner_running)
		pthread_join(s->pruner, NULL);
	while (s->list) {
		fw = s->list;
		s->list = fw->next;
		forwarder_join(fw);
	}
	reap_retired(s, true);
	pthread_mutex_unlock(&s->change_lock);
	pthread_cond_destroy(&s->prune_wake);
	pthread_mutex_destroy(&s->change_lock);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void sinks_changed(struct sinks *s, const char *name)
{
	struct store_sink row = { 0 };
	struct forwarder *old;
	struct gerr err;

	if (!s)
		return;
	pthread_mutex_lock(&s->change_lock);
	reap_retired(s, false);
	old = forwarder_unlink(s, name);
	if (!old)
		old = unretire(s, name);
	if (old)
		forwarder_cancel(s, old);
	if (store_sink_get(s->agent->store, name, &row, &err) == 0) {
		if (forwarder_start(s, &row, old, &err) == 0)
			old = NULL;
		else
			log_error("msg=\"sink not started\" sink=%s error=\"%s\"", name, err.msg);
		store_sink_clear(&row);
	} else if (err.status != 404) {
		log_error("msg=\"cannot read sink\" sink=%s error=\"%s\"", name, err.msg);
	}
	retire(s, old);
	pthread_mutex_unlock(&s->change_lock);
}

/* Rows after the cursor. Ids are consecutive (AUTOINCREMENT inside the
 * append transaction; deletions only take the oldest), so this is the
 * distance to the last id, bounded by what the buffer holds. */
static uint64_t lag_rows(struct store *st, uint64_t cursor)
{
	struct store_summary sum;
	uint64_t lag;

	store_summary_get(st, &sum);
	lag = sum.last_sample_id > cursor ? sum.last_sample_id - cursor : 0;
	return lag < sum.samples ? lag : sum.samples;
}

int sinks_health(struct sinks *s, Graind__Sink *sink, const struct store_sink *row,
		 struct gerr *err)
{
	Graind__SinkHealth *h = sink->health;
	int64_t pending = 0;

	if (!h) {
		h = malloc(sizeof(*h));
		if (!h)
			return gerr_set(err, 500, "out of memory");
		graind__sink_health__init(h);
		sink->health = h;
	}
	h->cursor = row->cursor;
	h->lag_rows = lag_rows(s->agent->store, row->cursor);
	h->bytes_sent = row->bytes_sent;
	h->samples_sent = row->samples_sent;
	pthread_mutex_lock(&s->lock);
	for (struct forwarder *fw = s->list; fw; fw = fw->next)
		if (strcmp(fw->name, sink->name) == 0)
			pending = fw->pending_since_ms;
	pthread_mutex_unlock(&s->lock);
	if (pending && h->lag_rows)
		h->lag_seconds = (double)(clock_unix_ms() - pending) / 1000.0;
	if ((row->last_success_ms && !(h->last_success = time_text(row->last_success_ms))) ||
	    (row->last_error[0] && !(h->last_error = strdup(row->last_error))))
		return gerr_set(err, 500, "out of memory");
	return 0;
}

uint64_t sinks_errors(struct sinks *s, const char *name)
{
	uint64_t errors = 0;

	if (!s)
		return 0;
	pthread_mutex_lock(&s->lock);
	for (struct forwarder *fw = s->list; fw; fw = fw->next)
		if (strcmp(fw->name, name) == 0)
			errors = fw->errors;
	pthread_mutex_unlock(&s->lock);
	return errors;
}

/* ---------------------------------------------------------------- check */

static bool empty(const char *s)
{
	return !s || !*s;
}

static int check_readable(const char *field, const char *path, struct gerr *err)
{
	if (access(path, R_OK) < 0)
		return gerr_set(err, 400, "%s: cannot read %s: %s", field, path, strerror(errno));
	return 0;
}

static int check_statsd(const Graind__StatsdSink *c, struct gerr *err)
{
	if (empty(c->host))
		return gerr_set(err, 400, "statsd.host is required (a name or address)");
	if (c->port == 0 || c->port > 65535)
		return gerr_set(err, 400, "statsd.port must be 1 to 65535, got %u", c->port);
	if (c->max_datagram && (c->max_datagram < 64 || c->max_datagram > 65507))
		return gerr_set(err, 400, "statsd.maxDatagram must be 64 to 65507 bytes, got %u",
				c->max_datagram);
	if ((unsigned)c->dialect > GRAIND__TAG_DIALECT__TAG_DIALECT_GRAPHITE)
		return gerr_set(err, 400, "statsd.dialect %d is not a known tag dialect",
				(int)c->dialect);
	if (c->flush_interval_ms > 3600000)
		return gerr_set(err, 400, "statsd.flushIntervalMs must be at most 3600000, got %u",
				c->flush_interval_ms);
	if (strlen(c->prefix ? c->prefix : "") > 200)
		return gerr_set(err, 400, "statsd.prefix is longer than 200 bytes");
	return 0;
}

static bool bucket_name_ok(const char *b)
{
	size_t len = strlen(b);

	if (len < 3 || len > 63)
		return false;
	for (const char *p = b; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		      *p == '.' || *p == '-'))
			return false;
	return b[0] != '.' && b[0] != '-';
}

static int check_s3(const Graind__S3Sink *c, struct gerr *err)
{
	if (empty(c->endpoint) || (strncmp(c->endpoint, "http://", 7) != 0 &&
				   strncmp(c->endpoint, "https://", 8) != 0))
		return gerr_set(err, 400, "s3.endpoint must be an http:// or https:// URL");
	if (empty(c->bucket) || !bucket_name_ok(c->bucket))
		return gerr_set(err, 400,
				"s3.bucket must be 3 to 63 lowercase letters, digits, '.' or '-'");
	if (empty(c->access_key_id))
		return gerr_set(err, 400, "s3.accessKeyId is required");
	if (empty(c->secret_access_key) == empty(c->secret_file))
		return gerr_set(err, 400,
				"s3 needs exactly one of secretAccessKey and secretFile");
	if (!empty(c->secret_file) && check_readable("s3.secretFile", c->secret_file, err) < 0)
		return -1;
	if (!empty(c->ca_file) && check_readable("s3.caFile", c->ca_file, err) < 0)
		return -1;
	if (strlen(c->key_prefix ? c->key_prefix : "") > 512)
		return gerr_set(err, 400, "s3.keyPrefix is longer than 512 bytes");
	if (c->batch_max_rows > 1000000)
		return gerr_set(err, 400, "s3.batchMaxRows must be at most 1000000, got %u",
				c->batch_max_rows);
	if (c->batch_max_bytes > (1ull << 30))
		return gerr_set(err, 400, "s3.batchMaxBytes must be at most 1 GiB");
	if (c->batch_max_age_ms > 86400000)
		return gerr_set(err, 400, "s3.batchMaxAgeMs must be at most 86400000 (a day)");
	return 0;
}

int sinks_check_config(const Graind__Sink *sink, struct gerr *err)
{
	switch (sink->kind_case) {
	case GRAIND__SINK__KIND_STATSD:
		return check_statsd(sink->statsd, err);
	case GRAIND__SINK__KIND_S3:
		return check_s3(sink->s3, err);
	default:
		return gerr_set(err, 400, "a sink needs a 'statsd' or an 's3' section");
	}
}
