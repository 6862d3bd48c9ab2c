/* Unit tests of server/collect/decode.c: every field of the BTF-typed
 * structs of tests/bpf/types.bpf.c decoded exactly, the naming
 * conventions one by one, the raw decoder, and BTF built to hurt. Every
 * record decoded is also packed straight to the wire and must read back
 * as the same fields, in the same bytes protobuf-c packs. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <sys/syscall.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cmocka.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <linux/types.h>

#include "server/util/pbmsg.h"
#include "server/collect/decode.h"
#include "server/util/pbwire.h"

/* ======================================================== types.bpf.c */

/* The same declarations as tests/bpf/types.bpf.c; sizes are checked
 * against the BTF before any byte is trusted. */
enum types_color {
	TYPES_RED = 1,
	TYPES_GREEN = 2,
	TYPES_BLUE = 40,
};

struct types_pair {
	__u16 a;
	__u16 b;
};

struct types_event {
	__s8 s8;
	__s16 s16;
	__s32 s32;
	__s64 s64;
	__u8 u8;
	__u16 u16;
	__u32 u32;
	__u64 u64;
	bool flag;
	enum types_color color;
	char comm[16];
	__u32 saddr;
	__u8 daddr6[16];
	__u16 dport;
	int ifindex;
	int err;
	long syscall_nr;
	__u64 func_ip;
	__u64 cgroup_id;
	struct types_pair pair;
	struct {
		__u32 x;
		struct types_pair deep;
	} nest;
	union {
		__u32 word;
		__u16 halves[2];
	} u;
	__u32 lo : 3, mid : 9, hi : 20;
	__s32 sneg : 5, : 3, spos : 8;
	enum types_color shade : 8;
	__u32 counts[3];
	struct {
		__u32 anon_a;
	};
	char names[2][4];
	__u8 mac[6];
	void *ptr;
	__u64 cookie;
	int ret;
	__u32 last_errno;
	union {
		__u8 u6_addr8[16];
		__u32 u6_addr32[4];
	} src6;
	__u32 dst_ip4;
	struct types_pair pairs[2];
	double ratio;
	bool done : 1;
};

struct types_key {
	__u32 ifindex;
	__u16 sport;
};

struct fixture {
	struct bpf_object *obj;
	const struct btf *btf;
};

static int setup_object(void **state)
{
	const char *dir = getenv("GRAIND_TEST_BPF");
	struct fixture *fx = calloc(1, sizeof(*fx));
	char path[512];

	assert_non_null(fx);
	snprintf(path, sizeof(path), "%s/types.bpf.o",
		 dir && *dir ? dir : "build/tests/bpf");
	fx->obj = bpf_object__open_file(path, NULL);
	if (!fx->obj)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	fx->btf = bpf_object__btf(fx->obj);
	assert_non_null(fx->btf);
	*state = fx;
	return 0;
}

static int teardown_object(void **state)
{
	struct fixture *fx = *state;

	bpf_object__close(fx->obj);
	free(fx);
	return 0;
}

static uint32_t struct_id(const struct btf *btf, const char *name)
{
	int id = btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT);

	assert_true(id > 0);
	return (uint32_t)id;
}

/* ======================================================= expectations */

struct want {
	const char *name;
	Graind__Field__ValueCase is;
	int64_t i;
	uint64_t u;
	double real;
	const char *text;
};

#define W_INT(n, v)	{ n, GRAIND__FIELD__VALUE_INT, .i = (v) }
#define W_UINT(n, v)	{ n, GRAIND__FIELD__VALUE_UINT, .u = (v) }
#define W_REAL(n, v)	{ n, GRAIND__FIELD__VALUE_REAL, .real = (v) }
#define W_TEXT(n, v)	{ n, GRAIND__FIELD__VALUE_TEXT, .text = (v) }
#define W_FLAG(n, v)	{ n, GRAIND__FIELD__VALUE_FLAG, .u = (v) }

struct fields {
	Graind__Field **v;
	size_t n;
};

static void fields_free(struct fields *fs)
{
	for (size_t i = 0; i < fs->n; i++)
		pbmsg_free(&fs->v[i]->base);
	free(fs->v);
	fs->v = NULL;
	fs->n = 0;
}

static void assert_field(const Graind__Field *f, const struct want *w)
{
	if (strcmp(f->name, w->name))
		fail_msg("field \"%s\", expected \"%s\"", f->name, w->name);
	if (f->value_case != w->is)
		fail_msg("field %s: value case %d, expected %d", w->name,
			 f->value_case, w->is);
	switch (w->is) {
	case GRAIND__FIELD__VALUE_INT:
		if (f->int_ != w->i)
			fail_msg("field %s: %lld, expected %lld", w->name,
				 (long long)f->int_, (long long)w->i);
		break;
	case GRAIND__FIELD__VALUE_UINT:
		if (f->uint != w->u)
			fail_msg("field %s: %llu, expected %llu", w->name,
				 (unsigned long long)f->uint,
				 (unsigned long long)w->u);
		break;
	case GRAIND__FIELD__VALUE_REAL:
		assert_true(f->real == w->real);
		break;
	case GRAIND__FIELD__VALUE_TEXT:
		if (strcmp(f->text, w->text))
			fail_msg("field %s: \"%s\", expected \"%s\"", w->name,
				 f->text, w->text);
		break;
	case GRAIND__FIELD__VALUE_FLAG:
		assert_int_equal(f->flag, w->u);
		break;
	default:
		fail();
	}
}

static void assert_fields(const struct fields *fs, const struct want *w,
			  size_t n)
{
	for (size_t i = 0; i < fs->n && i < n; i++)
		assert_field(fs->v[i], &w[i]);
	assert_int_equal(fs->n, n);
}

/* ============================================================ packing */

static void assert_same_field(const Graind__Field *got,
			      const Graind__Field *want)
{
	if (strcmp(got->name, want->name))
		fail_msg("packed field \"%s\", decoded \"%s\"", got->name,
			 want->name);
	if (got->value_case != want->value_case)
		fail_msg("field %s: packed value case %d, decoded %d",
			 want->name, got->value_case, want->value_case);
	switch (want->value_case) {
	case GRAIND__FIELD__VALUE_INT:
		assert_int_equal(got->int_, want->int_);
		break;
	case GRAIND__FIELD__VALUE_UINT:
		assert_int_equal(got->uint, want->uint);
		break;
	case GRAIND__FIELD__VALUE_REAL:
		assert_memory_equal(&got->real, &want->real, sizeof(double));
		break;
	case GRAIND__FIELD__VALUE_TEXT:
		if (strcmp(got->text, want->text))
			fail_msg("field %s: packed \"%s\", decoded \"%s\"",
				 want->name, got->text, want->text);
		break;
	case GRAIND__FIELD__VALUE_FLAG:
		assert_int_equal(got->flag, want->flag);
		break;
	default:
		fail_msg("field %s: no value", want->name);
	}
}

