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

	if (a)
		a->m = m;
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

static const Graind__Field *find(Graind__Field **fields, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(collect_field_name(fields[i], ""), name) == 0)
			return fields[i];
	return NULL;
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

int collect_agg_add(struct collect_agg *a, Graind__Field **fields, size_t n_fields)
{
	const struct collect_map *m = a->m;
	char values[AGG_MAX_BY][AGG_TEXT_MAX];
	size_t n = agg_by(m);
	struct agg_group *g;
	const Graind__Field *f;
	double v;

	for (size_t i = 0; i < n; i++) {
		f = find(fields, n_fields, m->count_by[i]);
		if (f)
			decode_field_text(f, values[i], AGG_TEXT_MAX);
		else
			values[i][0] = '\0';
	}
	g = group_of(a, values, n);
	if (!g)
		return -1;
	g->count++;
	g->changed = true;
	if (*m->histogram_field) {
		f = find(fields, n_fields, m->histogram_field);
		if (f && decode_field_number(f, &v)) {
			g->sum += v;
			g->buckets[bucket_of(v)]++;
		}
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
