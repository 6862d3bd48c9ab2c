/* Record types of event maps. A ring buffer or perf event array has no
 * value type in BTF, so which struct its records are is decided here: the
 * one the spec names (events.recordType), else the one named after the
 * map, else, per record size, the only candidate struct whose size fits.
 *
 * Candidates are the structs an object defines for itself: a struct that
 * a global variable of the object is, points to or is an array of (the
 * unused `struct sample_rec *unused_sample_rec;` that keeps one in BTF, a
 * `const volatile struct config cfg;`), or that a map's value is (records
 * are often built in a per-CPU array's value). Structs that are in the BTF
 * only as members of those, or because a program reads them with CO-RE,
 * takes them as its context, declares them as .ksyms externs or fills
 * them as struct_ops, are the kernel's: never candidates, whatever their
 * size. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "server/builtin.h"
#include "server/collect/collect.h"
#include "server/collect/collect_int.h"
#include "server/collect/decode.h"
#include "server/util/log.h"

/* Longest chain of typedefs, qualifiers, pointers and arrays followed. */
#define CHAIN_MAX 32
/* How much of a message lists structs. */
#define LIST_MAX 200

static int find_struct(const struct btf *btf, const char *name)
{
	int id = btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT);

	return id > 0 ? id : btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF);
}

/* "struct x" and "x" name the same type. */
static const char *bare_name(const char *named)
{
	return strncmp(named, "struct ", 7) == 0 ? named + 7 : named;
}

uint32_t collect_record_type(const struct btf *btf, const char *map, const char *named,
			     const char *builtin)
{
	static const char *const forms[] = { "%s", "%.*s", "%s_event", "%s_record" };
	size_t len = strlen(map);
	char name[96];
	int id;

	if (!btf)
		return 0;
	if (named && *named) {
		id = find_struct(btf, bare_name(named));
		return id > 0 ? (uint32_t)id : 0;
	}
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		if (i == 1) {
			if (len < 2 || map[len - 1] != 's')
				continue;
			snprintf(name, sizeof(name), forms[i], (int)(len - 1), map);
		} else {
			snprintf(name, sizeof(name), forms[i], map);
		}
		id = find_struct(btf, name);
		if (id > 0)
			return (uint32_t)id;
	}
	if (builtin && *builtin) {
		snprintf(name, sizeof(name), "%s_event", builtin);
		id = find_struct(btf, name);
		if (id > 0)
			return (uint32_t)id;
	}
	return 0;
}

/* ---------------------------------------------------------------- candidates */

/* The struct that type `id` is, points to or is an array of (through
 * typedefs and qualifiers), and the name a spec calls it by: its own, or
 * for an anonymous struct the typedef that names it. 0 when that is no
 * struct with a name and a size. */
static uint32_t kept_struct(const struct btf *btf, uint32_t id, const char **name)
{
	const char *alias = NULL;

	for (int i = 0; i < CHAIN_MAX; i++) {
		const struct btf_type *t = btf__type_by_id(btf, id);

		if (!t)
			return 0;
		if (btf_is_typedef(t)) {
			alias = btf__name_by_offset(btf, t->name_off);
		} else if (btf_is_ptr(t) || btf_is_array(t)) {
			alias = NULL;   /* a typedef of the pointer names no struct */
		} else if (!btf_is_mod(t)) {
			if (!btf_is_struct(t) || !t->size)
				return 0;
			*name = t->name_off ? btf__name_by_offset(btf, t->name_off) : alias;
			return *name && **name ? id : 0;
		}
		id = btf_is_array(t) ? btf_array(t)->type : t->type;
	}
	return 0;
}

struct rectype_list {
	struct collect_rectype *v;
	size_t n, cap;
};

static int add_candidate(const struct btf *btf, struct rectype_list *l, uint32_t id)
{
	const char *name = NULL;
	struct collect_rectype *t;

	id = kept_struct(btf, id, &name);
	if (!id)
		return 0;
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].type_id == id)
			return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 8;
		struct collect_rectype *grown = realloc(l->v, cap * sizeof(*grown));

		if (!grown)
			return -1;
		l->v = grown;
		l->cap = cap;
	}
	t = &l->v[l->n++];
	t->type_id = id;
	t->size = btf__type_by_id(btf, id)->size;
	snprintf(t->name, sizeof(t->name), "%s", name);
	return 0;
}

/* The value type of the map defined by `def` (a .maps variable's type):
 * its member "value", a pointer to it. 0 when it has none. */
static uint32_t map_value_type(const struct btf *btf, uint32_t def)
{
	const struct btf_type *t = btf__type_by_id(btf, def);
	const struct btf_member *m;

	if (!t || !btf_is_struct(t))
		return 0;
	m = btf_members(t);
	for (uint16_t i = 0; i < btf_vlen(t); i++)
		if (strcmp(btf__name_by_offset(btf, m[i].name_off), "value") == 0)
			return m[i].type;
	return 0;
}

