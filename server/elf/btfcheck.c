/* What libbpf 1.1 trusts in BTF without checking: that every type id and
 * name offset points inside the BTF, and that chains of modifiers end.
 * Newer libbpf validates this itself (btf_sanity_check); until then a
 * hostile .BTF section crashes or hangs bpf_object__open. */
#include <stdint.h>

#include "server/elf/internal.h"

#include <bpf/btf.h>

/* The kernel resolves at most this many types in a chain. */
#define MAX_CHAIN 32

struct btfcheck {
	const struct btf *btf;
	__u32 count;		/* btf__type_cnt(): ids run 1..count-1 */
	struct gerr *err;
};

static int check_id(const struct btfcheck *c, __u32 owner, __u32 id)
{
	if (id >= c->count)
		return gerr_set(c->err, 422, "BTF section does not parse: type [%u] refers to type [%u], which does not exist",
				owner, id);
	return 0;
}

static int check_kind(const struct btfcheck *c, __u32 owner, __u32 id,
		      int want, int also)
{
	int kind = btf_kind(btf__type_by_id(c->btf, id));

	if (kind != want && kind != also)
		return gerr_set(c->err, 422, "BTF section does not parse: type [%u] refers to type [%u] of the wrong kind",
				owner, id);
	return 0;
}

static int check_name(const struct btfcheck *c, __u32 owner, __u32 off)
{
	if (!btf__str_by_offset(c->btf, off))
		return gerr_set(c->err, 422, "BTF section does not parse: type [%u] has a name outside the string section",
				owner);
	return 0;
}

/* Modifiers, typedefs, pointers and arrays must lead somewhere else. */
static int check_chain(const struct btfcheck *c, __u32 id)
{
	const struct btf_type *t;
	__u32 next = id;
	int depth;

	for (depth = 0; depth <= MAX_CHAIN; depth++) {
		if (next == 0)
			return 0;
		t = btf__type_by_id(c->btf, next);
		if (btf_is_mod(t) || btf_is_typedef(t) || btf_is_ptr(t))
			next = t->type;
		else if (btf_is_array(t))
			next = btf_array(t)->type;
		else
			return 0;
	}
	return gerr_set(c->err, 422, "BTF section does not parse: type [%u] starts a chain of more than %d types (a loop?)",
			id, MAX_CHAIN);
}

static int check_members(const struct btfcheck *c, __u32 id,
			 const struct btf_type *t)
{
	const struct btf_member *m = btf_members(t);
	__u16 i;

	for (i = 0; i < btf_vlen(t); i++, m++)
		if (check_id(c, id, m->type) < 0 || check_name(c, id, m->name_off) < 0)
			return -1;
	return 0;
}

static int check_params(const struct btfcheck *c, __u32 id,
			const struct btf_type *t)
{
	const struct btf_param *p = btf_params(t);
	__u16 i;

	if (check_id(c, id, t->type) < 0)
		return -1;
	for (i = 0; i < btf_vlen(t); i++, p++)
		if (check_id(c, id, p->type) < 0 || check_name(c, id, p->name_off) < 0)
			return -1;
	return 0;
}

static int check_datasec(const struct btfcheck *c, __u32 id,
			 const struct btf_type *t)
{
	const struct btf_var_secinfo *v = btf_var_secinfos(t);
	__u16 i;

	for (i = 0; i < btf_vlen(t); i++, v++)
		if (check_id(c, id, v->type) < 0 ||
		    check_kind(c, id, v->type, BTF_KIND_VAR, BTF_KIND_FUNC) < 0)
			return -1;
	return 0;
}

static int check_enum(const struct btfcheck *c, __u32 id,
		      const struct btf_type *t)
{
	__u16 i;

	for (i = 0; i < btf_vlen(t); i++) {
		__u32 name = btf_is_enum(t) ? btf_enum(t)[i].name_off :
			     btf_enum64(t)[i].name_off;

		if (check_name(c, id, name) < 0)
			return -1;
	}
	return 0;
}

static int check_type(const struct btfcheck *c, __u32 id)
{
	const struct btf_type *t = btf__type_by_id(c->btf, id);

	if (check_name(c, id, t->name_off) < 0)
		return -1;
	switch (btf_kind(t)) {
	case BTF_KIND_PTR:
	case BTF_KIND_TYPEDEF:
	case BTF_KIND_VOLATILE:
	case BTF_KIND_CONST:
	case BTF_KIND_RESTRICT:
	case BTF_KIND_TYPE_TAG:
	case BTF_KIND_VAR:
	case BTF_KIND_DECL_TAG:
		return check_id(c, id, t->type);
	case BTF_KIND_FUNC:
		if (check_id(c, id, t->type) < 0)
			return -1;
		return check_kind(c, id, t->type, BTF_KIND_FUNC_PROTO, BTF_KIND_FUNC_PROTO);
	case BTF_KIND_ARRAY:
		if (check_id(c, id, btf_array(t)->type) < 0)
			return -1;
		return check_id(c, id, btf_array(t)->index_type);
	case BTF_KIND_STRUCT:
	case BTF_KIND_UNION:
		return check_members(c, id, t);
	case BTF_KIND_FUNC_PROTO:
		return check_params(c, id, t);
	case BTF_KIND_DATASEC:
		return check_datasec(c, id, t);
	case BTF_KIND_ENUM:
	case BTF_KIND_ENUM64:
		return check_enum(c, id, t);
	default:
		return 0;
	}
}

int elfchk_check_btf(const struct btf *btf, struct gerr *err)
{
	struct btfcheck c = { btf, btf__type_cnt(btf), err };
	__u32 id;

	/* libbpf reads the types where the header says they start; the
	 * kernel refuses a type section that is not 4-byte aligned. */
	if (c.count > 1 && ((uintptr_t)btf__type_by_id(btf, 1) & 3))
		return gerr_set(err, 422, "BTF section does not parse: its types do not start "
				"4-byte aligned (hdr_len and type_off must be multiples of 4)");
	for (id = 1; id < c.count; id++)
		if (check_type(&c, id) < 0)
			return -1;
	/* Only once every id is known to exist. */
	for (id = 1; id < c.count; id++)
		if (check_chain(&c, id) < 0)
			return -1;
	return 0;
}
