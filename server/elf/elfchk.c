/* elfchk: describe an uploaded object (elfchk_inspect) after checking its
 * structure; the libbpf print hook shared by the whole process. */
#include "server/elf/elfchk.h"
#include "server/elf/internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <bpf/btf.h>

#include "server/util/pbmsg.h"
#include "server/util/utf8.h"
#include "server/util/log.h"

/* libbpf names internal maps "<object name prefix><section>". */
#define OBJECT_NAME "graind"

static __thread struct elfchk_capture *capture;

static void copy_line(char *dst, size_t n, const char *src)
{
	size_t len = strnlen(src, n - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt,
			va_list ap)
{
	char line[512], *text = line;
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == ' '))
		line[--n] = '\0';
	if (strncmp(text, "libbpf: ", 8) == 0)
		text += 8;
	if (!*text)
		return 0;
	if (capture) {
		if (level == LIBBPF_WARN && !capture->first_warn[0])
			copy_line(capture->first_warn, sizeof(capture->first_warn), text);
		copy_line(capture->last, sizeof(capture->last), text);
		return 0;
	}
	if (level == LIBBPF_WARN)
		log_warn("msg=\"libbpf: %s\"", text);
	else
		log_debug("msg=\"libbpf: %s\"", text);
	return 0;
}

static void init_once(void)
{
	struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };

	libbpf_set_print(libbpf_print);
	/* Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK. */
	setrlimit(RLIMIT_MEMLOCK, &unlimited);
}

void elfchk_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, init_once);
}

void elfchk_capture_begin(struct elfchk_capture *cap)
{
	elfchk_init();
	cap->first_warn[0] = '\0';
	cap->last[0] = '\0';
	capture = cap;
}

void elfchk_capture_end(void)
{
	capture = NULL;
}

struct bpf_object *elfchk_open(const void *buf, size_t len, bool for_load, int *has_btf,
			       int *has_btf_ext, struct gerr *err)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts,
		.object_name = OBJECT_NAME,
		.kernel_log_level = 0,
	);
	char kernel_btf[ELFCHK_BTF_PATH_MAX];
	struct elfchk_capture cap;
	struct bpf_object *obj;
	int btf, btf_ext, ret;
	char reason[128];

	elfchk_init();
	if (elfchk_check_layout(buf, len, has_btf ? has_btf : &btf,
				has_btf_ext ? has_btf_ext : &btf_ext, err) < 0)
		return NULL;
	if (for_load) {
		elfchk_kernel_btf(buf, len, kernel_btf);
		if (kernel_btf[0])
			opts.btf_custom_path = kernel_btf;
	}
	elfchk_capture_begin(&cap);
	obj = bpf_object__open_mem(buf, len, &opts);
	ret = obj ? 0 : -errno;
	elfchk_capture_end();
	if (obj)
		return obj;
	libbpf_strerror(ret, reason, sizeof(reason));
	if (cap.first_warn[0])
		gerr_set(err, 422, "libbpf cannot open the object: %s (%s)",
			 reason, cap.first_warn);
	else
		gerr_set(err, 422, "libbpf cannot open the object: %s", reason);
	return NULL;
}

/* ---------------------------------------------------------------- BTF names */

struct namebuf {
	char s[128];
	size_t len;
};