/* The record packed as graind.Sample.fields (after a Sample.name) reads
 * back as decode_fields' fields, and its bytes are protobuf-c's. */
static void assert_pack_matches(const struct decoder *dec, const void *data,
				size_t len, const char *prefix)
{
	struct pbwire w = { 0 };
	struct fields fs = { 0 };
	Graind__Sample *got, want = GRAIND__SAMPLE__INIT;
	uint8_t *packed;
	size_t size;

	assert_int_equal(decode_fields(dec, data, len, prefix, &fs.v, &fs.n),
			 0);
	pbwire_string(&w, 6, "sample");
	assert_int_equal(decode_pack_fields(dec, data, len, prefix, 10, &w),
			 0);
	assert_false(w.failed);

	got = graind__sample__unpack(NULL, w.len, w.data);
	assert_non_null(got);
	assert_string_equal(got->name, "sample");
	assert_int_equal(got->n_fields, fs.n);
	for (size_t i = 0; i < fs.n; i++)
		assert_same_field(got->fields[i], fs.v[i]);
	graind__sample__free_unpacked(got, NULL);

	want.name = "sample";
	want.fields = fs.v;
	want.n_fields = fs.n;
	size = graind__sample__get_packed_size(&want);
	packed = malloc(size ? size : 1);
	assert_non_null(packed);
	assert_int_equal(graind__sample__pack(&want, packed), size);
	assert_int_equal(w.len, size);
	assert_memory_equal(w.data, packed, size);
	free(packed);
	pbwire_free(&w);
	fields_free(&fs);
}

/* The next graind.Field entry (field 10, one tag byte) of packed bytes:
 * its body. */
static const uint8_t *next_entry(const uint8_t **p, const uint8_t *end, size_t *len)
{
	const uint8_t *body;
	unsigned shift = 0;

	if (*p >= end)
		return NULL;
	assert_int_equal(*(*p)++, 10 << 3 | 2);
	*len = 0;
	do {
		assert_true(*p < end);
		*len |= (size_t)(**p & 0x7f) << shift;
		shift += 7;
	} while (*(*p)++ & 0x80);
	body = *p;
	*p += *len;
	assert_true(*p <= end);
	return body;
}

/* decode_pack_names() and decode_pack_values(), the i-th name entry
 * merged into the i-th value entry, read as decode_pack_fields()'s fields
 * and are its very bytes, unless the values carry names of their own
 * (a raw record): those win. */
static void assert_split_matches(const struct decoder *dec, const void *data,
				 size_t len, const char *prefix)
{
	struct pbwire whole = { 0 }, names = { 0 }, values = { 0 }, merged = { 0 };
	const uint8_t *np, *nend, *vp, *vend, *name, *value;
	size_t name_len = 0, value_len;
	Graind__Sample *want, *got;
	bool own_names = false;

	assert_int_equal(decode_pack_fields(dec, data, len, prefix, 10, &whole), 0);
	assert_int_equal(decode_pack_names(dec, prefix, 10, &names), 0);
	assert_int_equal(decode_pack_values(dec, data, len, prefix, 10, &values), 0);
	np = names.data;
	nend = np + names.len;
	vp = values.data;
	vend = vp + values.len;
	while ((value = next_entry(&vp, vend, &value_len))) {
		name = next_entry(&np, nend, &name_len);
		if (!name)
			name_len = 0;
		own_names |= value_len && value[0] == (1 << 3 | 2);
		pbwire_tag(&merged, 10, PBWIRE_LEN);
		pbwire_varint(&merged, name_len + value_len);
		pbwire_raw(&merged, name, name_len);
		pbwire_raw(&merged, value, value_len);
	}
	assert_false(merged.failed);
	want = graind__sample__unpack(NULL, whole.len, whole.data);
	got = graind__sample__unpack(NULL, merged.len, merged.data);
	assert_non_null(want);
	assert_non_null(got);
	assert_int_equal(got->n_fields, want->n_fields);
	for (size_t i = 0; i < want->n_fields; i++)
		assert_same_field(got->fields[i], want->fields[i]);
	if (!own_names) {
		assert_int_equal(merged.len, whole.len);
		if (whole.len)
			assert_memory_equal(merged.data, whole.data, whole.len);
	}
	graind__sample__free_unpacked(got, NULL);
	graind__sample__free_unpacked(want, NULL);
	pbwire_free(&merged);
	pbwire_free(&values);
	pbwire_free(&names);
	pbwire_free(&whole);
}

/* Both ways, with the prefixes the collector uses and the test's own. */
static void assert_packs(const struct decoder *dec, const void *data,
			 size_t len, const char *prefix)
{
	assert_split_matches(dec, data, len, "");
	assert_pack_matches(dec, data, len, "");
	assert_pack_matches(dec, data, len, "key");
	if (prefix && *prefix && strcmp(prefix, "key"))
		assert_pack_matches(dec, data, len, prefix);
}

static void decode_ok(const struct btf *btf, uint32_t id, const void *data,
		      size_t size, const char *prefix, struct fields *fs)
{
	struct decoder *dec = NULL;
	struct gerr err = { 0 };

	if (decode_new(btf, id, size, &dec, &err))
		fail_msg("decode_new: %d %s", err.status, err.msg);
	assert_false(decode_is_raw(dec));
	assert_int_equal(decode_fields(dec, data, size, prefix, &fs->v,
				       &fs->n), 0);
	assert_packs(dec, data, size, prefix);
	decode_free(dec);
}

/* ========================================================= host facts */

/* Where cgroup v2 is mounted, found by filesystem type. */
static bool cgroup2_root(char *buf, size_t n)
{
	static const char *const candidates[] = { "/sys/fs/cgroup/unified",
						  "/sys/fs/cgroup", NULL };
	struct statfs sf;

	for (const char *const *c = candidates; *c; c++)
		if (!statfs(*c, &sf) && sf.f_type == CGROUP2_SUPER_MAGIC) {
			snprintf(buf, n, "%s", *c);
			return true;
		}
	return false;
}

