/* kbtf: the kernel's BTF cut to what an object's CO-RE relocations can
 * reach, so that loading it does not parse all of /sys/kernel/btf/vmlinux
 * (megabytes, most of an attach's time) every time.
 *
 * libbpf resolves a relocation against the kernel types whose name is the
 * local type's (up to a "___flavour" suffix) and whose kind is the same;
 * it reads their members by the relocation's access string, which goes
 * through nested structs and arrays but never through a pointer, and
 * takes any pointer as compatible with any other. So the cut holds every
 * such candidate whole, every type it reaches without going through a
 * pointer, and, behind pointers, only the shape of what is there: structs
 * and unions by name and size, without members. libbpf then finds the
 * same candidates at the same offsets as in the whole BTF, and writes the
 * same instructions (tests/unit/test_elfchk.c compares them).
 *
 * The cut is not used, and the whole BTF is, where it would differ: a
 * relocation that asks for a kernel type id (ids differ in the cut), one
 * that compares types whole (through pointers), or a type the kernel
 * itself lacks (libbpf would then look in the modules' BTF).
 *
 * A cut is made at the first load of an object in a run and kept in a
 * memfd, by the object's sha256, for the rest of the run: a path given
 * out stays valid. Past CACHE_SLOTS objects, new ones use the whole BTF.
 * GRAIND_WHOLE_KERNEL_BTF=1 makes every load use the whole BTF. */
#define _GNU_SOURCE /* memfd_create */
#include "server/elf/internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <bpf/btf.h>

#include "server/util/log.h"
#include "server/util/sha256.h"

/* .BTF.ext's header up to its CO-RE relocations, and one relocation. */
struct ext_header {
	uint16_t magic;
	uint8_t version;
	uint8_t flags;
	uint32_t hdr_len;
	uint32_t func_info_off, func_info_len;
	uint32_t line_info_off, line_info_len;
	uint32_t core_relo_off, core_relo_len;
};

struct core_relo {
	uint32_t insn_off, type_id, access_str_off, kind;
};

/* enum bpf_core_relo_kind, from the kernel's uapi. */
enum {
	RELO_TYPE_ID_LOCAL = 6,
	RELO_TYPE_ID_TARGET = 7,
	RELO_TYPE_EXISTS = 8,
	RELO_TYPE_SIZE = 9,
	RELO_TYPE_MATCHES = 12,
};

#define BTF_EXT_MAGIC 0xeB9F
#define CACHE_SLOTS 256

/* ---------------------------------------------------------------- the cut */

enum keep { DROP, SHAPE, WHOLE };

struct cut {
	const struct btf *kernel;
	uint32_t n;             /* types in kernel, void included */
	uint8_t *keep;          /* enum keep, by kernel type id */
	uint32_t *stack;        /* to walk: 2 n, as a type goes in as a shape, then whole */
	size_t depth;
};

/* Keep type `id` at least as `how`; what it refers to follows in walk(). */
static void mark(struct cut *c, uint32_t id, enum keep how)
{
	if (id == 0 || id >= c->n || c->keep[id] >= how)
		return;
	c->keep[id] = (uint8_t)how;
	c->stack[c->depth++] = id;
}

/* Each type taken in brings in what it refers to: whole, except behind a
 * pointer, and except the members of what is kept as a shape only. */
static void walk(struct cut *c)
{
	while (c->depth) {
		uint32_t id = c->stack[--c->depth];
		const struct btf_type *t = btf__type_by_id(c->kernel, id);
		enum keep how = (enum keep)c->keep[id];
		uint16_t vlen = btf_vlen(t);

		switch (btf_kind(t)) {
		case BTF_KIND_PTR:
			mark(c, t->type, SHAPE);
			break;
		case BTF_KIND_TYPEDEF:
		case BTF_KIND_VOLATILE:
		case BTF_KIND_CONST:
		case BTF_KIND_RESTRICT:
		case BTF_KIND_TYPE_TAG:
			mark(c, t->type, how);
			break;
		case BTF_KIND_ARRAY:
			mark(c, btf_array(t)->type, how);
			mark(c, btf_array(t)->index_type, how);
			break;
		case BTF_KIND_STRUCT:
		case BTF_KIND_UNION:
			for (uint16_t i = 0; how == WHOLE && i < vlen; i++)
				mark(c, btf_members(t)[i].type, WHOLE);
			break;
		case BTF_KIND_FUNC_PROTO:
			mark(c, t->type, how);
			for (uint16_t i = 0; i < vlen; i++)
				mark(c, btf_params(t)[i].type, how);
			break;
		default:        /* int, enum, float, fwd: nothing further */
			break;
		}
	}
}

/* The name without its "___flavour", as libbpf reads it: up to the last
 * X___Y where neither X nor Y is an underscore. */