static int cmp_rectype(const void *a, const void *b)
{
	const struct collect_rectype *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : x->type_id < y->type_id ? -1 : x->type_id > y->type_id;
}

int collect_rectypes(const struct btf *btf, struct collect_rectype **out, size_t *n)
{
	struct rectype_list l = { 0 };
	uint32_t count = btf ? btf__type_cnt(btf) : 0;

	*out = NULL;
	*n = 0;
	for (uint32_t id = 1; id < count; id++) {
		const struct btf_type *sec = btf__type_by_id(btf, id);
		const struct btf_var_secinfo *vs;
		const char *name;
		bool maps;

		if (!btf_is_datasec(sec))
			continue;
		name = btf__name_by_offset(btf, sec->name_off);
		/* Kernel objects and kernel-defined struct_ops tables. */
		if (strcmp(name, ".ksyms") == 0 || strcmp(name, ".kconfig") == 0 ||
		    strncmp(name, ".struct_ops", 11) == 0)
			continue;
		maps = strcmp(name, ".maps") == 0;
		vs = btf_var_secinfos(sec);
		for (uint16_t i = 0; i < btf_vlen(sec); i++) {
			const struct btf_type *var = btf__type_by_id(btf, vs[i].type);
			uint32_t type;

			if (!var || !btf_is_var(var))
				continue;
			type = maps ? map_value_type(btf, var->type) : var->type;
			if (type && add_candidate(btf, &l, type) < 0) {
				free(l.v);
				return -1;
			}
		}
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), cmp_rectype);
	*out = l.v;
	*n = l.n;
	return 0;
}

/* Whether records of `len` bytes can be of type t: of its size, or in a
 * perf event array (padded), whose records the kernel pads so that with
 * their 4-byte length they fill whole 8 bytes, up to 7 bytes larger. */
static bool fits(const struct collect_rectype *t, size_t len, bool padded)
{
	return padded ? t->size <= len && t->size + 8 > len : t->size == len;
}

/* The candidates (those that fit records of `len` bytes, unless len is
 * 0) as "a, b" or, with sizes, "a (8 bytes), b (16 bytes)", into buf, cut
 * before LIST_MAX bytes as "a, b and 3 more". */
static void list_rectypes(char *buf, size_t n, const struct collect_rectype *t, size_t count,
			  size_t len, bool padded, bool sizes)
{
	size_t at = 0, listed = 0, total = 0;
	char item[96];

	if (n)
		buf[0] = '\0';
	for (size_t i = 0; i < count; i++) {
		if (len && !fits(&t[i], len, padded))
			continue;
		total++;
		if (sizes)
			snprintf(item, sizeof(item), "%s%s (%u bytes)", listed ? ", " : "", t[i].name,
				 t[i].size);
		else
			snprintf(item, sizeof(item), "%s%s", listed ? ", " : "", t[i].name);
		if (total != listed + 1 || at + strlen(item) >= LIST_MAX || at + strlen(item) >= n)
			continue;
		at += (size_t)snprintf(buf + at, n - at, "%s", item);
		listed++;
	}
	if (total > listed)
		snprintf(buf + at, n - at, " and %zu more", total - listed);
}

/* ---------------------------------------------------------------- by size */

/* What the record type of m is called, for messages. */
static const char *record_type_name(const struct collect_view *view, const struct collect_map *m)
{
	const struct btf_type *t = btf__type_by_id(view->btf, m->record_type);
	const char *name = t ? btf__name_by_offset(view->btf, t->name_off) : NULL;

	return name && *name ? name : "(anonymous)";
}

/* How to name the type: the spec's output for map m. */
#define HOW_TO_NAME "{\"map\": \"%s\", \"events\": {\"recordType\": \"<struct>\"}} in the probe's outputs"

int collect_record_pick(const struct collect_view *view, const struct collect_map *m, size_t len,
			struct decoder **dec, char *why, size_t n)
{
	bool padded = m->type == BPF_MAP_TYPE_PERF_EVENT_ARRAY;
	const struct collect_rectype *only = NULL;
	char records[128], list[LIST_MAX + 32];
	struct gerr err = { 0 };
	size_t fit = 0;