struct sym {
	unsigned long long addr;
	char name[128];
};

static int cmp_sym(const void *a, const void *b)
{
	const struct sym *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* A kernel symbol alone at its address with at least 0x20 bytes before the
 * next one: name+0x10 can only be itself. False when addresses are hidden. */
static bool pick_ksym(unsigned long long *addr, char *name, size_t n)
{
	FILE *f = fopen("/proc/kallsyms", "r");
	struct sym *syms = NULL;
	size_t count = 0, cap = 0;
	char line[512], type;
	bool found = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		struct sym s;

		if (sscanf(line, "%llx %c %127s", &s.addr, &type,
			   s.name) != 3 || !s.addr)
			continue;
		if (count == cap) {
			cap = cap ? cap * 2 : 4096;
			syms = realloc(syms, cap * sizeof(*syms));
			assert_non_null(syms);
		}
		syms[count++] = s;
	}
	fclose(f);
	if (count > 2)
		qsort(syms, count, sizeof(*syms), cmp_sym);
	for (size_t i = 1; i + 1 < count && !found; i++) {
		if (syms[i - 1].addr < syms[i].addr &&
		    syms[i + 1].addr > syms[i].addr + 0x20) {
			*addr = syms[i].addr;
			snprintf(name, n, "%s", syms[i].name);
			found = true;
		}
	}
	free(syms);
	return found;
}

/* ================================================================ tests */

static void test_event_every_field(void **state)
{
	struct fixture *fx = *state;
	uint32_t id = struct_id(fx->btf, "types_event");
	struct types_event ev;
	struct fields fs = { 0 };
	unsigned long long kaddr = 0;
	char ksym[160] = "", want_ksym[200], cgroot[256];
	struct stat st;

	assert_int_equal(btf__resolve_size(fx->btf, id), sizeof(ev));
	assert_true(cgroup2_root(cgroot, sizeof(cgroot)));
	assert_int_equal(stat(cgroot, &st), 0);
	if (pick_ksym(&kaddr, ksym, sizeof(ksym)))
		snprintf(want_ksym, sizeof(want_ksym), "%s+0x10", ksym);
	else
		snprintf(want_ksym, sizeof(want_ksym), "0x10");

	memset(&ev, 0, sizeof(ev));
	ev.s8 = -5;
	ev.s16 = -300;
	ev.s32 = -70000;
	ev.s64 = -5000000000LL;
	ev.u8 = 200;
	ev.u16 = 60000;
	ev.u32 = 4000000000U;
	ev.u64 = 18000000000000000000ULL;
	ev.flag = true;
	ev.color = TYPES_BLUE;
	memcpy(ev.comm, "bash\x01\\x\0junk", 12);
	inet_pton(AF_INET, "10.1.2.3", &ev.saddr);
	inet_pton(AF_INET6, "2001:db8::1", ev.daddr6);
	ev.dport = htons(443);
	ev.ifindex = 1;
	ev.err = -2;
	ev.syscall_nr = SYS_getpid;	/* this architecture's numbers, as the kernel gives them */
	ev.func_ip = kaddr + 0x10;
	ev.cgroup_id = st.st_ino;
	ev.pair.a = 1;
	ev.pair.b = 2;
	ev.nest.x = 3;
	ev.nest.deep.a = 4;
	ev.nest.deep.b = 5;
	ev.u.halves[0] = 6;
	ev.u.halves[1] = 7;
	ev.lo = 5;
	ev.mid = 300;
	ev.hi = 1000000;
	ev.sneg = -7;
	ev.spos = 100;
	ev.shade = TYPES_GREEN;
	ev.counts[0] = 10;
	ev.counts[1] = 11;
	ev.counts[2] = 12;
	ev.anon_a = 13;
	memcpy(ev.names[0], "ab", 3);
	memcpy(ev.names[1], "wxyz", 4);
	memcpy(ev.mac, "\x00\x11\x22\x33\x44\xff", 6);
	ev.ptr = (void *)0xdeadbeefUL;
	ev.cookie = 0xabc;
	ev.ret = -13;
	ev.last_errno = 2;
	inet_pton(AF_INET6, "fe80::2", ev.src6.u6_addr8);
	inet_pton(AF_INET, "192.168.0.1", &ev.dst_ip4);
	ev.pairs[0].a = 20;
	ev.pairs[0].b = 21;
	ev.pairs[1].a = 22;
	ev.pairs[1].b = 23;
	ev.ratio = 0.25;
	ev.done = true;

	const struct want want[] = {
		W_INT("s8", -5),
		W_INT("s16", -300),
		W_INT("s32", -70000),
		W_INT("s64", -5000000000LL),
		W_UINT("u8", 200),
		W_UINT("u16", 60000),
		W_UINT("u32", 4000000000U),
		W_UINT("u64", 18000000000000000000ULL),
		W_FLAG("flag", 1),
		W_TEXT("color", "TYPES_BLUE"),
		W_TEXT("comm", "bash\\x01\\x5cx"),
		W_TEXT("saddr", "10.1.2.3"),
		W_TEXT("daddr6", "2001:db8::1"),
		W_UINT("dport", 443),
		W_TEXT("ifindex", "lo"),
		W_TEXT("err", "ENOENT"),
		W_TEXT("syscall_nr", "getpid"),
		W_TEXT("func_ip", want_ksym),
		W_TEXT("cgroup_id", "/"),
		W_UINT("pair.a", 1),
		W_UINT("pair.b", 2),
		W_UINT("nest.x", 3),
		W_UINT("nest.deep.a", 4),
		W_UINT("nest.deep.b", 5),
		W_UINT("u.word", 6 | 7 << 16),
		W_UINT("u.halves[0]", 6),
		W_UINT("u.halves[1]", 7),
		W_UINT("lo", 5),
		W_UINT("mid", 300),
		W_UINT("hi", 1000000),
		W_INT("sneg", -7),
		W_INT("spos", 100),
		W_TEXT("shade", "TYPES_GREEN"),
		W_UINT("counts[0]", 10),
		W_UINT("counts[1]", 11),
		W_UINT("counts[2]", 12),
		W_UINT("anon_a", 13),
		W_TEXT("names[0]", "ab"),
		W_TEXT("names[1]", "wxyz"),
		W_TEXT("mac", "0011223344ff"),
		W_TEXT("ptr", "0xdeadbeef"),
		W_TEXT("cookie", "0xabc"),
		W_TEXT("ret", "EACCES"),
		W_TEXT("last_errno", "ENOENT"),
		W_TEXT("src6", "fe80::2"),
		W_TEXT("dst_ip4", "192.168.0.1"),
		W_UINT("pairs[0].a", 20),
		W_UINT("pairs[0].b", 21),
		W_UINT("pairs[1].a", 22),
		W_UINT("pairs[1].b", 23),
		W_REAL("ratio", 0.25),
		W_FLAG("done", 1),
	};

	decode_ok(fx->btf, id, &ev, sizeof(ev), "", &fs);
	assert_fields(&fs, want, sizeof(want) / sizeof(want[0]));
	fields_free(&fs);
}