static void put(struct namebuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void put(struct namebuf *b, const char *fmt, ...)
{
	size_t room = sizeof(b->s) - b->len;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b->s + b->len, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->len += (size_t)n < room ? (size_t)n : room - 1;
}

/* Append the name of BTF type `id` as C spells it: "struct event",
 * "__u32", "__u64[4]", "const char *". */
static void type_name(const struct btf *btf, __u32 id, struct namebuf *b,
		      int depth)
{
	const struct btf_type *t = btf__type_by_id(btf, id);
	const char *name;

	if (!id) {
		put(b, "void");
		return;
	}
	if (!t || depth > 8) {
		put(b, "?");
		return;
	}
	name = btf__name_by_offset(btf, t->name_off);
	if (!name || !*name)
		name = "(anon)";
	switch (btf_kind(t)) {
	case BTF_KIND_STRUCT:
		put(b, "struct %s", name);
		break;
	case BTF_KIND_UNION:
		put(b, "union %s", name);
		break;
	case BTF_KIND_ENUM:
	case BTF_KIND_ENUM64:
		put(b, "enum %s", name);
		break;
	case BTF_KIND_FWD:
		put(b, "%s %s", btf_kflag(t) ? "union" : "struct", name);
		break;
	case BTF_KIND_CONST:
	case BTF_KIND_VOLATILE:
		put(b, "%s ", btf_kind(t) == BTF_KIND_CONST ? "const" : "volatile");
		type_name(btf, t->type, b, depth + 1);
		break;
	case BTF_KIND_RESTRICT:
	case BTF_KIND_TYPE_TAG:
		type_name(btf, t->type, b, depth + 1);
		break;
	case BTF_KIND_PTR:
		type_name(btf, t->type, b, depth + 1);
		put(b, " *");
		break;
	case BTF_KIND_ARRAY:
		type_name(btf, btf_array(t)->type, b, depth + 1);
		put(b, "[%u]", btf_array(t)->nelems);
		break;
	default:
		put(b, "%s", name);
		break;
	}
}

static int set_type_name(char **field, const struct btf *btf, __u32 id)
{
	struct namebuf name = { .len = 0 };

	if (!btf || !id)
		return 0;
	type_name(btf, id, &name, 0);
	return pbmsg_set_string(field, name.s);
}

/* ---------------------------------------------------------------- describe */

static int add_program(Graind__Object *obj, const struct bpf_program *prog)
{
	enum bpf_prog_type type = bpf_program__type(prog);
	enum bpf_attach_type attach = bpf_program__expected_attach_type(prog);
	const char *type_str = libbpf_bpf_prog_type_str(type);
	const char *attach_str = libbpf_bpf_attach_type_str(attach);
	Graind__Program *p;

	p = (Graind__Program *)pbmsg_new(&graind__program__descriptor);
	if (!p)
		return -1;
	obj->programs[obj->n_programs++] = p;
	/* Attach type 0 is cgroup_inet_ingress; for other types it means none. */
	if (attach == 0 && type != BPF_PROG_TYPE_CGROUP_SKB)
		attach_str = NULL;
	p->insn_count = bpf_program__insn_cnt(prog);
	if (pbmsg_set_string(&p->name, bpf_program__name(prog)) < 0 ||
	    pbmsg_set_string(&p->section, bpf_program__section_name(prog)) < 0 ||
	    pbmsg_set_string(&p->type, type_str ? type_str : "unknown") < 0 ||
	    pbmsg_set_string(&p->expected_attach_type, attach_str) < 0)
		return -1;
	return 0;
}

/* libbpf prefixes internal map names with the object name; the section
 * name (".rodata", ".bss") is what a person wrote and looks up. */
static const char *map_name(const struct bpf_map *map)
{
	const char *name = bpf_map__name(map);
	size_t pfx = strlen(OBJECT_NAME);

	if (bpf_map__is_internal(map) && strncmp(name, OBJECT_NAME, pfx) == 0 &&
	    name[pfx] == '.')
		return name + pfx;
	return name;
}

static int add_map(Graind__Object *obj, const struct bpf_map *map,
		   const struct btf *btf)
{
	const char *type_str = libbpf_bpf_map_type_str(bpf_map__type(map));
	Graind__Map *m;

	m = (Graind__Map *)pbmsg_new(&graind__map__descriptor);
	if (!m)
		return -1;
	obj->maps[obj->n_maps++] = m;
	m->key_size = bpf_map__key_size(map);
	m->value_size = bpf_map__value_size(map);
	m->max_entries = bpf_map__max_entries(map);
	m->flags = bpf_map__map_flags(map);
	m->internal = bpf_map__is_internal(map);
	if (pbmsg_set_string(&m->name, map_name(map)) < 0 ||
	    pbmsg_set_string(&m->type, type_str ? type_str : "unknown") < 0 ||
	    set_type_name(&m->key_type, btf, bpf_map__btf_key_type_id(map)) < 0 ||
	    set_type_name(&m->value_type, btf, bpf_map__btf_value_type_id(map)) < 0)
		return -1;
	return 0;
}

static int add_warning(Graind__Object *obj, const char *text)
{
	char **grown, *copy;

	copy = strdup(text);
	grown = realloc(obj->warnings, (obj->n_warnings + 1) * sizeof(*grown));
	if (!copy || !grown) {
		free(copy);
		if (grown)
			obj->warnings = grown;
		return -1;
	}
	obj->warnings = grown;
	obj->warnings[obj->n_warnings++] = copy;
	return 0;
}

static int describe_sections(const void *buf, size_t len, Graind__Object *obj,
			     struct gerr *err)
{
	const char *license;
	size_t size;
	const void *version;

	/* elfchk_check_layout made sure the license ends inside its section. */
	license = elfchk_section(buf, len, "license", &size);
	if (license && pbmsg_set_string(&obj->license, license) < 0)
		return gerr_set(err, 500, "out of memory");
	version = elfchk_section(buf, len, "version", &size);
	if (version && size == sizeof(obj->kernel_version))
		memcpy(&obj->kernel_version, version, size);

	if ((!license && add_warning(obj, "no license section: the kernel treats the programs as proprietary and refuses GPL-only helpers") < 0) ||
	    (!obj->has_btf && add_warning(obj, "no BTF: maps will be dumped as hex") < 0) ||
	    (obj->has_btf && !obj->has_btf_ext &&
	     add_warning(obj, "no .BTF.ext: verifier errors will not name source lines") < 0))
		return gerr_set(err, 500, "out of memory");
	return 0;
}

static int describe(struct bpf_object *bobj, Graind__Object *obj,
		    struct gerr *err)
{
	const struct btf *btf = bpf_object__btf(bobj);
	struct bpf_program *prog;
	struct bpf_map *map;
	size_t n = 0;

	bpf_object__for_each_program(prog, bobj)
		n++;
	if (!n)
		return gerr_set(err, 422, "object has no programs (no executable section such as SEC(\"xdp\"))");
	obj->programs = calloc(n, sizeof(*obj->programs));
	if (!obj->programs)
		return gerr_set(err, 500, "out of memory");
	bpf_object__for_each_program(prog, bobj)
		if (add_program(obj, prog) < 0)
			return gerr_set(err, 500, "out of memory");

	n = 0;
	bpf_object__for_each_map(map, bobj)
		n++;
	obj->maps = n ? calloc(n, sizeof(*obj->maps)) : NULL;
	if (n && !obj->maps)
		return gerr_set(err, 500, "out of memory");
	bpf_object__for_each_map(map, bobj)
		if (add_map(obj, map, btf) < 0)
			return gerr_set(err, 500, "out of memory");
	return 0;
}

/* Every name the API will show must be valid UTF-8 (JSON and protobuf
 * strings are), and a probe spec picks programs by name: each must have
 * one, its own (a crafted symbol table can give none, or the same twice). */
static int check_text(const Graind__Object *obj, struct gerr *err)
{
	size_t i, j;

	for (i = 0; i < obj->n_programs; i++) {
		if (!*obj->programs[i]->name)
			return gerr_set(err, 422, "program %zu (section %s) has no name",
					i, obj->programs[i]->section);
		for (j = 0; j < i; j++)
			if (!strcmp(obj->programs[i]->name, obj->programs[j]->name))
				return gerr_set(err, 422, "two programs are named %s",
						obj->programs[i]->name);
	}

	if (!utf8_valid(obj->license, strlen(obj->license)))
		return gerr_set(err, 422, "the license string is not valid UTF-8");
	for (i = 0; i < obj->n_programs; i++)
		if (!utf8_valid(obj->programs[i]->name, strlen(obj->programs[i]->name)) ||
		    !utf8_valid(obj->programs[i]->section, strlen(obj->programs[i]->section)))
			return gerr_set(err, 422, "program %zu has a name or section that is not valid UTF-8", i);
	for (i = 0; i < obj->n_maps; i++)
		if (!utf8_valid(obj->maps[i]->name, strlen(obj->maps[i]->name)) ||
		    !utf8_valid(obj->maps[i]->key_type, strlen(obj->maps[i]->key_type)) ||
		    !utf8_valid(obj->maps[i]->value_type, strlen(obj->maps[i]->value_type)))
			return gerr_set(err, 422, "map %zu has a name or type name that is not valid UTF-8", i);
	return 0;
}

int elfchk_inspect(const void *buf, size_t len, Graind__Object *obj,
		   struct gerr *err)
{
	struct bpf_object *bobj;
	int has_btf, has_btf_ext, ret;

	bobj = elfchk_open(buf, len, false, &has_btf, &has_btf_ext, err);
	if (!bobj)
		return -1;
	obj->has_btf = has_btf;
	obj->has_btf_ext = has_btf_ext;
	ret = describe(bobj, obj, err);
	if (ret == 0)
		ret = describe_sections(buf, len, obj, err);
	if (ret == 0)
		ret = check_text(obj, err);
	bpf_object__close(bobj);
	return ret;
}