	*dec = NULL;
	if (n)
		why[0] = '\0';
	if (m->typed) {
		snprintf(why, n, "map %s: records of %zu bytes are shown as hex: they are shorter than their type, %s (%u bytes)",
			 m->shown, len, record_type_name(view, m), m->record_size);
		return 0;
	}
	if (m->record_named) {
		snprintf(why, n, "map %s: records are shown as hex: events.recordType \"%s\" is no type the object's BTF can decode",
			 m->shown, m->record_named);
		return 0;
	}
	if (!view->btf) {
		snprintf(why, n, "map %s: records are shown as hex: the object has no BTF", m->shown);
		return 0;
	}
	for (size_t i = 0; i < view->n_rectypes; i++)
		if (fits(&view->rectypes[i], len, padded)) {
			only = &view->rectypes[i];
			fit++;
		}
	if (fit == 1) {
		if (decode_new(view->btf, only->type_id, only->size, dec, &err) == 0) {
			log_info("msg=\"record type found by size\" probe=%s map=%s size=%zu type=%s",
				 view->probe, m->shown, len, only->name);
			return 0;
		}
		if (err.status == 500)
			return -1;
		snprintf(why, n, "map %s: records of %zu bytes are shown as hex: %s, the only struct of that size, does not decode: %s",
			 m->shown, len, only->name, err.msg);
		return 0;
	}
	if (padded && len >= 8)
		snprintf(records, sizeof(records), "records of %zu bytes (a struct of %zu to %zu bytes, padded)",
			 len, len - 7, len);
	else
		snprintf(records, sizeof(records), "records of %zu bytes", len);
	if (fit > 1) {
		list_rectypes(list, sizeof(list), view->rectypes, view->n_rectypes, len, padded, false);
		snprintf(why, n, "map %s: %s are shown as hex: several structs of the object fit (%s); say which with " HOW_TO_NAME,
			 m->shown, records, list, m->shown);
		return 0;
	}
	if (view->n_rectypes)
		list_rectypes(list, sizeof(list), view->rectypes, view->n_rectypes, 0, padded, true);
	else
		snprintf(list, sizeof(list), "none");
	snprintf(why, n, "map %s: %s are shown as hex: no struct of the object fits (its structs: %s); keep theirs in the object's BTF with a global pointer of its type, or name it with " HOW_TO_NAME,
		 m->shown, records, list, m->shown);
	return 0;
}

/* ---------------------------------------------------------------- check */

/* The output's record type, or NULL when it names none. */
static const char *named_record_type(const Graind__OutputSpec *o)
{
	if (o->kind_case != GRAIND__OUTPUT_SPEC__KIND_EVENTS || !o->events->record_type ||
	    !*o->events->record_type)
		return NULL;
	return o->events->record_type;
}

static bool names_record_type(const Graind__ProbeSpec *spec)
{
	for (size_t i = 0; i < spec->n_outputs; i++)
		if (named_record_type(spec->outputs[i]))
			return true;
	return false;
}

static int refuse(const struct btf *btf, const Graind__OutputSpec *o, struct gerr *err)
{
	struct collect_rectype *types = NULL;
	char list[LIST_MAX + 32];
	size_t n = 0;

	if (!btf)
		return gerr_set(err, 400, "outputs: map %s: events.recordType \"%.64s\" cannot be used: the object has no BTF",
				o->map, named_record_type(o));
	if (collect_rectypes(btf, &types, &n) < 0)
		return gerr_set(err, 500, "out of memory");
	if (n)
		list_rectypes(list, sizeof(list), types, n, 0, false, true);
	else
		snprintf(list, sizeof(list), "none: keep one in its BTF with a global pointer of its type");
	free(types);
	return gerr_set(err, 400, "outputs: map %s: events.recordType \"%.64s\" is no struct of the object's BTF; its structs: %s",
			o->map, named_record_type(o), list);
}

int collect_check_spec(const Graind__ProbeSpec *spec, const void *obj, size_t len,
		       struct gerr *err)
{
	struct bpf_object *bo;
	const struct btf *btf;
	int ret = 0;

	if (!names_record_type(spec))
		return 0;
	bo = collect_object_open(obj, len);
	if (!bo)
		return 0;       /* the attach says why it does not open */
	btf = bpf_object__btf(bo);
	for (size_t i = 0; ret == 0 && i < spec->n_outputs; i++) {
		const char *named = named_record_type(spec->outputs[i]);

		if (named && (!btf || find_struct(btf, bare_name(named)) <= 0))
			ret = refuse(btf, spec->outputs[i], err);
	}
	bpf_object__close(bo);
	return ret;
}

int collect_check_stored_spec(struct store *st, const Graind__ProbeSpec *spec,
			      struct gerr *err)
{
	void *bytes = NULL;
	size_t len = 0;
	int ret;

	if (!names_record_type(spec))
		return 0;
	ret = builtin_spec_object(st, spec, &bytes, &len, err);
	if (ret == 0)
		ret = collect_check_spec(spec, bytes, len, err);
	free(bytes);
	return ret;
}
