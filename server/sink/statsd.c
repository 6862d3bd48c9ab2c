/* statsd: samples as StatsD lines, packed into UDP datagrams.
 *
 * A line is "<head>:<value>|<type><tail>": the head is the metric name
 * with the tags of the dialects that put them there (none, influx,
 * graphite), the tail is "|#k:v" for dogstatsd. Head and tail together
 * name a series, which is what counter deltas are kept by. */
#define _GNU_SOURCE
#include "server/sink/statsd.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/util/log.h"

#define STATSD_DEFAULT_MAX_DATAGRAM 1432
#define STATSD_LINE_MAX 2048
#define SERIES_BUCKETS 4096
/* Past this many remembered counter series the memory starts over: the
 * next value of each is then taken as its first. */
#define SERIES_MAX 200000

struct series {
	struct series *next;
	double last;
	double before;                  /* last, before the current batch */
	uint64_t batch;                 /* the batch that last changed it */
	char key[];
};

/* A batch's event counts, one per map, sent as "<map>.events". */
struct event_count {
	char map[64];
	uint64_t count;
};

struct statsd {
	int fd;
	char *prefix;
	Graind__TagDialect dialect;
	size_t max_datagram;
	char *dgram;                    /* the datagram being filled */
	size_t dgram_len;
	size_t sent;                    /* bytes sent by this statsd_send */
	struct series *series[SERIES_BUCKETS];
	size_t n_series;
	uint64_t batch;                 /* numbers the statsd_send calls */
	bool recalling;                 /* statsd_recall: lines go nowhere */
	/* The previous histogram bucket of this batch, to turn cumulative
	 * bucket counts into per-bucket counts. */
	char bucket_group[STATSD_LINE_MAX * 2 + 8];
	double bucket_prev;
};

/* ---------------------------------------------------------------- series */

