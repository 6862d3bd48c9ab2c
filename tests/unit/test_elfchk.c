/* Unit tests of server/elf: elfchk_inspect on good, foreign and damaged
 * objects, and elfchk_verify against the running kernel (needs root).
 * The BPF objects come from $GRAIND_TEST_BPF (default build/tests/bpf);
 * their sources are read from tests/bpf/ to find line numbers. */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "server/util/pbmsg.h"
#include "server/elf/elfchk.h"
#include "server/elf/internal.h"
#include "server/util/log.h"

/* ================================================================ fixtures */

struct blob {
	unsigned char *data;
	size_t len;
};

static struct blob read_file(const char *path)
{
	struct blob b = { NULL, 0 };
	FILE *f = fopen(path, "rb");
	long size;

	if (!f)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	b.data = malloc(size + 1);
	assert_non_null(b.data);
	b.len = fread(b.data, 1, size, f);
	assert_int_equal(b.len, (size_t)size);
	fclose(f);
	return b;
}

static struct blob test_object(const char *name)
{
	const char *dir = getenv("GRAIND_TEST_BPF");
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "build/tests/bpf", name);
	return read_file(path);
}

/* The line of tests/bpf/<file> that contains `needle`. */
static int source_line_of(const char *file, const char *needle)
{
	char path[512], line[512];
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "tests/bpf/%s", file);
	f = fopen(path, "r");
	if (!f)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		n++;
		if (strstr(line, needle)) {
			fclose(f);
			return n;
		}
	}
	fclose(f);
	fail_msg("%s has no line with %s", path, needle);
	return -1;
}

static Graind__Object *new_object(void)
{
	Graind__Object *obj = (Graind__Object *)pbmsg_new(&graind__object__descriptor);

	assert_non_null(obj);
	return obj;
}

/* Inspect bytes expected to be refused; returns the status. */
static int inspect_fails(const void *buf, size_t len, struct gerr *err)
{
	Graind__Object *obj = new_object();
	int ret;

	memset(err, 0, sizeof(*err));
	ret = elfchk_inspect(buf, len, obj, err);
	pbmsg_free(&obj->base);
	if (ret == 0)
		return 0;
	assert_true(ret < 0);
	assert_true(err->status == 400 || err->status == 422);
	assert_true(err->msg[0] != '\0');
	return err->status;
}

static void assert_inspect_error(const void *buf, size_t len, int status,
				 const char *message)
{
	struct gerr err;

	assert_int_equal(inspect_fails(buf, len, &err), status);
	assert_string_equal(err.msg, message);
}

static void assert_inspect_error_has(const void *buf, size_t len, int status,
				     const char *part)
{
	struct gerr err;

	assert_int_equal(inspect_fails(buf, len, &err), status);
	if (!strstr(err.msg, part))
		fail_msg("error \"%s\" does not mention \"%s\"", err.msg, part);
}

/* Section header `name` of an object the test knows is well formed. */
static Elf64_Shdr *find_shdr(struct blob *b, const char *name)
{
	Elf64_Ehdr *eh = (Elf64_Ehdr *)b->data;
	Elf64_Shdr *sh = (Elf64_Shdr *)(b->data + eh->e_shoff);
	const char *names = (const char *)b->data + sh[eh->e_shstrndx].sh_offset;
	int i;

	for (i = 0; i < eh->e_shnum; i++)
		if (strcmp(names + sh[i].sh_name, name) == 0)
			return &sh[i];
	fail_msg("no section %s", name);
	return NULL;
}

/* ================================================================ inspect */

