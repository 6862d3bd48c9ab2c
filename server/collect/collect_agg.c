/* Events aggregated in the agent (EventOutput.count_by, histogram_field):
 * records are counted per group of the count_by fields' values and,
 * with a histogram field, sorted into power-of-two buckets, instead of
 * being stored one by one. Groups are bounded: past AGG_MAX_GROUPS, new
 * value combinations count in one group whose tags read "_other". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/collect/collect_int.h"
#include "server/collect/decode.h"

#define AGG_MAX_GROUPS 10000
#define AGG_SLOTS      1024     /* hash chains */
#define AGG_BUCKETS    65       /* le 2^0 .. 2^64 */
#define AGG_TEXT_MAX   256
#define AGG_MAX_BY     8        /* count_by fields used */

struct agg_group {
	struct agg_group *next;
	uint64_t hash;
	char **values;          /* one per count_by field */
	uint64_t count;
	double sum;
	uint64_t buckets[AGG_BUCKETS];
	bool changed;
};

struct collect_agg {
	const struct collect_map *m;
	size_t by_len[AGG_MAX_BY];      /* strlen of each count_by name */
	size_t histogram_len;
	struct agg_group *slots[AGG_SLOTS];
	struct agg_group *other;        /* past AGG_MAX_GROUPS */
	size_t n_groups;
};

static size_t agg_by(const struct collect_map *m)
{
	return m->n_count_by < AGG_MAX_BY ? m->n_count_by : AGG_MAX_BY;
}

struct collect_agg *collect_agg_new(const struct collect_map *m)
{
	struct collect_agg *a = calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	a->m = m;
	for (size_t i = 0; i < agg_by(m); i++)
		a->by_len[i] = strlen(m->count_by[i]);
	a->histogram_len = strlen(m->histogram_field);
	return a;
}

static void group_free(struct agg_group *g, size_t n_values)
{
	for (size_t i = 0; g->values && i < n_values; i++)
		free(g->values[i]);
	free(g->values);
	free(g);
}

void collect_agg_free(struct collect_agg *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < AGG_SLOTS; i++)
		while (a->slots[i]) {
			struct agg_group *g = a->slots[i];

			a->slots[i] = g->next;
			group_free(g, agg_by(a->m));
		}
	if (a->other)
		group_free(a->other, agg_by(a->m));
	free(a);
}

static uint64_t hash_text(uint64_t h, const char *s)
{
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return (h ^ 0xff) * 0x100000001b3ULL;      /* ends the string */
}

static bool same_values(const struct agg_group *g, char values[][AGG_TEXT_MAX], size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(g->values[i], values[i]) != 0)
			return false;
	return true;
}