static uint32_t hash_key(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void series_clear(struct statsd *sd)
{
	for (size_t i = 0; i < SERIES_BUCKETS; i++) {
		while (sd->series[i]) {
			struct series *next = sd->series[i]->next;

			free(sd->series[i]);
			sd->series[i] = next;
		}
	}
	sd->n_series = 0;
}

/* The change of counter `key` since its previous value. A first value
 * only records (what came before is unknown: the counter may have run
 * long before this agent started); a smaller value means the counter was
 * reset and counts from zero. *delta_ok is false when nothing can be said. */
static double counter_delta(struct statsd *sd, const char *key, double value, bool *delta_ok)
{
	size_t b = hash_key(key) % SERIES_BUCKETS;
	struct series *s;
	double delta;

	*delta_ok = true;
	for (s = sd->series[b]; s; s = s->next) {
		if (strcmp(s->key, key) == 0) {
			if (s->batch != sd->batch) {
				s->before = s->last;
				s->batch = sd->batch;
			}
			delta = value >= s->last ? value - s->last : value;
			s->last = value;
			return delta;
		}
	}
	*delta_ok = false;
	if (sd->n_series >= SERIES_MAX)
		series_clear(sd);
	s = malloc(sizeof(*s) + strlen(key) + 1);
	if (!s)
		return 0;
	strcpy(s->key, key);
	s->last = s->before = value;
	s->batch = sd->batch;
	s->next = sd->series[b];
	sd->series[b] = s;
	sd->n_series++;
	return 0;
}

/* A batch that failed is sent again: its counters go back to where they
 * were, so the retry gives the same deltas. */
static void series_undo_batch(struct statsd *sd)
{
	for (size_t i = 0; i < SERIES_BUCKETS; i++)
		for (struct series *s = sd->series[i]; s; s = s->next)
			if (s->batch == sd->batch)
				s->last = s->before;
}

/* ---------------------------------------------------------------- text */

/* Characters a name keeps; anything else becomes '_'. In a tag, the
 * dialect's separators go too. */
static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

/* Append `s` sanitised to buf at *at. `dots` keeps '.' (hierarchy in a
 * name); a tag folded into the name or a tag value loses it. */
static void put_clean(char *buf, size_t size, size_t *at, const char *s, bool dots)
{
	for (; s && *s && *at + 1 < size; s++) {
		char c = *s;

		buf[(*at)++] = name_char(c) && (dots || c != '.') ? c : '_';
	}
	buf[*at < size ? *at : size - 1] = '\0';
}

static void put_raw(char *buf, size_t size, size_t *at, const char *s)
{
	for (; *s && *at + 1 < size; s++)
		buf[(*at)++] = *s;
	buf[*at < size ? *at : size - 1] = '\0';
}

/* A tag value keeps '.' except where the dialect folds it into the name
 * (where it would add levels to the hierarchy). */
static void put_tags(const struct statsd *sd, const Graind__Sample *s, size_t skip_le,
		     char *head, size_t head_size, size_t *head_at,
		     char *tail, size_t tail_size, size_t *tail_at)
{
	const char *sep = NULL, *kv = NULL;

	switch (sd->dialect) {
	case GRAIND__TAG_DIALECT__TAG_DIALECT_INFLUX:
		sep = ",";
		kv = "=";
		break;
	case GRAIND__TAG_DIALECT__TAG_DIALECT_GRAPHITE:
		sep = ";";
		kv = "=";
		break;
	default:
		break;
	}
	for (size_t i = 0; i < s->n_tags; i++) {
		const Graind__Tag *t = s->tags[i];

		if (i == skip_le)
			continue;
		if (sd->dialect == GRAIND__TAG_DIALECT__TAG_DIALECT_DOGSTATSD) {
			put_raw(tail, tail_size, tail_at, *tail_at ? "," : "|#");
			put_clean(tail, tail_size, tail_at, t->key, true);
			put_raw(tail, tail_size, tail_at, ":");
			put_clean(tail, tail_size, tail_at, t->value, true);
		} else if (sep) {
			put_raw(head, head_size, head_at, sep);
			put_clean(head, head_size, head_at, t->key, true);
			put_raw(head, head_size, head_at, kv);
			put_clean(head, head_size, head_at, t->value, true);
		} else {
			put_raw(head, head_size, head_at, ".");
			put_clean(head, head_size, head_at, t->value, false);
		}
	}
}

/* The series' head and tail: name with the prefix, and the tags. */
static void series_text(const struct statsd *sd, const Graind__Sample *s, const char *name,
			size_t skip_le, char *head, char *tail, size_t size)
{
	size_t head_at = 0, tail_at = 0;

	head[0] = tail[0] = '\0';
	if (sd->prefix[0]) {
		put_clean(head, size, &head_at, sd->prefix, true);
		put_raw(head, size, &head_at, ".");
	}
	put_clean(head, size, &head_at, name, true);
	put_tags(sd, s, skip_le, head, size, &head_at, tail, size, &tail_at);
}

/* ---------------------------------------------------------------- send */

static int flush_datagram(struct statsd *sd, struct gerr *err)
{
	ssize_t n;

	if (!sd->dgram_len)
		return 0;
	n = send(sd->fd, sd->dgram, sd->dgram_len, 0);
	if (n < 0)
		return gerr_set(err, 502, "statsd: cannot send a %zu-byte datagram: %s",
				sd->dgram_len, strerror(errno));
	sd->sent += (size_t)n;
	sd->dgram_len = 0;
	return 0;
}

/* Add one line; a line that alone is over the limit is left out. */
static int add_line(struct statsd *sd, const char *line, struct gerr *err)
{
	size_t len = strlen(line);

	if (len > sd->max_datagram) {
		log_warn("msg=\"statsd line over the datagram size, left out\" bytes=%zu max=%zu",
			 len, sd->max_datagram);
		return 0;
	}
	if (sd->dgram_len && sd->dgram_len + 1 + len > sd->max_datagram &&
	    flush_datagram(sd, err) < 0)
		return -1;
	if (sd->dgram_len)
		sd->dgram[sd->dgram_len++] = '\n';
	memcpy(sd->dgram + sd->dgram_len, line, len);
	sd->dgram_len += len;
	return 0;
}

static int add_value(struct statsd *sd, const char *head, double value, const char *type,
		     const char *rate, const char *tail, struct gerr *err)
{
	char line[STATSD_LINE_MAX * 2 + 64];

	if (sd->recalling)
		return 0;
	snprintf(line, sizeof(line), "%s:%.15g|%s%s%s", head, value, type, rate, tail);
	return add_line(sd, line, err);
}

/* The index of the "le" tag of a histogram bucket sample ("<m>.<f>_bucket"),
 * or n_tags when the sample is not one. */
static size_t bucket_le(const Graind__Sample *s)
{
	size_t len = strlen(s->name);

	if (len < 7 || strcmp(s->name + len - 7, "_bucket") != 0)
		return s->n_tags;
	for (size_t i = 0; i < s->n_tags; i++)
		if (strcmp(s->tags[i]->key, "le") == 0)
			return i;
	return s->n_tags;
}

/* A histogram bucket as timer values: the samples that fell into this
 * bucket since the previous batch, sent as one value (the bucket's upper
 * bound) with the sample rate that makes it count as that many. */
static int send_bucket(struct statsd *sd, const Graind__Sample *s, size_t le,
		       struct gerr *err)
{
	char head[STATSD_LINE_MAX], tail[STATSD_LINE_MAX], key[STATSD_LINE_MAX * 2 + 8];
	char name[256], rate[32] = "";
	double cumulative, count, bound;
	bool known;
	char *end;

	/* The series of this bucket, for its delta. */
	series_text(sd, s, s->name, s->n_tags, head, tail, sizeof(head));
	snprintf(key, sizeof(key), "%s|%s", head, tail);
	cumulative = counter_delta(sd, key, s->value, &known);
	/* The histogram it belongs to: name without "_bucket", no le tag. */
	snprintf(name, sizeof(name), "%.*s", (int)(strlen(s->name) - 7), s->name);
	series_text(sd, s, name, le, head, tail, sizeof(head));
	snprintf(key, sizeof(key), "%s|%s", head, tail);
	if (strcmp(key, sd->bucket_group) != 0) {
		snprintf(sd->bucket_group, sizeof(sd->bucket_group), "%s", key);
		sd->bucket_prev = 0;
	}
	count = cumulative - sd->bucket_prev;
	sd->bucket_prev = cumulative;
	bound = strtod(s->tags[le]->value, &end);
	if (!known || count < 1 || *end || !isfinite(bound))
		return 0;
	if (count > 1)
		snprintf(rate, sizeof(rate), "|@%.6g", 1.0 / count);
	return add_value(sd, head, bound, "ms", rate, tail, err);
}

static int send_metric(struct statsd *sd, const Graind__Sample *s, struct gerr *err)
{
	char head[STATSD_LINE_MAX], tail[STATSD_LINE_MAX], key[STATSD_LINE_MAX * 2 + 8];
	size_t le = bucket_le(s);
	double delta;
	bool known;

	if (s->metric_kind == GRAIND__METRIC_KIND__GAUGE) {
		series_text(sd, s, s->name, s->n_tags, head, tail, sizeof(head));
		return add_value(sd, head, s->value, "g", "", tail, err);
	}
	if (le < s->n_tags)
		return send_bucket(sd, s, le, err);
	series_text(sd, s, s->name, s->n_tags, head, tail, sizeof(head));
	/* The collector already sent a change (outputs with delta): as it is. */
	if (s->delta)
		return s->value == 0 ? 0 : add_value(sd, head, s->value, "c", "", tail, err);
	snprintf(key, sizeof(key), "%s|%s", head, tail);
	delta = counter_delta(sd, key, s->value, &known);
	if (!known || delta == 0)
		return 0;
	return add_value(sd, head, delta, "c", "", tail, err);
}

static int count_event(struct event_count *counts, size_t *n, size_t cap,
		       const Graind__Sample *s)
{
	for (size_t i = 0; i < *n; i++) {
		if (strcmp(counts[i].map, s->map) == 0) {
			counts[i].count++;
			return 0;
		}
	}
	if (*n == cap)
		return -1;
	snprintf(counts[*n].map, sizeof(counts[*n].map), "%s", s->map);
	counts[(*n)++].count = 1;
	return 0;
}

static int send_events(struct statsd *sd, const struct event_count *counts, size_t n,
		       struct gerr *err)
{
	char head[STATSD_LINE_MAX], name[96];
	size_t at;

	for (size_t i = 0; i < n; i++) {
		at = 0;
		head[0] = '\0';
		snprintf(name, sizeof(name), "%s.events", counts[i].map);
		if (sd->prefix[0]) {
			put_clean(head, sizeof(head), &at, sd->prefix, true);
			put_raw(head, sizeof(head), &at, ".");
		}
		put_clean(head, sizeof(head), &at, name, true);
		if (add_value(sd, head, (double)counts[i].count, "c", "", "", err) < 0)
			return -1;
	}
	return 0;
}

/* A refusal (ICMP port unreachable) of datagrams already sent shows as a
 * pending socket error; on a local peer it is there as soon as send
 * returns. Reading it also clears it. */
static int check_refused(struct statsd *sd, struct gerr *err)
{
	socklen_t len = sizeof(int);
	int soerr = 0;

	if (getsockopt(sd->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr)
		return gerr_set(err, 502, "statsd: datagrams refused by the peer: %s",
				strerror(soerr));
	return 0;
}

int statsd_send(struct statsd *sd, Graind__Sample *const *samples, size_t n,
		size_t *bytes, struct gerr *err)
{
	struct event_count counts[32];
	size_t n_counts = 0;
	int ret = -1;

	*bytes = 0;
	sd->batch++;
	sd->sent = 0;
	sd->dgram_len = 0;
	sd->bucket_group[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		const Graind__Sample *s = samples[i];

		if (s->kind == GRAIND__SAMPLE_KIND__EVENT) {
			/* Past the table's size, counts go out early. */
			if (count_event(counts, &n_counts, 32, s) < 0) {
				if (send_events(sd, counts, n_counts, err) < 0)
					goto out;
				n_counts = 0;
				count_event(counts, &n_counts, 32, s);
			}
			continue;
		}
		if (send_metric(sd, s, err) < 0)
			goto out;
	}
	if (send_events(sd, counts, n_counts, err) < 0 || flush_datagram(sd, err) < 0 ||
	    check_refused(sd, err) < 0)
		goto out;
	ret = 0;
out:
	if (ret < 0)
		series_undo_batch(sd);
	*bytes = sd->sent;
	return ret;
}

void statsd_recall(struct statsd *sd, Graind__Sample *const *samples, size_t n)
{
	struct gerr ignored;

	sd->batch++;
	sd->bucket_group[0] = '\0';
	sd->recalling = true;
	for (size_t i = 0; i < n; i++)
		if (samples[i]->kind == GRAIND__SAMPLE_KIND__METRIC)
			send_metric(sd, samples[i], &ignored);
	sd->recalling = false;
}

/* ---------------------------------------------------------------- open */

/* A name lookup run by glibc's resolver threads (getaddrinfo_a). */
struct lookup {
	struct gaicb cb;
	struct addrinfo hints;
	struct lookup *next;            /* on the abandoned list */
	char text[];                    /* host, then service */
};

/* Lookups given up on while under way: glibc still writes to them, so
 * they are freed once done, by a later lookup. (No completion notice:
 * glibc runs those in a thread with every signal unblocked, where a
 * SIGTERM meant for sigwait would kill the agent.) */
static pthread_mutex_t abandoned_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lookup *abandoned;

static void lookup_free(struct lookup *lk)
{
	if (lk->cb.ar_result)
		freeaddrinfo(lk->cb.ar_result);
	free(lk);
}

static void abandoned_sweep(void)
{
	struct lookup **p, *lk;

	pthread_mutex_lock(&abandoned_lock);
	for (p = &abandoned; (lk = *p);) {
		if (gai_error(&lk->cb) != EAI_INPROGRESS) {
			*p = lk->next;
			lookup_free(lk);
		} else {
			p = &lk->next;
		}
	}
	pthread_mutex_unlock(&abandoned_lock);
}

/* getaddrinfo for a UDP peer that stops waiting when *cancel is true
 * (EAI_CANCELED), looked at every 50 ms: a resolver that does not answer
 * takes seconds per try, which a sink change or a shutdown must not wait
 * for. An address is taken as it is, with no lookup. */
static int resolve(const char *host, const char *service, const atomic_bool *cancel,
		   struct addrinfo **res)
{
	struct addrinfo numeric = { .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICHOST };
	const struct timespec tick = { .tv_nsec = 50 * 1000 * 1000 };
	size_t host_len = strlen(host), service_len = strlen(service);
	struct gaicb *list[1];
	struct lookup *lk;
	int rc;

	rc = getaddrinfo(host, service, &numeric, res);
	if (rc != EAI_NONAME)
		return rc;
	abandoned_sweep();
	lk = calloc(1, sizeof(*lk) + host_len + service_len + 2);
	if (!lk)
		return EAI_MEMORY;
	memcpy(lk->text, host, host_len + 1);
	memcpy(lk->text + host_len + 1, service, service_len + 1);
	lk->hints.ai_socktype = SOCK_DGRAM;
	lk->cb.ar_name = lk->text;
	lk->cb.ar_service = lk->text + host_len + 1;
	lk->cb.ar_request = &lk->hints;
	list[0] = &lk->cb;
	rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
	if (rc) {
		free(lk);
		return rc;
	}
	while ((rc = gai_error(&lk->cb)) == EAI_INPROGRESS) {
		if (cancel && atomic_load(cancel)) {
			if (gai_cancel(&lk->cb) == EAI_NOTCANCELED) {
				pthread_mutex_lock(&abandoned_lock);
				lk->next = abandoned;
				abandoned = lk;
				pthread_mutex_unlock(&abandoned_lock);
			} else {
				lookup_free(lk);
			}
			return EAI_CANCELED;
		}
		gai_suspend((const struct gaicb *const *)list, 1, &tick);
	}
	if (rc == 0) {
		*res = lk->cb.ar_result;
		lk->cb.ar_result = NULL;
	}
	lookup_free(lk);
	return rc;
}

static int connect_udp(const char *host, unsigned port, const atomic_bool *cancel, int *fd,
		       struct gerr *err)
{
	struct addrinfo *res = NULL, *ai;
	char service[8];
	int rc, saved = 0;

	snprintf(service, sizeof(service), "%u", port);
	rc = resolve(host, service, cancel, &res);
	if (rc == EAI_CANCELED)
		return gerr_set(err, 503, "statsd: looking up %s: cancelled", host);
	if (rc)
		return gerr_set(err, 502, "statsd: cannot resolve %s: %s", host, gai_strerror(rc));
	*fd = -1;
	for (ai = res; ai && *fd < 0; ai = ai->ai_next) {
		*fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (*fd < 0) {
			saved = errno;
			continue;
		}
		/* Connected: a closed port comes back as ECONNREFUSED on a
		 * later send, and the batch is retried. */
		if (connect(*fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			saved = errno;
			close(*fd);
			*fd = -1;
		}
	}
	freeaddrinfo(res);
	if (*fd < 0)
		return gerr_set(err, 502, "statsd: cannot reach %s:%u: %s", host, port,
				strerror(saved));
	return 0;
}

int statsd_open(const Graind__StatsdSink *cfg, const atomic_bool *cancel,
		struct statsd **out, struct gerr *err)
{
	struct statsd *sd;

	*out = NULL;
	sd = calloc(1, sizeof(*sd));
	if (!sd)
		return gerr_set(err, 500, "out of memory");
	sd->fd = -1;
	sd->dialect = cfg->dialect;
	sd->max_datagram = cfg->max_datagram ? cfg->max_datagram : STATSD_DEFAULT_MAX_DATAGRAM;
	sd->prefix = strdup(cfg->prefix ? cfg->prefix : "");
	sd->dgram = malloc(sd->max_datagram);
	if (!sd->prefix || !sd->dgram) {
		statsd_close(sd);
		return gerr_set(err, 500, "out of memory");
	}
	if (connect_udp(cfg->host, cfg->port, cancel, &sd->fd, err) < 0) {
		statsd_close(sd);
		return -1;
	}
	*out = sd;
	return 0;
}

void statsd_close(struct statsd *sd)
{
	if (!sd)
		return;
	if (sd->fd >= 0)
		close(sd->fd);
	series_clear(sd);
	free(sd->prefix);
	free(sd->dgram);
	free(sd);
}