static size_t essential_len(const char *name)
{
	size_t n = strlen(name);

	for (size_t i = n >= 5 ? n - 5 + 1 : 0; i-- > 0;)
		if (name[i] != '_' && !strncmp(name + i + 1, "___", 3) && name[i + 4] != '_')
			return i + 1;
	return n;
}

/* libbpf matches an enum with an enum64 too. */
static bool kinds_match(const struct btf_type *a, const struct btf_type *b)
{
	return btf_kind(a) == btf_kind(b) ||
	       ((btf_is_enum(a) || btf_is_enum64(a)) && (btf_is_enum(b) || btf_is_enum64(b)));
}

/* Mark whole every kernel type a relocation on local type `local_id` may
 * resolve to; false when there is none. */
static bool mark_candidates(struct cut *c, const struct btf *local, uint32_t local_id)
{
	const struct btf_type *lt = btf__type_by_id(local, local_id);
	const char *name = lt ? btf__name_by_offset(local, lt->name_off) : NULL;
	size_t len = name ? essential_len(name) : 0;
	bool found = false;

	if (!len)
		return false;
	for (uint32_t id = 1; id < c->n; id++) {
		const struct btf_type *t = btf__type_by_id(c->kernel, id);
		const char *tn;

		if (!kinds_match(t, lt))
			continue;
		tn = btf__name_by_offset(c->kernel, t->name_off);
		if (tn && essential_len(tn) == len && !strncmp(tn, name, len)) {
			mark(c, id, WHOLE);
			found = true;
		}
	}
	return found;
}

/* Mark the candidates of every CO-RE relocation of the object; false,
 * with *why, when the object is to be loaded against the whole BTF. */
static bool mark_relocations(struct cut *c, const void *buf, size_t len, const struct btf *local,
			     const char **why)
{
	const uint8_t *ext, *p, *end;
	struct ext_header h = { 0 };
	uint32_t rec_size, n_local = btf__type_cnt(local);
	uint8_t *done = NULL;   /* by local type id: its candidates are marked */
	size_t size;
	bool any = false, ok = false;

	*why = "no CO-RE relocations";
	ext = elfchk_section(buf, len, ".BTF.ext", &size);
	if (!ext || size < 8)
		return false;
	memcpy(&h, ext, size < sizeof(h) ? size : sizeof(h));
	if (h.magic != BTF_EXT_MAGIC || h.hdr_len < sizeof(h) || h.hdr_len > size ||
	    h.core_relo_off > size - h.hdr_len || h.core_relo_len > size - h.hdr_len - h.core_relo_off ||
	    h.core_relo_len < 4)
		return false;
	p = ext + h.hdr_len + h.core_relo_off;
	end = p + h.core_relo_len;
	memcpy(&rec_size, p, 4);
	p += 4;
	if (rec_size < sizeof(struct core_relo))
		return false;
	*why = "out of memory";
	done = calloc(n_local, 1);
	if (!done)
		return false;
	*why = "no CO-RE relocations";
	while ((size_t)(end - p) >= 8) {
		uint32_t count;

		memcpy(&count, p + 4, 4);
		p += 8;
		if (count > (size_t)(end - p) / rec_size)
			goto out;
		for (uint32_t i = 0; i < count; i++, p += rec_size) {
			struct core_relo r;

			memcpy(&r, p, sizeof(r));
			if (r.kind == RELO_TYPE_ID_LOCAL)
				continue;
			if (r.kind == RELO_TYPE_ID_TARGET || r.kind == RELO_TYPE_EXISTS ||
			    r.kind == RELO_TYPE_SIZE || r.kind >= RELO_TYPE_MATCHES) {
				*why = "a relocation compares whole types or asks for a kernel type id";
				goto out;
			}
			/* Many relocations name the same type: its candidates
			 * are looked for once (a look reads every kernel type). */
			if (r.type_id < n_local && done[r.type_id]) {
				any = true;
				continue;
			}
			if (!mark_candidates(c, local, r.type_id)) {
				*why = "a relocated type is not in the kernel's own BTF";
				goto out;
			}
			if (r.type_id < n_local)        /* the bound beside the write */
				done[r.type_id] = 1;
			any = true;
		}
	}
	ok = any;
out:
	free(done);
	return ok;
}

/* The id fields of type t, copied from the kernel's BTF, renumbered. */
static void renumber(struct btf_type *t, const uint32_t *new_id)
{
	uint16_t vlen = btf_vlen(t);

	switch (btf_kind(t)) {
	case BTF_KIND_PTR:
	case BTF_KIND_TYPEDEF:
	case BTF_KIND_VOLATILE:
	case BTF_KIND_CONST:
	case BTF_KIND_RESTRICT:
	case BTF_KIND_TYPE_TAG:
		t->type = new_id[t->type];
		break;
	case BTF_KIND_ARRAY:
		btf_array(t)->type = new_id[btf_array(t)->type];
		btf_array(t)->index_type = new_id[btf_array(t)->index_type];
		break;
	case BTF_KIND_STRUCT:
	case BTF_KIND_UNION:
		for (uint16_t i = 0; i < vlen; i++)
			btf_members(t)[i].type = new_id[btf_members(t)[i].type];
		break;
	case BTF_KIND_FUNC_PROTO:
		t->type = new_id[t->type];
		for (uint16_t i = 0; i < vlen; i++)
			btf_params(t)[i].type = new_id[btf_params(t)[i].type];
		break;
	default:
		break;
	}
}

