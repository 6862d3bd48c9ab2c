/* What a spec may change in an object before it loads: read-only globals,
 * found through the BTF of .rodata, and the size of maps. */
#include "server/probe/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/btf.h>

/* The .rodata map: libbpf names it "<object>.rodata". */
static struct bpf_map *rodata_map(struct bpf_object *obj)
{
	struct bpf_map *map;
	const char *name, *dot;

	bpf_object__for_each_map(map, obj) {
		name = bpf_map__name(map);
		dot = strrchr(name, '.');
		if (bpf_map__is_internal(map) && dot && strcmp(dot, ".rodata") == 0)
			return map;
	}
	return NULL;
}

static const struct btf_var_secinfo *find_var(const struct btf *btf,
					      const char *name)
{
	const struct btf_var_secinfo *vs;
	const struct btf_type *sec, *var;
	int id, i;

	id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (id < 0)
		return NULL;
	sec = btf__type_by_id(btf, id);
	vs = btf_var_secinfos(sec);
	for (i = 0; i < btf_vlen(sec); i++, vs++) {
		var = btf__type_by_id(btf, vs->type);
		if (var && strcmp(btf__name_by_offset(btf, var->name_off), name) == 0)
			return vs;
	}
	return NULL;
}

/* Decimal or 0x hex, with an optional sign. */
static int parse_integer(const char *s, bool is_signed, size_t size,
			 uint64_t *out)
{
	bool neg = *s == '-';
	const char *digits = neg || *s == '+' ? s + 1 : s;
	int base = strncmp(digits, "0x", 2) == 0 || strncmp(digits, "0X", 2) == 0 ? 16 : 10;
	unsigned long long v;
	char *end;

	if (!*digits || *digits == '-' || *digits == '+' || *digits == ' ')
		return -1;
	errno = 0;
	v = strtoull(digits, &end, base);
	if (errno || *end || end == digits)
		return -1;
	if (size < 8) {
		uint64_t limit = 1ull << (size * 8 - (is_signed ? 1 : 0));

		if (neg ? v > limit : v >= limit)
			return -1;
	} else if (is_signed && (neg ? v > 1ull << 63 : v >= 1ull << 63)) {
		return -1;
	}
	if (neg && !is_signed)
		return -1;
	*out = neg ? (uint64_t)-(int64_t)v : v;
	return 0;
}

static int set_one(const struct btf *btf, const struct btf_var_secinfo *vs,
		   unsigned char *data, size_t data_len, const Graind__Constant *c,
		   struct gerr *err)
{
	const struct btf_type *var = btf__type_by_id(btf, vs->type);
	int type_id = btf__resolve_type(btf, var->type);
	const struct btf_type *t = type_id < 0 ? NULL : btf__type_by_id(btf, type_id);
	uint64_t v;

	/* BTF comes from the upload: 64-bit sums, so a huge offset cannot wrap. */
	if (!t || vs->size == 0 || (uint64_t)vs->offset + vs->size > data_len)
		return gerr_set(err, 400, "constant %s: its BTF does not match .rodata", c->name);
	if (btf_is_int(t) || btf_is_enum(t)) {
		bool is_signed = btf_is_int(t) && (btf_int_encoding(t) & BTF_INT_SIGNED);

		if (vs->size > 8 || parse_integer(c->value, is_signed, vs->size, &v) < 0)
			return gerr_set(err, 400, "constant %s: %s is not a %s%u-byte integer (decimal or 0x hex)",
					c->name, c->value, is_signed ? "signed " : "", vs->size);
		/* Little- or big-endian alike: copy the value's low bytes. */
		for (size_t i = 0; i < vs->size; i++) {
			size_t shift = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? i : vs->size - 1 - i;

			data[vs->offset + i] = (v >> (8 * shift)) & 0xff;
		}
		return 0;
	}
	if (btf_is_array(t)) {
		const struct btf_array *arr = btf_array(t);
		const struct btf_type *elem = btf__type_by_id(btf, btf__resolve_type(btf, arr->type));
		size_t len = strlen(c->value);

		if (!elem || !btf_is_int(elem) || elem->size != 1)
			return gerr_set(err, 400, "constant %s is an array that is not a string; only integers and char arrays can be set",
					c->name);
		if (arr->nelems != vs->size)
			return gerr_set(err, 400, "constant %s: its BTF does not match .rodata", c->name);
		if (len >= arr->nelems)
			return gerr_set(err, 400, "constant %s holds at most %u characters; got %zu",
					c->name, arr->nelems - 1, len);
		memset(data + vs->offset, 0, vs->size);
		memcpy(data + vs->offset, c->value, len);
		return 0;
	}
	return gerr_set(err, 400, "constant %s is neither an integer nor a char array", c->name);
}

int probe_set_constants(struct bpf_object *obj, Graind__Constant **constants,
			size_t n, struct gerr *err)
{
	const struct btf_var_secinfo *vs;
	struct btf *btf = bpf_object__btf(obj);
	struct bpf_map *map;
	unsigned char *data = NULL;
	const void *initial;
	size_t size, i;
	int ret = -1;

	if (!n)
		return 0;
	map = rodata_map(obj);
	if (!map || !btf || !(initial = bpf_map__initial_value(map, &size)))
		return gerr_set(err, 400, "constant %s not found: the object has no .rodata with BTF",
				constants[0]->name);
	data = malloc(size);
	if (!data)
		return gerr_set(err, 500, "out of memory");
	memcpy(data, initial, size);
	for (i = 0; i < n; i++) {
		vs = find_var(btf, constants[i]->name);
		if (!vs) {
			gerr_set(err, 400, "constant %s not found in .rodata of the object",
				 constants[i]->name);
			goto out;
		}
		if (set_one(btf, vs, data, size, constants[i], err) < 0)
			goto out;
	}
	if (bpf_map__set_initial_value(map, data, size) < 0) {
		gerr_set(err, 500, "cannot set .rodata: %s", strerror(errno));
		goto out;
	}
	ret = 0;
out:
	free(data);
	return ret;
}

int probe_set_map_overrides(struct bpf_object *obj, Graind__MapOverride **ovr,
			    size_t n, struct gerr *err)
{
	struct bpf_map *map;
	size_t i;

	for (i = 0; i < n; i++) {
		map = bpf_object__find_map_by_name(obj, ovr[i]->map);
		if (!map)
			return gerr_set(err, 400, "map %s not found in the object", ovr[i]->map);
		if (!ovr[i]->max_entries)
			return gerr_set(err, 400, "map %s: max_entries must be above 0", ovr[i]->map);
		if (bpf_map__set_max_entries(map, ovr[i]->max_entries) < 0)
			return gerr_set(err, 400, "map %s: cannot set max_entries to %u: %s",
					ovr[i]->map, ovr[i]->max_entries, strerror(errno));
	}
	return 0;
}