/* Names that match a convention fall back to the plain number when the
 * value has no name; enums too. */
static void test_event_fallbacks(void **state)
{
	struct fixture *fx = *state;
	uint32_t id = struct_id(fx->btf, "types_event");
	struct types_event ev;
	struct fields fs = { 0 };
	const char *names[] = { "color", "ifindex", "err", "syscall_nr",
				"ret", "last_errno", "cgroup_id", "func_ip" };
	const struct want want[] = {
		W_UINT("color", 99),
		W_INT("ifindex", 1000000),
		W_INT("err", 5),
		W_TEXT("syscall_nr", "close"),
		W_INT("ret", -100000),
		W_UINT("last_errno", 0),
		W_UINT("cgroup_id", 0xfffffffffffffULL),
		W_TEXT("func_ip", "0x0"),
	};

	memset(&ev, 0, sizeof(ev));
	ev.color = 99;
	ev.ifindex = 1000000;
	ev.err = 5;
	ev.syscall_nr = SYS_close;
	ev.ret = -100000;
	ev.cgroup_id = 0xfffffffffffffULL;
	decode_ok(fx->btf, id, &ev, sizeof(ev), "", &fs);
	for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
		bool seen = false;

		for (size_t i = 0; i < fs.n; i++)
			if (!strcmp(fs.v[i]->name, names[w])) {
				assert_field(fs.v[i], &want[w]);
				seen = true;
			}
		if (!seen)
			fail_msg("no field %s", names[w]);
	}
	fields_free(&fs);
}

static void test_key_with_prefix(void **state)
{
	struct fixture *fx = *state;
	uint32_t id = struct_id(fx->btf, "types_key");
	struct types_key key = { .ifindex = 1, .sport = htons(8080) };
	struct fields fs = { 0 };
	const struct want want[] = {
		W_TEXT("key.ifindex", "lo"),
		W_UINT("key.sport", 8080),
	};

	decode_ok(fx->btf, id, &key, sizeof(key), "key", &fs);
	assert_fields(&fs, want, 2);
	fields_free(&fs);
}

/* A map of plain numbers: one leaf named after the prefix alone. */
static void test_plain_number_value(void **state)
{
	struct fixture *fx = *state;
	struct bpf_map *map = bpf_object__find_map_by_name(fx->obj, "totals");
	uint64_t total = 12345;
	struct fields fs = { 0 };
	const struct want named = W_UINT("totals", 12345);
	const struct want bare = W_UINT("", 12345);

	assert_non_null(map);
	decode_ok(fx->btf, bpf_map__btf_value_type_id(map), &total,
		  sizeof(total), "totals", &fs);
	assert_fields(&fs, &named, 1);
	decode_ok(fx->btf, bpf_map__btf_value_type_id(map), &total,
		  sizeof(total), "", &fs);
	assert_field(fs.v[1], &bare);
	assert_int_equal(fs.n, 2);
	fields_free(&fs);
}

static void test_size_mismatch_is_422(void **state)
{
	struct fixture *fx = *state;
	uint32_t id = struct_id(fx->btf, "types_event");
	struct decoder *dec = (struct decoder *)1;
	struct gerr err = { 0 };

	assert_int_equal(decode_new(fx->btf, id, sizeof(struct types_event) + 8,
				    &dec, &err), -1);
	assert_null(dec);
	assert_int_equal(err.status, 422);
	assert_non_null(strstr(err.msg, "types_event"));

	memset(&err, 0, sizeof(err));
	assert_int_equal(decode_new(fx->btf, 999999, 8, &dec, &err), -1);
	assert_int_equal(err.status, 422);
}

/* A record shorter than the type is shown raw, not misread. */
static void test_short_record_is_raw(void **state)
{
	struct fixture *fx = *state;
	uint32_t id = struct_id(fx->btf, "types_key");
	struct decoder *dec;
	struct gerr err = { 0 };
	struct fields fs = { 0 };
	const uint8_t bytes[3] = { 1, 2, 0xab };
	const struct want want[] = {
		W_TEXT("key.raw", "0102ab"),
		W_UINT("key.size", 3),
	};

	assert_int_equal(decode_new(fx->btf, id, sizeof(struct types_key),
				    &dec, &err), 0);
	assert_int_equal(decode_fields(dec, bytes, sizeof(bytes), "key",
				       &fs.v, &fs.n), 0);
	assert_fields(&fs, want, 2);
	fields_free(&fs);
	assert_packs(dec, bytes, sizeof(bytes), "key");
	decode_free(dec);
}

static void test_raw_without_btf(void **state)
{
	struct decoder *dec;
	struct gerr err = { 0 };
	struct fields fs = { 0 };
	const uint8_t bytes[] = { 0, 1, 0x7f, 0x80, 0xff };
	uint8_t big[5000];
	const struct want want[] = {
		W_TEXT("raw", "00017f80ff"),
		W_UINT("size", 5),
	};

	(void)state;
	assert_int_equal(decode_new(NULL, 0, sizeof(bytes), &dec, &err), 0);
	assert_true(decode_is_raw(dec));
	assert_int_equal(decode_fields(dec, bytes, sizeof(bytes), "", &fs.v,
				       &fs.n), 0);
	assert_fields(&fs, want, 2);
	fields_free(&fs);
	assert_packs(dec, bytes, sizeof(bytes), "");

	/* long records: the hex is cut and says so, the size is whole */
	memset(big, 0xee, sizeof(big));
	assert_int_equal(decode_fields(dec, big, sizeof(big), "v", &fs.v,
				       &fs.n), 0);
	assert_int_equal(fs.n, 2);
	assert_string_equal(fs.v[0]->name, "v.raw");
	assert_int_equal(strlen(fs.v[0]->text), 4096 * 2 + 3);
	assert_string_equal(fs.v[0]->text + 4096 * 2, "...");
	assert_int_equal(fs.v[1]->uint, sizeof(big));
	fields_free(&fs);
	assert_packs(dec, big, sizeof(big), "v");
	assert_packs(dec, big, 0, "v");
	decode_free(dec);
}

