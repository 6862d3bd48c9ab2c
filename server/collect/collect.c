/* The collector: one thread drains ring buffers and perf buffers and polls
 * metric maps on timers, all in one epoll loop; a second thread writes
 * what it makes to the store in batches.
 *
 * Two threads, so that decoding goes on while SQLite commits: the queue
 * between them is the only shared state (one mutex, one condition).
 * Samples travel in chunks: the collector packs each sample, as the store
 * keeps it, into the open chunk of its map, and hands the chunk over when
 * it is full or when the source has nothing more for now; the writer
 * stores each chunk as one block. Nothing is allocated per sample, and
 * the lock is taken once per chunk.
 *
 * Each probe has its own queue of fixed bound, so a probe that floods
 * cannot take the room of the others, and all the queues together are
 * bounded in bytes (--queue-bytes), so that many probes cannot take many
 * times that; a chunk that does not fit is counted and freed. A queue and
 * its counters last as long as its probe is in the store, so that a
 * change of the probe never sets them back. Before that, a source whose
 * queue (or all of them) is half full pauses: its records wait in the
 * kernel's buffer, where they cost nothing, rather than be decoded only to
 * be dropped, and the CPU goes to the writer instead. The writer takes up to BATCH_MAX samples, starting
 * at a different probe each time, and commits them in one transaction; a
 * sample waits at most BATCH_WAIT_MS for its batch.
 *
 * A ring buffer is read with ringread.h, not libbpf's consumer: a chunk
 * carries the ring position after its last record, and the ring lets go
 * of those records only once the chunk is stored or counted lost
 * (chunk_free), unless its output asks for DELIVERY_READ. A chunk holds
 * at most an eighth of its ring; a ring a quarter full of records not yet
 * let go tells the writer not to wait for a fuller batch. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "server/util/pbmsg.h"
#include "server/agent.h"
#include "server/collect/collect.h"
#include "server/collect/collect_int.h"
#include "server/collect/decode.h"
#include "server/collect/ringread.h"
#include "server/probe/probe.h"
#include "server/util/clock.h"
#include "server/util/feed.h"
#include "server/util/log.h"
#include "server/util/pbwire.h"
#include "store/store.h"

#define QUEUE_MAX     COLLECT_QUEUE_MAX
#define QUEUE_MAX_BYTES (32u << 20) /* their bytes, per probe */
#define PAUSE_RETRY_MS 5
/* A wake-up that brought fewer records than this means the producers wake
 * the collector for nearly every record, which costs them an interrupt
 * each: the collector then lets records gather for COALESCE_US first. */
#define COALESCE_BELOW 64
#define COALESCE_US   1000
#define CHUNK_BYTES   (64u << 10) /* a chunk is handed over once this full */
#define CHUNK_ROOM    (CHUNK_BYTES + 4096) /* an event chunk's buffer */
#define SPARE_CHUNKS  32        /* event chunk buffers kept for reuse */
#define BATCH_MAX     65536     /* samples per transaction */
#define BATCH_WAIT_MS 50        /* the longest a sample waits for its batch */
#define RETRY_MIN_MS  100       /* a batch the storage refused, tried again after */
#define RETRY_MAX_MS  1000      /* ... doubling up to this */
#define PERF_PAGES    64        /* perf buffer pages per CPU */
#define DELTA_MAX     (1u << 18) /* remembered counter series, per map */
#define TAG_TEXT_MAX  256
#define SIZE_PICKS_MAX 8        /* record sizes an event source remembers */
#define WARNINGS_MAX  16        /* warnings a probe's status carries */
#define WARNING_MAX   512

/* Field numbers of graind.Sample (proto/graind.proto), for packing events
 * by hand. */
enum {
	SAMPLE_FIELD_PROBE = 2,
	SAMPLE_FIELD_MAP = 3,
	SAMPLE_FIELD_TIME = 4,
	SAMPLE_FIELD_KIND = 5,
	SAMPLE_FIELD_NAME = 6,
	SAMPLE_FIELD_VALUE = 8,
	SAMPLE_FIELD_FIELDS = 10,
};

/* ---------------------------------------------------------------- types */

struct pqueue;

/* Samples of one map of a probe, packed as a store block holds them. */
struct chunk {
	struct chunk *next;
	struct pqueue *queue;   /* set when queued */
	char map[64];
	uint32_t count;
	bool shares;            /* holds the event head numbered shared_head */
	uint64_t shared_head;
	struct pbwire data;
	/* Records of a ring buffer up to ring_end: released from the ring
	 * once the chunk is done with (ringread.h). NULL otherwise. */
	struct ringread *ring;
	uint64_t ring_end;
	uint32_t ring_map_id;
};

/* The chunks of one probe waiting for the writer. It outlives the
 * probe's sources until the writer has taken everything. */
struct pqueue {
	char probe[64];
	struct chunk *head, **tail;
	size_t len, bytes;      /* samples and bytes waiting */
	uint64_t dropped;       /* full queue or failed write */
	uint64_t overflow;      /* of those: all the queues were full */
	uint64_t lost;          /* records the kernel could not hand over */
	uint64_t records;       /* read from its ring and perf buffers (atomic) */
	bool live;              /* its probe is in the store: kept */
	struct chunk **put_back;        /* where requeue() puts the next chunk */
	struct pqueue *next;
};

enum source_kind {
	SOURCE_CONTROL,
	SOURCE_RING,
	SOURCE_PERF,
	SOURCE_TIMER,
	SOURCE_FLUSH,           /* the timer of an aggregated event map */
};

struct cprobe;

/* How records of one size decode when the map's record type does not fit
 * them: as the type taken by their size, or raw (dec NULL). */
struct size_pick {
	size_t len;
	struct decoder *dec;
};

struct source {
	enum source_kind kind;
	struct cprobe *probe;
	const struct collect_map *map;
	int map_fd, timer_fd;
	struct ringread *ring;          /* SOURCE_RING */
	uint64_t ring_pos;              /* past the last record handled */
	uint64_t span_start;            /* where the open chunk's records begin */
	uint32_t map_id;                /* the kernel's id of the ring's map */
	struct perf_buffer *pb;
	struct collect_delta *delta;   /* metric output with delta */
	struct collect_agg *agg;        /* events counted here, not stored */
	struct chunk *open;             /* being filled */
	bool paused;                    /* its queue is too full: stop reading */
	bool waiting;                   /* paused and out of the epoll set */
	struct pbwire event_head;       /* what every event sample starts with */
	int64_t event_head_ms;          /* the time it says */
	const struct decoder *event_head_dec;   /* whose field names it holds */
	uint64_t event_heads;           /* the number of the head, one per head made */
	struct size_pick picks[SIZE_PICKS_MAX];
	size_t n_picks;
	struct source *peer;            /* SOURCE_FLUSH: the event source */
	struct source *next;
};

/* A probe the collector follows: its view and its open sources. */
struct cprobe {
	struct collector *c;
	struct collect_view *view;
	struct pqueue *queue;
	struct source *sources;
	char *warnings[WARNINGS_MAX];   /* in the probe's status */
	size_t n_warnings;
	struct cprobe *next;
};

struct change {
	char probe[64];
	struct change *next;
};

struct collector {
	struct agent *agent;
	pthread_t thread, writer;
	bool thread_started, writer_started;
	int epfd, ctl_fd;
	struct source control;

	/* Time of the samples being made (collector thread only). */
	int64_t now_ms;
	char now_text[CLOCK_TEXT_MAX];

	/* Requests to the collector thread. A change is numbered when posted
	 * (requested) and done once `applied` reaches its number. */
	pthread_mutex_t ctl_lock;
	pthread_cond_t ctl_applied;
	struct change *changes;
	uint64_t requested, applied;
	bool stopping;

