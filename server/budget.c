/* budget: windows of probe counters, rates, and limits (budget.h). */
#include "server/budget.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/util/units.h"

/* Samples kept per probe at most: one a second over the longest window,
 * and some slack for a caller that samples faster. */
#define SAMPLES_MAX (BUDGET_MAX_WINDOW_S + 8)

struct entry {
	struct entry *next;
	char name[64];
	struct budget_sample *samples;  /* oldest first */
	size_t n, cap;
	struct budget_usage usage;
	bool measured;
	bool exceeded;                  /* a breach in force */
	bool latched;                   /* it detached the probe: kept until reset */
	int64_t under_since_ms;         /* an ALERT breach under its limits since (0: over) */
	struct budget_breach breach;
	uint64_t round;                 /* the round it was last observed in */
};

struct budgets {
	pthread_mutex_t lock;
	struct entry *list;
	uint64_t round;
};

struct budgets *budgets_new(void)
{
	struct budgets *b = calloc(1, sizeof(*b));

	if (b)
		pthread_mutex_init(&b->lock, NULL);
	return b;
}

static void entry_free(struct entry *e)
{
	free(e->samples);
	free(e);
}

void budgets_free(struct budgets *b)
{
	if (!b)
		return;
	while (b->list) {
		struct entry *e = b->list;

		b->list = e->next;
		entry_free(e);
	}
	pthread_mutex_destroy(&b->lock);
	free(b);
}

static struct entry **find(struct budgets *b, const char *name)
{
	struct entry **p = &b->list;

	while (*p && strcmp((*p)->name, name) != 0)
		p = &(*p)->next;
	return p;
}

static struct entry *find_or_add(struct budgets *b, const char *name)
{
	struct entry **p = find(b, name);

	if (!*p) {
		*p = calloc(1, sizeof(**p));
		if (*p)
			snprintf((*p)->name, sizeof((*p)->name), "%s", name);
	}
	return *p;
}

static void drop_oldest(struct entry *e, size_t k)
{
	memmove(e->samples, e->samples + k, (e->n - k) * sizeof(*e->samples));
	e->n -= k;
}

static int push(struct entry *e, const struct budget_sample *s, unsigned window_s)
{
	int64_t window_ms = (int64_t)window_s * 1000;
	const struct budget_sample *last = e->n ? &e->samples[e->n - 1] : NULL;

	/* Counters only grow while the same programs run. */
	if (last && (s->run_time_ns < last->run_time_ns || s->events < last->events ||
		     s->at_ms < last->at_ms))
		e->n = 0;
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 16;
		struct budget_sample *grown;

		if (cap > SAMPLES_MAX)
			cap = SAMPLES_MAX;
		if (e->n == cap)
			drop_oldest(e, 1);
		else if (!(grown = realloc(e->samples, cap * sizeof(*grown))))
			return -1;
		else {
			e->samples = grown;
			e->cap = cap;
		}
	}
	e->samples[e->n++] = *s;
	/* The oldest kept is the newest one that is still a window back. */
	while (e->n > 2 && e->samples[1].at_ms <= s->at_ms - window_ms)
		drop_oldest(e, 1);
	return 0;
}

static void measure(const struct entry *e, struct budget_usage *u)
{
	const struct budget_sample *first = &e->samples[0], *last = &e->samples[e->n - 1];
	double span_s = (double)(last->at_ms - first->at_ms) / 1000.0;

	memset(u, 0, sizeof(*u));
	u->map_bytes = last->map_bytes;
	u->span_s = (unsigned)(span_s + 0.5);
	if (span_s <= 0)
		return;
	u->cpu_percent = (double)(last->run_time_ns - first->run_time_ns) / 1e9 / span_s * 100.0;
	u->events_per_second = (double)(last->events - first->events) / span_s;
}

/* The first limit usage is over, or NULL. Rates only over a whole window
 * (half a second of slack for the caller's ticks). */
static const char *over(const struct budget_limits *lim, const struct budget_usage *u,
			const struct entry *e, double *figure, double *max)
{
	unsigned window_s = lim->window_s ? lim->window_s : BUDGET_DEFAULT_WINDOW_S;
	const struct budget_sample *first = &e->samples[0], *last = &e->samples[e->n - 1];
	bool whole = last->at_ms - first->at_ms >= (int64_t)window_s * 1000 - 500;

	if (whole && lim->max_cpu_percent > 0 && u->cpu_percent > lim->max_cpu_percent) {
		*figure = u->cpu_percent;
		*max = lim->max_cpu_percent;
		return "maxCpuPercent";
	}
	if (whole && lim->max_events_per_second > 0 &&
	    u->events_per_second > lim->max_events_per_second) {
		*figure = u->events_per_second;
		*max = lim->max_events_per_second;
		return "maxEventsPerSecond";
	}
	if (lim->max_map_bytes && u->map_bytes > lim->max_map_bytes) {
		*figure = (double)u->map_bytes;
		*max = (double)lim->max_map_bytes;
		return "maxMapBytes";
	}
	return NULL;
}

int budgets_observe(struct budgets *b, const char *name, const struct budget_limits *lim,
		    const struct budget_sample *s, int64_t now_ms, struct budget_usage *usage,
		    struct budget_breach *breach)
{
	unsigned window_s = lim->window_s ? lim->window_s : BUDGET_DEFAULT_WINDOW_S;
	const char *limit = NULL;
	double figure = 0, max = 0;
	struct entry *e;
	int ret = 0;

