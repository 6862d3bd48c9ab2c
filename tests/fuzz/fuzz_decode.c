/* Fuzz the BTF decoder over random records: decoders for every type of
 * the test objects' BTF (types.bpf.o, accept.bpf.o, emit.bpf.o from
 * $GRAIND_TEST_BPF) that decode_new() accepts, and the raw one; input
 * byte 0 picks one (and whether names get the "key" prefix), the rest is
 * the record. decode_fields(), decode_pack_fields() and decode_visit()
 * must agree: the packed bytes are protobuf-c's for the fields, byte for
 * byte, and the walk visits one leaf per field. */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "proto/graind.pb-c.h"
#include "server/collect/decode.h"
#include "server/util/log.h"
#include "server/util/pbmsg.h"
#include "server/util/pbwire.h"
#include "tests/fuzz/fuzz.h"

#define MAX_DECODERS 255

static struct decoder *decoders[MAX_DECODERS];
static size_t n_decoders;

static void add_decoders(const char *dir, const char *file)
{
	char path[PATH_MAX];
	struct btf *btf;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	btf = btf__parse_elf(path, NULL);
	fuzz_check(btf, "no BTF in %s (set GRAIND_TEST_BPF)", path);
	for (__u32 id = 1; id < btf__type_cnt(btf) && n_decoders < MAX_DECODERS; id++) {
		const struct btf_type *t = btf__type_by_id(btf, id);
		struct gerr err = { 0 };
		__s64 size;

		if (!btf_is_composite(t) && !btf_is_int(t) && !btf_is_any_enum(t) &&
		    !btf_is_typedef(t) && !btf_is_array(t))
			continue;
		size = btf__resolve_size(btf, id);
		if (size <= 0 || size > 65536)
			continue;
		if (decode_new(btf, id, (size_t)size, &decoders[n_decoders], &err) == 0)
			n_decoders++;
	}
	btf__free(btf);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("GRAIND_TEST_BPF");
	struct gerr err = { 0 };

	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	if (!dir || !*dir)
		dir = "build/tests/bpf";
	fuzz_check(decode_new(NULL, 0, 64, &decoders[n_decoders++], &err) == 0, "%s", err.msg);
	add_decoders(dir, "types.bpf.o");
	add_decoders(dir, "accept.bpf.o");
	add_decoders(dir, "emit.bpf.o");
	fuzz_check(n_decoders > 10, "only %zu decoders", n_decoders);
	return 0;
}

static int count_leaf(void *ctx, const char *name, size_t name_len,
		      const struct decode_value *v)
{
	char text[64];

	(void)name;
	(void)name_len;
	decode_value_text(v, text, sizeof(text));
	(*(size_t *)ctx)++;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct decoder *dec;
	const char *prefix;
	Graind__Sample sample = GRAIND__SAMPLE__INIT;
	Graind__Field **fields = NULL;
	struct pbwire w = { 0 };
	size_t n = 0, visited = 0, packed_len;
	uint8_t *packed;

	if (!size)
		return 0;
	dec = decoders[(data[0] & 0x7f) % n_decoders];
	prefix = data[0] & 0x80 ? "key" : "";
	data++;
	size--;
	fuzz_check(decode_fields(dec, data, size, prefix, &fields, &n) == 0, "out of memory");
	fuzz_check(decode_pack_fields(dec, data, size, prefix, 10, &w) == 0, "out of memory");
	fuzz_check(decode_visit(dec, data, size, count_leaf, &visited) == 0, "visit failed");
	fuzz_check(visited == n, "%zu leaves visited, %zu fields", visited, n);
	for (size_t i = 0; i < n; i++) {
		char text[64];
		double d;

		fuzz_check(fields[i]->name, "field %zu has no name", i);
		decode_field_text(fields[i], text, sizeof(text));
		decode_field_number(fields[i], &d);
	}
	sample.fields = fields;
	sample.n_fields = n;
	packed_len = graind__sample__get_packed_size(&sample);
	packed = malloc(packed_len + 1);
	fuzz_check(packed, "out of memory");
	fuzz_check(graind__sample__pack(&sample, packed) == packed_len, "pack");
	fuzz_check(w.len == packed_len && !memcmp(w.data, packed, packed_len),
		   "decode_pack_fields wrote %zu bytes, protobuf-c %zu", w.len, packed_len);
	free(packed);
	pbwire_free(&w);
	for (size_t i = 0; i < n; i++)
		pbmsg_free(&fields[i]->base);
	free(fields);
	return 0;
}