	/* The probes followed; changed by the collector thread under
	 * probes_lock, which readers from other threads take. */
	pthread_mutex_t probes_lock;
	struct cprobe *probes;

	/* The queues. */
	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	struct pqueue *queues;
	struct pqueue *next_first;      /* where the next batch starts */
	size_t depth;
	size_t bytes, max_bytes;        /* of every queue, and their bound */
	bool writer_stop;
	bool hurry;                     /* a ring is filling up: commit now */
	/* Event chunks the writer is done with, kept for the collector to
	 * fill again: a fresh 64 KiB buffer costs page faults every time. */
	struct chunk *spare;
	size_t n_spare;

	/* The rings of the sources a reload_probe() closed, for the sources it
	 * opens to read on where they stopped: a new reader would start at the
	 * consumer position, before records that chunks still hold. */
	struct kept_ring { uint32_t map_id; struct ringread *ring; struct kept_ring *next; } *kept;

	size_t paused;                  /* sources paused (collector thread) */
	uint64_t records;               /* ring and perf records read (ditto) */
	bool trickle;                   /* few records per wake-up this round */

	struct collect_stats stats;     /* updated with atomics */
};

static void stat_add(uint64_t *counter, uint64_t n)
{
	__atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- queues */

static struct pqueue *queue_for(struct collector *c, const char *probe)
{
	struct pqueue *q;

	pthread_mutex_lock(&c->qlock);
	for (q = c->queues; q; q = q->next)
		if (strcmp(q->probe, probe) == 0)
			break;
	if (!q) {
		q = calloc(1, sizeof(*q));
		if (q) {
			snprintf(q->probe, sizeof(q->probe), "%s", probe);
			q->tail = &q->head;
			q->next = c->queues;
			c->queues = q;
		}
	}
	if (q)
		q->live = true;
	pthread_mutex_unlock(&c->qlock);
	return q;
}

/* Probe `probe` is gone from the store: its queue goes once empty. */
static void queue_retire(struct collector *c, const char *probe)
{
	pthread_mutex_lock(&c->qlock);
	for (struct pqueue *q = c->queues; q; q = q->next)
		if (strcmp(q->probe, probe) == 0)
			q->live = false;
	pthread_cond_signal(&c->qcond);
	pthread_mutex_unlock(&c->qlock);
}

static void chunk_destroy(struct chunk *ch)
{
	if (ch) {
		pbwire_free(&ch->data);
		free(ch);
	}
}

/* Done with a chunk: an event chunk goes back to the spares, unless a
 * huge record grew it. */
static void chunk_free(struct collector *c, struct chunk *ch)
{
	if (!ch)
		return;
	if (ch->ring) {         /* committed or counted lost: the ring may go on */
		ringread_done(ch->ring, ch->ring_end);
		ringread_unref(ch->ring);
		ch->ring = NULL;
	}
	if (ch->data.cap >= CHUNK_ROOM && ch->data.cap <= 2 * CHUNK_ROOM && !ch->data.failed) {
		pthread_mutex_lock(&c->qlock);
		if (c->n_spare < SPARE_CHUNKS) {
			ch->next = c->spare;
			c->spare = ch;
			c->n_spare++;
			ch = NULL;
		}
		pthread_mutex_unlock(&c->qlock);
	}
	chunk_destroy(ch);
}

/* An empty chunk with room for `room` bytes, a spare one for events. */
static struct chunk *chunk_new(struct collector *c, size_t room)
{
	struct chunk *ch = NULL;
	struct pbwire data;

	if (room == CHUNK_ROOM) {
		pthread_mutex_lock(&c->qlock);
		ch = c->spare;
		if (ch) {
			c->spare = ch->next;
			c->n_spare--;
		}
		pthread_mutex_unlock(&c->qlock);
	}
	if (ch) {
		data = ch->data;
		data.len = 0;
		*ch = (struct chunk){ .data = data };
		return ch;
	}
	ch = calloc(1, sizeof(*ch));
	if (ch && !pbwire_reserve(&ch->data, room)) {
		chunk_destroy(ch);
		ch = NULL;
	}
	return ch;
}

/* Count samples of probe queue q as lost: a full queue, a failed write;
 * called with qlock held. */
static void count_lost_locked(struct collector *c, struct pqueue *q, uint64_t n)
{
	q->dropped += n;
	stat_add(&c->stats.queue_dropped, n);
}

static void queue_count_lost(struct collector *c, struct pqueue *q, uint64_t n)
{
	pthread_mutex_lock(&c->qlock);
	count_lost_locked(c, q, n);
	pthread_mutex_unlock(&c->qlock);
}

/* Hand a chunk to the writer, or count it as dropped when the probe's
 * queue, or all of them together, have no room for it. True when either
 * is half full: the source pauses until both are down to an eighth. */
static bool queue_push(struct collector *c, struct pqueue *q, struct chunk *ch)
{
	bool full, overflow, high;

	stat_add(&c->stats.collected, ch->count);
	pthread_mutex_lock(&c->qlock);
	full = q->len + ch->count > QUEUE_MAX || q->bytes + ch->data.len > QUEUE_MAX_BYTES;
	overflow = !full && c->bytes + ch->data.len > c->max_bytes;
	if (full || overflow) {
		count_lost_locked(c, q, ch->count);
		if (overflow) {
			q->overflow += ch->count;
			stat_add(&c->stats.queue_overflow, ch->count);
		}
	} else {
		ch->queue = q;
		*q->tail = ch;
		q->tail = &ch->next;
		q->len += ch->count;
		q->bytes += ch->data.len;
		c->bytes += ch->data.len;
		c->depth += ch->count;
		if (c->depth == ch->count || c->depth >= BATCH_MAX)
			pthread_cond_signal(&c->qcond);
	}
	high = q->len >= QUEUE_MAX / 2 || q->bytes >= QUEUE_MAX_BYTES / 2 ||
	       c->bytes >= c->max_bytes / 2;
	pthread_mutex_unlock(&c->qlock);
	if (full || overflow)
		chunk_free(c, ch);
	return high;
}

static bool queue_low(struct collector *c, struct pqueue *q)
{
	bool low;

	pthread_mutex_lock(&c->qlock);
	low = q->len < QUEUE_MAX / 8 && q->bytes < QUEUE_MAX_BYTES / 8 &&
	      c->bytes < c->max_bytes / 8;
	pthread_mutex_unlock(&c->qlock);
	return low;
}

/* Whole chunks, up to BATCH_MAX samples (at least one chunk), each queue
 * in turn; called with qlock held. */
static struct chunk *take_batch(struct collector *c, size_t *samples)
{
	struct pqueue *q = c->next_first ? c->next_first : c->queues;
	struct chunk *batch = NULL, **tail = &batch;

	*samples = 0;
	for (struct pqueue *start = q; q && *samples < BATCH_MAX;) {
		while (q->head && (*samples == 0 || *samples + q->head->count <= BATCH_MAX)) {
			struct chunk *ch = q->head;

			q->head = ch->next;
			if (!q->head)
				q->tail = &q->head;
			q->len -= ch->count;
			q->bytes -= ch->data.len;
			c->bytes -= ch->data.len;
			ch->next = NULL;
			*tail = ch;
			tail = &ch->next;
			*samples += ch->count;
		}
		q = q->next ? q->next : c->queues;
		if (q == start)
			break;
	}
	c->next_first = q;
	c->depth -= *samples;
	return batch;
}

/* Free queues nobody fills any more once empty; called with qlock held. */
static void reap_queues(struct collector *c)
{
	for (struct pqueue **pp = &c->queues; *pp;) {
		struct pqueue *q = *pp;

		if (q->live || q->head) {
			pp = &q->next;
			continue;
		}
		*pp = q->next;
		if (c->next_first == q)
			c->next_first = NULL;
		free(q);
	}
}

static void free_chunks(struct collector *c, struct chunk *ch)
{
	while (ch) {
		struct chunk *next = ch->next;

		chunk_free(c, ch);
		ch = next;
	}
}

/* Count a batch the store refused against the probes of its samples. */
static void count_failed(struct collector *c, struct chunk *batch)
{
	for (struct chunk *ch = batch; ch; ch = ch->next)
		queue_count_lost(c, ch->queue, ch->count);
}

/* Put a batch the storage could not take back at the front of its queues,
 * in order, to be written again: it is still within the bounds it was
 * admitted under, and what arrives meanwhile meets them full. */
static void requeue(struct collector *c, struct chunk *batch)
{
	pthread_mutex_lock(&c->qlock);
	for (struct pqueue *q = c->queues; q; q = q->next)
		q->put_back = &q->head;
	while (batch) {
		struct chunk *ch = batch;
		struct pqueue *q = ch->queue;

		batch = ch->next;
		ch->next = *q->put_back;
		*q->put_back = ch;
		q->put_back = &ch->next;
		if (!ch->next)
			q->tail = &ch->next;
		q->len += ch->count;
		q->bytes += ch->data.len;
		c->bytes += ch->data.len;
		c->depth += ch->count;
	}
	pthread_mutex_unlock(&c->qlock);
}

/* Store the chunks as one transaction, one block each. False when the
 * storage failed (503) and the batch went back to its queues, unless this
 * is the `last` try (at stop), when it is counted as lost. */
static bool write_batch(struct collector *c, struct chunk *batch, size_t samples,
			struct store_sample_run **runs, size_t *runs_cap, bool last)
{
	struct gerr err = { 0 };
	uint64_t t0 = clock_mono_us();
	size_t n = 0;

	for (struct chunk *ch = batch; ch; ch = ch->next)
		n++;
	if (n > *runs_cap) {
		struct store_sample_run *grown = realloc(*runs, n * sizeof(**runs));

		if (!grown) {
			log_error("msg=\"samples not stored: out of memory\" count=%zu", samples);
			count_failed(c, batch);
			goto out;
		}
		*runs = grown;
		*runs_cap = n;
	}
	n = 0;
	for (struct chunk *ch = batch; ch; ch = ch->next)
		(*runs)[n++] = (struct store_sample_run){
			.probe = ch->queue->probe, .map = ch->map, .data = ch->data.data,
			.len = ch->data.len, .count = ch->count,
			.ring_map_id = ch->ring ? ch->ring_map_id : 0, .ring_end = ch->ring_end,
		};
	if (store_samples_append_runs(c->agent->store, *runs, n, &err) < 0) {
		if (err.status == 503 && !last) {
			stat_add(&c->stats.write_retries, 1);
			requeue(c, batch);
			return false;
		}
		/* the store logs its storage faults itself, rate-limited */
		if (err.status != 503)
			log_error("msg=\"samples not stored\" count=%zu error=\"%s\"", samples, err.msg);
		count_failed(c, batch);
	} else {
		stat_add(&c->stats.stored, samples);
		stat_add(&c->stats.batches, 1);
		stat_add(&c->stats.batch_commit_us, clock_mono_us() - t0);
		/* Watches follow the store: tell them there is more. */
		if (c->agent->sample_feed)
			feed_ring(c->agent->sample_feed);
	}
out:
	free_chunks(c, batch);
	return true;
}

static void deadline_after_ms(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_nsec += (long)ms * 1000000L;
	ts->tv_sec += ts->tv_nsec / 1000000000L;
	ts->tv_nsec %= 1000000000L;
}

/* The writer: waits for a first sample, gives the batch BATCH_WAIT_MS to
 * fill (or less when it is full), commits, and at stop drains everything.
 * A batch the storage refuses waits in its queues and is tried again
 * after RETRY_MIN_MS, doubling up to RETRY_MAX_MS, until it goes in. */
static void *writer_main(void *arg)
{
	struct collector *c = arg;
	struct store_sample_run *runs = NULL;
	struct timespec deadline;
	struct chunk *batch;
	size_t runs_cap = 0, samples;
	unsigned retry_ms = 0;
	bool last;

	pthread_mutex_lock(&c->qlock);
	for (;;) {
		reap_queues(c);
		while (!c->depth && !c->writer_stop)
			pthread_cond_wait(&c->qcond, &c->qlock);
		if (!c->depth && c->writer_stop)
			break;
		deadline_after_ms(&deadline, retry_ms ? retry_ms : BATCH_WAIT_MS);
		while ((retry_ms || (c->depth < BATCH_MAX && !c->hurry)) && !c->writer_stop &&
		       pthread_cond_timedwait(&c->qcond, &c->qlock, &deadline) != ETIMEDOUT)
			;
		c->hurry = false;
		last = c->writer_stop;
		batch = take_batch(c, &samples);
		pthread_mutex_unlock(&c->qlock);
		if (batch && !write_batch(c, batch, samples, &runs, &runs_cap, last))
			retry_ms = retry_ms ? (retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : retry_ms * 2) :
				   RETRY_MIN_MS;
		else
			retry_ms = 0;
		pthread_mutex_lock(&c->qlock);
	}
	pthread_mutex_unlock(&c->qlock);
	free(runs);
	return NULL;
}

/* ---------------------------------------------------------------- samples */

static void refresh_now(struct collector *c)
{
	int64_t ms = clock_unix_ms();

	if (ms == c->now_ms)
		return;
	c->now_ms = ms;
	clock_format(ms, c->now_text);
}

/* A ring or perf buffer: records pushed by the kernel, not a timer. */
static bool reads_records(const struct source *src)
{
	return src->kind == SOURCE_RING || src->kind == SOURCE_PERF;
}

/* The open chunk of the source's map, a new one when there is none. */
static struct pbwire *chunk_of(struct source *src)
{
	if (src->open)
		return &src->open->data;
	/* Events fill chunks: room for a full one at once, as growing it
	 * would copy it. Metrics come a few at a time. */
	src->open = chunk_new(src->probe->c, reads_records(src) ? CHUNK_ROOM : 1024);
	if (!src->open)
		return NULL;
	snprintf(src->open->map, sizeof(src->open->map), "%s", src->map->shown);
	return &src->open->data;
}

/* Whether a quarter of the source's ring is read but not yet released:
 * its records wait for a commit, and the kernel drops what finds no room. */
static bool ring_filling(const struct source *src)
{
	return src->ring && ringread_unreleased(src->ring) >= ringread_size(src->ring) / 4;
}

/* Hand the source's open chunk over. A ring's records up to now go with
 * it, to be released once it is stored; records that made no sample are
 * released as soon as what came before them is. A ring filling up asks
 * the writer not to wait for a fuller batch. */
static void source_flush(struct source *src)
{
	struct collector *c = src->probe->c;
	struct chunk *ch = src->open;

	src->span_start = src->ring_pos;
	if (ch && ch->count && src->ring && !src->map->release_on_read &&
	    ringread_hold(src->ring, src->ring_pos) == 0) {
		ch->ring = ringread_ref(src->ring);
		ch->ring_end = src->ring_pos;
		ch->ring_map_id = src->map_id;
	} else if (src->ring) {
		ringread_idle(src->ring, src->ring_pos);
	}
	if (!ch)
		return;
	src->open = NULL;
	if (!ch->count)
		chunk_free(c, ch);
	else if (queue_push(c, src->probe->queue, ch))
		src->paused = true;
	if (ring_filling(src) && !src->map->release_on_read) {
		pthread_mutex_lock(&c->qlock);
		c->hurry = true;
		pthread_cond_signal(&c->qcond);
		pthread_mutex_unlock(&c->qlock);
	}
}

/* A sample was packed into the open chunk (or failed to). A chunk that
 * ran out of memory is lost with what it held. */
static void sample_added(struct source *src)
{
	struct collector *c = src->probe->c;
	struct chunk *ch = src->open;

	if (ch->data.failed) {
		stat_add(&c->stats.decode_errors, 1);
		stat_add(&c->stats.collected, ch->count);
		queue_count_lost(c, src->probe->queue, ch->count);
		chunk_free(c, ch);
		src->open = NULL;
		return;
	}
	ch->count++;
	if (ch->data.len >= CHUNK_BYTES)
		source_flush(src);
}

/* Queue a sample made as a message (metrics, aggregates); frees it. */
static void push_sample(struct source *src, Graind__Sample *s)
{
	struct pbwire *w = chunk_of(src);

	if (!w) {
		stat_add(&src->probe->c->stats.decode_errors, 1);
	} else {
		store_sample_run_add(w, s);
		sample_added(src);
	}
	pbmsg_free(&s->base);
}

static Graind__Sample *sample_new(struct source *src, Graind__SampleKind kind,
				  const char *name)
{
	struct collector *c = src->probe->c;
	Graind__Sample *s = (Graind__Sample *)pbmsg_new(&graind__sample__descriptor);

	if (!s)
		return NULL;
	s->kind = kind;
	if (pbmsg_set_string(&s->probe, src->probe->view->probe) < 0 ||
	    pbmsg_set_string(&s->map, src->map->shown) < 0 ||
	    pbmsg_set_string(&s->time, c->now_text) < 0 ||
	    pbmsg_set_string(&s->name, name) < 0) {
		pbmsg_free(&s->base);
		return NULL;
	}
	return s;
}

/* Say in the probe's status (and the log) why records of src are hex,
 * once per text. */
static void source_warn(struct source *src, const char *why)
{
	struct cprobe *cp = src->probe;
	struct probe_mgr *mgr = cp->c->agent->probes;
	char *copy;

	for (size_t i = 0; i < cp->n_warnings; i++)
		if (strcmp(cp->warnings[i], why) == 0)
			return;
	log_warn("msg=\"records shown as hex\" probe=%s map=%s why=\"%s\"", cp->view->probe,
		 src->map->shown, why);
	if (cp->n_warnings == WARNINGS_MAX || !(copy = strdup(why)))
		return;
	cp->warnings[cp->n_warnings++] = copy;
	if (mgr && probe_set_warnings(mgr, cp->view->probe, (const char *const *)cp->warnings,
				      cp->n_warnings) < 0)
		log_warn("msg=\"probe warning not kept: out of memory\" probe=%s", cp->view->probe);
}

/* The decoder of a record of `len` bytes: the map's, unless its type does
 * not fit the record; then the one collect_record_pick() gives for that
 * size (the map's raw one when none), decided at its first record. */
static const struct decoder *record_decoder(struct source *src, size_t len)
{
	const struct collect_map *m = src->map;
	char why[WARNING_MAX];
	struct size_pick *p;

	if (m->typed && len >= m->record_size)
		return m->value_dec;
	for (size_t i = 0; i < src->n_picks; i++)
		if (src->picks[i].len == len)
			return src->picks[i].dec ? src->picks[i].dec : m->value_dec;
	if (src->n_picks == SIZE_PICKS_MAX)
		return m->value_dec;
	p = &src->picks[src->n_picks];
	if (collect_record_pick(src->probe->view, m, len, &p->dec, why, sizeof(why)) < 0)
		return m->value_dec;    /* out of memory: the next record tries again */
	p->len = len;
	src->n_picks++;
	if (why[0])
		source_warn(src, why);
	return p->dec ? p->dec : m->value_dec;
}

static void aggregate_event(struct source *src, const struct decoder *dec, const void *data,
			    size_t size)
{
	if (collect_agg_add(src->agg, dec, data, size) < 0)
		stat_add(&src->probe->c->stats.decode_errors, 1);
}

/* The fields every event sample of the source shares, as of now:
 * graind.Sample's probe, map, time, kind, name and value (1, one event),
 * and the names of the fields of records that `dec` decodes. An event
 * sample holds only the values of its fields (store_sample_run_share). */
static const struct pbwire *event_head(struct source *src, const struct decoder *dec)
{
	struct collector *c = src->probe->c;
	struct pbwire *w = &src->event_head;

	if (w->len && src->event_head_ms == c->now_ms && src->event_head_dec == dec)
		return w;
	w->len = 0;
	pbwire_string(w, SAMPLE_FIELD_PROBE, src->probe->view->probe);
	pbwire_string(w, SAMPLE_FIELD_MAP, src->map->shown);
	pbwire_string(w, SAMPLE_FIELD_TIME, c->now_text);
	pbwire_uint(w, SAMPLE_FIELD_KIND, GRAIND__SAMPLE_KIND__EVENT);
	pbwire_string(w, SAMPLE_FIELD_NAME, src->map->shown);
	pbwire_double(w, SAMPLE_FIELD_VALUE, 1);
	decode_pack_names(dec, "", SAMPLE_FIELD_FIELDS, w);
	src->event_head_ms = c->now_ms;
	src->event_head_dec = dec;
	src->event_heads++;
	return w;
}

/* One record, packed straight into the open chunk as its sample: the
 * head goes in once per chunk and millisecond, as fields the samples
 * after it share, and the values of the record's fields go in each
 * sample. */
static void emit_event(struct source *src, const void *data, size_t size)
{
	const struct decoder *dec = record_decoder(src, size);
	const struct pbwire *head;
	struct pbwire *w;
	size_t opened;

	src->probe->c->records++;
	/* Only this thread writes it; budgets read it without the lock. */
	__atomic_store_n(&src->probe->queue->records, src->probe->queue->records + 1,
			 __ATOMIC_RELAXED);
	if (src->agg) {
		aggregate_event(src, dec, data, size);
		return;
	}
	head = event_head(src, dec);
	w = chunk_of(src);
	if (!w || head->failed) {
		stat_add(&src->probe->c->stats.decode_errors, 1);
		return;
	}
	if (!src->open->shares || src->open->shared_head != src->event_heads) {
		store_sample_run_share(w, head->data, head->len);
		src->open->shares = true;
		src->open->shared_head = src->event_heads;
	}
	opened = pbwire_begin_frame(w);
	decode_pack_values(dec, data, size, "", SAMPLE_FIELD_FIELDS, w);
	pbwire_close_frame(w, opened);
	sample_added(src);
}

/* Stops the ring's reading once the source pauses: what is left waits in
 * the kernel's buffer. The record's span ends where the ring's read
 * position now is, so a chunk handed over while it is packed holds it.
 * A chunk holds at most an eighth of its ring, so that a small ring is
 * released in several commits, not all at once after one. Handing
 * chunks over record by record when the ring fills up would make a block
 * per record, and each commit slower than the one before. */
static int on_ring_record(void *ctx, void *data, size_t size)
{
	struct source *src = ctx;

	src->ring_pos = ringread_position(src->ring);
	emit_event(src, data, size);
	if (src->map->release_on_read) {
		if (!(src->probe->c->records & 31))
			ringread_idle(src->ring, src->ring_pos);
	} else if (src->open && src->ring_pos - src->span_start >= ringread_size(src->ring) / 8) {
		source_flush(src);
	}
	return src->paused ? 1 : 0;
}

static void on_perf_record(void *ctx, int cpu, void *data, __u32 size)
{
	(void)cpu;
	emit_event(ctx, data, size);
}

static void on_perf_lost(void *ctx, int cpu, __u64 count)
{
	struct source *src = ctx;
	struct collector *c = src->probe->c;

	(void)cpu;
	stat_add(&c->stats.events_lost, count);
	pthread_mutex_lock(&c->qlock);
	src->probe->queue->lost += count;
	pthread_mutex_unlock(&c->qlock);
}

/* ---------------------------------------------------------------- metrics */

static int add_tags(Graind__Sample *s, Graind__Field **key, size_t n_key)
{
	char text[TAG_TEXT_MAX];

	s->tags = calloc(n_key ? n_key : 1, sizeof(*s->tags));
	if (!s->tags)
		return -1;
	for (size_t i = 0; i < n_key; i++) {
		Graind__Tag *tag = (Graind__Tag *)pbmsg_new(&graind__tag__descriptor);

		if (!tag)
			return -1;
		s->tags[s->n_tags++] = tag;
		decode_field_text(key[i], text, sizeof(text));
		if (pbmsg_set_string(&tag->key, collect_field_name(key[i], "key")) < 0 ||
		    pbmsg_set_string(&tag->value, text) < 0)
			return -1;
	}
	return 0;
}

static void emit_metric(struct source *src, const void *key, Graind__Field **key_fields,
			size_t n_key, const Graind__Field *f, size_t field_index)
{
	const struct collect_map *m = src->map;
	struct collector *c = src->probe->c;
	const char *field = collect_field_name(f, "");
	Graind__Sample *s;
	char name[192];
	double value;

	if (!collect_field_selected(m, *field ? field : m->shown) ||
	    !decode_field_number(f, &value))
		return;
	if (src->delta && (!collect_delta_next(src->delta, key, (uint32_t)field_index, value,
						    &value) || value == 0))
		return;
	if (*field)
		snprintf(name, sizeof(name), "%s.%s", m->shown, field);
	else
		snprintf(name, sizeof(name), "%s", m->shown);
	s = sample_new(src, GRAIND__SAMPLE_KIND__METRIC, name);
	if (!s || add_tags(s, key_fields, n_key) < 0) {
		stat_add(&c->stats.decode_errors, 1);
		pbmsg_free(s ? &s->base : NULL);
		return;
	}
	s->value = value;
	s->metric_kind = m->gauge ? GRAIND__METRIC_KIND__GAUGE : GRAIND__METRIC_KIND__COUNTER;
	s->delta = m->delta;
	push_sample(src, s);
}

static void emit_aggregate(void *ctx, const char *name, const char *const *tag_names,
			   const char *const *tag_values, size_t n_tags, double value)
{
	struct source *src = ctx;
	struct collector *c = src->probe->c;
	Graind__Sample *s = sample_new(src, GRAIND__SAMPLE_KIND__METRIC, name);
	bool ok = s && (s->tags = calloc(n_tags ? n_tags : 1, sizeof(*s->tags)));

	for (size_t i = 0; ok && i < n_tags; i++) {
		Graind__Tag *tag = (Graind__Tag *)pbmsg_new(&graind__tag__descriptor);

		ok = tag != NULL;
		if (ok) {
			s->tags[s->n_tags++] = tag;
			ok = pbmsg_set_string(&tag->key, tag_names[i]) == 0 &&
			     pbmsg_set_string(&tag->value, tag_values[i]) == 0;
		}
	}
	if (!ok) {
		stat_add(&c->stats.decode_errors, 1);
		pbmsg_free(s ? &s->base : NULL);
		return;
	}
	s->value = value;
	s->metric_kind = GRAIND__METRIC_KIND__COUNTER;
	push_sample(src, s);
}

static void flush_aggregate(struct source *src)
{
	uint64_t expirations;

	if (read(src->timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		return;
	collect_agg_flush(src->peer->agg, emit_aggregate, src);
}

static int emit_entry(const void *key, const void *value, void *ctx)
{
	struct source *src = ctx;
	Graind__Field **key_fields = NULL, **fields = NULL;
	size_t n_key = 0, n = 0;

	if (decode_fields(src->map->key_dec, key, src->map->key_size, "", &key_fields,
			  &n_key) < 0 ||
	    collect_decode_value(src->map, value, &fields, &n) < 0) {
		stat_add(&src->probe->c->stats.decode_errors, 1);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		emit_metric(src, key, key_fields, n_key, fields[i], i);
out:
	collect_fields_free(key_fields, n_key);
	collect_fields_free(fields, n);
	return 0;
}

static void poll_map(struct source *src)
{
	uint64_t expirations;
	size_t total;
	bool cut;
	int ret;

	if (read(src->timer_fd, &expirations, sizeof(expirations)) < 0)
		return;
	ret = collect_walk(src->map_fd, src->map, COLLECT_MAX_SERIES, emit_entry, src,
			   &total, &cut);
	if (ret < 0)
		log_warn("msg=\"cannot read map\" probe=%s map=%s error=\"%s\"",
			 src->probe->view->probe, src->map->shown, strerror(-ret));
	if (src->delta)
		collect_delta_walk_done(src->delta);
}

/* ---------------------------------------------------------------- sources */

/* The fd the epoll set watches for the source. */
static int source_fd(const struct source *src)
{
	if (src->ring)
		return src->map_fd;
	if (src->pb)
		return perf_buffer__epoll_fd(src->pb);
	return src->timer_fd;
}

static void source_close(struct collector *c, struct source *src)
{
	int fd = source_fd(src);

	if (fd >= 0)
		epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);
	if (src->waiting)
		c->paused--;
	perf_buffer__free(src->pb);
	if (src->timer_fd >= 0)
		close(src->timer_fd);
	if (src->map_fd >= 0)
		close(src->map_fd);
	source_flush(src);
	if (src->ring) {                /* its chunks keep it until stored */
		struct kept_ring *k = malloc(sizeof(*k));

		if (k) {
			*k = (struct kept_ring){ src->map_id, src->ring, c->kept };
			c->kept = k;
		} else {
			ringread_unref(src->ring);
		}
	}
	pbwire_free(&src->event_head);
	for (size_t i = 0; i < src->n_picks; i++)
		decode_free(src->picks[i].dec);
	collect_delta_free(src->delta);
	collect_agg_free(src->agg);
	free(src);
}

static int watch(struct collector *c, int fd, struct source *src)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = src };

	return epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static int start_timer(struct source *src)
{
	struct itimerspec its = { 0 };
	uint32_t ms = src->map->poll_ms;

	src->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (src->timer_fd < 0)
		return -errno;
	its.it_interval.tv_sec = ms / 1000;
	its.it_interval.tv_nsec = (long)(ms % 1000) * 1000000L;
	its.it_value = its.it_interval;
	return timerfd_settime(src->timer_fd, 0, &its, NULL) < 0 ? -errno : 0;
}

/* Read the ring from where the store says its samples end, when that is
 * past the kernel's consumer position: an agent killed between a commit
 * and the release that follows it. */
static int ring_open(struct source *src)
{
	struct bpf_map_info info = { 0 };
	uint32_t len = sizeof(info);
	struct gerr err = { 0 };
	uint64_t stored;
	int ret;

	if (bpf_obj_get_info_by_fd(src->map_fd, &info, &len) < 0)
		return -errno;
	src->map_id = info.id;
	for (struct kept_ring **k = &src->probe->c->kept; *k; k = &(*k)->next)
		if ((*k)->map_id == info.id) {          /* the same ring, read on */
			struct kept_ring *found = *k;

			*k = found->next;
			src->ring = found->ring;
			free(found);
			src->ring_pos = src->span_start = ringread_position(src->ring);
			return 0;
		}
	ret = ringread_open(src->map_fd, &src->ring);
	if (ret < 0)
		return ret;
	src->ring_pos = ringread_position(src->ring);
	if (store_ring_cursor(src->probe->c->agent->store, src->probe->view->probe,
			      src->map->shown, src->map_id, &stored, &err) < 0)
		log_warn("msg=\"cannot read where the ring's samples end\" probe=%s map=%s error=\"%s\"",
			 src->probe->view->probe, src->map->shown, err.msg);
	else if (ringread_resume(src->ring, stored)) {
		log_info("msg=\"ring read on after its stored samples\" probe=%s map=%s position=%llu",
			 src->probe->view->probe, src->map->shown, (unsigned long long)stored);
		src->ring_pos = stored;
	}
	src->span_start = src->ring_pos;
	return 0;
}

static int source_start(struct collector *c, struct source *src)
{
	int ret;

	switch (src->kind) {
	case SOURCE_RING:
		ret = ring_open(src);
		return ret < 0 ? ret : watch(c, src->map_fd, src);
	case SOURCE_PERF:
		src->pb = perf_buffer__new(src->map_fd, PERF_PAGES, on_perf_record, on_perf_lost,
					   src, NULL);
		if (!src->pb)
			return -errno;
		return watch(c, perf_buffer__epoll_fd(src->pb), src);
	case SOURCE_TIMER:
	case SOURCE_FLUSH:
		ret = start_timer(src);
		return ret < 0 ? ret : watch(c, src->timer_fd, src);
	default:
		return -EINVAL;
	}
}

static struct source *source_new(struct cprobe *cp, const struct collect_map *m,
				 enum source_kind kind)
{
	struct source *src = calloc(1, sizeof(*src));

	if (!src)
		return NULL;
	src->kind = kind;
	src->probe = cp;
	src->map = m;
	src->map_fd = -1;
	src->timer_fd = -1;
	return src;
}

static void add_source(struct cprobe *cp, struct source *src)
{
	src->next = cp->sources;
	cp->sources = src;
}

/* The flush timer of an aggregated event source. */
static int open_flush(struct collector *c, struct cprobe *cp, struct source *events)
{
	struct source *src = source_new(cp, events->map, SOURCE_FLUSH);
	int ret;

	if (!src)
		return -ENOMEM;
	src->peer = events;
	ret = source_start(c, src);
	if (ret < 0) {
		source_close(c, src);
		return ret;
	}
	add_source(cp, src);
	return 0;
}

static void open_source(struct collector *c, struct cprobe *cp, const struct collect_map *m)
{
	struct source *src;
	int ret = -ENOMEM;

	if (m->out == COLLECT_OUT_METRIC)
		src = source_new(cp, m, SOURCE_TIMER);
	else
		src = source_new(cp, m, m->type == BPF_MAP_TYPE_RINGBUF ? SOURCE_RING : SOURCE_PERF);
	if (!src)
		goto fail;
	if (collect_agg_wanted(m) && !(src->agg = collect_agg_new(m)))
		goto fail;
	/* About one series per entry and value field. */
	if (m->out == COLLECT_OUT_METRIC && m->delta &&
	    !(src->delta = collect_delta_new(m->key_size, (size_t)m->max_entries * 8 < DELTA_MAX ?
					     (size_t)m->max_entries * 8 : DELTA_MAX, NULL)))
		goto fail;
	src->map_fd = collect_map_open(cp->view->probe, m);
	ret = src->map_fd;
	if (ret >= 0)
		ret = source_start(c, src);
	if (ret < 0)
		goto fail;
	add_source(cp, src);
	if (src->agg && (ret = open_flush(c, cp, src)) < 0)
		log_warn("msg=\"aggregated events not flushed\" probe=%s map=%s error=\"%s\"",
			 cp->view->probe, m->shown, strerror(-ret));
	return;
fail:
	log_warn("msg=\"map not collected\" probe=%s map=%s error=\"%s\"", cp->view->probe,
		 m->shown, strerror(-ret));
	if (src)
		source_close(c, src);
}

/* The rings no source took up again. */
static void drop_kept(struct collector *c)
{
	while (c->kept) {
		struct kept_ring *k = c->kept;

		c->kept = k->next;
		ringread_unref(k->ring);
		free(k);
	}
}

static void close_probe(struct collector *c, struct cprobe *cp)
{
	while (cp->sources) {
		struct source *src = cp->sources;

		cp->sources = src->next;
		source_close(c, src);
	}
	for (size_t i = 0; i < cp->n_warnings; i++)
		free(cp->warnings[i]);
	collect_view_put(cp->view);
	free(cp);
}

static void unlink_probe(struct collector *c, const char *name)
{
	struct cprobe *gone = NULL;

	pthread_mutex_lock(&c->probes_lock);
	for (struct cprobe **pp = &c->probes; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->view->probe, name) == 0) {
			gone = *pp;
			*pp = gone->next;
			break;
		}
	pthread_mutex_unlock(&c->probes_lock);
	if (gone)
		close_probe(c, gone);
}

/* Follow probe `name` as the store has it now: close what it had, open
 * what its current spec says, or nothing when it is not attached. */
static void reopen_probe(struct collector *c, const char *name)
{
	struct collect_view *view = NULL;
	struct gerr err = { 0 };
	struct cprobe *cp;

	unlink_probe(c, name);
	/* What was said of its records is found again from its new ones. */
	if (c->agent->probes)
		probe_set_warnings(c->agent->probes, name, NULL, 0);
	if (collect_view_build(c->agent->store, name, &view, &err) < 0) {
		if (err.status == 404)
			queue_retire(c, name);
		else
			log_warn("msg=\"probe not collected\" probe=%s error=\"%s\"", name,
				 err.msg);
		return;
	}
	if (!view->attached) {
		collect_view_put(view);
		return;
	}
	cp = calloc(1, sizeof(*cp));
	if (!cp || !(cp->queue = queue_for(c, view->probe))) {
		log_error("msg=\"probe not collected: out of memory\" probe=%s", name);
		free(cp);
		collect_view_put(view);
		return;
	}
	cp->c = c;
	cp->view = view;
	for (size_t i = 0; i < view->n_maps; i++)
		if (view->maps[i].out != COLLECT_OUT_NONE)
			open_source(c, cp, &view->maps[i]);
	pthread_mutex_lock(&c->probes_lock);
	cp->next = c->probes;
	c->probes = cp;
	pthread_mutex_unlock(&c->probes_lock);
}

/* reopen_probe(), its rings read on by the sources it opens again. */
static void reload_probe(struct collector *c, const char *name)
{
	reopen_probe(c, name);
	drop_kept(c);
}

/* ---------------------------------------------------------------- thread */

/* Take the pending changes and the number of the last one; true when the
 * collector is to stop. */
static bool take_changes(struct collector *c, struct change **changes, uint64_t *upto)
{
	uint64_t n;
	bool stop;

	if (read(c->ctl_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("msg=\"collector control read failed\" error=\"%s\"", strerror(errno));
	pthread_mutex_lock(&c->ctl_lock);
	*changes = c->changes;
	c->changes = NULL;
	*upto = c->requested;
	stop = c->stopping;
	pthread_mutex_unlock(&c->ctl_lock);
	return stop;
}

static bool handle_control(struct collector *c)
{
	struct change *changes;
	uint64_t upto;
	bool stop = take_changes(c, &changes, &upto);

	while (changes) {
		struct change *next = changes->next;

		if (!stop)
			reload_probe(c, changes->probe);
		free(changes);
		changes = next;
	}
	pthread_mutex_lock(&c->ctl_lock);
	c->applied = upto;
	pthread_cond_broadcast(&c->ctl_applied);
	pthread_mutex_unlock(&c->ctl_lock);
	return stop;
}

static void source_wait(struct source *src);

static void handle(struct source *src)
{
	struct collector *c = src->probe->c;
	uint64_t before = c->records;

	refresh_now(c);
	switch (src->kind) {
	case SOURCE_RING:
		ringread_consume(src->ring, on_ring_record, src);
		break;
	case SOURCE_PERF:
		perf_buffer__consume(src->pb);
		break;
	case SOURCE_TIMER:
		poll_map(src);
		break;
	case SOURCE_FLUSH:
		flush_aggregate(src);
		break;
	default:
		break;
	}
	if (reads_records(src))
		c->trickle |= c->records - before < COALESCE_BELOW;
	source_flush(src);
	if (src->paused && !src->waiting)
		source_wait(src);
}

/* A paused source leaves the epoll set (its buffer stays readable, which
 * would wake the loop at once) until its queue drains; timers only pause
 * for their next tick. */
static void source_wait(struct source *src)
{
	struct collector *c = src->probe->c;
	struct epoll_event ev = { .events = 0, .data.ptr = src };

	if (!reads_records(src)) {
		src->paused = false;
		return;
	}
	epoll_ctl(c->epfd, EPOLL_CTL_MOD, source_fd(src), &ev);
	src->waiting = true;
	c->paused++;
}

/* Read again the paused sources whose queue has drained. */
static void resume_sources(struct collector *c)
{
	for (struct cprobe *cp = c->probes; cp; cp = cp->next)
		for (struct source *src = cp->sources; src; src = src->next) {
			struct epoll_event ev = { .events = EPOLLIN, .data.ptr = src };

			if (!src->waiting || !queue_low(c, cp->queue))
				continue;
			epoll_ctl(c->epfd, EPOLL_CTL_MOD, source_fd(src), &ev);
			src->paused = src->waiting = false;
			c->paused--;
			handle(src);
		}
}

static void *collector_main(void *arg)
{
	struct collector *c = arg;
	struct epoll_event events[64];
	bool stop = false;

	while (!stop) {
		bool control = false;
		int n = epoll_wait(c->epfd, events, 64, c->paused ? PAUSE_RETRY_MS : -1);

		if (n < 0 && errno != EINTR) {
			log_error("msg=\"collector stopped\" error=\"%s\"", strerror(errno));
			break;
		}
		/* Changes last: they may free sources of this round. */
		for (int i = 0; i < n; i++) {
			struct source *src = events[i].data.ptr;

			if (src->kind == SOURCE_CONTROL)
				control = true;
			else
				handle(src);
		}
		if (control)
			stop = handle_control(c);
		else if (c->paused)
			resume_sources(c);
		if (c->trickle && !stop) {
			struct timespec ts = { 0, COALESCE_US * 1000L };

			c->trickle = false;
			nanosleep(&ts, NULL);
		}
	}
	/* Drain what the buffers still hold, flush the aggregates, then let
	 * go of every probe. */
	refresh_now(c);
	for (struct cprobe *cp = c->probes; cp; cp = cp->next)
		for (struct source *src = cp->sources; src; src = src->next)
			if (reads_records(src))
				handle(src);
	for (struct cprobe *cp = c->probes; cp; cp = cp->next)
		for (struct source *src = cp->sources; src; src = src->next)
			if (src->kind == SOURCE_FLUSH)
				handle(src);
	pthread_mutex_lock(&c->probes_lock);
	while (c->probes) {
		struct cprobe *cp = c->probes;

		c->probes = cp->next;
		close_probe(c, cp);
	}
	pthread_mutex_unlock(&c->probes_lock);
	drop_kept(c);
	return NULL;
}

/* ---------------------------------------------------------------- start/stop */

struct names {
	char (*name)[64];
	size_t n;
	char last[64];          /* the last probe listed, attached or not */
};

static int add_attached(const struct store_probe *row, void *ctx)
{
	struct names *names = ctx;
	char (*grown)[64];

	snprintf(names->last, sizeof(names->last), "%s", row->name);
	if (!row->attached)
		return 0;
	grown = realloc(names->name, (names->n + 1) * sizeof(*grown));
	if (!grown)
		return -1;
	names->name = grown;
	snprintf(grown[names->n++], sizeof(*grown), "%s", row->name);
	return 0;
}

/* Every attached probe, before the thread runs: what the buffers hold from
 * before the start is collected, not lost. */
/* The names of every attached probe, page by page. */
static int attached_probes(struct store *st, struct names *names, struct gerr *err)
{
	char after[64] = "";
	bool more = true;

	while (more) {
		if (store_probe_list(st, after, 1000, add_attached, names, &more, err) != 0)
			return -1;
		snprintf(after, sizeof(after), "%s", names->last);
	}
	return 0;
}

static void load_all(struct collector *c)
{
	struct names names = { 0 };
	struct gerr err = { 0 };

	if (attached_probes(c->agent->store, &names, &err) < 0)
		log_error("msg=\"cannot list probes to collect\" error=\"%s\"", err.msg);
	for (size_t i = 0; i < names.n; i++)
		reload_probe(c, names.name[i]);
	free(names.name);
}

int collect_start(struct agent *agent, struct collector **out, struct gerr *err)
{
	struct collector *c = calloc(1, sizeof(*c));
	pthread_condattr_t attr;

	*out = NULL;
	if (!c)
		return gerr_set(err, 500, "out of memory");
	c->agent = agent;
	c->control.kind = SOURCE_CONTROL;
	c->max_bytes = agent->cfg.queue_bytes ? (size_t)agent->cfg.queue_bytes :
		       (size_t)CONFIG_DEFAULT_QUEUE_BYTES;
	pthread_mutex_init(&c->ctl_lock, NULL);
	pthread_mutex_init(&c->probes_lock, NULL);
	pthread_mutex_init(&c->qlock, NULL);
	/* Every timed wait counts on the monotonic clock (deadline_after_ms):
	 * a jump of the wall clock neither stretches nor cuts it. */
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&c->qcond, &attr);
	pthread_cond_init(&c->ctl_applied, &attr);
	pthread_condattr_destroy(&attr);
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	c->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->epfd < 0 || c->ctl_fd < 0 || watch(c, c->ctl_fd, &c->control) < 0) {
		gerr_set(err, 500, "collector: %s", strerror(errno));
		goto fail;
	}
	if (pthread_create(&c->writer, NULL, writer_main, c) != 0) {
		gerr_set(err, 500, "collector: cannot start the writer thread");
		goto fail;
	}
	c->writer_started = true;
	pthread_setname_np(c->writer, "graind-writer");   /* as top and perf show it */
	load_all(c);
	if (pthread_create(&c->thread, NULL, collector_main, c) != 0) {
		gerr_set(err, 500, "collector: cannot start its thread");
		goto fail;
	}
	c->thread_started = true;
	pthread_setname_np(c->thread, "graind-collect");
	*out = c;
	return 0;
fail:
	collect_stop(c);
	return -1;
}

void collect_stop(struct collector *c)
{
	uint64_t one = 1;

	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->ctl_lock);
		c->stopping = true;
		pthread_cond_broadcast(&c->ctl_applied);
		pthread_mutex_unlock(&c->ctl_lock);
		if (write(c->ctl_fd, &one, sizeof(one)) < 0)
			log_error("msg=\"cannot stop the collector\" error=\"%s\"", strerror(errno));
		pthread_join(c->thread, NULL);
	} else {
		while (c->probes) {
			struct cprobe *cp = c->probes;

			c->probes = cp->next;
			close_probe(c, cp);
		}
		drop_kept(c);
	}
	if (c->writer_started) {
		pthread_mutex_lock(&c->qlock);
		c->writer_stop = true;
		pthread_cond_signal(&c->qcond);
		pthread_mutex_unlock(&c->qlock);
		pthread_join(c->writer, NULL);
	}
	while (c->changes) {
		struct change *next = c->changes->next;

		free(c->changes);
		c->changes = next;
	}
	while (c->queues) {
		struct pqueue *q = c->queues;

		c->queues = q->next;
		free_chunks(c, q->head);
		free(q);
	}
	while (c->spare) {
		struct chunk *next = c->spare->next;

		chunk_destroy(c->spare);
		c->spare = next;
	}
	if (c->epfd >= 0)
		close(c->epfd);
	if (c->ctl_fd >= 0)
		close(c->ctl_fd);
	pthread_cond_destroy(&c->qcond);
	pthread_mutex_destroy(&c->qlock);
	pthread_mutex_destroy(&c->probes_lock);
	pthread_mutex_destroy(&c->ctl_lock);
	pthread_cond_destroy(&c->ctl_applied);
	free(c);
}

