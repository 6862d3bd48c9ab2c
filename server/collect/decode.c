/* decode: BTF-driven decoding of map keys, map values and ring-buffer
 * records into named, typed fields.
 *
 * Leaf names. Struct and union members are joined with dots
 * ("nest.deep.a"), array elements get their index ("counts[2]",
 * "names[1]", "pairs[0].a"), members of anonymous structs and unions
 * count as members of the enclosing one, and unnamed bitfields (padding)
 * are skipped. A top-level type that is not a struct, union or array
 * yields one leaf named "" (the caller's prefix alone). decode_fields and
 * decode_pack_fields put their prefix before every name: "key" + "addr" =
 * "key.addr", "key" + "[0]" = "key[0]", "key" + "" = "key".
 *
 * One function computes a leaf's value (leaf_value), with any text in a
 * scratch buffer sized per decoder; decode_fields copies it into a
 * Graind__Field, decode_pack_fields writes it straight to the wire,
 * decode_visit hands it to its caller. The wire and visitor paths
 * allocate nothing per field: they are the collector's hot paths.
 *
 * Values by BTF kind:
 *   signed int (1-8 bytes, bitfields)    int
 *   unsigned int (1-8 bytes, bitfields)  uint
 *   128-bit int                          text "0x..."
 *   bool                                 flag
 *   enum, enum64                         text: the value's name; a value
 *                                        without a name stays a number
 *   float, double                        real
 *   char array                           text: up to the first NUL; bytes
 *                                        outside 0x20-0x7e and '\' are
 *                                        written \xNN
 *   array of other 1-byte ints           text: hex pairs "0a1bff"
 *   other arrays                         one leaf per element
 *   pointer                              text "0x..."
 *
 * Name conventions. Matched case-insensitively on the leaf's own member
 * name (for an array element, the array's name) together with the field's
 * shape; a name that matches but has another shape is decoded as above.
 * "*x" means any name ending in "x". Before the address rule, one suffix
 * "4", "6", "v4", "v6", "_v4" or "_v6" is dropped ("saddr6", "ipv4").
 * Rules are tried top to bottom; bitfields only take the ones for "int".
 *
 *   name                             shape              decoded as
 *   -------------------------------- ------------------ ------------------
 *   *addr, *_ip, ip, src, dst        4 bytes: int,      text, IPv4
 *   (saddr, daddr, s_addr, ...)      struct, union or   "10.0.0.1"
 *                                    non-char array
 *                                    16 bytes, as above text, IPv6 "::1"
 *   port, sport, dport, lport,       2-byte int         uint, from network
 *   rport, *_port                                       byte order
 *   ifindex, ifidx, *_ifindex        int                text, interface
 *                                                       name "lo"
 *   errno, *_errno                   int, not 0         text "ENOENT"
 *                                                       (sign ignored)
 *   err, error, ret, retval, rc,     signed int < 0     text "ENOENT"
 *   *_err, *_ret
 *   syscall, syscall_nr, syscall_id, int                text, x86_64 name
 *   syscall_no, sysno, nr                               "getpid"
 *   ip, pc, func, kaddr, ksym,       8-byte int or      text "sym+0x10"
 *   caller, *_ip, *_pc, *_func,      pointer            (/proc/kallsyms)
 *   *_kaddr
 *   cgroup, cgroup_id, cgroupid,     8-byte int         text, cgroup v2
 *   cgid, *_cgroup, *_cgroup_id,                        path "/a/b"
 *   *_cgid
 *   hex, hash, cookie, *_hex,        int                text "0x1f"
 *   *_hash, *_cookie
 *
 * Addresses and ports are read as the bytes in memory, i.e. in network
 * order as the kernel keeps them. When a conversion finds no name (an
 * unknown interface, errno or syscall, a cgroup that is gone) the field
 * keeps its plain number; a kernel address without a symbol becomes
 * "0x...". /proc/kallsyms is read once, on first use. A cgroup id is
 * opened as a kernfs file handle (root can); failing that, the cgroup
 * tree is walked, again at most once a second when an id is not known.
 *
 * Without BTF the record is not guessed at: two leaves, "raw" (hex pairs
 * of the first DECODE_RAW_MAX bytes, "..." after them when there are
 * more) and "size" (uint, the record's length).
 *
 * A plan is bounded: DECODE_MAX_LEAVES leaves, DECODE_MAX_DEPTH levels of
 * nesting and DECODE_MAX_WORK types visited, so hostile BTF (a struct that
 * contains itself, arrays of billions of empty structs) fails with 422. */
#define _GNU_SOURCE
#include "server/collect/decode.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <net/if.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/btf.h>

#include "server/util/pbmsg.h"
#include "server/util/pbwire.h"

#define DECODE_MAX_LEAVES	256
#define DECODE_MAX_DEPTH	8
#define DECODE_MAX_WORK		4096
#define DECODE_MAX_NAME		256
#define DECODE_MAX_MODIFIERS	32
#define DECODE_RAW_MAX		4096

/* decode_syscalls.c */
extern const char *const decode_syscall_names[];
extern const size_t decode_syscall_count;

enum leaf_kind {
	LEAF_SINT,
	LEAF_UINT,
	LEAF_BOOL,
	LEAF_ENUM,
	LEAF_REAL,
	LEAF_CHARS,
	LEAF_BYTES,
	LEAF_PTR,
	LEAF_INT128,
};

enum leaf_conv {
	CONV_NONE,
	CONV_IPV4,
	CONV_IPV6,
	CONV_PORT,
	CONV_IFINDEX,
	CONV_ERRNO,		/* any non-zero value */
	CONV_ERRNO_NEG,		/* negative values only */
	CONV_SYSCALL,
	CONV_KSYM,
	CONV_CGROUP,
	CONV_HEX,
};

struct leaf {
	char *name;		/* relative to the record */
	size_t name_len;
	uint64_t bit_off;	/* from the record's start */
	uint32_t bits;		/* whole bytes unless a bitfield */
	bool is_signed;
	enum leaf_kind kind;
	enum leaf_conv conv;
	int enum_idx;		/* into decoder.enums for LEAF_ENUM */
};

struct enum_value {
	uint64_t value;		/* sign-extended for signed enums */
	char *name;
	size_t name_len;
};

struct enum_table {
	uint32_t type_id;
	size_t n;
	struct enum_value *values;	/* sorted by value */
};

struct decoder {
	size_t size;
	bool raw;
	struct leaf *leaves;
	size_t n_leaves;
	struct enum_table *enums;
	size_t n_enums;
	size_t text_max;	/* the longest text a record can give */
};

/* ================================================================ names */

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