static void test_inspect_accept(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	Graind__Object *obj = new_object();
	struct gerr err = { 0 };
	Graind__Program *p;
	Graind__Map *m;

	(void)state;
	assert_int_equal(elfchk_inspect(b.data, b.len, obj, &err), 0);
	assert_string_equal(obj->license, "GPL");
	assert_true(obj->has_btf);
	assert_true(obj->has_btf_ext);
	assert_int_equal(obj->kernel_version, 0);
	assert_int_equal(obj->n_warnings, 0);

	assert_int_equal(obj->n_programs, 2);
	p = obj->programs[0];
	assert_string_equal(p->name, "count_packets");
	assert_string_equal(p->section, "xdp");
	assert_string_equal(p->type, "xdp");
	assert_string_equal(p->expected_attach_type, "xdp");
	assert_true(p->insn_count > 10);
	p = obj->programs[1];
	assert_string_equal(p->name, "trace_nanosleep");
	assert_string_equal(p->section, "tracepoint/syscalls/sys_enter_nanosleep");
	assert_string_equal(p->type, "tracepoint");
	assert_string_equal(p->expected_attach_type, "");
	assert_true(p->insn_count > 5);

	assert_int_equal(obj->n_maps, 3);
	m = obj->maps[0];
	assert_string_equal(m->name, "packets");
	assert_string_equal(m->type, "hash");
	assert_int_equal(m->key_size, 2);
	assert_int_equal(m->value_size, 8);
	assert_int_equal(m->max_entries, 256);
	assert_int_equal(m->flags, 0);
	assert_string_equal(m->key_type, "struct proto_key");
	assert_string_equal(m->value_type, "__u64");
	assert_false(m->internal);
	m = obj->maps[1];
	assert_string_equal(m->name, "totals");
	assert_string_equal(m->type, "array");
	assert_int_equal(m->key_size, 4);
	assert_int_equal(m->max_entries, 4);
	assert_string_equal(m->key_type, "__u32");
	assert_string_equal(m->value_type, "__u64");
	m = obj->maps[2];
	assert_string_equal(m->name, "events");
	assert_string_equal(m->type, "ringbuf");
	assert_int_equal(m->key_size, 0);
	assert_int_equal(m->value_size, 0);
	assert_int_equal(m->max_entries, 4096);
	assert_string_equal(m->key_type, "");

	pbmsg_free(&obj->base);
	free(b.data);
}

static void test_inspect_internal_map(void **state)
{
	struct blob b = test_object("fentry.bpf.o");
	Graind__Object *obj = new_object();
	struct gerr err = { 0 };

	(void)state;
	assert_int_equal(elfchk_inspect(b.data, b.len, obj, &err), 0);
	assert_int_equal(obj->n_programs, 1);
	assert_string_equal(obj->programs[0]->type, "tracing");
	assert_string_equal(obj->programs[0]->expected_attach_type, "trace_fentry");
	assert_int_equal(obj->n_maps, 1);
	assert_string_equal(obj->maps[0]->name, ".bss");
	assert_string_equal(obj->maps[0]->type, "array");
	assert_true(obj->maps[0]->internal);
	pbmsg_free(&obj->base);
	free(b.data);
}

static void test_inspect_without_btf(void **state)
{
	struct blob b = test_object("reject_helper.bpf.o");
	Elf64_Ehdr *eh = (Elf64_Ehdr *)b.data;
	Elf64_Shdr *sh = (Elf64_Shdr *)(b.data + eh->e_shoff);
	char *names = (char *)b.data + sh[eh->e_shstrndx].sh_offset;
	Graind__Object *obj = new_object();
	struct gerr err = { 0 };

	(void)state;
	/* Rename .BTF and .BTF.ext: the object then has no BTF at all. */
	names[find_shdr(&b, ".BTF")->sh_name + 1] = 'X';
	names[find_shdr(&b, ".BTF.ext")->sh_name + 1] = 'X';
	assert_int_equal(elfchk_inspect(b.data, b.len, obj, &err), 0);
	assert_false(obj->has_btf);
	assert_false(obj->has_btf_ext);
	assert_int_equal(obj->n_warnings, 1);
	assert_string_equal(obj->warnings[0], "no BTF: maps will be dumped as hex");
	pbmsg_free(&obj->base);
	free(b.data);
}

/* Maps declared in .maps need BTF: libbpf refuses, and says why. */
static void test_inspect_maps_without_btf(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	Elf64_Ehdr *eh = (Elf64_Ehdr *)b.data;
	Elf64_Shdr *sh = (Elf64_Shdr *)(b.data + eh->e_shoff);
	char *names = (char *)b.data + sh[eh->e_shstrndx].sh_offset;

	(void)state;
	names[find_shdr(&b, ".BTF")->sh_name + 1] = 'X';
	names[find_shdr(&b, ".BTF.ext")->sh_name + 1] = 'X';
	assert_inspect_error_has(b.data, b.len, 422, "libbpf cannot open the object: ");
	assert_inspect_error_has(b.data, b.len, 422, "BTF is required");
	free(b.data);
}

static void test_inspect_big_endian(void **state)
{
	struct blob b = test_object("accept.bpfeb.o");

	(void)state;
	assert_inspect_error(b.data, b.len, 400,
			     "object is big-endian; this host is little-endian");
	free(b.data);
}