void collect_probe_changed(struct collector *c, const char *probe)
{
	struct timespec deadline;
	struct change *ch;
	uint64_t one = 1, ticket;
	bool pending = false;

	if (!c)
		return;
	deadline_after_ms(&deadline, COLLECT_CHANGE_WAIT_MS);
	pthread_mutex_lock(&c->ctl_lock);
	ticket = ++c->requested;
	for (ch = c->changes; ch; ch = ch->next)
		if (strcmp(ch->probe, probe) == 0)
			pending = true;
	if (!pending) {
		ch = calloc(1, sizeof(*ch));
		if (ch) {
			snprintf(ch->probe, sizeof(ch->probe), "%s", probe);
			ch->next = c->changes;
			c->changes = ch;
		} else {
			log_error("msg=\"probe change not seen by the collector: out of memory\" probe=%s",
				  probe);
		}
	}
	if (write(c->ctl_fd, &one, sizeof(one)) < 0)
		log_error("msg=\"cannot wake the collector\" error=\"%s\"", strerror(errno));
	/* Wait until the collector reads the probe's buffers (a perf buffer
	 * without a reader loses what the probe writes, uncounted), but never
	 * past the deadline: the caller holds the probe lock. */
	while (c->applied < ticket && !c->stopping &&
	       pthread_cond_timedwait(&c->ctl_applied, &c->ctl_lock, &deadline) == 0)
		;
	pthread_mutex_unlock(&c->ctl_lock);
}