/* ---------------------------------------------------------------- built BTF */

/* A struct of one int member `name` of `bytes` bytes, signed or not. */
static struct btf *one_int_struct(const char *name, size_t bytes,
				  bool is_signed, uint32_t *id)
{
	struct btf *btf = btf__new_empty();
	int int_id, sid;

	assert_non_null(btf);
	int_id = btf__add_int(btf, is_signed ? "long" : "unsigned long", bytes,
			      is_signed ? BTF_INT_SIGNED : 0);
	assert_true(int_id > 0);
	sid = btf__add_struct(btf, "s", bytes);
	assert_true(sid > 0);
	assert_int_equal(btf__add_field(btf, name, int_id, 0, 0), 0);
	*id = sid;
	return btf;
}

static void decode_one(const char *name, size_t bytes, bool is_signed,
		       uint64_t value, const struct want *w)
{
	uint32_t id;
	struct btf *btf = one_int_struct(name, bytes, is_signed, &id);
	struct fields fs = { 0 };

	decode_ok(btf, id, &value, bytes, "", &fs);
	assert_fields(&fs, w, 1);
	fields_free(&fs);
	btf__free(btf);
}

static void test_conventions(void **state)
{
	(void)state;
	decode_one("ifindex", 4, true, 1,
		   &(struct want)W_TEXT("ifindex", "lo"));
	decode_one("IfIndex", 4, true, 1,
		   &(struct want)W_TEXT("IfIndex", "lo"));
	decode_one("err", 4, true, (uint32_t)-2,
		   &(struct want)W_TEXT("err", "ENOENT"));
	decode_one("ret", 8, true, (uint64_t)-12,
		   &(struct want)W_TEXT("ret", "ENOMEM"));
	decode_one("ret", 8, true, 12, &(struct want)W_INT("ret", 12));
	decode_one("ret", 8, false, (uint64_t)-12,
		   &(struct want)W_UINT("ret", (uint64_t)-12));
	decode_one("syscall", 4, false, SYS_getpid,
		   &(struct want)W_TEXT("syscall", "getpid"));
	decode_one("nr", 8, true, SYS_read, &(struct want)W_TEXT("nr", "read"));
	decode_one("prev_hash", 4, false, 0xbeef,
		   &(struct want)W_TEXT("prev_hash", "0xbeef"));
	decode_one("src_port", 2, false, htons(53),
		   &(struct want)W_UINT("src_port", 53));
	decode_one("support", 2, false, htons(53),
		   &(struct want)W_UINT("support", htons(53)));
	decode_one("ip", 4, false, htonl(0x7f000001),
		   &(struct want)W_TEXT("ip", "127.0.0.1"));
	decode_one("addr", 8, false, 0x1234,
		   &(struct want)W_UINT("addr", 0x1234));
	decode_one("cgid", 4, false, 1, &(struct want)W_UINT("cgid", 1));
}

/* A cgroup below the root is found by its id, the inode number of its
 * directory. */
static void test_cgroup_child(void **state)
{
	char root[256], parent[300], child[400], want_path[100];
	struct stat st;

	(void)state;
	assert_true(cgroup2_root(root, sizeof(root)));
	snprintf(want_path, sizeof(want_path), "/graind-decode-%d/inner",
		 (int)getpid());
	snprintf(parent, sizeof(parent), "%s/graind-decode-%d", root,
		 (int)getpid());
	snprintf(child, sizeof(child), "%s%s", root, want_path);
	if (mkdir(parent, 0755))
		skip();
	assert_int_equal(mkdir(child, 0755), 0);
	assert_int_equal(stat(child, &st), 0);
	decode_one("cgroup_id", 8, false, st.st_ino,
		   &(struct want)W_TEXT("cgroup_id", want_path));
	decode_one("target_cgroup", 8, false, st.st_ino,
		   &(struct want)W_TEXT("target_cgroup", want_path));
	rmdir(child);
	rmdir(parent);
}

static void test_top_level_array(void **state)
{
	struct btf *btf = btf__new_empty();
	int u32, arr;
	uint32_t v[3] = { 7, 8, 9 };
	struct fields fs = { 0 };
	const struct want want[] = {
		W_UINT("hist[0]", 7), W_UINT("hist[1]", 8), W_UINT("hist[2]", 9),
	};

	(void)state;
	u32 = btf__add_int(btf, "unsigned int", 4, 0);
	arr = btf__add_array(btf, u32, u32, 3);
	assert_true(arr > 0);
	decode_ok(btf, arr, v, sizeof(v), "hist", &fs);
	assert_fields(&fs, want, 3);
	fields_free(&fs);
	btf__free(btf);
}

static void test_enum_signed_and_64(void **state)
{
	struct btf *btf = btf__new_empty();
	int e, e64, sid;
	struct {
		int32_t a;
		uint32_t pad;
		uint64_t b;
	} rec = { -1, 0, 1ULL << 40 };
	struct fields fs = { 0 };
	const struct want want[] = {
		W_TEXT("a", "MINUS_ONE"), W_TEXT("b", "BIG"),
	};

	(void)state;
	e = btf__add_enum(btf, "sgn", 4);
	assert_int_equal(btf__add_enum_value(btf, "MINUS_ONE", -1), 0);
	assert_int_equal(btf__add_enum_value(btf, "ONE", 1), 0);
	e64 = btf__add_enum64(btf, "wide", 8, false);
	assert_int_equal(btf__add_enum64_value(btf, "BIG", 1ULL << 40), 0);
	sid = btf__add_struct(btf, "r", sizeof(rec));
	assert_int_equal(btf__add_field(btf, "a", e, 0, 0), 0);
	assert_int_equal(btf__add_field(btf, "b", e64, 64, 0), 0);
	decode_ok(btf, sid, &rec, sizeof(rec), "", &fs);
	assert_fields(&fs, want, 2);
	fields_free(&fs);
	btf__free(btf);
}