static void test_inspect_host_binary(void **state)
{
	struct blob b = read_file("/bin/true");

	(void)state;
#if defined(__aarch64__)
	assert_inspect_error(b.data, b.len, 400,
			     "object is for AArch64 (e_machine 183), not eBPF (e_machine 247)");
#else
	assert_inspect_error(b.data, b.len, 400,
			     "object is for x86-64 (e_machine 62), not eBPF (e_machine 247)");
#endif
	free(b.data);
}

static void test_inspect_empty_and_garbage(void **state)
{
	unsigned char noise[4096];
	size_t i;

	(void)state;
	assert_inspect_error("", 0, 400, "object is empty");
	assert_inspect_error(NULL, 0, 400, "object is empty");
	srand(42);
	for (i = 0; i < sizeof(noise); i++)
		noise[i] = rand();
	noise[0] = 0;	/* a random start could, in theory, be the magic */
	assert_inspect_error(noise, sizeof(noise), 400, "not an ELF file (bad magic)");
	assert_inspect_error("\x7f" "EL", 3, 400, "not an ELF file (bad magic)");
	assert_inspect_error("\x7f" "ELF\2\1\1", 7, 400, "truncated ELF header: 7 bytes, need 64");
}

static void test_inspect_elf32(void **state)
{
	struct blob b = test_object("accept.bpf.o");

	(void)state;
	b.data[EI_CLASS] = ELFCLASS32;
	assert_inspect_error(b.data, b.len, 400,
			     "object is 32-bit ELF; eBPF objects are ELF64");
	free(b.data);
}

static void test_inspect_not_relocatable(void **state)
{
	struct blob b = test_object("accept.bpf.o");

	(void)state;
	((Elf64_Ehdr *)b.data)->e_type = ET_EXEC;
	assert_inspect_error_has(b.data, b.len, 400, "eBPF objects are relocatable");
	free(b.data);
}

/* Cut accept.bpf.o every 7 bytes and at every structure boundary. */
static void test_inspect_truncated(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	Elf64_Ehdr *eh = (Elf64_Ehdr *)b.data;
	size_t cuts[64], ncuts = 0, len, i;
	Elf64_Shdr *sh = (Elf64_Shdr *)(b.data + eh->e_shoff);
	struct gerr err;

	(void)state;
	cuts[ncuts++] = sizeof(Elf64_Ehdr) - 1;
	cuts[ncuts++] = sizeof(Elf64_Ehdr);
	cuts[ncuts++] = eh->e_shoff;
	cuts[ncuts++] = b.len - 1;
	for (i = 1; i < eh->e_shnum && ncuts + 2 < 64; i++) {
		cuts[ncuts++] = sh[i].sh_offset;
		cuts[ncuts++] = sh[i].sh_offset + sh[i].sh_size - 1;
	}
	for (len = 0; len < b.len; len += 7)
		assert_int_not_equal(inspect_fails(b.data, len, &err), 0);
	for (i = 0; i < ncuts; i++)
		if (cuts[i] < b.len)
			assert_int_not_equal(inspect_fails(b.data, cuts[i], &err), 0);
	free(b.data);
}

static void test_inspect_bad_btf(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	Elf64_Shdr *btf = find_shdr(&b, ".BTF");

	(void)state;
	b.data[btf->sh_offset] ^= 0xff;	/* the 0xeB9F magic */
	assert_inspect_error_has(b.data, b.len, 422, "BTF section does not parse");
	free(b.data);
}

/* A pointer into the .BTF section of `b` at the first type of `kind`, and
 * that type's id. */
static unsigned char *find_btf_type(struct blob *b, int kind, __u32 *id)
{
	Elf64_Shdr *sh = find_shdr(b, ".BTF");
	unsigned char *sec = b->data + sh->sh_offset;
	struct btf *btf = btf__new(sec, sh->sh_size);
	const void *raw;
	__u32 size, i;

	assert_non_null(btf);
	raw = btf__raw_data(btf, &size);
	assert_int_equal(size, sh->sh_size);
	for (i = 1; i < btf__type_cnt(btf); i++) {
		const struct btf_type *t = btf__type_by_id(btf, i);

		if (btf_kind(t) == kind) {
			*id = i;
			btf__free(btf);
			return sec + ((const unsigned char *)t - (const unsigned char *)raw);
		}
	}
	fail_msg("no BTF type of kind %d", kind);
	return NULL;
}