static bool name_in(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

static bool suffix_in(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (ends_with(s, *list))
			return true;
	return false;
}

static void lower_copy(char *dst, size_t n, const char *src)
{
	size_t i;

	for (i = 0; i + 1 < n && src[i]; i++)
		dst[i] = tolower((unsigned char)src[i]);
	dst[i] = '\0';
}

/* "saddr6" -> "saddr", "ipv4" -> "ip", "addr_v6" -> "addr". */
static void drop_family_suffix(char *s)
{
	static const char *const suffixes[] = { "_v4", "_v6", "v4", "v6",
						"4", "6", NULL };
	size_t n = strlen(s);

	for (const char *const *x = suffixes; *x; x++) {
		size_t m = strlen(*x);

		if (n > m && !strcmp(s + n - m, *x)) {
			s[n - m] = '\0';
			return;
		}
	}
}

static bool is_addr_name(const char *lname)
{
	static const char *const names[] = { "ip", "src", "dst", NULL };
	static const char *const suffixes[] = { "addr", "_ip", NULL };
	char s[DECODE_MAX_NAME];

	snprintf(s, sizeof(s), "%s", lname);
	drop_family_suffix(s);
	return name_in(s, names) || suffix_in(s, suffixes);
}

/* The convention for an integer (or pointer) field named `lname` that is
 * `bytes` wide; addresses are handled before, on the raw bytes. */
static enum leaf_conv int_conv(const char *lname, uint32_t bytes,
			       bool is_signed, bool bitfield)
{
	static const char *const port[] = { "port", "sport", "dport", "lport",
					    "rport", NULL };
	static const char *const port_sfx[] = { "_port", NULL };
	static const char *const ifindex[] = { "ifindex", "ifidx", NULL };
	static const char *const ifindex_sfx[] = { "_ifindex", NULL };
	static const char *const errno_sfx[] = { "_errno", NULL };
	static const char *const err[] = { "err", "error", "ret", "retval",
					   "rc", NULL };
	static const char *const err_sfx[] = { "_err", "_ret", NULL };
	static const char *const sys[] = { "syscall", "syscall_nr",
					   "syscall_id", "syscall_no", "sysno",
					   "nr", NULL };
	static const char *const ksym[] = { "ip", "pc", "func", "kaddr",
					    "ksym", "caller", NULL };
	static const char *const ksym_sfx[] = { "_ip", "_pc", "_func",
						"_kaddr", NULL };
	static const char *const cg[] = { "cgroup", "cgroup_id", "cgroupid",
					  "cgid", NULL };
	static const char *const cg_sfx[] = { "_cgroup", "_cgroup_id", "_cgid",
					      NULL };
	static const char *const hex[] = { "hex", "hash", "cookie", NULL };
	static const char *const hex_sfx[] = { "_hex", "_hash", "_cookie",
					       NULL };

	if (!*lname)
		return CONV_NONE;
	if (bytes == 2 && !bitfield &&
	    (name_in(lname, port) || suffix_in(lname, port_sfx)))
		return CONV_PORT;
	if (name_in(lname, ifindex) || suffix_in(lname, ifindex_sfx))
		return CONV_IFINDEX;
	if (!strcmp(lname, "errno") || suffix_in(lname, errno_sfx))
		return CONV_ERRNO;
	if (is_signed && (name_in(lname, err) || suffix_in(lname, err_sfx)))
		return CONV_ERRNO_NEG;
	if (name_in(lname, sys))
		return CONV_SYSCALL;
	if (bytes == 8 && !bitfield &&
	    (name_in(lname, ksym) || suffix_in(lname, ksym_sfx)))
		return CONV_KSYM;
	if (bytes == 8 && !bitfield &&
	    (name_in(lname, cg) || suffix_in(lname, cg_sfx)))
		return CONV_CGROUP;
	if (name_in(lname, hex) || suffix_in(lname, hex_sfx))
		return CONV_HEX;
	return CONV_NONE;
}

/* BTF strings come from uploaded objects: keep names to printable ASCII
 * so that they are always valid UTF-8. */
static void sanitize_name(char *s)
{
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e)
			*s = '?';
}

/* ================================================================ plan */

struct builder {
	const struct btf *btf;
	struct decoder *dec;
	size_t cap;
	unsigned work;
	uint32_t root_id;
	struct gerr *err;
};

/* "struct event", "enum color", "__u64", "anonymous array" */
static void type_name(const struct btf *btf, uint32_t id, char *buf,
		      size_t n)
{
	const struct btf_type *t = btf__type_by_id(btf, id);
	const char *name = t ? btf__name_by_offset(btf, t->name_off) : NULL;
	const char *kind = "type";

	if (t && btf_is_struct(t))
		kind = "struct";
	else if (t && btf_is_union(t))
		kind = "union";
	else if (t && btf_is_any_enum(t))
		kind = "enum";
	else if (t && btf_is_array(t))
		kind = "array";
	if (!name || !*name)
		snprintf(buf, n, "anonymous %s", kind);
	else if (t && (btf_is_composite(t) || btf_is_any_enum(t)))
		snprintf(buf, n, "%s %s", kind, name);
	else
		snprintf(buf, n, "%s", name);
	sanitize_name(buf);
}

