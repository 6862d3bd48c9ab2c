/* The collector's view of a probe: its object's maps with their decoders
 * and what each map feeds, read from the store (spec, object bytes) and
 * from the object's BTF. The kernel is not touched: the object is opened
 * with libbpf only to read it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "server/util/pbmsg.h"
#include "server/builtin.h"
#include "server/collect/collect_int.h"
#include "server/collect/decode.h"
#include "server/elf/elfchk.h"
#include "server/util/log.h"
#include "store/store.h"

/* The name libbpf gives the object, hence the prefix of internal maps
 * ("graind.rodata"); the probe manager opens objects under the same name. */
#define OBJECT_NAME "graind"

static bool is_event_map(enum bpf_map_type type)
{
	return type == BPF_MAP_TYPE_RINGBUF || type == BPF_MAP_TYPE_PERF_EVENT_ARRAY;
}

static bool is_pollable(enum bpf_map_type type)
{
	switch (type) {
	case BPF_MAP_TYPE_HASH:
	case BPF_MAP_TYPE_ARRAY:
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_PERCPU_ARRAY:
	case BPF_MAP_TYPE_LRU_HASH:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH:
		return true;
	default:
		return false;
	}
}

static bool is_percpu(enum bpf_map_type type)
{
	return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
	       type == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
	       type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

struct collect_view *collect_view_get(struct collect_view *view)
{
	__atomic_add_fetch(&view->refs, 1, __ATOMIC_RELAXED);
	return view;
}

void collect_view_put(struct collect_view *view)
{
	if (!view || __atomic_sub_fetch(&view->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (size_t i = 0; i < view->n_maps; i++) {
		decode_free(view->maps[i].key_dec);
		decode_free(view->maps[i].value_dec);
	}
	free(view->maps);
	free(view->rectypes);
	btf__free(view->btf);
	pbmsg_free(view->spec ? &view->spec->base : NULL);
	free(view);
}

const struct collect_map *collect_view_map(const struct collect_view *view, const char *name)
{
	for (size_t i = 0; i < view->n_maps; i++)
		if (strcmp(view->maps[i].shown, name) == 0 ||
		    strcmp(view->maps[i].name, name) == 0)
			return &view->maps[i];
	return NULL;
}

/* A decoder for type_id, or the raw one when BTF is missing or unusable. */
static int decoder_for(const struct btf *btf, uint32_t type_id, size_t size,
		       const char *probe, const char *map, struct decoder **out)
{
	struct gerr err = { 0 };

	if (btf && type_id && decode_new(btf, type_id, size, out, &err) == 0)
		return 0;
	if (btf && type_id)
		log_warn("msg=\"map decoded as raw bytes\" probe=%s map=%s error=\"%s\"",
			 probe, map, err.msg);
	return decode_new(NULL, 0, size, out, &err);
}

static const Graind__OutputSpec *find_output(const Graind__ProbeSpec *spec,
					     const struct collect_map *m)
{
	for (size_t i = 0; i < spec->n_outputs; i++) {
		const char *name = spec->outputs[i]->map;

		if (strcmp(name, m->shown) == 0 || strcmp(name, m->name) == 0)
			return spec->outputs[i];
	}
	return NULL;
}

/* The default output the object's BTF gives map `name`: the value of a
 * decl tag "graind.output=<kind>" on the map's variable (bpf/output.h),
 * or NULL. */
static const char *tagged_output(const struct btf *btf, const char *name)
{
	static const char prefix[] = "graind.output=";
	uint32_t n = btf ? btf__type_cnt(btf) : 0;

	for (uint32_t id = 1; id < n; id++) {
		const struct btf_type *t = btf__type_by_id(btf, id);
		const struct btf_type *var;
		const char *tag;

		if (!btf_is_decl_tag(t) || btf_decl_tag(t)->component_idx != -1)
			continue;
		var = btf__type_by_id(btf, t->type);
		tag = btf__name_by_offset(btf, t->name_off);
		if (var && btf_is_var(var) && tag && strncmp(tag, prefix, sizeof(prefix) - 1) == 0 &&
		    strcmp(btf__name_by_offset(btf, var->name_off), name) == 0)
			return tag + sizeof(prefix) - 1;
	}
	return NULL;
}

/* What the map feeds: its output spec, else the default the object tags
 * it with, else the default of its kind (typed metric maps polled every
 * second as counters, event maps drained). A map not named in the outputs
 * keeps its default: `none` is how to silence one. */
static void resolve_output(const struct collect_view *view, struct collect_map *m)
{
	const Graind__OutputSpec *o = find_output(view->spec, m);

	m->out = COLLECT_OUT_NONE;
	m->poll_ms = COLLECT_DEFAULT_POLL_MS;
	m->histogram_field = "";
	if (!o || o->kind_case == GRAIND__OUTPUT_SPEC__KIND__NOT_SET) {
		const char *tagged = m->internal ? NULL : tagged_output(view->btf, m->name);

		if (m->internal || (tagged && strcmp(tagged, "none") == 0))
			return;
		if (tagged && strcmp(tagged, "log2_histogram") != 0)
			log_warn("msg=\"unknown output tag ignored\" probe=%s map=%s tag=%s",
				 view->probe, m->shown, tagged);
		if (is_event_map(m->type))
			m->out = COLLECT_OUT_EVENTS;
		else if (is_pollable(m->type) && m->typed)
			m->out = COLLECT_OUT_METRIC;
		m->log2_histogram = m->out == COLLECT_OUT_METRIC && tagged &&
				    strcmp(tagged, "log2_histogram") == 0;
		return;
	}
	if (o->kind_case == GRAIND__OUTPUT_SPEC__KIND_NONE)
		return;
	if (o->kind_case == GRAIND__OUTPUT_SPEC__KIND_METRIC) {
		const Graind__MetricOutput *mo = o->metric;

		if (!is_pollable(m->type)) {
			log_warn("msg=\"metric output ignored: map type cannot be polled\" probe=%s map=%s type=%s",
				 view->probe, m->shown, libbpf_bpf_map_type_str(m->type));
			return;
		}
		m->out = COLLECT_OUT_METRIC;
		if (mo->poll_interval_ms)
			m->poll_ms = mo->poll_interval_ms < COLLECT_MIN_POLL_MS ?
				     COLLECT_MIN_POLL_MS : mo->poll_interval_ms;
		m->gauge = mo->kind == GRAIND__METRIC_KIND__GAUGE;
		m->delta = mo->delta && !m->gauge;
		m->log2_histogram = mo->log2_histogram;
		m->fields = mo->fields;
		m->n_fields = mo->n_fields;
		return;
	}
	if (!is_event_map(m->type)) {
		log_warn("msg=\"events output ignored: not a ring buffer or perf event array\" probe=%s map=%s type=%s",
			 view->probe, m->shown, libbpf_bpf_map_type_str(m->type));
		return;
	}
	m->out = COLLECT_OUT_EVENTS;
	m->count_by = o->events->count_by;
	m->n_count_by = o->events->n_count_by;
	m->histogram_field = o->events->histogram_field;
	m->release_on_read = o->events->delivery == GRAIND__EVENT_DELIVERY__DELIVERY_READ;
}

/* A ring buffer or perf event array has no value type: its records are of
 * the type the spec names, or one named after the map, or else each
 * record size seen takes its own (collect_record_pick). */
static int describe_event_map(struct collect_view *view, struct collect_map *m)
{
	const Graind__OutputSpec *o = find_output(view->spec, m);
	const char *named = o && o->kind_case == GRAIND__OUTPUT_SPEC__KIND_EVENTS &&
			    o->events->record_type && *o->events->record_type ?
			    o->events->record_type : NULL;
	long size;
	int ret;

	m->record_type = collect_record_type(view->btf, m->name, named,
					     view->spec->object_case == GRAIND__PROBE_SPEC__OBJECT_BUILTIN ?
					     view->spec->builtin : NULL);
	size = m->record_type ? btf__resolve_size(view->btf, m->record_type) : 0;
	if (size <= 0)
		m->record_type = 0, size = 0;
	m->record_size = (uint32_t)size;
	ret = decoder_for(view->btf, m->record_type, (size_t)size, view->probe, m->shown,
			  &m->value_dec);
	if (ret < 0)
		return ret;
	m->typed = !decode_is_raw(m->value_dec);
	m->by_size = !m->typed && !named;
	m->record_named = !m->typed ? named : NULL;
	return 0;
}

static int describe_map(struct collect_view *view, const struct bpf_map *bm,
			struct collect_map *m)
{
	const char *name = bpf_map__name(bm);
	size_t pfx = strlen(OBJECT_NAME);
	int ret;

	snprintf(m->name, sizeof(m->name), "%s", name);
	m->internal = bpf_map__is_internal(bm);
	m->shown = m->name;
	if (m->internal && strncmp(m->name, OBJECT_NAME, pfx) == 0 && m->name[pfx] == '.')
		m->shown = m->name + pfx;
	m->type = bpf_map__type(bm);
	m->key_size = bpf_map__key_size(bm);
	m->value_size = bpf_map__value_size(bm);
	m->max_entries = bpf_map__max_entries(bm);
	m->percpu = is_percpu(m->type);

	if (is_event_map(m->type))
		return describe_event_map(view, m);
	ret = decoder_for(view->btf, bpf_map__btf_key_type_id(bm), m->key_size, view->probe,
			  m->shown, &m->key_dec);
	if (ret == 0)
		ret = decoder_for(view->btf, bpf_map__btf_value_type_id(bm), m->value_size,
				  view->probe, m->shown, &m->value_dec);
	if (ret < 0)
		return ret;
	m->typed = !decode_is_raw(m->key_dec) && !decode_is_raw(m->value_dec);
	return 0;
}

/* The object's BTF, copied so that the object can be closed. */
static struct btf *copy_btf(const struct bpf_object *obj)
{
	const struct btf *btf = bpf_object__btf(obj);
	const void *raw;
	uint32_t size;

	if (!btf)
		return NULL;
	raw = btf__raw_data(btf, &size);
	return raw ? btf__new(raw, size) : NULL;
}

struct bpf_object *collect_object_open(const void *bytes, size_t len)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = OBJECT_NAME);

	elfchk_init();
	return bpf_object__open_mem(bytes, len, &opts);
}

static int read_object(struct collect_view *view, const void *bytes, size_t len,
		       struct gerr *err)
{
	struct bpf_object *obj;
	struct bpf_map *bm;
	size_t n = 0;
	int ret = -1;

	obj = collect_object_open(bytes, len);
	if (!obj)
		return gerr_set(err, 422, "object of probe %s does not open: %s", view->probe,
				strerror(errno));
	view->btf = copy_btf(obj);
	if (collect_rectypes(view->btf, &view->rectypes, &view->n_rectypes) < 0) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	bpf_object__for_each_map(bm, obj)
		n++;
	view->maps = calloc(n ? n : 1, sizeof(*view->maps));
	if (!view->maps) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	bpf_object__for_each_map(bm, obj) {
		struct collect_map *m = &view->maps[view->n_maps++];

		if (describe_map(view, bm, m) < 0) {
			gerr_set(err, 500, "out of memory");
			goto out;
		}
		resolve_output(view, m);
	}
	ret = 0;
out:
	bpf_object__close(obj);
	return ret;
}

static void warn_unknown_outputs(const struct collect_view *view)
{
	for (size_t i = 0; i < view->spec->n_outputs; i++)
		if (!collect_view_map(view, view->spec->outputs[i]->map))
			log_warn("msg=\"output names a map the object does not have\" probe=%s map=%s",
				 view->probe, view->spec->outputs[i]->map);
}

int collect_view_build(struct store *st, const char *probe, struct collect_view **out,
		       struct gerr *err)
{
	struct store_probe row = { 0 };
	struct collect_view *view;
	void *bytes = NULL;
	size_t len = 0;
	int ret = -1;

	*out = NULL;
	view = calloc(1, sizeof(*view));
	if (!view)
		return gerr_set(err, 500, "out of memory");
	view->refs = 1;
	if (store_probe_get(st, probe, &row, err) < 0)
		goto out;
	snprintf(view->probe, sizeof(view->probe), "%s", row.name);
	view->generation = row.generation;
	view->attached = row.attached;
	view->spec = (Graind__ProbeSpec *)protobuf_c_message_unpack(
		&graind__probe_spec__descriptor, NULL, row.spec_len, row.spec);
	if (!view->spec) {
		gerr_set(err, 500, "stored spec of probe %s does not decode", probe);
		goto out;
	}
	if (builtin_spec_object(st, view->spec, &bytes, &len, err) < 0 ||
	    read_object(view, bytes, len, err) < 0)
		goto out;
	warn_unknown_outputs(view);
	*out = view;
	view = NULL;
	ret = 0;
out:
	free(bytes);
	store_probe_clear(&row);
	collect_view_put(view);
	return ret;
}