/* libbpf 1.1 follows BTF type ids without checking them. */
static void test_inspect_btf_dangling_id(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	struct btf_type t;
	struct btf_member m;
	unsigned char *p;
	__u32 id;

	(void)state;
	p = find_btf_type(&b, BTF_KIND_STRUCT, &id);
	memcpy(&t, p, sizeof(t));
	assert_true(btf_vlen(&t) > 0);
	memcpy(&m, p + sizeof(t), sizeof(m));
	m.type = 0x7fffffff;
	memcpy(p + sizeof(t), &m, sizeof(m));
	assert_inspect_error_has(b.data, b.len, 422, "which does not exist");
	free(b.data);
}

static void test_inspect_btf_loop(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	struct btf_type t;
	unsigned char *p;
	__u32 id;

	(void)state;
	p = find_btf_type(&b, BTF_KIND_TYPEDEF, &id);
	memcpy(&t, p, sizeof(t));
	t.type = id;	/* typedef T T; */
	memcpy(p, &t, sizeof(t));
	assert_inspect_error_has(b.data, b.len, 422, "a loop?");
	free(b.data);
}

/* Types that do not start 4-byte aligned (a header one byte longer, that
 * byte zero, as a longer header of a later BTF version would be): refused, as the kernel refuses them,
 * before anything reads a type (found by fuzz_btf). */
static void test_btf_types_unaligned(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	Elf64_Shdr *sh = find_shdr(&b, ".BTF");
	const unsigned char *sec = b.data + sh->sh_offset;
	struct btf_header hdr;
	unsigned char *moved = calloc(1, sh->sh_size + 1);
	struct gerr err = { 0 };
	struct btf *btf;

	(void)state;
	memcpy(&hdr, sec, sizeof(hdr));
	memcpy(moved + hdr.hdr_len + 1, sec + hdr.hdr_len, sh->sh_size - hdr.hdr_len);
	hdr.hdr_len += 1;
	memcpy(moved, &hdr, sizeof(hdr));
	btf = btf__new(moved, sh->sh_size + 1);
	assert_non_null(btf);
	assert_int_equal(elfchk_check_btf(btf, &err), -1);
	assert_int_equal(err.status, 422);
	assert_non_null(strstr(err.msg, "do not start 4-byte aligned"));
	btf__free(btf);
	/* The same section as it was passes. */
	btf = btf__new(sec, sh->sh_size);
	assert_non_null(btf);
	assert_int_equal(elfchk_check_btf(btf, &err), 0);
	btf__free(btf);
	free(moved);
	free(b.data);
}

static void test_inspect_license_unterminated(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	Elf64_Shdr *license = find_shdr(&b, "license");

	(void)state;
	memset(b.data + license->sh_offset, 'G', license->sh_size);
	assert_inspect_error(b.data, b.len, 422, "license section is not NUL-terminated");
	free(b.data);
}

static void test_inspect_section_out_of_range(void **state)
{
	struct blob b = test_object("accept.bpf.o");

	(void)state;
	find_shdr(&b, "xdp")->sh_offset = b.len - 4;
	assert_inspect_error_has(b.data, b.len, 400, "(xdp)");
	assert_inspect_error_has(b.data, b.len, 400, "lie outside the file");
	find_shdr(&b, "xdp")->sh_offset = UINT64_MAX - 2;
	assert_inspect_error_has(b.data, b.len, 400, "lie outside the file");
	free(b.data);
}

static void test_inspect_bad_tables(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	Elf64_Ehdr *eh = (Elf64_Ehdr *)b.data;
	struct blob copy = { malloc(b.len), b.len };

	(void)state;
	assert_non_null(copy.data);
	memcpy(copy.data, b.data, b.len);
	((Elf64_Ehdr *)copy.data)->e_shentsize = 40;
	assert_inspect_error(copy.data, copy.len, 400, "section header size is 40 bytes, expected 64");

	memcpy(copy.data, b.data, b.len);
	((Elf64_Ehdr *)copy.data)->e_shstrndx = eh->e_shnum;
	assert_inspect_error_has(copy.data, copy.len, 400, "section name table index");

	memcpy(copy.data, b.data, b.len);
	((Elf64_Ehdr *)copy.data)->e_shnum = 60000;
	assert_inspect_error_has(copy.data, copy.len, 400, "runs past the end of the file");

	memcpy(copy.data, b.data, b.len);
	find_shdr(&copy, "xdp")->sh_name = 0x7fffffff;
	assert_inspect_error_has(copy.data, copy.len, 400, "name is not inside");

	memcpy(copy.data, b.data, b.len);
	find_shdr(&copy, ".symtab")->sh_entsize = 7;
	assert_inspect_error_has(copy.data, copy.len, 400, "entry size 7");

	memcpy(copy.data, b.data, b.len);
	find_shdr(&copy, ".symtab")->sh_link = eh->e_shnum + 3;
	assert_inspect_error_has(copy.data, copy.len, 400, "does not exist");

	memcpy(copy.data, b.data, b.len);
	find_shdr(&copy, ".relxdp")->sh_info = 999;
	assert_inspect_error_has(copy.data, copy.len, 400, "relocation section .relxdp");

	free(copy.data);
	free(b.data);
}