static int fail(struct builder *b, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct builder *b, const char *field, const char *fmt, ...)
{
	char why[GERR_MSG_MAX / 2], type[64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	type_name(b->btf, b->root_id, type, sizeof(type));
	return gerr_set(b->err, 422, "BTF type %s (id %u)%s%.*s: %s", type,
			b->root_id, *field ? ", field " : "", 96, field, why);
}

/* Follow typedefs and qualifiers to the type that has the shape. */
static const struct btf_type *skip_modifiers(const struct btf *btf,
					     uint32_t *id)
{
	const struct btf_type *t = btf__type_by_id(btf, *id);

	for (int i = 0; t && i < DECODE_MAX_MODIFIERS; i++) {
		if (!btf_is_mod(t) && !btf_is_typedef(t))
			return t;
		*id = t->type;
		t = btf__type_by_id(btf, *id);
	}
	return NULL;
}

static int add_leaf(struct builder *b, const char *name, uint64_t bit_off,
		    uint32_t bits, enum leaf_kind kind, enum leaf_conv conv,
		    bool is_signed, int enum_idx)
{
	struct decoder *dec = b->dec;
	struct leaf *l;

	if (bits == 0 || bit_off + bits > (uint64_t)dec->size * 8)
		return fail(b, name, "bits %" PRIu64 "..%" PRIu64
			    " lie outside the %zu-byte record",
			    bit_off, bit_off + bits, dec->size);
	if (dec->n_leaves == DECODE_MAX_LEAVES)
		return fail(b, name, "more than %d fields", DECODE_MAX_LEAVES);
	if (dec->n_leaves == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		struct leaf *grown = realloc(dec->leaves, cap * sizeof(*grown));

		if (!grown)
			return gerr_set(b->err, 500, "out of memory");
		dec->leaves = grown;
		b->cap = cap;
	}
	l = &dec->leaves[dec->n_leaves];
	*l = (struct leaf){ .bit_off = bit_off, .bits = bits, .kind = kind,
			    .conv = conv, .is_signed = is_signed,
			    .enum_idx = enum_idx };
	l->name = strdup(name);
	if (!l->name)
		return gerr_set(b->err, 500, "out of memory");
	sanitize_name(l->name);
	l->name_len = strlen(l->name);
	dec->n_leaves++;
	return 0;
}

static int cmp_enum_value(const void *a, const void *b)
{
	const struct enum_value *x = a, *y = b;

	return x->value < y->value ? -1 : x->value > y->value;
}

/* Sign-extend the low `bits` of v. */
static uint64_t sign_extend(uint64_t v, uint32_t bits)
{
	uint64_t top;

	if (bits >= 64)
		return v;
	top = 1ULL << (bits - 1);
	v &= (top << 1) - 1;
	return (v ^ top) - top;
}

static bool enum_is_signed(const struct btf_type *t)
{
	if (btf_kflag(t))
		return true;
	if (btf_is_enum(t))
		for (uint16_t i = 0; i < btf_vlen(t); i++)
			if (btf_enum(t)[i].val < 0)
				return true;
	return false;
}

/* The index of the value table of enum `id`, made on first use. */
static int enum_table(struct builder *b, uint32_t id,
		      const struct btf_type *t)
{
	struct decoder *dec = b->dec;
	bool is_signed = enum_is_signed(t);
	uint32_t bits = t->size * 8;
	struct enum_table *tab, *grown;

	for (size_t i = 0; i < dec->n_enums; i++)
		if (dec->enums[i].type_id == id)
			return (int)i;
	grown = realloc(dec->enums, (dec->n_enums + 1) * sizeof(*grown));
	if (!grown)
		return gerr_set(b->err, 500, "out of memory");
	dec->enums = grown;
	tab = &dec->enums[dec->n_enums];
	*tab = (struct enum_table){ .type_id = id };
	tab->values = calloc(btf_vlen(t) ? btf_vlen(t) : 1,
			     sizeof(*tab->values));
	if (!tab->values)
		return gerr_set(b->err, 500, "out of memory");
	dec->n_enums++;
	for (uint16_t i = 0; i < btf_vlen(t); i++) {
		struct enum_value *v = &tab->values[i];
		uint32_t name_off;
		const char *name;

		if (btf_is_enum64(t)) {
			v->value = btf_enum64_value(&btf_enum64(t)[i]);
			name_off = btf_enum64(t)[i].name_off;
		} else {
			v->value = (uint32_t)btf_enum(t)[i].val;
			name_off = btf_enum(t)[i].name_off;
		}
		v->value = is_signed ? sign_extend(v->value, bits) :
			   (bits < 64 ? v->value & ((1ULL << bits) - 1) :
			    v->value);
		name = btf__name_by_offset(b->btf, name_off);
		v->name = strdup(name ? name : "");
		if (!v->name)
			return gerr_set(b->err, 500, "out of memory");
		sanitize_name(v->name);
		v->name_len = strlen(v->name);
		tab->n++;
	}
	qsort(tab->values, tab->n, sizeof(*tab->values), cmp_enum_value);
	return (int)(dec->n_enums - 1);
}

static int walk(struct builder *b, uint32_t id, const char *name,
		const char *lname, uint64_t bit_off, uint32_t bitfield,
		int depth);

static bool is_char_type(const struct btf *btf, const struct btf_type *t)
{
	const char *name = btf__name_by_offset(btf, t->name_off);

	return btf_is_int(t) && t->size == 1 &&
	       ((btf_int_encoding(t) & BTF_INT_CHAR) ||
		(name && !strcmp(name, "char")));
}

static bool is_char_array(const struct btf *btf, const struct btf_type *t)
{
	uint32_t elem_id = btf_array(t)->type;
	const struct btf_type *elem = skip_modifiers(btf, &elem_id);

	return elem && is_char_type(btf, elem);
}

static int walk_int(struct builder *b, const struct btf_type *t,
		    const char *name, const char *lname, uint64_t bit_off,
		    uint32_t bitfield)
{
	uint8_t enc = btf_int_encoding(t);
	uint32_t bits = btf_int_bits(t);
	bool is_signed = enc & BTF_INT_SIGNED;
	enum leaf_kind kind;

	if (t->size != 1 && t->size != 2 && t->size != 4 && t->size != 8 &&
	    t->size != 16)
		return fail(b, name, "%u-byte integer", t->size);
	if (bits == 0 || bits > t->size * 8 || bitfield > t->size * 8)
		return fail(b, name, "%u-bit field of a %u-byte integer",
			    bitfield ? bitfield : bits, t->size);
	bit_off += btf_int_offset(t);
	if (bitfield)
		bits = bitfield;
	if (t->size == 16) {
		if (bits != 128 || bit_off % 8)
			return fail(b, name, "128-bit bitfield");
		return add_leaf(b, name, bit_off, bits, LEAF_INT128,
				CONV_NONE, false, -1);
	}
	if (enc & BTF_INT_BOOL)
		kind = LEAF_BOOL;
	else
		kind = is_signed ? LEAF_SINT : LEAF_UINT;
	return add_leaf(b, name, bit_off, bits, kind,
			kind == LEAF_BOOL ? CONV_NONE :
			int_conv(lname, t->size, is_signed,
				 bits != t->size * 8 || bit_off % 8),
			is_signed, -1);
}

static int walk_array(struct builder *b, const struct btf_type *t,
		      const char *name, const char *lname, uint64_t bit_off,
		      int depth)
{
	const struct btf_array *a = btf_array(t);
	uint32_t elem_id = a->type;
	const struct btf_type *elem = skip_modifiers(b->btf, &elem_id);
	int64_t elem_size;
	char sub[DECODE_MAX_NAME];

	if (!elem)
		return fail(b, name, "array of unknown type %u", a->type);
	if (a->nelems == 0)
		return 0;
	if (a->nelems > b->dec->size)
		return fail(b, name, "%u elements in a %zu-byte record",
			    a->nelems, b->dec->size);
	if (bit_off % 8)
		return fail(b, name, "array not on a byte boundary");
	if (is_char_type(b->btf, elem))
		return add_leaf(b, name, bit_off, a->nelems * 8, LEAF_CHARS,
				CONV_NONE, false, -1);
	if (btf_is_int(elem) && elem->size == 1)
		return add_leaf(b, name, bit_off, a->nelems * 8, LEAF_BYTES,
				CONV_NONE, false, -1);
	elem_size = btf__resolve_size(b->btf, elem_id);
	if (elem_size < 0)
		return fail(b, name, "array element of no known size");
	for (uint32_t i = 0; i < a->nelems; i++) {
		if (snprintf(sub, sizeof(sub), "%s[%u]", name, i) >=
		    (int)sizeof(sub))
			return fail(b, name, "name longer than %d bytes",
				    DECODE_MAX_NAME - 1);
		if (walk(b, elem_id, sub, lname, bit_off + i * elem_size * 8,
			 0, depth + 1))
			return -1;
	}
	return 0;
}

static int walk_members(struct builder *b, const struct btf_type *t,
			const char *name, const char *lname,
			uint64_t bit_off, int depth)
{
	const struct btf_member *m = btf_members(t);
	char sub[DECODE_MAX_NAME], sub_lname[DECODE_MAX_NAME];

	for (uint16_t i = 0; i < btf_vlen(t); i++) {
		const char *mname = btf__name_by_offset(b->btf, m[i].name_off);
		uint32_t bitfield = btf_member_bitfield_size(t, i);
		uint64_t off = bit_off + btf_member_bit_offset(t, i);
		uint32_t mid = m[i].type;
		const struct btf_type *mt = skip_modifiers(b->btf, &mid);

		if (!mname || !*mname) {
			/* anonymous struct/union: its members are ours;
			 * anything else unnamed is padding */
			if (mt && (btf_is_struct(mt) || btf_is_union(mt)) &&
			    walk(b, m[i].type, name, lname, off, 0, depth + 1))
				return -1;
			continue;
		}
		if (snprintf(sub, sizeof(sub), "%s%s%s", name,
			     *name ? "." : "", mname) >= (int)sizeof(sub))
			return fail(b, name, "name longer than %d bytes",
				    DECODE_MAX_NAME - 1);
		lower_copy(sub_lname, sizeof(sub_lname), mname);
		if (walk(b, m[i].type, sub, sub_lname, off, bitfield,
			 depth + 1))
			return -1;
	}
	return 0;
}

static int walk_datasec(struct builder *b, const struct btf_type *t,
			const char *name, uint64_t bit_off, int depth)
{
	const struct btf_var_secinfo *v = btf_var_secinfos(t);
	char sub[DECODE_MAX_NAME], sub_lname[DECODE_MAX_NAME];

	for (uint16_t i = 0; i < btf_vlen(t); i++) {
		const struct btf_type *var = btf__type_by_id(b->btf, v[i].type);
		const char *vname;

		if (!var || !btf_is_var(var))
			continue;
		vname = btf__name_by_offset(b->btf, var->name_off);
		if (!vname || !*vname)
			continue;
		snprintf(sub, sizeof(sub), "%s%s%s", name, *name ? "." : "",
			 vname);
		lower_copy(sub_lname, sizeof(sub_lname), vname);
		if (walk(b, var->type, sub, sub_lname,
			 bit_off + (uint64_t)v[i].offset * 8, 0, depth + 1))
			return -1;
	}
	return 0;
}

static int walk(struct builder *b, uint32_t id, const char *name,
		const char *lname, uint64_t bit_off, uint32_t bitfield,
		int depth)
{
	const struct btf_type *t;
	int64_t size;
	int idx;

	if (++b->work > DECODE_MAX_WORK)
		return fail(b, name, "more than %d types to visit",
			    DECODE_MAX_WORK);
	if (depth > DECODE_MAX_DEPTH)
		return fail(b, name, "nested deeper than %d levels",
			    DECODE_MAX_DEPTH);
	if (bit_off > (uint64_t)b->dec->size * 8)
		return fail(b, name, "starts past the end of the record");
	t = skip_modifiers(b->btf, &id);
	if (!t)
		return fail(b, name, "unknown type or a typedef loop");

	/* an address is its bytes, whatever type holds them; strings stay
	 * strings */
	size = btf__resolve_size(b->btf, id);
	if (!bitfield && bit_off % 8 == 0 && (size == 4 || size == 16) &&
	    (btf_is_int(t) || btf_is_composite(t) ||
	     (btf_is_array(t) && !is_char_array(b->btf, t))) &&
	    is_addr_name(lname))
		return add_leaf(b, name, bit_off, size * 8, LEAF_BYTES,
				size == 4 ? CONV_IPV4 : CONV_IPV6, false, -1);

	switch (btf_kind(t)) {
	case BTF_KIND_INT:
		return walk_int(b, t, name, lname, bit_off, bitfield);
	case BTF_KIND_ENUM:
	case BTF_KIND_ENUM64:
		if (t->size != 1 && t->size != 2 && t->size != 4 &&
		    t->size != 8)
			return fail(b, name, "%u-byte enum", t->size);
		if (bitfield > t->size * 8)
			return fail(b, name, "%u-bit field of a %u-byte enum",
				    bitfield, t->size);
		idx = enum_table(b, id, t);
		if (idx < 0)
			return -1;
		return add_leaf(b, name, bit_off,
				bitfield ? bitfield : t->size * 8, LEAF_ENUM,
				CONV_NONE, enum_is_signed(t), idx);
	case BTF_KIND_FLOAT:
		if (bitfield || bit_off % 8)
			return fail(b, name, "float bitfield");
		if (t->size == 4 || t->size == 8)
			return add_leaf(b, name, bit_off, t->size * 8,
					LEAF_REAL, CONV_NONE, true, -1);
		return add_leaf(b, name, bit_off, t->size * 8, LEAF_BYTES,
				CONV_NONE, false, -1);
	case BTF_KIND_PTR: {
		size_t psize = btf__pointer_size(b->btf);

		if (psize != 4)
			psize = 8;
		if (bitfield || bit_off % 8)
			return fail(b, name, "pointer bitfield");
		bool ksym = psize == 8 &&
			    int_conv(lname, 8, false, false) == CONV_KSYM;

		return add_leaf(b, name, bit_off, psize * 8, LEAF_PTR,
				ksym ? CONV_KSYM : CONV_NONE, false, -1);
	}
	case BTF_KIND_ARRAY:
		return walk_array(b, t, name, lname, bit_off, depth);
	case BTF_KIND_STRUCT:
	case BTF_KIND_UNION:
		if (bit_off % 8)
			return fail(b, name, "struct not on a byte boundary");
		return walk_members(b, t, name, lname, bit_off, depth);
	case BTF_KIND_DATASEC:
		return walk_datasec(b, t, name, bit_off, depth);
	default:
		return fail(b, name, "BTF kind %u cannot be decoded",
			    btf_kind(t));
	}
}

/* ================================================================ lifetime */

static size_t decoder_text_max(const struct decoder *dec);

void decode_free(struct decoder *dec)
{
	if (!dec)
		return;
	for (size_t i = 0; i < dec->n_leaves; i++)
		free(dec->leaves[i].name);
	for (size_t i = 0; i < dec->n_enums; i++) {
		for (size_t j = 0; j < dec->enums[i].n; j++)
			free(dec->enums[i].values[j].name);
		free(dec->enums[i].values);
	}
	free(dec->leaves);
	free(dec->enums);
	free(dec);
}

int decode_new(const struct btf *btf, uint32_t type_id, size_t size,
	       struct decoder **out, struct gerr *err)
{
	struct decoder *dec = calloc(1, sizeof(*dec));
	struct builder b = { .btf = btf, .dec = dec, .root_id = type_id,
			     .err = err };
	int64_t type_size;
	int ret = -1;

	*out = NULL;
	if (!dec)
		return gerr_set(err, 500, "out of memory");
	dec->size = size;
	if (!btf || type_id == 0) {
		dec->raw = true;
		dec->text_max = decoder_text_max(dec);
		*out = dec;
		return 0;
	}
	if (!btf__type_by_id(btf, type_id)) {
		gerr_set(err, 422, "BTF has no type id %u", type_id);
		goto out;
	}
	type_size = btf__resolve_size(btf, type_id);
	if (type_size < 0) {
		fail(&b, "", "its size cannot be resolved");
		goto out;
	}
	if ((uint64_t)type_size != size) {
		fail(&b, "", "the type is %" PRId64 " bytes, the record %zu",
		     type_size, size);
		goto out;
	}
	if (walk(&b, type_id, "", "", 0, 0, 0))
		goto out;
	dec->text_max = decoder_text_max(dec);
	*out = dec;
	dec = NULL;
	ret = 0;
out:
	decode_free(dec);
	return ret;
}

bool decode_is_raw(const struct decoder *dec)
{
	return dec->raw;
}

/* ================================================================ kallsyms */

struct ksym {
	uint64_t addr;
	size_t name_off;
};

/* Loaded once and kept for the life of the process. */
static struct ksym *ksyms;
static size_t n_ksyms;
static char *ksym_names;
static pthread_once_t ksyms_once = PTHREAD_ONCE_INIT;

/* Farther than this past the last symbol is not the kernel any more. */
#define KSYM_MAX_OFFSET 0x100000

static int cmp_ksym(const void *a, const void *b)
{
	const struct ksym *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static bool ksym_push(struct ksym **syms, size_t *n, size_t *cap,
		      char **names, size_t *names_len, size_t *names_cap,
		      uint64_t addr, const char *name)
{
	size_t len = strlen(name) + 1;

	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 4096;
		struct ksym *grown = realloc(*syms, c * sizeof(*grown));

		if (!grown)
			return false;
		*syms = grown;
		*cap = c;
	}
	if (*names_len + len > *names_cap) {
		size_t c = *names_cap ? *names_cap * 2 : 65536;
		char *grown;

		while (c < *names_len + len)
			c *= 2;
		grown = realloc(*names, c);
		if (!grown)
			return false;
		*names = grown;
		*names_cap = c;
	}
	memcpy(*names + *names_len, name, len);
	(*syms)[(*n)++] = (struct ksym){ addr, *names_len };
	*names_len += len;
	return true;
}

static void ksyms_load(void)
{
	struct ksym *syms = NULL;
	size_t n = 0, cap = 0, names_len = 0, names_cap = 0;
	char *names = NULL, *line = NULL;
	size_t line_cap = 0;
	FILE *f = fopen("/proc/kallsyms", "re");

	if (!f)
		return;
	while (getline(&line, &line_cap, f) > 0) {
		unsigned long long addr;
		char type, name[256];

		if (sscanf(line, "%llx %c %255s", &addr, &type, name) != 3 ||
		    addr == 0)
			continue;
		if (!ksym_push(&syms, &n, &cap, &names, &names_len,
			       &names_cap, addr, name)) {
			n = 0;
			break;
		}
	}
	free(line);
	fclose(f);
	if (n == 0) {
		free(syms);
		free(names);
		return;
	}
	qsort(syms, n, sizeof(*syms), cmp_ksym);
	ksyms = syms;
	n_ksyms = n;
	ksym_names = names;
}

/* "name" or "name+0x1f" for a kernel address; false when none fits. */
static bool ksym_lookup(uint64_t addr, char *buf, size_t n)
{
	size_t lo = 0, hi;

	pthread_once(&ksyms_once, ksyms_load);
	hi = n_ksyms;
	if (!n_ksyms || addr < ksyms[0].addr ||
	    (addr > ksyms[n_ksyms - 1].addr &&
	     addr - ksyms[n_ksyms - 1].addr > KSYM_MAX_OFFSET))
		return false;
	/* the last symbol at or below addr */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (ksyms[mid].addr <= addr)
			lo = mid;
		else
			hi = mid;
	}
	if (addr == ksyms[lo].addr)
		snprintf(buf, n, "%s", ksym_names + ksyms[lo].name_off);
	else
		snprintf(buf, n, "%s+0x%" PRIx64, ksym_names +
			 ksyms[lo].name_off, addr - ksyms[lo].addr);
	return true;
}