/* The kept types, in the kernel's order, as a BTF of their own. */
static struct btf *write_cut(const struct cut *c)
{
	struct btf *out = btf__new_empty();
	uint32_t *new_id = calloc(c->n, sizeof(*new_id));
	uint32_t next = 1;

	if (!out || !new_id)
		goto fail;
	for (uint32_t id = 1; id < c->n; id++)
		if (c->keep[id] != DROP)
			new_id[id] = next++;
	for (uint32_t id = 1; id < c->n; id++) {
		const struct btf_type *t = btf__type_by_id(c->kernel, id);
		const char *name = btf__name_by_offset(c->kernel, t->name_off);
		bool shape = c->keep[id] == SHAPE && btf_is_composite(t);
		int added;

		if (c->keep[id] == DROP)
			continue;
		if (shape)
			added = btf_is_struct(t) ? btf__add_struct(out, name, t->size)
						 : btf__add_union(out, name, t->size);
		else
			added = btf__add_type(out, c->kernel, t);
		if (added < 0)
			goto fail;
		if (!shape)
			renumber((struct btf_type *)btf__type_by_id(out, (uint32_t)added), new_id);
	}
	free(new_id);
	return out;
fail:
	free(new_id);
	btf__free(out);
	return NULL;
}

struct btf *elfchk_btf_cut(const void *buf, size_t len, const struct btf *kernel,
			   const char **why)
{
	const void *raw;
	size_t raw_len;
	struct btf *local, *out = NULL;
	struct cut c = { .kernel = kernel };

	*why = "the object has no BTF";
	raw = elfchk_section(buf, len, ".BTF", &raw_len);
	if (!raw || raw_len > UINT32_MAX || !(local = btf__new(raw, (uint32_t)raw_len)))
		return NULL;
	*why = "out of memory";
	c.n = btf__type_cnt(kernel);
	c.keep = calloc(c.n, 1);
	c.stack = calloc(2 * (size_t)c.n, sizeof(*c.stack));  /* a type is pushed at most twice */
	if (c.keep && c.stack && mark_relocations(&c, buf, len, local, why)) {
		walk(&c);
		*why = "out of memory";
		out = write_cut(&c);
	}
	free(c.keep);
	free(c.stack);
	btf__free(local);
	return out;
}

/* A memfd holding the cut for the object in buf; -1 when the whole BTF
 * is to be used. */
static int make_cut(const void *buf, size_t len)
{
	const char *why = "the kernel's BTF cannot be read";
	struct btf *kernel, *out = NULL;
	const void *data = NULL;
	uint32_t data_len;
	int fd = -1;

	kernel = btf__load_vmlinux_btf();
	if (kernel)
		out = elfchk_btf_cut(buf, len, kernel, &why);
	if (out)
		data = btf__raw_data(out, &data_len);
	if (data) {
		fd = memfd_create("graind-kbtf", MFD_CLOEXEC);
		if (fd >= 0 && write(fd, data, data_len) != (ssize_t)data_len) {
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		log_debug("msg=\"kernel BTF cut for an object\" types=%u of=%u bytes=%u",
			  btf__type_cnt(out) - 1, btf__type_cnt(kernel) - 1, data_len);
	else
		log_debug("msg=\"object loads against the whole kernel BTF\" reason=\"%s\"", why);
	btf__free(out);
	btf__free(kernel);
	return fd;
}

/* ---------------------------------------------------------------- cache */

struct slot {
	uint8_t sha[32];
	int fd;                 /* -1: the whole BTF */
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot cache[CACHE_SLOTS];
static unsigned cache_used;

void elfchk_kernel_btf(const void *buf, size_t len, char path[ELFCHK_BTF_PATH_MAX])
{
	uint8_t sha[32];
	struct slot *s = NULL;

	path[0] = '\0';
	if (getenv("GRAIND_WHOLE_KERNEL_BTF"))
		return;
	sha256(buf, len, sha);
	pthread_mutex_lock(&cache_lock);
	for (unsigned i = 0; i < cache_used && !s; i++)
		if (!memcmp(cache[i].sha, sha, sizeof(sha)))
			s = &cache[i];
	if (!s && cache_used < CACHE_SLOTS) {
		s = &cache[cache_used++];
		memcpy(s->sha, sha, sizeof(sha));
		s->fd = make_cut(buf, len);
	}
	if (s && s->fd >= 0)
		snprintf(path, ELFCHK_BTF_PATH_MAX, "/proc/self/fd/%d", s->fd);
	pthread_mutex_unlock(&cache_lock);
}