/* Random byte damage anywhere: refused with 400/422 or described, never a
 * crash (ASan watches the rest). */
/* The symbol called `name` in b's .symtab. */
static Elf64_Sym *find_symbol(struct blob *b, const char *name)
{
	Elf64_Shdr *symtab = find_shdr(b, ".symtab");
	Elf64_Shdr *sh = (Elf64_Shdr *)(b->data + ((Elf64_Ehdr *)b->data)->e_shoff);
	const char *strtab = (const char *)b->data + sh[symtab->sh_link].sh_offset;
	Elf64_Sym *sym = (Elf64_Sym *)(b->data + symtab->sh_offset);

	for (size_t i = 0; i < symtab->sh_size / sizeof(*sym); i++)
		if (strcmp(strtab + sym[i].st_name, name) == 0)
			return &sym[i];
	fail_msg("no symbol %s", name);
	return NULL;
}

/* A program is picked by name: one whose symbol has an empty name (found
 * by fuzzing: a name offset one byte short), or the name of another, is
 * refused. */
static void test_inspect_program_names(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	struct blob copy = { malloc(b.len), b.len };
	Elf64_Sym *first;

	(void)state;
	assert_non_null(copy.data);
	memcpy(copy.data, b.data, b.len);
	find_symbol(&copy, "count_packets")->st_name--;
	assert_inspect_error(copy.data, copy.len, 422, "program 0 (section xdp) has no name");

	memcpy(copy.data, b.data, b.len);
	first = find_symbol(&copy, "count_packets");
	find_symbol(&copy, "trace_nanosleep")->st_name = first->st_name;
	assert_inspect_error(copy.data, copy.len, 422, "two programs are named count_packets");
	free(copy.data);
	free(b.data);
}

static void test_inspect_mutations(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	unsigned char *copy = malloc(b.len);
	int round, k, refused = 0;
	struct gerr err;

	(void)state;
	assert_non_null(copy);
	srand(7);
	for (round = 0; round < 1500; round++) {
		memcpy(copy, b.data, b.len);
		for (k = 0; k < 1 + round % 4; k++)
			copy[rand() % b.len] = rand();
		if (inspect_fails(copy, b.len, &err))
			refused++;
	}
	assert_true(refused > 0);
	free(copy);
	free(b.data);
}

/* ================================================================ verify */

/* Programs called `name` now in the kernel. */
static int loaded_named(const char *name)
{
	__u32 id = 0;
	int count = 0;

	while (bpf_prog_get_next_id(id, &id) == 0) {
		struct bpf_prog_info info;
		__u32 len = sizeof(info);
		int fd = bpf_prog_get_fd_by_id(id);

		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
		    strcmp(info.name, name) == 0)
			count++;
		close(fd);
	}
	return count;
}

static Graind__VerifyReport *verify(const char *file)
{
	struct blob b = test_object(file);
	Graind__VerifyReport *r;
	struct gerr err = { 0 };

	r = (Graind__VerifyReport *)pbmsg_new(&graind__verify_report__descriptor);
	assert_non_null(r);
	if (elfchk_verify(b.data, b.len, r, &err) < 0)
		fail_msg("verify %s: %d %s", file, err.status, err.msg);
	free(b.data);
	assert_true(r->kernel_release[0] != '\0');
	return r;
}

static void test_verify_accept(void **state)
{
	int before_xdp = loaded_named("count_packets");
	int before_tp = loaded_named("trace_nanosleep");
	Graind__VerifyReport *r = verify("accept.bpf.o");
	size_t i;

	(void)state;
	assert_true(r->accepted);
	assert_int_equal(r->n_programs, 2);
	assert_string_equal(r->programs[0]->program, "count_packets");
	assert_string_equal(r->programs[0]->type, "xdp");
	assert_string_equal(r->programs[1]->program, "trace_nanosleep");
	assert_string_equal(r->programs[1]->section, "tracepoint/syscalls/sys_enter_nanosleep");
	for (i = 0; i < r->n_programs; i++) {
		Graind__ProgramVerdict *v = r->programs[i];

		assert_true(v->accepted);
		assert_true(v->verified_insns > 0);
		assert_true(v->load_time_us > 0);
		assert_string_equal(v->error, "");
		assert_string_equal(v->verifier_log, "");
		assert_string_equal(v->missing_feature, "");
	}
	/* A dry run: nothing stays loaded. */
	assert_int_equal(loaded_named("count_packets"), before_xdp);
	assert_int_equal(loaded_named("trace_nanosleep"), before_tp);
	pbmsg_free(&r->base);
}