/* An address name on a char array is still a string. */
static void test_string_named_like_address(void **state)
{
	struct btf *btf = btf__new_empty();
	int c, arr, sid;
	char rec[16] = "eth0";
	struct fields fs = { 0 };
	const struct want want = W_TEXT("src", "eth0");

	(void)state;
	c = btf__add_int(btf, "char", 1, BTF_INT_SIGNED);
	arr = btf__add_array(btf, c, c, 16);
	sid = btf__add_struct(btf, "r", 16);
	assert_int_equal(btf__add_field(btf, "src", arr, 0, 0), 0);
	decode_ok(btf, sid, rec, sizeof(rec), "", &fs);
	assert_fields(&fs, &want, 1);
	fields_free(&fs);
	btf__free(btf);
}

static void expect_422(const struct btf *btf, uint32_t id, size_t size,
		       const char *words)
{
	struct decoder *dec = (struct decoder *)1;
	struct gerr err = { 0 };

	assert_int_equal(decode_new(btf, id, size, &dec, &err), -1);
	assert_null(dec);
	assert_int_equal(err.status, 422);
	if (!strstr(err.msg, words))
		fail_msg("\"%s\" does not say \"%s\"", err.msg, words);
}

/* BTF written to hurt: it fails with 422, quickly, without reading out of
 * bounds. */
static void test_hostile_btf(void **state)
{
	struct btf *btf = btf__new_empty();
	int u32, self, arr, wide, loop, empty, many, out_of_range;

	(void)state;
	u32 = btf__add_int(btf, "unsigned int", 4, 0);

	/* struct self { struct self a[1]; }: the array is added first,
	 * pointing at the struct that follows it */
	arr = btf__add_array(btf, u32, btf__type_cnt(btf) + 1, 1);
	assert_true(arr > 0);
	self = btf__add_struct(btf, "self", 4);
	assert_int_equal(btf__add_field(btf, "a", arr, 0, 0), 0);
	expect_422(btf, self, 4, "nested deeper");

	/* 60000 members */
	wide = btf__add_struct(btf, "wide", 4);
	for (int i = 0; i < 60000; i++) {
		char name[16];

		snprintf(name, sizeof(name), "m%d", i);
		assert_int_equal(btf__add_field(btf, name, u32, 0, 0), 0);
	}
	expect_422(btf, wide, 4, "more than 256 fields");

	/* typedef loop */
	loop = btf__add_typedef(btf, "loop", btf__type_cnt(btf));
	assert_true(loop > 0);
	expect_422(btf, loop, 4, "");

	/* four billion empty structs */
	empty = btf__add_struct(btf, "empty", 0);
	many = btf__add_array(btf, u32, empty, 0xffffffffU);
	assert_true(many > 0);
	expect_422(btf, many, 0, "elements");

	/* a member that claims to lie past the struct's end */
	out_of_range = btf__add_struct(btf, "liar", 4);
	assert_int_equal(btf__add_field(btf, "far", u32, 8 * 1000, 0), 0);
	expect_422(btf, out_of_range, 4, "far");
	btf__free(btf);
}

static void test_field_text_and_number(void **state)
{
	Graind__Field f = GRAIND__FIELD__INIT;
	char buf[64];
	double d;

	(void)state;
	f.value_case = GRAIND__FIELD__VALUE_INT;
	f.int_ = -42;
	decode_field_text(&f, buf, sizeof(buf));
	assert_string_equal(buf, "-42");
	assert_true(decode_field_number(&f, &d));
	assert_true(d == -42);

	f.value_case = GRAIND__FIELD__VALUE_UINT;
	f.uint = 18446744073709551615ULL;
	decode_field_text(&f, buf, sizeof(buf));
	assert_string_equal(buf, "18446744073709551615");

	f.value_case = GRAIND__FIELD__VALUE_REAL;
	f.real = 0.5;
	decode_field_text(&f, buf, sizeof(buf));
	assert_string_equal(buf, "0.5");
	assert_true(decode_field_number(&f, &d));
	assert_true(d == 0.5);

	f.value_case = GRAIND__FIELD__VALUE_FLAG;
	f.flag = 1;
	decode_field_text(&f, buf, sizeof(buf));
	assert_string_equal(buf, "true");
	assert_true(decode_field_number(&f, &d));
	assert_true(d == 1);

	f.value_case = GRAIND__FIELD__VALUE_TEXT;
	f.text = "ENOENT";
	decode_field_text(&f, buf, 4);
	assert_string_equal(buf, "ENO");
	assert_false(decode_field_number(&f, &d));
}

/* ------------------------------------------------------------ visiting */

/* What a visit saw: each leaf copied into a Graind__Field. */
struct visit {
	struct fields fs;
	size_t calls;
	size_t stop_at;		/* 0: never stop */
	int stop_with;
};

static int visit_leaf(void *ctx, const char *name, size_t name_len,
		      const struct decode_value *v)
{
	struct visit *vi = ctx;
	Graind__Field *f;

	vi->calls++;
	vi->fs.v = realloc(vi->fs.v, (vi->fs.n + 1) * sizeof(*vi->fs.v));
	assert_non_null(vi->fs.v);
	f = (Graind__Field *)pbmsg_new(&graind__field__descriptor);
	assert_non_null(f);
	vi->fs.v[vi->fs.n++] = f;
	f->name = strndup(name, name_len);
	f->value_case = v->is;
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
		f->text = strndup(v->text, v->text_len);
		break;
	default:
		fail_msg("leaf %s without a value", f->name);
	}
	return vi->calls == vi->stop_at ? vi->stop_with : 0;
}

/* decode_visit() sees what decode_fields() gives, names without prefix. */
static void assert_visit_matches(const struct decoder *dec, const void *data,
				 size_t len)
{
	struct visit vi = { 0 };
	struct fields fs = { 0 };

	assert_int_equal(decode_visit(dec, data, len, visit_leaf, &vi), 0);
	assert_int_equal(decode_fields(dec, data, len, "", &fs.v, &fs.n), 0);
	assert_int_equal(vi.fs.n, fs.n);
	for (size_t i = 0; i < fs.n; i++)
		assert_same_field(vi.fs.v[i], fs.v[i]);
	fields_free(&fs);
	fields_free(&vi.fs);
}