/* ================================================================ cgroups */

struct cgroup_entry {
	uint64_t id;
	char *path;
};

#define CGROUP_MAX_DEPTH	32
#define CGROUP_MAX_ENTRIES	65536
#define CGROUP_RESCAN_NS	1000000000ULL
/* FILEID_KERNFS of the kernel's exportfs.h, which no UAPI header has */
#define KERNFS_HANDLE_TYPE	0xfe

static pthread_mutex_t cgroup_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cgroup_entry *cgroups;
static size_t n_cgroups, cgroups_cap;
static uint64_t cgroup_scanned_ns;	/* 0: never */
static char cgroup_root[PATH_MAX];	/* "" when there is no cgroup v2 */
static bool cgroup_root_sought;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* Undo the octal escapes of /proc/self/mountinfo ("\040" for a space). */
static void unescape_mount_path(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				      (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

/* Where cgroup v2 is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified
 * on hybrid hosts. */
static bool find_cgroup_root(char *buf, size_t n)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (!f)
		return false;
	while (!found && getline(&line, &cap, f) > 0) {
		char mnt[PATH_MAX], *sep = strstr(line, " - ");
		char fstype[32];

		if (!sep || sscanf(sep, " - %31s", fstype) != 1 ||
		    strcmp(fstype, "cgroup2") ||
		    sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1)
			continue;
		unescape_mount_path(mnt);
		found = snprintf(buf, n, "%s", mnt) < (int)n;
	}
	free(line);
	fclose(f);
	return found;
}

static bool cgroup_add(struct cgroup_entry **tab, size_t *n, size_t *cap,
		       uint64_t id, const char *path)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 64;
		struct cgroup_entry *grown = realloc(*tab, c * sizeof(*grown));

		if (!grown)
			return false;
		*tab = grown;
		*cap = c;
	}
	(*tab)[*n].path = strdup(path);
	if (!(*tab)[*n].path)
		return false;
	(*tab)[(*n)++].id = id;
	return true;
}

