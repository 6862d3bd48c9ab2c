/* Reading pinned maps: iterating entries, summing per-CPU values, and the
 * live decoded dump of GET /v1/probes/{p}/maps/{m}. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "server/util/pbmsg.h"
#include "server/agent.h"
#include "server/collect/collect.h"
#include "server/collect/collect_int.h"
#include "server/collect/decode.h"
#include "server/probe/probe.h"

/* Entries a dump returns at most. */
#define DUMP_MAX_ENTRIES 10000

static int n_cpus(void)
{
	static int n;

	if (!n) {
		int got = libbpf_num_possible_cpus();

		n = got > 0 ? got : 1;
	}
	return n;
}

static size_t round8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

size_t collect_value_len(const struct collect_map *m)
{
	return m->percpu ? round8(m->value_size) * (size_t)n_cpus() : m->value_size;
}

int collect_map_open(const char *probe, const struct collect_map *m)
{
	return probe_map_open(probe, m->name);
}

int collect_walk(int fd, const struct collect_map *m, size_t limit,
		 int (*fn)(const void *key, const void *value, void *ctx), void *ctx,
		 size_t *total, bool *cut)
{
	size_t key_size = m->key_size ? m->key_size : 1;
	uint8_t *prev = NULL, *key, *value;
	/* A hash map whose entries come and go can restart the walk from its
	 * first key: bound the visits so that a walk always ends. */
	size_t budget = (size_t)m->max_entries * 2 + 16;
	int ret = 0;

	*total = 0;
	*cut = false;
	key = malloc(key_size * 2);
	value = malloc(collect_value_len(m) ? collect_value_len(m) : 1);
	if (!key || !value) {
		ret = -ENOMEM;
		goto out;
	}
	while (budget--) {
		uint8_t *next = prev == key ? key + key_size : key;

		if (bpf_map_get_next_key(fd, prev, next) < 0) {
			if (errno != ENOENT)
				ret = -errno;
			break;
		}
		prev = next;
		if (*total >= limit) {
			/* Past the limit: only counted. */
			++*total;
			*cut = true;
			continue;
		}
		if (bpf_map_lookup_elem(fd, next, value) < 0) {
			if (errno == ENOENT)
				continue;       /* deleted meanwhile */
			ret = -errno;
			break;
		}
		++*total;
		ret = fn(next, value, ctx);
		if (ret)
			break;
	}
out:
	free(key);
	free(value);
	return ret;
}

void collect_fields_free(Graind__Field **fields, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pbmsg_free(&fields[i]->base);
	free(fields);
}

const char *collect_field_name(const Graind__Field *f, const char *fallback)
{
	return f->name && *f->name ? f->name : fallback;
}

bool collect_field_selected(const struct collect_map *m, const char *name)
{
	if (!m->n_fields)
		return true;
	for (size_t i = 0; i < m->n_fields; i++)
		if (strcmp(m->fields[i], name) == 0)
			return true;
	return false;
}

static void add_field(Graind__Field *sum, const Graind__Field *f)
{
	if (sum->value_case != f->value_case)
		return;
	switch (f->value_case) {
	case GRAIND__FIELD__VALUE_INT:
		sum->int_ += f->int_;
		break;
	case GRAIND__FIELD__VALUE_UINT:
		sum->uint += f->uint;
		break;
	case GRAIND__FIELD__VALUE_REAL:
		sum->real += f->real;
		break;
	default:
		break;
	}
}

int collect_decode_value(const struct collect_map *m, const void *value,
			 Graind__Field ***fields, size_t *n)
{
	size_t stride = round8(m->value_size);
	const uint8_t *bytes = value;
	/* Raw leaves are bytes and a size, nothing to add up. */
	int cpus = m->percpu && !decode_is_raw(m->value_dec) ? n_cpus() : 1;

	if (decode_fields(m->value_dec, value, m->value_size, "", fields, n) < 0)
		return -1;
	for (int cpu = 1; cpu < cpus; cpu++) {
		Graind__Field **more = NULL;
		size_t n_more = 0;

		if (decode_fields(m->value_dec, bytes + stride * cpu, m->value_size, "",
				  &more, &n_more) < 0) {
			collect_fields_free(more, n_more);
			return -1;
		}
		for (size_t i = 0; i < n_more && i < *n; i++)
			add_field((*fields)[i], more[i]);
		collect_fields_free(more, n_more);
	}
	return 0;
}