void collect_get_stats(struct collector *c, struct collect_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!c)
		return;
	out->collected = __atomic_load_n(&c->stats.collected, __ATOMIC_RELAXED);
	out->stored = __atomic_load_n(&c->stats.stored, __ATOMIC_RELAXED);
	out->queue_dropped = __atomic_load_n(&c->stats.queue_dropped, __ATOMIC_RELAXED);
	out->events_lost = __atomic_load_n(&c->stats.events_lost, __ATOMIC_RELAXED);
	out->batches = __atomic_load_n(&c->stats.batches, __ATOMIC_RELAXED);
	out->batch_commit_us = __atomic_load_n(&c->stats.batch_commit_us, __ATOMIC_RELAXED);
	out->decode_errors = __atomic_load_n(&c->stats.decode_errors, __ATOMIC_RELAXED);
	out->write_retries = __atomic_load_n(&c->stats.write_retries, __ATOMIC_RELAXED);
	pthread_mutex_lock(&c->qlock);
	out->queue_overflow = __atomic_load_n(&c->stats.queue_overflow, __ATOMIC_RELAXED);
	out->queue_depth = c->depth;
	out->queue_bytes = c->bytes;
	out->queue_max_bytes = c->max_bytes;
	pthread_mutex_unlock(&c->qlock);
}