/* Record every directory under root + rel. A cgroup's id is the inode
 * number of its directory in cgroupfs. */
static bool cgroup_scan(struct cgroup_entry **tab, size_t *n, size_t *cap,
			const char *rel, int depth)
{
	char path[PATH_MAX], sub[PATH_MAX];
	struct dirent *de;
	bool ok = true;
	DIR *d;

	if (depth > CGROUP_MAX_DEPTH)
		return true;
	if (snprintf(path, sizeof(path), "%s%s", cgroup_root, rel) >=
	    (int)sizeof(path))
		return true;
	d = opendir(path);
	if (!d)
		return true;
	while (ok && *n < CGROUP_MAX_ENTRIES && (de = readdir(d))) {
		if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") ||
		    !strcmp(de->d_name, ".."))
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", rel, de->d_name) >=
		    (int)sizeof(sub))
			continue;
		ok = cgroup_add(tab, n, cap, de->d_ino, sub) &&
		     cgroup_scan(tab, n, cap, sub, depth + 1);
	}
	closedir(d);
	return ok;
}

static void cgroups_free(struct cgroup_entry *tab, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(tab[i].path);
	free(tab);
}

/* Called with cgroup_lock held. */
static void cgroups_rescan(void)
{
	struct cgroup_entry *tab = NULL;
	size_t n = 0, cap = 0;
	struct stat st;

	cgroup_scanned_ns = now_ns();
	if (!cgroup_root[0])
		return;
	if (stat(cgroup_root, &st) ||
	    !cgroup_add(&tab, &n, &cap, st.st_ino, "/") ||
	    !cgroup_scan(&tab, &n, &cap, "", 0)) {
		cgroups_free(tab, n);
		return;
	}
	cgroups_free(cgroups, n_cgroups);
	cgroups = tab;
	n_cgroups = n;
	cgroups_cap = cap;
}

static bool cgroup_find(uint64_t id, char *buf, size_t n)
{
	bool found = false;

	for (size_t i = 0; i < n_cgroups && !found; i++)
		if (cgroups[i].id == id)
			found = snprintf(buf, n, "%s", cgroups[i].path) >= 0;
	return found;
}

/* The kernel opens a cgroup by its id as a file handle; the link of the
 * open descriptor is the path. Needs CAP_DAC_READ_SEARCH. Called with
 * cgroup_lock held. */
static bool cgroup_by_handle(uint64_t id, char *buf, size_t n)
{
	struct {
		struct file_handle fh;
		uint64_t id;
	} h = { .fh = { .handle_bytes = sizeof(uint64_t),
			.handle_type = KERNFS_HANDLE_TYPE } };
	char link[64], target[PATH_MAX];
	size_t root_len = strlen(cgroup_root);
	int mount_fd, fd;
	ssize_t len;

	memcpy(h.fh.f_handle, &id, sizeof(id));
	mount_fd = open(cgroup_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mount_fd < 0)
		return false;
	fd = open_by_handle_at(mount_fd, &h.fh, O_RDONLY | O_CLOEXEC);
	close(mount_fd);
	if (fd < 0)
		return false;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	len = readlink(link, target, sizeof(target) - 1);
	close(fd);
	if (len <= 0 || (size_t)len < root_len ||
	    strncmp(target, cgroup_root, root_len))
		return false;
	target[len] = '\0';
	snprintf(buf, n, "%s", target[root_len] ? target + root_len : "/");
	return true;
}

static bool cgroup_lookup(uint64_t id, char *buf, size_t n)
{
	bool found;

	pthread_mutex_lock(&cgroup_lock);
	if (!cgroup_root_sought) {
		cgroup_root_sought = true;
		if (!find_cgroup_root(cgroup_root, sizeof(cgroup_root)))
			cgroup_root[0] = '\0';
	}
	found = cgroup_find(id, buf, n);
	if (!found && cgroup_root[0] && cgroup_by_handle(id, buf, n)) {
		/* ids are never reused: keep it (failing to is harmless) */
		if (n_cgroups < CGROUP_MAX_ENTRIES)
			cgroup_add(&cgroups, &n_cgroups, &cgroups_cap, id, buf);
		found = true;
	}
	if (!found && (!cgroup_scanned_ns ||
		       now_ns() - cgroup_scanned_ns >= CGROUP_RESCAN_NS)) {
		cgroups_rescan();
		found = cgroup_find(id, buf, n);
	}
	pthread_mutex_unlock(&cgroup_lock);
	return found;
}

/* ================================================================ values */

/* A leaf's value (struct decode_value) is computed once, then made a
 * Graind__Field, written to the wire or handed to a visitor. Text lies in
 * the walk's scratch buffer (at least dec->text_max bytes) or in memory
 * that outlives the call (enum value names, errno and syscall names). */

/* Names, kernel symbols and cgroup paths are looked up into a buffer of
 * this size, then escaped: up to 4 bytes each. */
#define LOOKUP_MAX		512
#define LOOKUP_TEXT_MAX		((LOOKUP_MAX - 1) * 4)
#define HEX_TEXT_MAX		(2 + 32)	/* "0x" and a 128-bit int */
#define RAW_TEXT_MAX(n)		((n) * 2 + 3)	/* hex pairs and "..." */

/* The longest text of a leaf. */
static size_t leaf_text_max(const struct leaf *l)
{
	size_t bytes = l->bits / 8;

	switch (l->kind) {
	case LEAF_CHARS:
		return bytes * 4;
	case LEAF_BYTES:
		if (l->conv == CONV_IPV4 || l->conv == CONV_IPV6)
			return INET6_ADDRSTRLEN;
		return bytes * 2;
	case LEAF_SINT:
	case LEAF_UINT:
	case LEAF_PTR:
		if (l->conv == CONV_IFINDEX || l->conv == CONV_KSYM ||
		    l->conv == CONV_CGROUP)
			return LOOKUP_TEXT_MAX;
		return HEX_TEXT_MAX;
	case LEAF_INT128:
		return HEX_TEXT_MAX;
	default:
		return 0;
	}
}

/* Leaves, or the raw fallback of a record shorter than dec->size (so at
 * most dec->size bytes shown), or of any record for a raw decoder. */
static size_t decoder_text_max(const struct decoder *dec)
{
	size_t raw = dec->raw || dec->size > DECODE_RAW_MAX ? DECODE_RAW_MAX :
		     dec->size;
	size_t max = RAW_TEXT_MAX(raw);

	for (size_t i = 0; i < dec->n_leaves; i++) {
		size_t n = leaf_text_max(&dec->leaves[i]);

		if (n > max)
			max = n;
	}
	return max;
}