static void test_visit_leaves(void **state)
{
	struct fixture *fx = *state;
	uint32_t id = struct_id(fx->btf, "types_event");
	struct decoder *dec;
	struct gerr err = { 0 };
	struct types_event ev;
	struct visit vi = { 0 };
	const struct want want[] = {
		W_INT("s8", -5),
		W_INT("s16", -300),
		W_INT("s32", -70000),
		W_INT("s64", -5000000000LL),
		W_UINT("u8", 200),
		W_UINT("u16", 0),
		W_UINT("u32", 0),
		W_UINT("u64", 0),
		W_FLAG("flag", 1),
		W_TEXT("color", "TYPES_BLUE"),
		W_TEXT("comm", "bash"),
	};
	const size_t n_want = sizeof(want) / sizeof(want[0]);
	const struct want nest_x = W_UINT("nest.x", 3);
	const struct want deep_b = W_UINT("nest.deep.b", 5);
	const struct want done = W_FLAG("done", 1);
	const uint8_t short_record[3] = { 1, 2, 3 };

	memset(&ev, 0, sizeof(ev));
	ev.s8 = -5;
	ev.s16 = -300;
	ev.s32 = -70000;
	ev.s64 = -5000000000LL;
	ev.u8 = 200;
	ev.flag = true;
	ev.color = TYPES_BLUE;
	memcpy(ev.comm, "bash", 5);
	ev.nest.x = 3;
	ev.nest.deep.a = 4;
	ev.nest.deep.b = 5;
	ev.done = true;
	assert_int_equal(decode_new(fx->btf, id, sizeof(ev), &dec, &err), 0);
	assert_visit_matches(dec, &ev, sizeof(ev));
	assert_visit_matches(dec, short_record, sizeof(short_record));

	/* Stopped after the 11th leaf, with what the visitor returned. */
	vi.stop_at = n_want;
	vi.stop_with = 42;
	assert_int_equal(decode_visit(dec, &ev, sizeof(ev), visit_leaf, &vi),
			 42);
	assert_int_equal(vi.calls, n_want);
	assert_fields(&vi.fs, want, n_want);
	fields_free(&vi.fs);

	/* Nested members by their dotted names, the bitfield bool last. */
	vi = (struct visit){ 0 };
	assert_int_equal(decode_visit(dec, &ev, sizeof(ev), visit_leaf, &vi),
			 0);
	assert_int_equal(vi.calls, 52);
	assert_field(vi.fs.v[21], &nest_x);
	assert_field(vi.fs.v[23], &deep_b);
	assert_field(vi.fs.v[51], &done);
	fields_free(&vi.fs);

	/* A raw record stops at its first leaf too. */
	vi = (struct visit){ .stop_at = 1, .stop_with = -7 };
	assert_int_equal(decode_visit(dec, short_record, sizeof(short_record),
				      visit_leaf, &vi), -7);
	assert_int_equal(vi.calls, 1);
	assert_string_equal(vi.fs.v[0]->name, "raw");
	assert_string_equal(vi.fs.v[0]->text, "010203");
	fields_free(&vi.fs);
	decode_free(dec);
}

/* The leaf of a plain-number type is named "". */
static void test_visit_plain_number(void **state)
{
	struct fixture *fx = *state;
	struct bpf_map *map = bpf_object__find_map_by_name(fx->obj, "totals");
	struct decoder *dec;
	uint64_t total = 12345;
	struct visit vi = { 0 };
	const struct want bare = W_UINT("", 12345);
	struct gerr err = { 0 };

	assert_non_null(map);
	assert_int_equal(decode_new(fx->btf, bpf_map__btf_value_type_id(map),
				    sizeof(total), &dec, &err), 0);
	assert_int_equal(decode_visit(dec, &total, sizeof(total), visit_leaf,
				      &vi), 0);
	assert_fields(&vi.fs, &bare, 1);
	fields_free(&vi.fs);
	decode_free(dec);
}