/* ---------------------------------------------------------------- readers */

int collect_queue_stats(struct collector *c, struct collect_queue_stat **out, size_t *n)
{
	size_t count = 0;

	*out = NULL;
	*n = 0;
	if (!c)
		return 0;
	pthread_mutex_lock(&c->qlock);
	for (struct pqueue *q = c->queues; q; q = q->next)
		count++;
	*out = calloc(count ? count : 1, sizeof(**out));
	if (*out)
		for (struct pqueue *q = c->queues; q; q = q->next) {
			struct collect_queue_stat *st = &(*out)[(*n)++];

			snprintf(st->probe, sizeof(st->probe), "%s", q->probe);
			st->depth = q->len;
			st->dropped = q->dropped;
			st->overflow = q->overflow;
			st->lost = q->lost;
		}
	pthread_mutex_unlock(&c->qlock);
	return *out ? 0 : -1;
}

void collect_probe_events(struct collector *c, const char *name, uint64_t *records,
			  uint64_t *lost)
{
	*records = *lost = 0;
	if (!c)
		return;
	pthread_mutex_lock(&c->qlock);
	for (struct pqueue *q = c->queues; q; q = q->next)
		if (strcmp(q->probe, name) == 0) {
			*records = __atomic_load_n(&q->records, __ATOMIC_RELAXED);
			*lost = q->lost;
		}
	pthread_mutex_unlock(&c->qlock);
}