/* A bitfield, or an integer not on a byte boundary. */
static uint64_t load_bitfield(const uint8_t *data, uint64_t bit_off,
			      uint32_t bits, bool is_signed)
{
	const uint8_t *p = data + bit_off / 8;
	unsigned shift = bit_off % 8;
	unsigned nbytes = (shift + bits + 7) / 8;
	unsigned __int128 acc = 0;
	uint64_t v;

#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	for (unsigned i = 0; i < nbytes; i++)
		acc = acc << 8 | p[i];
	acc >>= nbytes * 8 - shift - bits;
#else
	for (unsigned i = nbytes; i-- > 0;)
		acc = acc << 8 | p[i];
	acc >>= shift;
#endif
	v = (uint64_t)acc;
	if (bits < 64)
		v &= (1ULL << bits) - 1;
	return is_signed ? sign_extend(v, bits) : v;
}

/* Bits [bit_off, bit_off + bits) of the record as an integer; whole
 * bytes, the common case, without a call. */
static inline uint64_t load_bits(const uint8_t *data, uint64_t bit_off,
				 uint32_t bits, bool is_signed)
{
	const uint8_t *p = data + bit_off / 8;
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t v;

	if (bit_off % 8)
		return load_bitfield(data, bit_off, bits, is_signed);
	switch (bits) {
	case 8: memcpy(&u8, p, 1); v = u8; break;
	case 16: memcpy(&u16, p, 2); v = u16; break;
	case 32: memcpy(&u32, p, 4); v = u32; break;
	case 64: memcpy(&v, p, 8); break;
	default: return load_bitfield(data, bit_off, bits, is_signed);
	}
	return is_signed ? sign_extend(v, bits) : v;
}

static const char hex_digits[] = "0123456789abcdef";

/* Bytes a string keeps as they are: printable ASCII but '\'. */
static const bool char_is_plain[256] = {
	[0x20 ... 0x5b] = true,
	[0x5d ... 0x7e] = true,
};

/* Printable ASCII kept, everything else \xNN, up to the first NUL; the
 * length written to out (room for 4 bytes per byte). */
static size_t escape_chars(char *out, const uint8_t *p, size_t n)
{
	char *w = out;

	n = strnlen((const char *)p, n);
	for (size_t i = 0; i < n; i++) {
		if (char_is_plain[p[i]]) {
			*w++ = (char)p[i];
		} else {
			*w++ = '\\';
			*w++ = 'x';
			*w++ = hex_digits[p[i] >> 4];
			*w++ = hex_digits[p[i] & 15];
		}
	}
	return w - out;
}

static size_t hex_bytes(char *out, const uint8_t *p, size_t n, bool more)
{
	char *w = out;

	for (size_t i = 0; i < n; i++) {
		*w++ = hex_digits[p[i] >> 4];
		*w++ = hex_digits[p[i] & 15];
	}
	if (more) {
		memcpy(w, "...", 3);
		w += 3;
	}
	return w - out;
}

/* "0x1f": as printf's "0x%" PRIx64, without printf. */
static size_t hex_number(char *out, uint64_t v)
{
	char digits[16];
	size_t n = 0;

	do {
		digits[n++] = hex_digits[v & 15];
		v >>= 4;
	} while (v);
	out[0] = '0';
	out[1] = 'x';
	for (size_t i = 0; i < n; i++)
		out[2 + i] = digits[n - 1 - i];
	return n + 2;
}

/* "10.0.0.1" from four bytes in network order. */
static size_t ipv4_text(char *out, const uint8_t *p)
{
	char *w = out;

	for (int i = 0; i < 4; i++) {
		unsigned b = p[i];

		if (i)
			*w++ = '.';
		if (b >= 100)
			*w++ = (char)('0' + b / 100);
		if (b >= 10)
			*w++ = (char)('0' + b / 10 % 10);
		*w++ = (char)('0' + b % 10);
	}
	return w - out;
}

static struct decode_value text_value(const char *text, size_t len)
{
	return (struct decode_value){ .is = GRAIND__FIELD__VALUE_TEXT,
				      .text = text, .text_len = len };
}

/* A char array up to its first NUL: the bytes themselves when they are
 * all printable (most are; copying them into scratch first would only
 * slow the copy out of it), else escaped into scratch. */
static struct decode_value chars_value(const uint8_t *p, size_t size, char *scratch)
{
	size_t n = strnlen((const char *)p, size);

	for (size_t i = 0; i < n; i++)
		if (!char_is_plain[p[i]])
			return text_value(scratch, escape_chars(scratch, p, n));
	return text_value((const char *)p, n);
}

/* A name found by lookup, escaped into scratch. */
static struct decode_value found_value(char *scratch, const char *name)
{
	return text_value(scratch, escape_chars(scratch, (const uint8_t *)name,
						strlen(name)));
}

static struct decode_value number_value(uint64_t u, bool is_signed)
{
	if (is_signed)
		return (struct decode_value){ .is = GRAIND__FIELD__VALUE_INT,
					      .i = (int64_t)u };
	return (struct decode_value){ .is = GRAIND__FIELD__VALUE_UINT, .u = u };
}

static const char *errno_name(int64_t v)
{
	if (v < 0)
		v = -v;
	if (v <= 0 || v > 4095)
		return NULL;
	return strerrorname_np((int)v);
}

/* An integer through its naming convention, or as itself. */
static struct decode_value int_value(const struct leaf *l, uint64_t u,
				     char *scratch)
{
	int64_t sv = (int64_t)u;
	char buf[LOOKUP_MAX];
	const char *name = NULL;

	switch (l->conv) {
	case CONV_IFINDEX:
		if (u > 0 && u <= UINT32_MAX &&
		    if_indextoname((unsigned)u, buf))
			return found_value(scratch, buf);
		break;
	case CONV_ERRNO:
		name = errno_name(l->is_signed ? sv : (int64_t)(u & 0xfff));
		if (!l->is_signed && u > 0xfff)
			name = NULL;
		break;
	case CONV_ERRNO_NEG:
		if (sv < 0)
			name = errno_name(sv);
		break;
	case CONV_SYSCALL:
		if (u < decode_syscall_count && decode_syscall_names[u])
			name = decode_syscall_names[u];
		break;
	case CONV_KSYM:
		if (ksym_lookup(u, buf, sizeof(buf)))
			return found_value(scratch, buf);
		return text_value(scratch, hex_number(scratch, u));
	case CONV_CGROUP:
		if (cgroup_lookup(u, buf, sizeof(buf)))
			return found_value(scratch, buf);
		break;
	case CONV_HEX:
		if (l->bits < 64)
			u &= (1ULL << l->bits) - 1;
		return text_value(scratch, hex_number(scratch, u));
	default:
		break;
	}
	if (name)
		return text_value(name, strlen(name));
	return number_value(u, l->is_signed);
}

static struct decode_value enum_leaf_value(const struct decoder *dec,
					   const struct leaf *l, uint64_t u)
{
	const struct enum_table *tab = &dec->enums[l->enum_idx];
	struct enum_value key = { .value = u };
	const struct enum_value *hit;

	hit = bsearch(&key, tab->values, tab->n, sizeof(key), cmp_enum_value);
	if (hit)
		return text_value(hit->name, hit->name_len);
	return number_value(u, l->is_signed);
}

static struct decode_value bytes_value(const struct leaf *l, const uint8_t *p,
				       char *scratch)
{
	if (l->conv == CONV_IPV4)
		return text_value(scratch, ipv4_text(scratch, p));
	if (l->conv == CONV_IPV6 &&
	    inet_ntop(AF_INET6, p, scratch, INET6_ADDRSTRLEN))
		return text_value(scratch, strlen(scratch));
	return text_value(scratch, hex_bytes(scratch, p, l->bits / 8, false));
}

static struct decode_value int128_value(const uint8_t *p, char *scratch)
{
	uint64_t lo, hi;
	size_t n;

#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	memcpy(&hi, p, 8);
	memcpy(&lo, p + 8, 8);
#else
	memcpy(&lo, p, 8);
	memcpy(&hi, p + 8, 8);
#endif
	if (!hi)
		return text_value(scratch, hex_number(scratch, lo));
	n = hex_number(scratch, hi);
	for (int shift = 60; shift >= 0; shift -= 4)
		scratch[n++] = hex_digits[lo >> shift & 15];
	return text_value(scratch, n);
}