/* Values as text, as groups and tags read them, cut to the buffer. */
static void test_value_text(void **state)
{
	struct decode_value v = { .is = GRAIND__FIELD__VALUE_INT,
				  .i = INT64_MIN };
	char buf[64];
	double d;

	(void)state;
	assert_int_equal(decode_value_text(&v, buf, sizeof(buf)), 20);
	assert_string_equal(buf, "-9223372036854775808");
	v.i = 0;
	decode_value_text(&v, buf, sizeof(buf));
	assert_string_equal(buf, "0");
	v.i = -12345;
	assert_int_equal(decode_value_text(&v, buf, 4), 3);
	assert_string_equal(buf, "-12");

	v = (struct decode_value){ .is = GRAIND__FIELD__VALUE_UINT,
				   .u = UINT64_MAX };
	decode_value_text(&v, buf, sizeof(buf));
	assert_string_equal(buf, "18446744073709551615");

	v = (struct decode_value){ .is = GRAIND__FIELD__VALUE_REAL,
				   .real = 0.1 };
	assert_int_equal(decode_value_text(&v, buf, sizeof(buf)), 19);
	assert_string_equal(buf, "0.10000000000000001");
	assert_int_equal(decode_value_text(&v, buf, 5), 4);
	assert_string_equal(buf, "0.10");

	v = (struct decode_value){ .is = GRAIND__FIELD__VALUE_FLAG,
				   .flag = false };
	decode_value_text(&v, buf, sizeof(buf));
	assert_string_equal(buf, "false");
	assert_true(decode_value_number(&v, &d));
	assert_true(d == 0);

	/* Not NUL-terminated: only text_len bytes count. */
	v = (struct decode_value){ .is = GRAIND__FIELD__VALUE_TEXT,
				   .text = "ENOENTxyz", .text_len = 6 };
	assert_int_equal(decode_value_text(&v, buf, sizeof(buf)), 6);
	assert_string_equal(buf, "ENOENT");
	assert_false(decode_value_number(&v, &d));

	v = (struct decode_value){ .is = GRAIND__FIELD__VALUE__NOT_SET };
	assert_int_equal(decode_value_text(&v, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	assert_false(decode_value_number(&v, &d));
}

/* ------------------------------------------------------------- packing */

static struct decoder *decoder_ok(const struct btf *btf, uint32_t id,
				  size_t size)
{
	struct decoder *dec = NULL;
	struct gerr err = { 0 };

	if (decode_new(btf, id, size, &dec, &err))
		fail_msg("decode_new: %d %s", err.status, err.msg);
	return dec;
}

/* protobuf-c's bytes for messages holding decode_fields' output: a Sample
 * with nothing but fields, and a MapEntry, whose key and value are fields
 * 1 and 2. */
static void test_pack_bytes_as_protobuf_c(void **state)
{
	struct fixture *fx = *state;
	struct decoder *ev_dec = decoder_ok(fx->btf,
					    struct_id(fx->btf, "types_event"),
					    sizeof(struct types_event));
	struct decoder *key_dec = decoder_ok(fx->btf,
					     struct_id(fx->btf, "types_key"),
					     sizeof(struct types_key));
	struct types_event ev;
	struct types_key key = { .ifindex = 1, .sport = htons(22) };
	struct fields value = { 0 }, keys = { 0 };
	Graind__Sample sample = GRAIND__SAMPLE__INIT;
	Graind__MapEntry entry = GRAIND__MAP_ENTRY__INIT;
	struct pbwire w = { 0 };
	uint8_t packed[8192];

	memset(&ev, 0x5a, sizeof(ev));
	memcpy(ev.comm, "sshd\0", 5);
	assert_int_equal(decode_fields(ev_dec, &ev, sizeof(ev), "", &value.v,
				       &value.n), 0);
	assert_int_equal(decode_fields(key_dec, &key, sizeof(key), "key",
				       &keys.v, &keys.n), 0);
	assert_true(value.n > 40);
	assert_int_equal(keys.n, 2);

	sample.fields = value.v;
	sample.n_fields = value.n;
	assert_true(graind__sample__get_packed_size(&sample) <= sizeof(packed));
	assert_int_equal(decode_pack_fields(ev_dec, &ev, sizeof(ev), "", 10,
					    &w), 0);
	assert_int_equal(w.len, graind__sample__pack(&sample, packed));
	assert_memory_equal(w.data, packed, w.len);
	pbwire_free(&w);

	entry.key = keys.v;
	entry.n_key = keys.n;
	entry.value = value.v;
	entry.n_value = value.n;
	assert_true(graind__map_entry__get_packed_size(&entry) <=
		    sizeof(packed));
	assert_int_equal(decode_pack_fields(key_dec, &key, sizeof(key), "key",
					    1, &w), 0);
	assert_int_equal(decode_pack_fields(ev_dec, &ev, sizeof(ev), "", 2,
					    &w), 0);
	assert_int_equal(w.len, graind__map_entry__pack(&entry, packed));
	assert_memory_equal(w.data, packed, w.len);
	pbwire_free(&w);

	fields_free(&value);
	fields_free(&keys);
	decode_free(ev_dec);
	decode_free(key_dec);
}

/* A string whose escaped text outgrows the stack scratch, 128-bit ints
 * and a float. */
static void test_pack_long_text_and_odd_widths(void **state)
{
	struct btf *btf = btf__new_empty();
	struct rec {
		char big[5000];
		__int128 wide;
		__int128 small;
		float f;
	} rec;
	int c, arr, i128, flt, sid;
	struct fields fs = { 0 };
	char *want_big = malloc(sizeof(rec.big) * 4 + 1);

	(void)state;
	assert_non_null(want_big);
	c = btf__add_int(btf, "char", 1, BTF_INT_SIGNED);
	arr = btf__add_array(btf, c, c, sizeof(rec.big));
	i128 = btf__add_int(btf, "__int128", 16, BTF_INT_SIGNED);
	flt = btf__add_float(btf, "float", 4);
	sid = btf__add_struct(btf, "r", sizeof(rec));
	assert_int_equal(btf__add_field(btf, "big", arr, 0, 0), 0);
	assert_int_equal(btf__add_field(btf, "wide", i128,
					offsetof(struct rec, wide) * 8, 0), 0);
	assert_int_equal(btf__add_field(btf, "small", i128,
					offsetof(struct rec, small) * 8, 0), 0);
	assert_int_equal(btf__add_field(btf, "f", flt,
					offsetof(struct rec, f) * 8, 0), 0);

	memset(&rec, 0, sizeof(rec));
	memset(rec.big, 0x01, sizeof(rec.big) - 1);
	for (size_t i = 0; i < sizeof(rec.big) - 1; i++)
		memcpy(want_big + i * 4, "\\x01", 4);
	want_big[(sizeof(rec.big) - 1) * 4] = '\0';
	rec.wide = (__int128)1 << 64 | 0xabc;
	rec.small = 0xabc;
	rec.f = 1.5f;

	const struct want want[] = {
		W_TEXT("big", want_big),
		W_TEXT("wide", "0x10000000000000abc"),
		W_TEXT("small", "0xabc"),
		W_REAL("f", 1.5),
	};

	decode_ok(btf, sid, &rec, sizeof(rec), "", &fs);
	assert_fields(&fs, want, sizeof(want) / sizeof(want[0]));
	fields_free(&fs);
	free(want_big);
	btf__free(btf);
}

/* A writer that has failed stays failed and is not written to. */
static void test_pack_into_failed_writer(void **state)
{
	struct fixture *fx = *state;
	struct decoder *dec = decoder_ok(fx->btf,
					 struct_id(fx->btf, "types_key"),
					 sizeof(struct types_key));
	struct types_key key = { 0 };
	struct pbwire w = { .failed = true };

	assert_int_equal(decode_pack_fields(dec, &key, sizeof(key), "", 10,
					    &w), -1);
	assert_true(w.failed);
	assert_int_equal(w.len, 0);
	assert_null(w.data);
	decode_free(dec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_event_every_field),
		cmocka_unit_test(test_event_fallbacks),
		cmocka_unit_test(test_key_with_prefix),
		cmocka_unit_test(test_plain_number_value),
		cmocka_unit_test(test_size_mismatch_is_422),
		cmocka_unit_test(test_short_record_is_raw),
		cmocka_unit_test(test_raw_without_btf),
		cmocka_unit_test(test_conventions),
		cmocka_unit_test(test_cgroup_child),
		cmocka_unit_test(test_top_level_array),
		cmocka_unit_test(test_enum_signed_and_64),
		cmocka_unit_test(test_string_named_like_address),
		cmocka_unit_test(test_hostile_btf),
		cmocka_unit_test(test_field_text_and_number),
		cmocka_unit_test(test_pack_bytes_as_protobuf_c),
		cmocka_unit_test(test_pack_long_text_and_odd_widths),
		cmocka_unit_test(test_pack_into_failed_writer),
		cmocka_unit_test(test_visit_leaves),
		cmocka_unit_test(test_visit_plain_number),
		cmocka_unit_test(test_value_text),
	};

	return cmocka_run_group_tests(tests, setup_object, teardown_object);
}