	pthread_mutex_lock(&b->lock);
	e = find_or_add(b, name);
	if (!e || push(e, s, window_s) < 0) {
		pthread_mutex_unlock(&b->lock);
		return -1;
	}
	measure(e, &e->usage);
	e->measured = true;
	e->round = b->round;
	*usage = e->usage;
	limit = over(lim, &e->usage, e, &figure, &max);
	if (limit && !e->exceeded) {
		e->exceeded = true;
		e->latched = lim->detach;
		e->under_since_ms = 0;
		e->breach = (struct budget_breach){ .limit = limit, .figure = figure, .max = max,
						    .detach = lim->detach, .since_ms = now_ms };
		*breach = e->breach;
		ret = 1;
	} else if (limit) {
		/* Still over: the latest figure, of whichever limit it is. */
		e->under_since_ms = 0;
		e->breach.limit = limit;
		e->breach.figure = figure;
		e->breach.max = max;
	} else if (e->exceeded && !e->latched) {
		/* A whole window under the limits ends it, so that a probe that
		 * hovers at its limit is not flagged again every second. */
		if (!e->under_since_ms)
			e->under_since_ms = s->at_ms;
		else if (s->at_ms - e->under_since_ms >= (int64_t)window_s * 1000)
			e->exceeded = false;
	}
	pthread_mutex_unlock(&b->lock);
	return ret;
}

bool budgets_get(struct budgets *b, const char *name, struct budget_usage *usage,
		 struct budget_breach *breach, bool *exceeded)
{
	struct entry *e;
	bool measured = false;

	*exceeded = false;
	pthread_mutex_lock(&b->lock);
	e = *find(b, name);
	if (e) {
		measured = e->measured;
		*usage = e->usage;
		*exceeded = e->exceeded;
		*breach = e->breach;
	}
	pthread_mutex_unlock(&b->lock);
	return measured;
}

void budgets_each(struct budgets *b,
		  void (*fn)(const char *name, bool measured, const struct budget_usage *usage,
			     bool exceeded, const struct budget_breach *breach, void *ctx),
		  void *ctx)
{
	pthread_mutex_lock(&b->lock);
	for (struct entry *e = b->list; e; e = e->next)
		fn(e->name, e->measured, &e->usage, e->exceeded, &e->breach, ctx);
	pthread_mutex_unlock(&b->lock);
}

void budgets_round_begin(struct budgets *b)
{
	pthread_mutex_lock(&b->lock);
	b->round++;
	pthread_mutex_unlock(&b->lock);
}

void budgets_round_end(struct budgets *b)
{
	struct entry **p = &b->list;

	pthread_mutex_lock(&b->lock);
	while (*p) {
		struct entry *e = *p;

		if (e->round == b->round) {
			p = &e->next;
		} else if (e->latched) {
			e->n = 0;
			e->measured = false;
			p = &e->next;
		} else {
			*p = e->next;
			entry_free(e);
		}
	}
	pthread_mutex_unlock(&b->lock);
}

void budgets_pause(struct budgets *b, const char *name)
{
	struct entry **p, *e;

	pthread_mutex_lock(&b->lock);
	p = find(b, name);
	e = *p;
	if (e && e->latched) {
		e->n = 0;
		e->measured = false;
	} else if (e) {
		*p = e->next;
		entry_free(e);
	}
	pthread_mutex_unlock(&b->lock);
}

void budgets_reset(struct budgets *b, const char *name)
{
	struct entry **p, *e;

	pthread_mutex_lock(&b->lock);
	p = find(b, name);
	e = *p;
	if (e) {
		*p = e->next;
		entry_free(e);
	}
	pthread_mutex_unlock(&b->lock);
}

/* ---------------------------------------------------------------- parse */

static int parse_number(const char *v, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(v, &end);
	return errno || end == v || *end || !isfinite(*out) || *out < 0 ? -1 : 0;
}

int budget_parse(const char *text, struct budget_limits *lim, char *why, size_t n)
{
	char copy[512], *save = NULL, *item;
	double v;

	memset(lim, 0, sizeof(*lim));
	if (snprintf(copy, sizeof(copy), "%s", text) >= (int)sizeof(copy)) {
		snprintf(why, n, "too long");
		return -1;
	}
	for (item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');
		const char *key = item, *val;

		if (!eq) {
			snprintf(why, n, "'%s' is no key=value", item);
			return -1;
		}
		*eq = '\0';
		val = eq + 1;
		if (!strcmp(key, "cpu") && parse_number(val, &v) == 0) {
			lim->max_cpu_percent = v;
		} else if (!strcmp(key, "events") && parse_number(val, &v) == 0) {
			lim->max_events_per_second = v;
		} else if (!strcmp(key, "map-bytes") && units_parse_bytes(val, &lim->max_map_bytes) == 0) {
			;
		} else if (!strcmp(key, "window") && parse_number(val, &v) == 0 && v >= 1 &&
			   v <= BUDGET_MAX_WINDOW_S && v == (unsigned)v) {
			lim->window_s = (unsigned)v;
		} else if (!strcmp(key, "action") && (!strcmp(val, "alert") || !strcmp(val, "detach"))) {
			lim->detach = !strcmp(val, "detach");
		} else if (strcmp(key, "cpu") && strcmp(key, "events") && strcmp(key, "map-bytes") &&
			   strcmp(key, "window") && strcmp(key, "action")) {
			snprintf(why, n, "unknown key '%s' (cpu, events, map-bytes, window, action)", key);
			return -1;
		} else {
			snprintf(why, n, "bad value '%s' for %s", val, key);
			return -1;
		}
	}
	return 0;
}