static void test_verify_reject_oob(void **state)
{
	Graind__VerifyReport *r = verify("reject_oob.bpf.o");
	Graind__ProgramVerdict *v;
	char where[64];

	(void)state;
	assert_false(r->accepted);
	assert_int_equal(r->n_programs, 1);
	v = r->programs[0];
	assert_false(v->accepted);
	assert_string_equal(v->program, "read_past_end");
	assert_string_equal(v->error, "invalid access to map value, value_size=8 off=64 size=8");
	snprintf(where, sizeof(where), "reject_oob.bpf.c:%d",
		 source_line_of("reject_oob.bpf.c", "arr[8]"));
	assert_string_equal(v->source_line, where);
	assert_non_null(strstr(v->source_text, "return arr[8]"));
	assert_non_null(strstr(v->verifier_log, "invalid access to map value"));
	assert_false(v->verifier_log_truncated);
	assert_string_equal(v->missing_feature, "");
	assert_int_equal(loaded_named("read_past_end"), 0);
	pbmsg_free(&r->base);
}

/* What kernels before 6.2 leave out of the log, the line info gives:
 * the line of a source text in the program's section, and no line for a
 * text the section does not have or an object without line info. */
static void test_source_line_from_line_info(void **state)
{
	struct blob b = test_object("reject_oob.bpf.o");
	struct gerr err = { 0 };
	struct bpf_object *obj = elfchk_open(b.data, b.len, false, NULL, NULL, &err);
	char where[64], want[64];

	(void)state;
	assert_non_null(obj);
	snprintf(want, sizeof(want), "reject_oob.bpf.c:%d",
		 source_line_of("reject_oob.bpf.c", "arr[8]"));
	assert_int_equal(elfchk_source_line(b.data, b.len, bpf_object__btf(obj), "xdp",
					    "return arr[8] ? XDP_DROP : XDP_PASS;\t/* the value holds one __u64 */",
					    where, sizeof(where)), 0);
	assert_string_equal(where, want);
	assert_int_equal(elfchk_source_line(b.data, b.len, bpf_object__btf(obj), "xdp",
					    "no such line;", where, sizeof(where)), -1);
	assert_string_equal(where, "");
	assert_int_equal(elfchk_source_line(b.data, b.len, bpf_object__btf(obj), "tc",
					    "return arr[8] ? XDP_DROP : XDP_PASS;", where,
					    sizeof(where)), -1);
	/* a short buffer shortens the file name and keeps the line number */
	snprintf(want, sizeof(want), "rej:%d", source_line_of("reject_oob.bpf.c", "arr[8]"));
	assert_int_equal(elfchk_source_line(b.data, b.len, bpf_object__btf(obj), "xdp",
					    "return arr[8] ? XDP_DROP : XDP_PASS;\t/* the value holds one __u64 */",
					    where, strlen(want) + 1), 0);
	assert_string_equal(where, want);
	bpf_object__close(obj);
	free(b.data);
}

static void test_verify_reject_helper(void **state)
{
	Graind__VerifyReport *r = verify("reject_helper.bpf.o");
	Graind__ProgramVerdict *v;
	char where[64];

	(void)state;
	assert_false(r->accepted);
	v = r->programs[0];
	assert_false(v->accepted);
	assert_string_equal(v->type, "socket_filter");
	assert_non_null(strstr(v->error, "bpf_skb_store_bytes"));
	snprintf(where, sizeof(where), "reject_helper.bpf.c:%d",
		 source_line_of("reject_helper.bpf.c", "bpf_skb_store_bytes(skb"));
	assert_string_equal(v->source_line, where);
	assert_string_equal(v->missing_feature, "");
	pbmsg_free(&r->base);
}

