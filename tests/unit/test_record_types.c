/* Unit tests of server/collect/collect_record.c: which structs of an
 * object may be an event map's records (tests/bpf/rectype_*.bpf.c and
 * emit.bpf.c as clang builds them, and BTF built by hand), what records of
 * each size decode as and what is said when they stay hex, and the check
 * that refuses a recordType the object lacks. Nothing is loaded into the
 * kernel. The objects come from $GRAIND_TEST_BPF (default
 * build/tests/bpf). */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "server/util/pbmsg.h"
#include "server/collect/collect.h"
#include "server/collect/collect_int.h"
#include "server/collect/decode.h"

#define WHY_MAX 512

struct object {
	void *bytes;
	size_t len;
	struct bpf_object *obj;
	struct collect_view view;
};

static void object_open(struct object *o, const char *name)
{
	const char *dir = getenv("GRAIND_TEST_BPF");
	char path[512];
	struct stat st;
	FILE *f;

	memset(o, 0, sizeof(*o));
	snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "build/tests/bpf", name);
	f = fopen(path, "rb");
	if (!f || fstat(fileno(f), &st) < 0)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	o->bytes = malloc(st.st_size);
	assert_non_null(o->bytes);
	o->len = fread(o->bytes, 1, st.st_size, f);
	assert_int_equal(o->len, (size_t)st.st_size);
	fclose(f);
	o->obj = collect_object_open(o->bytes, o->len);
	assert_non_null(o->obj);
	snprintf(o->view.probe, sizeof(o->view.probe), "ut");
	o->view.btf = (struct btf *)bpf_object__btf(o->obj);
	assert_non_null(o->view.btf);
	assert_int_equal(collect_rectypes(o->view.btf, &o->view.rectypes, &o->view.n_rectypes), 0);
}

static void object_close(struct object *o)
{
	free(o->view.rectypes);
	bpf_object__close(o->obj);
	free(o->bytes);
}

/* The candidates as "name:size name:size". */
static void candidates(const struct collect_rectype *t, size_t n, char *buf, size_t len)
{
	size_t at = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n; i++)
		at += (size_t)snprintf(buf + at, len - at, "%s%s:%u", i ? " " : "", t[i].name, t[i].size);
}

static void assert_candidates(const char *object, const char *want)
{
	struct object o;
	char got[512];

	object_open(&o, object);
	candidates(o.view.rectypes, o.view.n_rectypes, got, sizeof(got));
	assert_string_equal(got, want);
	object_close(&o);
}

/* ================================================================ candidates */

/* Structs of the object's own globals and map values, by name; not a map's
 * key, not the program's context type, not what CO-RE reads (task_struct
 * and the hundreds of kernel structs it brings, many of 64 bytes). */
static void test_candidates_of_built_objects(void **state)
{
	(void)state;
	assert_candidates("rectype_one.bpf.o", "out_rec:10 sample_rec:64 tick_rec:24");
	assert_candidates("rectype_twins.bpf.o", "pair_a:16 pair_b:16");
	assert_candidates("rectype_none.bpf.o", "tune:8");
	assert_candidates("emit.bpf.o", "event:40 pcpu_stat:16 record:16");
}

static int add_global(struct btf *btf, const char *name, int type)
{
	int var = btf__add_var(btf, name, BTF_VAR_GLOBAL_ALLOCATED, type);

	assert_true(var > 0);
	return var;
}