/* ---------------------------------------------------------------- dump */

struct dump {
	const struct collect_map *m;
	Graind__MapDump *out;
	size_t cap;
};

static int copy_bytes(ProtobufCBinaryData *dst, const void *src, size_t len)
{
	dst->data = malloc(len ? len : 1);
	if (!dst->data)
		return -1;
	memcpy(dst->data, src, len);
	dst->len = len;
	return 0;
}

static int dump_entry(const void *key, const void *value, void *ctx)
{
	struct dump *d = ctx;
	const struct collect_map *m = d->m;
	Graind__MapEntry *e;

	if (d->out->n_entries == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		Graind__MapEntry **grown = realloc(d->out->entries, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		d->out->entries = grown;
		d->cap = cap;
	}
	e = (Graind__MapEntry *)pbmsg_new(&graind__map_entry__descriptor);
	if (!e)
		return -ENOMEM;
	d->out->entries[d->out->n_entries++] = e;
	if (decode_fields(m->key_dec, key, m->key_size, "", &e->key, &e->n_key) < 0 ||
	    collect_decode_value(m, value, &e->value, &e->n_value) < 0 ||
	    copy_bytes(&e->raw_key, key, m->key_size) < 0 ||
	    copy_bytes(&e->raw_value, value, collect_value_len(m)) < 0)
		return -ENOMEM;
	return 0;
}

static int dump_refusal(const struct collect_view *view, const struct collect_map *m,
			struct gerr *err)
{
	if (m->type == BPF_MAP_TYPE_RINGBUF || m->type == BPF_MAP_TYPE_PERF_EVENT_ARRAY)
		return gerr_set(err, 400,
				"map %s of probe %s is a %s: its records arrive as events (GET /v1/samples?probe=%s&map=%s)",
				m->shown, view->probe, libbpf_bpf_map_type_str(m->type),
				view->probe, m->shown);
	if (m->type == BPF_MAP_TYPE_PROG_ARRAY || m->type == BPF_MAP_TYPE_ARRAY_OF_MAPS ||
	    m->type == BPF_MAP_TYPE_HASH_OF_MAPS)
		return gerr_set(err, 400, "map %s of probe %s is a %s: it holds no data to dump",
				m->shown, view->probe, libbpf_bpf_map_type_str(m->type));
	return 0;
}

static int set_warning(Graind__MapDump *dump, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int set_warning(Graind__MapDump *dump, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return pbmsg_set_string(&dump->warning, buf);
}

int collect_dump_map(struct agent *agent, const char *probe, const char *map,
		     Graind__MapDump **out, struct gerr *err)
{
	struct collect_view *view = NULL;
	const struct collect_map *m;
	struct dump d = { 0 };
	size_t total = 0;
	bool cut = false;
	int fd = -1, ret = -1;

	*out = NULL;
	if (collect_view_build(agent->store, probe, &view, err) < 0)
		return -1;
	m = collect_view_map(view, map);
	if (!m) {
		gerr_set(err, 404, "probe %s has no map named %s", probe, map);
		goto out;
	}
	if (dump_refusal(view, m, err) < 0)
		goto out;
	fd = collect_map_open(view->probe, m);
	if (fd < 0) {
		gerr_set(err, 404, "map %s of probe %s is not pinned (is the probe attached?)",
			 m->shown, probe);
		goto out;
	}
	d.m = m;
	d.out = (Graind__MapDump *)pbmsg_new(&graind__map_dump__descriptor);
	if (!d.out || pbmsg_set_string(&d.out->probe, view->probe) < 0 ||
	    pbmsg_set_string(&d.out->map, m->shown) < 0) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	d.out->decoded = m->typed;
	ret = collect_walk(fd, m, DUMP_MAX_ENTRIES, dump_entry, &d, &total, &cut);
	if (ret < 0) {
		gerr_set(err, ret == -ENOMEM ? 500 : 400, "cannot read map %s of probe %s: %s",
			 m->shown, probe, strerror(-ret));
		goto out;
	}
	ret = -1;
	if ((cut && set_warning(d.out, "%zu of %zu entries shown", (size_t)DUMP_MAX_ENTRIES,
				total) < 0) ||
	    (!cut && !m->typed &&
	     set_warning(d.out, "map has no BTF types: raw bytes only") < 0)) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	*out = d.out;
	d.out = NULL;
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	pbmsg_free(d.out ? &d.out->base : NULL);
	collect_view_put(view);
	return ret;
}