static void test_verify_fentry(void **state)
{
	Graind__VerifyReport *r = verify("fentry.bpf.o");
	Graind__ProgramVerdict *v = r->programs[0];

	(void)state;
	assert_string_equal(v->type, "tracing");
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_TRACING, NULL) == 1) {
		/* A kernel with BPF trampolines verifies it like any other. */
		assert_true(v->accepted);
	} else {
		/* This kernel refuses tracing programs outright. */
		assert_false(r->accepted);
		assert_false(v->accepted);
		assert_string_equal(v->missing_feature, "BPF trampoline (fentry/fexit) support");
		assert_non_null(strstr(v->error, "BPF trampoline (fentry/fexit) support"));
	}
	pbmsg_free(&r->base);
}

static void test_verify_garbage(void **state)
{
	Graind__VerifyReport *r;
	struct gerr err = { 0 };
	struct blob b = test_object("accept.bpfeb.o");

	(void)state;
	r = (Graind__VerifyReport *)pbmsg_new(&graind__verify_report__descriptor);
	assert_int_equal(elfchk_verify("junk", 4, r, &err), -1);
	assert_int_equal(err.status, 400);
	assert_int_equal(elfchk_verify(b.data, b.len, r, &err), -1);
	assert_string_equal(err.msg, "object is big-endian; this host is little-endian");
	assert_int_equal(r->n_programs, 0);
	pbmsg_free(&r->base);
	free(b.data);
}

/* ================================================================ kernel BTF cut */

/* One program of the object, loaded alone: 0 or -errno, and its
 * instructions as the kernel holds them (malloc'd), with the map ids the
 * two loads cannot share zeroed. */
static int load_alone(const struct blob *b, size_t idx, bool whole, struct bpf_insn **insns,
		      uint32_t *n)
{
	struct bpf_prog_info info;
	uint32_t info_len = sizeof(info);
	struct bpf_program *prog, *target = NULL;
	struct bpf_object *obj;
	struct gerr err = { 0 };
	size_t i = 0;
	int ret;

	*insns = NULL;
	*n = 0;
	if (whole)
		setenv("GRAIND_WHOLE_KERNEL_BTF", "1", 1);
	else
		unsetenv("GRAIND_WHOLE_KERNEL_BTF");
	obj = elfchk_open(b->data, b->len, true, NULL, NULL, &err);
	unsetenv("GRAIND_WHOLE_KERNEL_BTF");
	assert_non_null(obj);
	bpf_object__for_each_program(prog, obj) {
		bpf_program__set_autoload(prog, i == idx);
		if (i++ == idx)
			target = prog;
	}
	assert_non_null(target);
	ret = bpf_object__load(obj);
	if (ret == 0) {
		memset(&info, 0, sizeof(info));
		assert_int_equal(bpf_obj_get_info_by_fd(bpf_program__fd(target), &info, &info_len), 0);
		*n = info.xlated_prog_len / sizeof(**insns);
		*insns = calloc(*n ? *n : 1, sizeof(**insns));
		assert_non_null(*insns);
		memset(&info, 0, sizeof(info));
		info.xlated_prog_len = *n * sizeof(**insns);
		info.xlated_prog_insns = (uint64_t)(uintptr_t)*insns;
		info_len = sizeof(info);
		assert_int_equal(bpf_obj_get_info_by_fd(bpf_program__fd(target), &info, &info_len), 0);
		for (uint32_t k = 0; k + 1 < *n; k++)
			if ((*insns)[k].code == (BPF_LD | BPF_DW | BPF_IMM) && (*insns)[k].src_reg) {
				(*insns)[k].imm = 0;
				k++;
			}
	}
	bpf_object__close(obj);
	return ret;
}

/* Every program of the object behaves the same against the cut as
 * against the whole kernel BTF; how many programs the kernel took. */
static size_t assert_cut_loads_the_same(const char *path)
{
	struct blob b = read_file(path);
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct gerr err = { 0 };
	size_t n_progs = 0, loaded = 0;

	obj = elfchk_open(b.data, b.len, false, NULL, NULL, &err);
	assert_non_null(obj);
	bpf_object__for_each_program(prog, obj)
		n_progs++;
	bpf_object__close(obj);
	for (size_t i = 0; i < n_progs; i++) {
		struct bpf_insn *cut, *whole;
		uint32_t n_cut, n_whole;
		int rc_cut = load_alone(&b, i, false, &cut, &n_cut);
		int rc_whole = load_alone(&b, i, true, &whole, &n_whole);

		if (rc_cut != rc_whole)
			fail_msg("%s program %zu: %d against the cut, %d against the whole BTF",
				 path, i, rc_cut, rc_whole);
		assert_int_equal(n_cut, n_whole);
		if (n_cut && memcmp(cut, whole, n_cut * sizeof(*cut)))
			fail_msg("%s program %zu: the kernel holds other instructions", path, i);
		loaded += rc_cut == 0;
		free(cut);
		free(whole);
	}
	free(b.data);
	return loaded;
}