static void add_section(struct btf *btf, const char *name, const int *vars, size_t n)
{
	assert_true(btf__add_datasec(btf, name, 8 * n) > 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(btf__add_datasec_var_info(btf, vars[i], 8 * i, 8), 0);
}

/* What BTF says by hand: a typedef names an anonymous struct (and is how a
 * spec calls it), a typedef of a pointer names none, arrays and qualifiers
 * are seen through, a struct met only as a member, a forward declaration,
 * a .ksyms extern and a struct_ops table are not candidates, and one
 * struct kept twice is listed once. */
static void test_candidates_by_hand(void **state)
{
	struct btf *btf = btf__new_empty();
	struct collect_rectype *t = NULL;
	int u32, inner, outer, anon, named_anon, anon2, handle, fwd, kern, vars[7];
	size_t n = 0;
	char got[512];

	(void)state;
	u32 = btf__add_int(btf, "u32", 4, 0);
	inner = btf__add_struct(btf, "inner", 4);
	btf__add_field(btf, "x", u32, 0, 0);
	outer = btf__add_struct(btf, "outer", 8);
	btf__add_field(btf, "a", inner, 0, 0);
	btf__add_field(btf, "b", u32, 32, 0);
	anon = btf__add_struct(btf, NULL, 12);
	btf__add_field(btf, "v", u32, 0, 0);
	named_anon = btf__add_typedef(btf, "anon_t", anon);
	anon2 = btf__add_struct(btf, NULL, 20);
	btf__add_field(btf, "w", u32, 0, 0);
	handle = btf__add_typedef(btf, "handle_t", btf__add_ptr(btf, anon2));
	fwd = btf__add_fwd(btf, "later", BTF_FWD_STRUCT);
	kern = btf__add_struct(btf, "rq", 24);
	btf__add_field(btf, "nr", u32, 0, 0);
	vars[0] = add_global(btf, "unused_outer", btf__add_ptr(btf, btf__add_const(btf, outer)));
	vars[1] = add_global(btf, "anons", btf__add_array(btf, u32, named_anon, 4));
	vars[2] = add_global(btf, "h", handle);
	vars[3] = add_global(btf, "l", btf__add_ptr(btf, fwd));
	vars[4] = add_global(btf, "again", outer);
	add_section(btf, ".bss", vars, 5);
	vars[5] = add_global(btf, "runqueues", kern);
	add_section(btf, ".ksyms", vars + 5, 1);
	vars[6] = add_global(btf, "my_cc", kern);
	add_section(btf, ".struct_ops.link", vars + 6, 1);
	assert_int_equal(collect_rectypes(btf, &t, &n), 0);
	candidates(t, n, got, sizeof(got));
	assert_string_equal(got, "anon_t:12 outer:8");
	assert_int_equal(t[0].type_id, anon);
	free(t);
	btf__free(btf);

	assert_int_equal(collect_rectypes(NULL, &t, &n), 0);
	assert_null(t);
	assert_int_equal(n, 0);
}

/* ================================================================ by size */

/* Event map "rb" whose records take their type by size. */
static struct collect_map event_map(enum bpf_map_type type)
{
	struct collect_map m = { .type = type, .by_size = true, .name = "rb", .shown = "rb" };

	return m;
}

/* The names of the fields dec gives a record of len zero bytes. */
static void field_names(const struct decoder *dec, size_t len, char *buf, size_t n)
{
	uint8_t zero[128] = { 0 };
	Graind__Field **fields = NULL;
	size_t count = 0, at = 0;

	assert_true(len <= sizeof(zero));
	assert_int_equal(decode_fields(dec, zero, len, "", &fields, &count), 0);
	buf[0] = '\0';
	for (size_t i = 0; i < count; i++) {
		at += (size_t)snprintf(buf + at, n - at, "%s%s", i ? " " : "", fields[i]->name);
		pbmsg_free(&fields[i]->base);
	}
	free(fields);
}

/* Pick for records of len bytes; the names of the fields they decode as
 * ("" when none fits), and why into why. */
static void pick(const struct object *o, const struct collect_map *m, size_t len, char *names,
		 size_t n, char *why)
{
	struct decoder *dec = (struct decoder *)1;

	assert_int_equal(collect_record_pick(&o->view, m, len, &dec, why, WHY_MAX), 0);
	if (!dec) {
		assert_true(why[0] != '\0');
		names[0] = '\0';
		return;
	}
	assert_string_equal(why, "");
	field_names(dec, len, names, n);
	decode_free(dec);
}

/* A ring buffer's records fit a struct of their exact size; a perf event
 * array's also one up to 7 bytes smaller, as the kernel pads them. */
static void test_pick_by_size(void **state)
{
	struct collect_map ring = event_map(BPF_MAP_TYPE_RINGBUF);
	struct collect_map perf = event_map(BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	char names[512], why[WHY_MAX];
	struct object o;

	(void)state;
	object_open(&o, "rectype_one.bpf.o");
	pick(&o, &ring, 64, names, sizeof(names), why);
	assert_string_equal(names, "pid tgid seq comm daddr dport kind total delta cookie");
	pick(&o, &ring, 10, names, sizeof(names), why);
	assert_string_equal(names, "pid seq code");
	pick(&o, &perf, 12, names, sizeof(names), why);
	assert_string_equal(names, "pid seq code");
	pick(&o, &perf, 68, names, sizeof(names), why);
	assert_string_equal(names, "pid tgid seq comm daddr dport kind total delta cookie");

	pick(&o, &ring, 12, names, sizeof(names), why);
	assert_string_equal(why, "map rb: records of 12 bytes are shown as hex: no struct of the object fits "
			    "(its structs: out_rec (10 bytes), sample_rec (64 bytes), tick_rec (24 bytes)); "
			    "keep theirs in the "
			    "object's BTF with a global pointer of its type, or name it with "
			    "{\"map\": \"rb\", \"events\": {\"recordType\": \"<struct>\"}} in the probe's outputs");
	pick(&o, &ring, 24, names, sizeof(names), why);
	assert_string_equal(names, "seq half pid even");
	pick(&o, &perf, 20, names, sizeof(names), why);
	assert_non_null(strstr(why, "records of 20 bytes (a struct of 13 to 20 bytes, padded) are shown as hex"));
	pick(&o, &perf, 28, names, sizeof(names), why);
	assert_string_equal(names, "seq half pid even");
	pick(&o, &perf, 9, names, sizeof(names), why);    /* 10 bytes never come as 9 */
	assert_non_null(strstr(why, "no struct of the object fits"));
	object_close(&o);
}

static void test_pick_says_why(void **state)
{
	struct collect_map m = event_map(BPF_MAP_TYPE_RINGBUF);
	char names[512], why[WHY_MAX];
	struct object o;
	int id;

	(void)state;
	object_open(&o, "rectype_twins.bpf.o");
	pick(&o, &m, 16, names, sizeof(names), why);
	assert_string_equal(why, "map rb: records of 16 bytes are shown as hex: several structs of the "
			    "object fit (pair_a, pair_b); say which with {\"map\": \"rb\", \"events\": "
			    "{\"recordType\": \"<struct>\"}} in the probe's outputs");

	/* Records shorter than the type the map has. */
	id = btf__find_by_name_kind(o.view.btf, "pair_a", BTF_KIND_STRUCT);
	assert_true(id > 0);
	m.typed = true;
	m.by_size = false;
	m.record_type = (uint32_t)id;
	m.record_size = 16;
	pick(&o, &m, 8, names, sizeof(names), why);
	assert_string_equal(why, "map rb: records of 8 bytes are shown as hex: they are shorter than "
			    "their type, pair_a (16 bytes)");

	/* A stored spec naming a type that is not there. */
	m.typed = false;
	m.record_type = 0;
	m.record_named = "gone";
	pick(&o, &m, 16, names, sizeof(names), why);
	assert_string_equal(why, "map rb: records are shown as hex: events.recordType \"gone\" is no "
			    "type the object's BTF can decode");

	m.record_named = NULL;
	m.by_size = true;
	o.view.btf = NULL;
	pick(&o, &m, 16, names, sizeof(names), why);
	assert_string_equal(why, "map rb: records are shown as hex: the object has no BTF");
	object_close(&o);
}

/* However many structs an object has, a warning lists what fits in a
 * line and counts the rest. */
static void test_pick_lists_few(void **state)
{
	struct collect_map m = event_map(BPF_MAP_TYPE_RINGBUF);
	struct object o = { 0 };
	char names[64], why[WHY_MAX], name[64];
	struct btf *btf = btf__new_empty();
	int u32 = btf__add_int(btf, "u32", 4, 0), vars[100];

	(void)state;
	for (int i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "a_rather_long_struct_name_%02d", i);
		btf__add_struct(btf, name, 4 * (i + 1));
		btf__add_field(btf, "x", u32, 0, 0);
		snprintf(name, sizeof(name), "unused_%02d", i);
		vars[i] = add_global(btf, name, btf__add_ptr(btf, btf__type_cnt(btf) - 1));
	}
	add_section(btf, ".bss", vars, 100);
	o.view.btf = btf;
	assert_int_equal(collect_rectypes(btf, &o.view.rectypes, &o.view.n_rectypes), 0);
	assert_int_equal(o.view.n_rectypes, 100);
	pick(&o, &m, 3, names, sizeof(names), why);
	assert_true(strlen(why) < WHY_MAX - 1);
	assert_non_null(strstr(why, "(its structs: a_rather_long_struct_name_00 (4 bytes), "));
	assert_non_null(strstr(why, " more); keep theirs"));
	pick(&o, &m, 8, names, sizeof(names), why);
	assert_string_equal(names, "x");
	free(o.view.rectypes);
	btf__free(btf);
}

/* ================================================================ check */

static Graind__ProbeSpec *spec_naming(const char *map, const char *record_type)
{
	Graind__ProbeSpec *s = (Graind__ProbeSpec *)pbmsg_new(&graind__probe_spec__descriptor);
	Graind__OutputSpec *o = (Graind__OutputSpec *)pbmsg_new(&graind__output_spec__descriptor);

	assert_non_null(s);
	assert_non_null(o);
	assert_int_equal(pbmsg_set_string(&o->map, map), 0);
	o->kind_case = GRAIND__OUTPUT_SPEC__KIND_EVENTS;
	o->events = (Graind__EventOutput *)pbmsg_new(&graind__event_output__descriptor);
	assert_non_null(o->events);
	assert_int_equal(pbmsg_set_string(&o->events->record_type, record_type), 0);
	s->outputs = calloc(1, sizeof(*s->outputs));
	assert_non_null(s->outputs);
	s->outputs[s->n_outputs++] = o;
	return s;
}

static int check(const struct object *o, const char *map, const char *record_type,
		 struct gerr *err)
{
	Graind__ProbeSpec *s = spec_naming(map, record_type);
	int ret = collect_check_spec(s, o ? o->bytes : "not an ELF", o ? o->len : 10, err);

	pbmsg_free(&s->base);
	return ret;
}

static void test_check_spec(void **state)
{
	struct gerr err = { 0 };
	struct object o;

	(void)state;
	object_open(&o, "rectype_one.bpf.o");
	assert_int_equal(check(&o, "rb", "sample_rec", &err), 0);
	assert_int_equal(check(&o, "rb", "struct sample_rec", &err), 0);
	/* A kernel struct in the BTF can still be named. */
	assert_int_equal(check(&o, "rb", "task_struct", &err), 0);
	assert_int_equal(check(&o, "rb", "", &err), 0);

	assert_int_equal(check(&o, "rb", "struct sample", &err), -1);
	assert_int_equal(err.status, 400);
	assert_string_equal(err.msg, "outputs: map rb: events.recordType \"struct sample\" is no struct "
			    "of the object's BTF; its structs: out_rec (10 bytes), sample_rec (64 bytes), "
			    "tick_rec (24 bytes)");
	object_close(&o);

	object_open(&o, "rectype_none.bpf.o");
	assert_int_equal(check(&o, "rb", "lone_rec", &err), -1);
	assert_int_equal(err.status, 400);
	assert_non_null(strstr(err.msg, "its structs: tune (8 bytes)"));
	object_close(&o);

	/* Bytes libbpf refuses are the attach's to refuse. */
	assert_int_equal(check(NULL, "rb", "x", &err), 0);
}

/* A spec that names no record type is not checked: the object is not
 * even read. */
static void test_check_reads_nothing_without_record_type(void **state)
{
	Graind__ProbeSpec *s = spec_naming("rb", "");
	struct gerr err = { 0 };

	(void)state;
	assert_int_equal(collect_check_spec(s, NULL, 0, &err), 0);
	assert_int_equal(collect_check_stored_spec(NULL, s, &err), 0);
	s->outputs[0]->kind_case = GRAIND__OUTPUT_SPEC__KIND_NONE;
	assert_int_equal(collect_check_spec(s, NULL, 0, &err), 0);
	s->outputs[0]->kind_case = GRAIND__OUTPUT_SPEC__KIND_EVENTS;  /* to free it */
	pbmsg_free(&s->base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_candidates_of_built_objects),
		cmocka_unit_test(test_candidates_by_hand),
		cmocka_unit_test(test_pick_by_size),
		cmocka_unit_test(test_pick_says_why),
		cmocka_unit_test(test_pick_lists_few),
		cmocka_unit_test(test_check_spec),
		cmocka_unit_test(test_check_reads_nothing_without_record_type),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