static struct decode_value real_value(const uint8_t *p, uint32_t bits)
{
	struct decode_value v = { .is = GRAIND__FIELD__VALUE_REAL };

	if (bits == 32) {
		float x;

		memcpy(&x, p, sizeof(x));
		v.real = x;
	} else {
		memcpy(&v.real, p, sizeof(v.real));
	}
	return v;
}

/* The one place a leaf's value is computed. */
static struct decode_value leaf_value(const struct decoder *dec,
				      const struct leaf *l, const uint8_t *data,
				      char *scratch)
{
	const uint8_t *p = data + l->bit_off / 8;
	uint64_t u;

	switch (l->kind) {
	case LEAF_SINT:
	case LEAF_UINT:
		if (l->conv == CONV_PORT)
			return number_value((uint64_t)p[0] << 8 | p[1], false);
		u = load_bits(data, l->bit_off, l->bits, l->is_signed);
		if (l->conv == CONV_NONE)
			return number_value(u, l->is_signed);
		return int_value(l, u, scratch);
	case LEAF_BOOL:
		return (struct decode_value){
			.is = GRAIND__FIELD__VALUE_FLAG,
			.flag = load_bits(data, l->bit_off, l->bits, false) != 0,
		};
	case LEAF_ENUM:
		u = load_bits(data, l->bit_off, l->bits, l->is_signed);
		return enum_leaf_value(dec, l, u);
	case LEAF_REAL:
		return real_value(p, l->bits);
	case LEAF_CHARS:
		return chars_value(p, l->bits / 8, scratch);
	case LEAF_BYTES:
		return bytes_value(l, p, scratch);
	case LEAF_PTR:
		u = load_bits(data, l->bit_off, l->bits, false);
		if (l->conv == CONV_KSYM)
			return int_value(l, u, scratch);
		return text_value(scratch, hex_number(scratch, u));
	case LEAF_INT128:
		return int128_value(p, scratch);
	}
	return (struct decode_value){ .is = GRAIND__FIELD__VALUE__NOT_SET };
}

/* ---------------------------------------------------------------- records */

static bool record_is_raw(const struct decoder *dec, size_t len)
{
	return dec->raw || len < dec->size;
}

static size_t record_leaves(const struct decoder *dec, size_t len)
{
	return record_is_raw(dec, len) ? 2 : dec->n_leaves;
}

/* Without BTF, or too short for it: "raw" and "size". */
static int raw_leaves(const uint8_t *data, size_t len, char *scratch,
		      decode_visit_fn sink, void *ctx)
{
	size_t shown = len < DECODE_RAW_MAX ? len : DECODE_RAW_MAX;
	struct decode_value v;
	int ret;

	v = text_value(scratch, hex_bytes(scratch, data, shown, shown < len));
	ret = sink(ctx, "raw", 3, &v);
	if (ret)
		return ret;
	v = number_value(len, false);
	return sink(ctx, "size", 4, &v);
}

/* Scratch for the texts: on the stack unless the decoder's longest text
 * does not fit there (huge char arrays). */
#define STACK_SCRATCH	16384

static int walk_record(const struct decoder *dec, const void *data,
		       size_t len, decode_visit_fn sink, void *ctx)
{
	char stack[STACK_SCRATCH];
	char *scratch = stack;
	int ret = 0;

	if (dec->text_max > sizeof(stack)) {
		scratch = malloc(dec->text_max);
		if (!scratch)
			return -1;
	}
	if (record_is_raw(dec, len)) {
		ret = raw_leaves(data, len, scratch, sink, ctx);
		goto out;
	}
	for (size_t i = 0; i < dec->n_leaves && !ret; i++) {
		const struct leaf *l = &dec->leaves[i];
		struct decode_value v = leaf_value(dec, l, data, scratch);

		ret = sink(ctx, l->name, l->name_len, &v);
	}
out:
	if (scratch != stack)
		free(scratch);
	return ret;
}

int decode_visit(const struct decoder *dec, const void *data, size_t len,
		 decode_visit_fn fn, void *ctx)
{
	return walk_record(dec, data, len, fn, ctx);
}

/* The caller's prefix, put before every leaf name: "key" + "addr" =
 * "key.addr", "key" + "[0]" = "key[0]", "key" + "" = "key". */
struct prefix {
	const char *s;
	size_t len;
};

static struct prefix prefix_of(const char *s)
{
	if (!s)
		s = "";
	return (struct prefix){ s, strlen(s) };
}

static bool joins_with_dot(const struct prefix *pre, const char *name,
			   size_t name_len)
{
	return pre->len && name_len && name[0] != '[';
}

/* ---------------------------------------------------------------- fields */

struct fields_out {
	struct prefix prefix;
	Graind__Field **fields;
	size_t *n;
};

static char *full_name(const struct prefix *pre, const char *name,
		       size_t name_len)
{
	bool dot = joins_with_dot(pre, name, name_len);
	char *full = malloc(pre->len + dot + name_len + 1);

	if (!full)
		return NULL;
	memcpy(full, pre->s, pre->len);
	if (dot)
		full[pre->len] = '.';
	memcpy(full + pre->len + dot, name, name_len);
	full[pre->len + dot + name_len] = '\0';
	return full;
}

static int field_from_value(Graind__Field *f, const struct decode_value *v)
{
	switch (v->is) {
	case GRAIND__FIELD__VALUE_INT:
		f->int_ = v->i;
		break;
	case GRAIND__FIELD__VALUE_UINT:
		f->uint = v->u;
		break;
	case GRAIND__FIELD__VALUE_REAL:
		f->real = v->real;
		break;
	case GRAIND__FIELD__VALUE_FLAG:
		f->flag = v->flag;
		break;
	case GRAIND__FIELD__VALUE_TEXT:
		f->text = malloc(v->text_len + 1);
		if (!f->text)
			return -1;
		memcpy(f->text, v->text, v->text_len);
		f->text[v->text_len] = '\0';
		break;
	default:
		return -1;
	}
	f->value_case = v->is;
	return 0;
}

static int field_out(void *ctx, const char *name, size_t name_len,
		     const struct decode_value *v)
{
	struct fields_out *out = ctx;
	Graind__Field *f =
		(Graind__Field *)pbmsg_new(&graind__field__descriptor);

	if (!f)
		return -1;
	out->fields[(*out->n)++] = f;
	if (pbmsg_take_string(&f->name, full_name(&out->prefix, name,
						  name_len)))
		return -1;
	return field_from_value(f, v);
}

static int append(Graind__Field ***fields, size_t *n, size_t more)
{
	Graind__Field **grown = realloc(*fields, (*n + more) * sizeof(*grown));

	if (!grown)
		return -1;
	*fields = grown;
	return 0;
}

int decode_fields(const struct decoder *dec, const void *data, size_t len,
		  const char *prefix, Graind__Field ***fields, size_t *n)
{
	size_t more = record_leaves(dec, len);
	struct fields_out out = { .prefix = prefix_of(prefix), .n = n };

	if (more && append(fields, n, more))
		return -1;
	out.fields = *fields;
	return walk_record(dec, data, len, field_out, &out);
}

/* ---------------------------------------------------------------- wire */

/* graind.Field's members: tags, wire types. */
#define FIELD_NAME_TAG	(1 << 3 | PBWIRE_LEN)
#define FIELD_INT_TAG	(2 << 3 | PBWIRE_VARINT)
#define FIELD_UINT_TAG	(3 << 3 | PBWIRE_VARINT)
#define FIELD_REAL_TAG	(4 << 3 | PBWIRE_FIXED64)
#define FIELD_TEXT_TAG	(5 << 3 | PBWIRE_LEN)
#define FIELD_FLAG_TAG	(6 << 3 | PBWIRE_VARINT)

struct wire_out {
	struct prefix prefix;
	uint64_t tag;		/* of the Field in the enclosing message */
	bool unnamed;		/* leave the names out */
	struct pbwire *w;
};