static bool has_cut(const char *path)
{
	struct blob b = read_file(path);
	char cut[ELFCHK_BTF_PATH_MAX];

	elfchk_kernel_btf(b.data, b.len, cut);
	free(b.data);
	return cut[0] != '\0';
}

static void test_kernel_btf_cut_loads_every_object_the_same(void **state)
{
	const char *dirs[] = { getenv("GRAIND_TEST_BPF"), getenv("GRAIND_BUILTIN_BPF") };
	const char *fallback[] = { "build/tests/bpf", "build/bpf" };
	size_t objects = 0, loaded = 0, cut = 0;

	(void)state;
	log_set_level(LOG_DEBUG);       /* why an object goes without a cut */
	for (size_t d = 0; d < 2; d++) {
		const char *dir = dirs[d] && *dirs[d] ? dirs[d] : fallback[d];
		struct dirent *e;
		DIR *dh = opendir(dir);

		if (!dh)
			fail_msg("cannot open %s: %s", dir, strerror(errno));
		while ((e = readdir(dh))) {
			size_t len = strlen(e->d_name);
			char path[1024];

			if (len < 6 || strcmp(e->d_name + len - 6, ".bpf.o"))
				continue;       /* not an object, or a big-endian one */
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			loaded += assert_cut_loads_the_same(path);
			objects++;
			cut += has_cut(path);
		}
		closedir(dh);
	}
	log_set_level(LOG_INFO);
	print_message("%zu objects, %zu with a cut; %zu programs loaded\n", objects, cut, loaded);
	assert_true(objects >= 15);
	assert_true(loaded >= 20);
	assert_true(cut >= objects / 2);        /* the comparison is not vacuous */
}

static void test_kernel_btf_cut_is_small_and_reused(void **state)
{
	struct blob b = test_object("accept.bpf.o");
	char first[ELFCHK_BTF_PATH_MAX], again[ELFCHK_BTF_PATH_MAX];
	struct stat cut, whole;

	(void)state;
	elfchk_kernel_btf(b.data, b.len, first);
	assert_true(first[0] != '\0');         /* accept.bpf.o reads struct xdp_md by CO-RE */
	elfchk_kernel_btf(b.data, b.len, again);
	assert_string_equal(first, again);
	assert_int_equal(stat(first, &cut), 0);
	assert_int_equal(stat("/sys/kernel/btf/vmlinux", &whole), 0);
	assert_true(cut.st_size > 0 && cut.st_size < whole.st_size / 20);
	setenv("GRAIND_WHOLE_KERNEL_BTF", "1", 1);
	elfchk_kernel_btf(b.data, b.len, again);
	unsetenv("GRAIND_WHOLE_KERNEL_BTF");
	assert_string_equal(again, "");
	free(b.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_inspect_accept),
		cmocka_unit_test(test_inspect_internal_map),
		cmocka_unit_test(test_inspect_without_btf),
		cmocka_unit_test(test_inspect_maps_without_btf),
		cmocka_unit_test(test_inspect_big_endian),
		cmocka_unit_test(test_inspect_host_binary),
		cmocka_unit_test(test_inspect_empty_and_garbage),
		cmocka_unit_test(test_inspect_elf32),
		cmocka_unit_test(test_inspect_not_relocatable),
		cmocka_unit_test(test_inspect_truncated),
		cmocka_unit_test(test_inspect_bad_btf),
		cmocka_unit_test(test_inspect_btf_dangling_id),
		cmocka_unit_test(test_inspect_btf_loop),
		cmocka_unit_test(test_btf_types_unaligned),
		cmocka_unit_test(test_inspect_license_unterminated),
		cmocka_unit_test(test_inspect_section_out_of_range),
		cmocka_unit_test(test_inspect_bad_tables),
		cmocka_unit_test(test_inspect_program_names),
		cmocka_unit_test(test_inspect_mutations),
		cmocka_unit_test(test_verify_accept),
		cmocka_unit_test(test_verify_reject_oob),
		cmocka_unit_test(test_source_line_from_line_info),
		cmocka_unit_test(test_verify_reject_helper),
		cmocka_unit_test(test_verify_fentry),
		cmocka_unit_test(test_verify_garbage),
		cmocka_unit_test(test_kernel_btf_cut_loads_every_object_the_same),
		cmocka_unit_test(test_kernel_btf_cut_is_small_and_reused),
	};

	elfchk_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