static struct agg_group *group_new(char values[][AGG_TEXT_MAX], size_t n, uint64_t hash)
{
	struct agg_group *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->hash = hash;
	g->values = calloc(n ? n : 1, sizeof(*g->values));
	if (!g->values) {
		free(g);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		if (!(g->values[i] = strdup(values[i]))) {
			group_free(g, n);
			return NULL;
		}
	return g;
}

static struct agg_group *group_of(struct collect_agg *a, char values[][AGG_TEXT_MAX],
				  size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	struct agg_group *g;

	for (size_t i = 0; i < n; i++)
		h = hash_text(h, values[i]);
	for (g = a->slots[h % AGG_SLOTS]; g; g = g->next)
		if (g->hash == h && same_values(g, values, n))
			return g;
	if (a->n_groups >= AGG_MAX_GROUPS) {
		if (!a->other) {
			for (size_t i = 0; i < n; i++)
				snprintf(values[i], AGG_TEXT_MAX, "_other");
			a->other = group_new(values, n, 0);
		}
		return a->other;
	}
	g = group_new(values, n, h);
	if (!g)
		return NULL;
	g->next = a->slots[h % AGG_SLOTS];
	a->slots[h % AGG_SLOTS] = g;
	a->n_groups++;
	return g;
}

/* Bucket k holds values up to 2^k (and above 2^(k-1)); bucket 0 up to 1. */
static size_t bucket_of(double v)
{
	uint64_t u;

	if (!(v > 1))
		return 0;
	if (v >= 0x1p64)
		return AGG_BUCKETS - 1;
	u = (uint64_t)ceil(v);
	return u <= 1 ? 0 : (size_t)(64 - __builtin_clzll(u - 1));
}

/* What one record gives: the count_by fields' values as text, the
 * histogram field's number. */
struct agg_record {
	const struct collect_agg *a;
	char (*values)[AGG_TEXT_MAX];
	bool found[AGG_MAX_BY];
	bool histogram_found;
	bool has_number;
	double number;
	size_t missing;                 /* leaves wanted and not seen yet */
};

#define AGG_ALL_FOUND 1

static bool is_named(const char *want, size_t want_len, const char *name, size_t name_len)
{
	return want_len == name_len && memcmp(want, name, name_len) == 0;
}

/* Takes the leaves wanted, the first of each name, and stops the walk once
 * it has them all. */
static int take_leaf(void *ctx, const char *name, size_t name_len, const struct decode_value *v)
{
	struct agg_record *r = ctx;
	const struct collect_agg *a = r->a;
	const struct collect_map *m = a->m;

	for (size_t i = 0; i < agg_by(m); i++)
		if (!r->found[i] && is_named(m->count_by[i], a->by_len[i], name, name_len)) {
			decode_value_text(v, r->values[i], AGG_TEXT_MAX);
			r->found[i] = true;
			r->missing--;
		}
	if (*m->histogram_field && !r->histogram_found &&
	    is_named(m->histogram_field, a->histogram_len, name, name_len)) {
		r->has_number = decode_value_number(v, &r->number);
		r->histogram_found = true;
		r->missing--;
	}
	return r->missing ? 0 : AGG_ALL_FOUND;
}

int collect_agg_add(struct collect_agg *a, const struct decoder *dec, const void *data,
		    size_t len)
{
	const struct collect_map *m = a->m;
	char values[AGG_MAX_BY][AGG_TEXT_MAX];
	size_t n = agg_by(m);
	struct agg_record r = {
		.a = a,
		.values = values,
		.missing = n + (*m->histogram_field != '\0'),
	};
	struct agg_group *g;

	/* A field the record lacks counts as "". */
	for (size_t i = 0; i < n; i++)
		values[i][0] = '\0';
	if (r.missing && decode_visit(dec, data, len, take_leaf, &r) < 0)
		return -1;
	g = group_of(a, values, n);
	if (!g)
		return -1;
	g->count++;
	g->changed = true;
	if (r.has_number) {
		g->sum += r.number;
		g->buckets[bucket_of(r.number)]++;
	}
	return 0;
}

static void flush_group(struct collect_agg *a, struct agg_group *g, collect_agg_emit_fn emit,
			void *ctx)
{
	const struct collect_map *m = a->m;
	size_t n = agg_by(m), top = 0;
	const char *names[AGG_MAX_BY + 1], *values[AGG_MAX_BY + 1];
	char name[192], le[32];
	uint64_t cumulative = 0;

	for (size_t i = 0; i < n; i++) {
		names[i] = m->count_by[i];
		values[i] = g->values[i];
	}
	snprintf(name, sizeof(name), "%s.count", m->shown);
	emit(ctx, name, names, values, n, (double)g->count);
	if (!*m->histogram_field)
		return;
	snprintf(name, sizeof(name), "%s.%s_sum", m->shown, m->histogram_field);
	emit(ctx, name, names, values, n, g->sum);
	for (size_t k = 0; k < AGG_BUCKETS; k++)
		if (g->buckets[k])
			top = k;
	/* Cumulative buckets up to the highest one used, as Prometheus has them. */
	snprintf(name, sizeof(name), "%s.%s_bucket", m->shown, m->histogram_field);
	names[n] = "le";
	values[n] = le;
	for (size_t k = 0; k <= top; k++) {
		cumulative += g->buckets[k];
		snprintf(le, sizeof(le), "%.0f", ldexp(1.0, (int)k));
		emit(ctx, name, names, values, n + 1, (double)cumulative);
	}
}

void collect_agg_flush(struct collect_agg *a, collect_agg_emit_fn emit, void *ctx)
{
	for (size_t i = 0; i < AGG_SLOTS; i++)
		for (struct agg_group *g = a->slots[i]; g; g = g->next)
			if (g->changed) {
				flush_group(a, g, emit, ctx);
				g->changed = false;
			}
	if (a->other && a->other->changed) {
		flush_group(a, a->other, emit, ctx);
		a->other->changed = false;
	}
}

bool collect_agg_wanted(const struct collect_map *m)
{
	return m->out == COLLECT_OUT_EVENTS && (m->n_count_by || *m->histogram_field);
}