/* The oneof member's bytes, tag included (one byte for each). */
static size_t value_size(const struct decode_value *v)
{
	switch (v->is) {
	case GRAIND__FIELD__VALUE_INT:
		return 1 + pbwire_varint_size((uint64_t)v->i);
	case GRAIND__FIELD__VALUE_UINT:
		return 1 + pbwire_varint_size(v->u);
	case GRAIND__FIELD__VALUE_REAL:
		return 1 + sizeof(double);
	case GRAIND__FIELD__VALUE_FLAG:
		return 2;
	case GRAIND__FIELD__VALUE_TEXT:
		return 1 + pbwire_varint_size(v->text_len) + v->text_len;
	default:
		return 0;
	}
}

static uint8_t *put_value(uint8_t *p, const struct decode_value *v)
{
	switch (v->is) {
	case GRAIND__FIELD__VALUE_INT:
		*p++ = FIELD_INT_TAG;
		return p + pbwire_varint_at(p, (uint64_t)v->i);
	case GRAIND__FIELD__VALUE_UINT:
		*p++ = FIELD_UINT_TAG;
		return p + pbwire_varint_at(p, v->u);
	case GRAIND__FIELD__VALUE_REAL:
		*p++ = FIELD_REAL_TAG;
		memcpy(p, &v->real, sizeof(double));	/* little-endian */
		return p + sizeof(double);
	case GRAIND__FIELD__VALUE_FLAG:
		*p++ = FIELD_FLAG_TAG;
		*p++ = v->flag;
		return p;
	case GRAIND__FIELD__VALUE_TEXT:
		*p++ = FIELD_TEXT_TAG;
		p += pbwire_varint_at(p, v->text_len);
		memcpy(p, v->text, v->text_len);
		return p + v->text_len;
	default:
		return p;
	}
}

/* One graind.Field, its length known before it is written: room is made
 * once and the bytes go straight in. An empty name is left out, as
 * protobuf-c leaves out a proto3 string at its default; so is a value
 * NOT_SET. */
static int wire_field(void *ctx, const char *name, size_t name_len,
		      const struct decode_value *v)
{
	struct wire_out *out = ctx;
	const struct prefix *pre = &out->prefix;
	bool dot = joins_with_dot(pre, name, name_len);
	size_t full = out->unnamed ? 0 : pre->len + dot + name_len;
	size_t body = value_size(v), total;
	uint8_t *p;

	if (full)
		body += 1 + pbwire_varint_size(full) + full;
	total = pbwire_varint_size(out->tag) + pbwire_varint_size(body) + body;
	if (out->w->cap - out->w->len < total && !pbwire_reserve(out->w, total))
		return -1;
	p = out->w->data + out->w->len;
	p += pbwire_varint_at(p, out->tag);
	p += pbwire_varint_at(p, body);
	if (full) {
		*p++ = FIELD_NAME_TAG;
		p += pbwire_varint_at(p, full);
		memcpy(p, pre->s, pre->len);
		p += pre->len;
		if (dot)
			*p++ = '.';
		memcpy(p, name, name_len);
		p += name_len;
	}
	p = put_value(p, v);
	out->w->len = p - out->w->data;
	return 0;
}

/* Every leaf of the record as a Field, named or not. */
static int pack_record(const struct decoder *dec, const void *data, size_t len,
		       const char *prefix, uint32_t field_no, bool unnamed,
		       struct pbwire *w)
{
	struct wire_out out = {
		.prefix = prefix_of(prefix),
		.tag = (uint64_t)field_no << 3 | PBWIRE_LEN,
		.unnamed = unnamed,
		.w = w,
	};

	if (w->failed)
		return -1;
	if (walk_record(dec, data, len, wire_field, &out)) {
		w->failed = true;
		return -1;
	}
	return 0;
}

int decode_pack_fields(const struct decoder *dec, const void *data,
		       size_t len, const char *prefix, uint32_t field_no,
		       struct pbwire *w)
{
	return pack_record(dec, data, len, prefix, field_no, false, w);
}

int decode_pack_names(const struct decoder *dec, const char *prefix, uint32_t field_no,
		      struct pbwire *w)
{
	const struct decode_value name_only = { .is = GRAIND__FIELD__VALUE__NOT_SET };
	struct wire_out out = {
		.prefix = prefix_of(prefix),
		.tag = (uint64_t)field_no << 3 | PBWIRE_LEN,
		.w = w,
	};

	if (dec->raw)
		return w->failed ? -1 : 0;
	for (size_t i = 0; i < dec->n_leaves && !w->failed; i++)
		if (wire_field(&out, dec->leaves[i].name, dec->leaves[i].name_len, &name_only))
			w->failed = true;
	return w->failed ? -1 : 0;
}

int decode_pack_values(const struct decoder *dec, const void *data, size_t len,
		       const char *prefix, uint32_t field_no, struct pbwire *w)
{
	return pack_record(dec, data, len, prefix, field_no, !record_is_raw(dec, len), w);
}

/* ================================================================ reading */

/* Decimal digits of u, written backwards ending at end. */
static char *decimal_before(char *end, uint64_t u)
{
	do {
		*--end = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	return end;
}

/* Up to n - 1 bytes of text into buf, NUL-terminated: stops at a NUL as
 * "%s" would. */
static size_t copy_text(char *buf, size_t n, const char *text, size_t len)
{
	len = strnlen(text, len);
	if (len > n - 1)
		len = n - 1;
	memcpy(buf, text, len);
	buf[len] = '\0';
	return len;
}

size_t decode_value_text(const struct decode_value *v, char *buf, size_t n)
{
	char digits[24], *end = digits + sizeof(digits), *p;
	uint64_t magnitude;
	int len;

	if (!n)
		return 0;
	switch (v->is) {
	case GRAIND__FIELD__VALUE_INT:
		magnitude = v->i < 0 ? -(uint64_t)v->i : (uint64_t)v->i;
		p = decimal_before(end, magnitude);
		if (v->i < 0)
			*--p = '-';
		return copy_text(buf, n, p, end - p);
	case GRAIND__FIELD__VALUE_UINT:
		p = decimal_before(end, v->u);
		return copy_text(buf, n, p, end - p);
	case GRAIND__FIELD__VALUE_REAL:
		len = snprintf(buf, n, "%.17g", v->real);
		return (size_t)len < n ? (size_t)len : n - 1;
	case GRAIND__FIELD__VALUE_TEXT:
		return copy_text(buf, n, v->text, v->text_len);
	case GRAIND__FIELD__VALUE_FLAG:
		return v->flag ? copy_text(buf, n, "true", 4) :
				 copy_text(buf, n, "false", 5);
	default:
		buf[0] = '\0';
		return 0;
	}
}

bool decode_value_number(const struct decode_value *v, double *out)
{
	switch (v->is) {
	case GRAIND__FIELD__VALUE_INT:
		*out = (double)v->i;
		return true;
	case GRAIND__FIELD__VALUE_UINT:
		*out = (double)v->u;
		return true;
	case GRAIND__FIELD__VALUE_REAL:
		*out = v->real;
		return true;
	case GRAIND__FIELD__VALUE_FLAG:
		*out = v->flag ? 1 : 0;
		return true;
	default:
		return false;
	}
}

/* A field's value as the visitor would have seen it. */
static struct decode_value value_of_field(const Graind__Field *f)
{
	struct decode_value v = { .is = f->value_case };

	switch (f->value_case) {
	case GRAIND__FIELD__VALUE_INT:
		v.i = f->int_;
		break;
	case GRAIND__FIELD__VALUE_UINT:
		v.u = f->uint;
		break;
	case GRAIND__FIELD__VALUE_REAL:
		v.real = f->real;
		break;
	case GRAIND__FIELD__VALUE_FLAG:
		v.flag = f->flag;
		break;
	case GRAIND__FIELD__VALUE_TEXT:
		v.text = f->text ? f->text : "";
		v.text_len = strlen(v.text);
		break;
	default:
		break;
	}
	return v;
}

void decode_field_text(const Graind__Field *f, char *buf, size_t n)
{
	struct decode_value v = value_of_field(f);

	decode_value_text(&v, buf, n);
}

bool decode_field_number(const Graind__Field *f, double *out)
{
	struct decode_value v = value_of_field(f);

	return decode_value_number(&v, out);
}