void collect_views_free(struct collect_view **views, size_t n)
{
	for (size_t i = 0; i < n; i++)
		collect_view_put(views[i]);
	free(views);
}

static int views_of_collector(struct collector *c, struct collect_view ***views, size_t *n)
{
	size_t count = 0;

	pthread_mutex_lock(&c->probes_lock);
	for (struct cprobe *cp = c->probes; cp; cp = cp->next)
		count++;
	*views = calloc(count ? count : 1, sizeof(**views));
	if (*views)
		for (struct cprobe *cp = c->probes; cp; cp = cp->next)
			(*views)[(*n)++] = collect_view_get(cp->view);
	pthread_mutex_unlock(&c->probes_lock);
	return *views ? 0 : -1;
}

void collect_each_attached(struct collector *c,
			   void (*fn)(const char *probe, const Graind__ProbeSpec *spec, void *ctx),
			   void *ctx)
{
	struct collect_view **views = NULL;
	size_t n = 0;

	if (!c || views_of_collector(c, &views, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		if (views[i]->attached && views[i]->spec)
			fn(views[i]->probe, views[i]->spec, ctx);
	collect_views_free(views, n);
}

static int views_of_store(struct agent *agent, struct collect_view ***views, size_t *n)
{
	struct names names = { 0 };

	attached_probes(agent->store, &names, NULL);
	*views = calloc(names.n ? names.n : 1, sizeof(**views));
	for (size_t i = 0; *views && i < names.n; i++) {
		struct collect_view *view;

		if (collect_view_build(agent->store, names.name[i], &view, NULL) == 0)
			(*views)[(*n)++] = view;
	}
	free(names.name);
	return *views ? 0 : -1;
}

int collect_views(struct agent *agent, struct collect_view ***views, size_t *n)
{
	*views = NULL;
	*n = 0;
	if (agent->collector)
		return views_of_collector(agent->collector, views, n);
	return views_of_store(agent, views, n);
}
