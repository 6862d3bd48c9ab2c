/* Unit tests of api/codec.c: round trips of every schema message, filled
 * reflectively, through JSON and protobuf, and the proto3 JSON rules one by
 * one, including what must be refused. */
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/util/codec.h"
#include "server/util/pbmsg.h"
#include "proto/graind.pb-c.h"

/* ================================================================ descriptors */

static const ProtobufCMessageDescriptor *const schema_messages[] = {
	&graind__status__descriptor,
	&graind__health__descriptor,
	&graind__object__descriptor,
	&graind__signer__descriptor,
	&graind__signature_policy__descriptor,
	&graind__caller__descriptor,
	&graind__program__descriptor,
	&graind__map__descriptor,
	&graind__upload_object_request__descriptor,
	&graind__fetch_object_request__descriptor,
	&graind__object_origin__descriptor,
	&graind__image_label__descriptor,
	&graind__list_objects_response__descriptor,
	&graind__verify_report__descriptor,
	&graind__program_verdict__descriptor,
	&graind__auto_attach__descriptor,
	&graind__xdp_attach__descriptor,
	&graind__tc_attach__descriptor,
	&graind__tracepoint_attach__descriptor,
	&graind__raw_tracepoint_attach__descriptor,
	&graind__uprobe_attach__descriptor,
	&graind__kprobe_attach__descriptor,
	&graind__perf_event_attach__descriptor,
	&graind__cgroup_attach__descriptor,
	&graind__attach_spec__descriptor,
	&graind__program_attach__descriptor,
	&graind__constant__descriptor,
	&graind__map_override__descriptor,
	&graind__metric_output__descriptor,
	&graind__event_output__descriptor,
	&graind__output_spec__descriptor,
	&graind__probe_spec__descriptor,
	&graind__image_source__descriptor,
	&graind__program_status__descriptor,
	&graind__tc_filter__descriptor,
	&graind__xdp_slot__descriptor,
	&graind__probe__descriptor,
	&graind__budget__descriptor,
	&graind__probe_usage__descriptor,
	&graind__budget_exceeded__descriptor,
	&graind__list_probes_response__descriptor,
	&graind__tag__descriptor,
	&graind__field__descriptor,
	&graind__sample__descriptor,
	&graind__list_samples_response__descriptor,
	&graind__sample_gap__descriptor,
	&graind__map_entry__descriptor,
	&graind__map_dump__descriptor,
	&graind__statsd_sink__descriptor,
	&graind__s3_sink__descriptor,
	&graind__sink_selector__descriptor,
	&graind__sink_health__descriptor,
	&graind__sink__descriptor,
	&graind__list_sinks_response__descriptor,
	&graind__features__descriptor,
	&graind__agent_status__descriptor,
	&graind__config_file_error__descriptor,
	&graind__config_dir_status__descriptor,
	&graind__storage_health__descriptor,
	&graind__audit_entry__descriptor,
	&graind__list_audit_response__descriptor,
	&graind__empty__descriptor,
	&graind__health_request__descriptor,
	&graind__get_status_request__descriptor,
	&graind__list_objects_request__descriptor,
	&graind__get_object_request__descriptor,
	&graind__get_object_content_request__descriptor,
	&graind__object_content__descriptor,
	&graind__delete_object_request__descriptor,
	&graind__verify_object_request__descriptor,
	&graind__put_probe_request__descriptor,
	&graind__list_probes_request__descriptor,
	&graind__get_probe_request__descriptor,
	&graind__attach_probe_request__descriptor,
	&graind__detach_probe_request__descriptor,
	&graind__delete_probe_request__descriptor,
	&graind__dump_map_request__descriptor,
	&graind__list_samples_request__descriptor,
	&graind__watch_samples_request__descriptor,
	&graind__watch_probes_request__descriptor,
	&graind__probe_event__descriptor,
	&graind__put_sink_request__descriptor,
	&graind__list_sinks_request__descriptor,
	&graind__get_sink_request__descriptor,
	&graind__delete_sink_request__descriptor,
	&graind__list_audit_request__descriptor,
	&graind__get_metrics_request__descriptor,
	&graind__metrics_text__descriptor,
};

#define N_SCHEMA (sizeof(schema_messages) / sizeof(schema_messages[0]))

/* A message with every field type and label the codec supports, several of
 * which the schema does not use yet (sint, fixed, float, optional, packed). */
typedef struct AllTypes AllTypes;
struct AllTypes {
	ProtobufCMessage base;
	int32_t i32;
	int32_t si32;
	int32_t sf32;
	uint32_t u32;
	uint32_t f32;
	int64_t i64;
	int64_t si64;
	int64_t sf64;
	uint64_t u64;
	uint64_t f64;
	float fl;
	double db;
	protobuf_c_boolean b;
	int e;
	char *s;
	ProtobufCBinaryData by;
	AllTypes *child;
	size_t n_r_si32;
	int32_t *r_si32;
	size_t n_r_fl;
	float *r_fl;
	size_t n_r_by;
	ProtobufCBinaryData *r_by;
	size_t n_r_child;
	AllTypes **r_child;
	protobuf_c_boolean has_opt_u32;
	uint32_t opt_u32;
	uint32_t choice_case;
	union {
		float c_float;
		char *c_str;
		ProtobufCBinaryData c_bytes;
		AllTypes *c_child;
	};
};

extern const ProtobufCMessageDescriptor all_types_descriptor;

#define SCALAR(name_, id_, type_, member_) \
	{ name_, id_, PROTOBUF_C_LABEL_NONE, type_, 0, \
	  offsetof(AllTypes, member_), NULL, NULL, 0, 0, NULL, NULL }
#define REPEATED(name_, id_, type_, member_, desc_, flags_) \
	{ name_, id_, PROTOBUF_C_LABEL_REPEATED, type_, \
	  offsetof(AllTypes, n_##member_), offsetof(AllTypes, member_), \
	  desc_, NULL, flags_, 0, NULL, NULL }
#define ONEOF(name_, id_, type_, member_, desc_, def_) \
	{ name_, id_, PROTOBUF_C_LABEL_NONE, type_, \
	  offsetof(AllTypes, choice_case), offsetof(AllTypes, member_), \
	  desc_, def_, PROTOBUF_C_FIELD_FLAG_ONEOF, 0, NULL, NULL }

static const ProtobufCFieldDescriptor all_types_fields[] = {
	SCALAR("i32", 1, PROTOBUF_C_TYPE_INT32, i32),
	SCALAR("si32", 2, PROTOBUF_C_TYPE_SINT32, si32),
	SCALAR("sf32", 3, PROTOBUF_C_TYPE_SFIXED32, sf32),
	SCALAR("u32", 4, PROTOBUF_C_TYPE_UINT32, u32),
	SCALAR("f32", 5, PROTOBUF_C_TYPE_FIXED32, f32),
	SCALAR("i64", 6, PROTOBUF_C_TYPE_INT64, i64),
	SCALAR("si64", 7, PROTOBUF_C_TYPE_SINT64, si64),
	SCALAR("sf64", 8, PROTOBUF_C_TYPE_SFIXED64, sf64),
	SCALAR("u64", 9, PROTOBUF_C_TYPE_UINT64, u64),
	SCALAR("f64", 10, PROTOBUF_C_TYPE_FIXED64, f64),
	SCALAR("fl", 11, PROTOBUF_C_TYPE_FLOAT, fl),
	SCALAR("db", 12, PROTOBUF_C_TYPE_DOUBLE, db),
	SCALAR("b", 13, PROTOBUF_C_TYPE_BOOL, b),
	{ "e", 14, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_ENUM, 0,
	  offsetof(AllTypes, e), &graind__xdp_mode__descriptor, NULL, 0, 0,
	  NULL, NULL },
	{ "s", 15, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_STRING, 0,
	  offsetof(AllTypes, s), NULL, &protobuf_c_empty_string, 0, 0,
	  NULL, NULL },
	SCALAR("by", 16, PROTOBUF_C_TYPE_BYTES, by),
	{ "child", 17, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_MESSAGE, 0,
	  offsetof(AllTypes, child), &all_types_descriptor, NULL, 0, 0,
	  NULL, NULL },
	REPEATED("r_si32", 18, PROTOBUF_C_TYPE_SINT32, r_si32, NULL,
		 PROTOBUF_C_FIELD_FLAG_PACKED),
	REPEATED("r_fl", 19, PROTOBUF_C_TYPE_FLOAT, r_fl, NULL, 0),
	REPEATED("r_by", 20, PROTOBUF_C_TYPE_BYTES, r_by, NULL, 0),
	REPEATED("r_child", 21, PROTOBUF_C_TYPE_MESSAGE, r_child,
		 &all_types_descriptor, 0),
	{ "opt_u32", 22, PROTOBUF_C_LABEL_OPTIONAL, PROTOBUF_C_TYPE_UINT32,
	  offsetof(AllTypes, has_opt_u32), offsetof(AllTypes, opt_u32), NULL,
	  NULL, 0, 0, NULL, NULL },
	ONEOF("c_float", 23, PROTOBUF_C_TYPE_FLOAT, c_float, NULL, NULL),
	ONEOF("c_str", 24, PROTOBUF_C_TYPE_STRING, c_str, NULL,
	      &protobuf_c_empty_string),
	ONEOF("c_bytes", 25, PROTOBUF_C_TYPE_BYTES, c_bytes, NULL, NULL),
	ONEOF("c_child", 26, PROTOBUF_C_TYPE_MESSAGE, c_child,
	      &all_types_descriptor, NULL),
};

/* field indices by name: b by c_bytes c_child c_float c_str child db e f32
 * f64 fl i32 i64 opt_u32 r_by r_child r_fl r_si32 s sf32 sf64 si32 si64 u32
 * u64 */
static const unsigned all_types_by_name[] = {
	12, 15, 24, 25, 22, 23, 16, 11, 13, 4, 9, 10, 0, 5, 21, 19, 20, 18,
	17, 14, 2, 7, 1, 6, 3, 8,
};

static const ProtobufCIntRange all_types_ranges[] = { { 1, 0 }, { 0, 26 } };

static void all_types_init(ProtobufCMessage *msg)
{
	AllTypes *m = (AllTypes *)msg;

	memset(m, 0, sizeof(*m));
	m->base.descriptor = &all_types_descriptor;
	m->s = (char *)protobuf_c_empty_string;
}

const ProtobufCMessageDescriptor all_types_descriptor = {
	PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
	"test.AllTypes", "AllTypes", "AllTypes", "test",
	sizeof(AllTypes),
	26, all_types_fields, all_types_by_name,
	1, all_types_ranges,
	all_types_init,
	NULL, NULL, NULL,
};

/* ================================================================ helpers */

static size_t element_size(ProtobufCType type)
{
	switch (type) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	default:
		return 4;
	}
}

static void fill_message(ProtobufCMessage *msg, int depth, unsigned variant);

/* A non-default value of field f into dst; `salt` tells elements apart. */
static void fill_value(const ProtobufCFieldDescriptor *f, void *dst,
		       int depth, unsigned salt)
{
	int32_t i32 = -123456 - (int32_t)salt;
	uint32_t u32 = 4000000000u - salt;
	int64_t i64 = INT64_MIN + 7 + salt;
	uint64_t u64 = UINT64_MAX - salt;
	float fl = 1.0f / 3 + (float)salt;  /* digits to the last bit */
	double db = 1.0 / 3 + salt;
	protobuf_c_boolean b = 1;
	const ProtobufCEnumDescriptor *ed;
	ProtobufCBinaryData bd;
	ProtobufCMessage *sub;
	char *s;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		memcpy(dst, &i32, 4);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		memcpy(dst, &u32, 4);
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		memcpy(dst, &i64, 8);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		memcpy(dst, &u64, 8);
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		memcpy(dst, &fl, 4);
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		memcpy(dst, &db, 8);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		memcpy(dst, &b, sizeof(b));
		break;
	case PROTOBUF_C_TYPE_ENUM:
		ed = f->descriptor;
		i32 = ed->values[ed->n_values - 1 - salt % ed->n_values].value;
		if (!i32)
			i32 = ed->values[ed->n_values - 1].value;
		memcpy(dst, &i32, 4);
		break;
	case PROTOBUF_C_TYPE_STRING:
		s = malloc(64);
		assert_non_null(s);
		snprintf(s, 64, "%s \"q\\\"\n\t\x01 é ✓ %u", f->name, salt);
		memcpy(dst, &s, sizeof(s));
		break;
	case PROTOBUF_C_TYPE_BYTES:
		bd.len = 5 + salt % 3;
		bd.data = malloc(bd.len);
		assert_non_null(bd.data);
		for (size_t i = 0; i < bd.len; i++)
			bd.data[i] = (uint8_t)(0xfb + i * 37 + salt);
		memcpy(dst, &bd, sizeof(bd));
		break;
	case PROTOBUF_C_TYPE_MESSAGE:
		sub = pbmsg_new(f->descriptor);
		assert_non_null(sub);
		if (depth < 3)
			fill_message(sub, depth + 1, salt);
		memcpy(dst, &sub, sizeof(sub));
		break;
	}
}

/* Position of oneof member f among the members of its oneof, and how many
 * members the oneof has. */
static unsigned oneof_position(const ProtobufCMessageDescriptor *desc,
			       const ProtobufCFieldDescriptor *f,
			       unsigned *members)
{
	unsigned pos = 0;

	*members = 0;
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *g = &desc->fields[i];

		if (!(g->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
		    g->quantifier_offset != f->quantifier_offset)
			continue;
		if (g == f)
			pos = *members;
		(*members)++;
	}
	return pos;
}

/* Every field non-default, two elements per repeated field, oneof member
 * number `variant` (modulo the oneof's size), messages down to depth 3. */
static void fill_message(ProtobufCMessage *msg, int depth, unsigned variant)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;

	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		char *member = (char *)msg + f->offset;
		char *quant = (char *)msg + f->quantifier_offset;
		unsigned members, pos;

		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t es = element_size(f->type);
			char *arr = calloc(2, es);

			assert_non_null(arr);
			fill_value(f, arr, depth, variant);
			fill_value(f, arr + es, depth, variant + 1);
			memcpy(member, &arr, sizeof(arr));
			*(size_t *)quant = 2;
		} else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			pos = oneof_position(desc, f, &members);
			if (pos != variant % members)
				continue;
			*(uint32_t *)quant = f->id;
			fill_value(f, member, depth, variant);
		} else {
			if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
				*(protobuf_c_boolean *)quant = 1;
			fill_value(f, member, depth, variant);
		}
	}
}

static char *pack(const ProtobufCMessage *msg, size_t *len)
{
	struct gerr err = { 0 };
	char *out = NULL;

	assert_int_equal(codec_encode(CODEC_PROTOBUF, msg, &out, len, &err), 0);
	return out;
}

static char *to_json(const ProtobufCMessage *msg)
{
	struct gerr err = { 0 };
	char *out = NULL;
	size_t len = 0;

	if (codec_encode(CODEC_JSON, msg, &out, &len, &err))
		fail_msg("encode %s: %s", msg->descriptor->name, err.msg);
	assert_int_equal(strlen(out), len);
	return out;
}

static ProtobufCMessage *from_json(const ProtobufCMessageDescriptor *desc,
				   const char *json)
{
	struct gerr err = { 0 };
	ProtobufCMessage *msg = NULL;

	if (codec_decode(CODEC_JSON, desc, json, strlen(json), &msg, &err))
		fail_msg("decode %s from %s: %s", desc->name, json, err.msg);
	return msg;
}

/* JSON that must be refused with 400 and a message containing `want`. */
static void expect_json_error(const ProtobufCMessageDescriptor *desc,
			      const char *json, size_t len, const char *want)
{
	struct gerr err = { 0 };
	ProtobufCMessage *msg = (ProtobufCMessage *)1;

	if (!codec_decode(CODEC_JSON, desc, json, len, &msg, &err))
		fail_msg("accepted %s as %s", json, desc->name);
	assert_null(msg);
	assert_int_equal(err.status, 400);
	if (!strstr(err.msg, want))
		fail_msg("error for %s is \"%s\", wanted \"%s\"", json, err.msg,
			 want);
}

static void expect_bad(const ProtobufCMessageDescriptor *desc,
		       const char *json, const char *want)
{
	expect_json_error(desc, json, strlen(json), want);
}

/* encode(msg) == want */
static void expect_json(const ProtobufCMessage *msg, const char *want)
{
	char *json = to_json(msg);

	assert_string_equal(json, want);
	free(json);
}

/* ================================================================ round trips */

static void round_trip(const ProtobufCMessageDescriptor *desc, unsigned variant)
{
	struct gerr err = { 0 };
	ProtobufCMessage *orig, *from_j, *from_pb = NULL;
	char *pb0, *pb1, *json1, *json2;
	size_t len0, len1;

	orig = pbmsg_new(desc);
	assert_non_null(orig);
	fill_message(orig, 0, variant);
	pb0 = pack(orig, &len0);
	json1 = to_json(orig);

	/* JSON -> message -> protobuf is byte-identical */
	from_j = from_json(desc, json1);
	pb1 = pack(from_j, &len1);
	if (len0 != len1 || memcmp(pb0, pb1, len0))
		fail_msg("%s variant %u: protobuf differs after JSON: %s",
			 desc->name, variant, json1);

	/* protobuf -> message -> JSON is text-identical */
	assert_int_equal(codec_decode(CODEC_PROTOBUF, desc, pb0, len0,
				      &from_pb, &err), 0);
	json2 = to_json(from_pb);
	assert_string_equal(json1, json2);

	free(pb0);
	free(pb1);
	free(json1);
	free(json2);
	pbmsg_free(orig);
	pbmsg_free(from_j);
	pbmsg_free(from_pb);
}

static void test_round_trip_every_message(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_SCHEMA; i++)
		for (unsigned variant = 0; variant < 11; variant++)
			round_trip(schema_messages[i], variant);
}

static void test_round_trip_all_types(void **state)
{
	(void)state;
	for (unsigned variant = 0; variant < 8; variant++)
		round_trip(&all_types_descriptor, variant);
}

/* A filled message really is full: it does not encode to "{}" and every
 * field of the top level appears. */
static void test_fill_sets_every_field(void **state)
{
	char json_name[64], name[80];

	(void)state;
	for (size_t i = 0; i < N_SCHEMA; i++) {
		const ProtobufCMessageDescriptor *desc = schema_messages[i];
		ProtobufCMessage *msg = pbmsg_new(desc);
		char *json;

		fill_message(msg, 0, 0);
		json = to_json(msg);
		for (unsigned f = 0; f < desc->n_fields; f++) {
			const ProtobufCFieldDescriptor *fd = &desc->fields[f];
			unsigned members;

			if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
			    oneof_position(desc, fd, &members) != 0)
				continue;
			codec_json_name(fd->name, json_name, sizeof(json_name));
			snprintf(name, sizeof(name), "\"%s\":", json_name);
			if (!strstr(json, name))
				fail_msg("%s lacks %s: %s", desc->name, name, json);
		}
		free(json);
		pbmsg_free(msg);
	}
}

/* The list above names every message of proto/graind.proto. */
static void test_schema_list_is_complete(void **state)
{
	FILE *f = fopen("proto/graind.proto", "r");
	char line[512];
	size_t messages = 0;

	(void)state;
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *p = line;

		while (*p == ' ' || *p == '\t')
			p++;
		if (!strncmp(p, "message ", 8))
			messages++;
	}
	fclose(f);
	assert_int_equal(messages, N_SCHEMA);
}

/* ================================================================ names */

static void test_json_name(void **state)
{
	char buf[64];

	(void)state;
	codec_json_name("has_btf_ext", buf, sizeof(buf));
	assert_string_equal(buf, "hasBtfExt");
	codec_json_name("sha256", buf, sizeof(buf));
	assert_string_equal(buf, "sha256");
	codec_json_name("raw_tracepoint", buf, sizeof(buf));
	assert_string_equal(buf, "rawTracepoint");
	codec_json_name("load_time_us", buf, sizeof(buf));
	assert_string_equal(buf, "loadTimeUs");
	codec_json_name("a__b", buf, sizeof(buf));
	assert_string_equal(buf, "aB");
	codec_json_name("has_btf_ext", buf, 4);
	assert_string_equal(buf, "has");
	codec_json_name("", buf, sizeof(buf));
	assert_string_equal(buf, "");
}

static void test_camel_case_out_both_in(void **state)
{
	Graind__Object obj = GRAIND__OBJECT__INIT;
	Graind__Object *back;
	const char *json = "{\"name\":\"x\",\"hasBtfExt\":true,\"kernelVersion\":5}";

	(void)state;
	obj.name = "x";
	obj.has_btf_ext = 1;
	obj.kernel_version = 5;
	expect_json(&obj.base, json);

	back = (Graind__Object *)from_json(&graind__object__descriptor, json);
	assert_true(back->has_btf_ext);
	assert_int_equal(back->kernel_version, 5);
	pbmsg_free(&back->base);

	back = (Graind__Object *)from_json(&graind__object__descriptor,
		"{\"has_btf_ext\":true,\"kernel_version\":7,\"has_btf\":true}");
	assert_true(back->has_btf_ext);
	assert_true(back->has_btf);
	assert_int_equal(back->kernel_version, 7);
	pbmsg_free(&back->base);

	expect_bad(&graind__object__descriptor,
		   "{\"hasBtf\":true,\"has_btf\":false}", "hasBtf: field given twice");
}

/* ================================================================ integers */

static void test_uint64_max_as_string(void **state)
{
	Graind__Object obj = GRAIND__OBJECT__INIT;
	Graind__Object *back;

	(void)state;
	obj.size = UINT64_MAX;
	expect_json(&obj.base, "{\"size\":\"18446744073709551615\"}");
	back = (Graind__Object *)from_json(&graind__object__descriptor,
		"{\"size\":\"18446744073709551615\"}");
	assert_true(back->size == UINT64_MAX);
	pbmsg_free(&back->base);

	/* numbers too, and integral reals */
	back = (Graind__Object *)from_json(&graind__object__descriptor,
					   "{\"size\":1e3}");
	assert_true(back->size == 1000);
	pbmsg_free(&back->base);
	back = (Graind__Object *)from_json(&graind__object__descriptor,
					   "{\"size\":9223372036854775807}");
	assert_true(back->size == INT64_MAX);
	pbmsg_free(&back->base);

	expect_bad(&graind__object__descriptor,
		   "{\"size\":\"18446744073709551616\"}",
		   "size: 18446744073709551616 is out of range for uint64");
	expect_bad(&graind__object__descriptor, "{\"size\":-1}",
		   "size: -1 is out of range for uint64");
	expect_bad(&graind__object__descriptor, "{\"size\":\"-1\"}",
		   "size: -1 is out of range for uint64");
	expect_bad(&graind__object__descriptor, "{\"size\":1.5}",
		   "size: expected an integer, got 1.5");
	expect_bad(&graind__object__descriptor, "{\"size\":\"12abc\"}",
		   "size: expected an integer, got \"12abc\"");
	expect_bad(&graind__object__descriptor, "{\"size\":\" 12\"}",
		   "size: expected an integer");
	expect_bad(&graind__object__descriptor, "{\"size\":\"\"}",
		   "size: expected an integer");
	expect_bad(&graind__object__descriptor, "{\"size\":1e30}",
		   "size: 1e+30 is out of range for uint64");
}

static void test_negative_int64(void **state)
{
	Graind__Field field = GRAIND__FIELD__INIT;
	Graind__Field *back;

	(void)state;
	field.value_case = GRAIND__FIELD__VALUE_INT;
	field.int_ = -5;
	expect_json(&field.base, "{\"int\":\"-5\"}");

	back = (Graind__Field *)from_json(&graind__field__descriptor,
		"{\"int\":\"-9223372036854775808\"}");
	assert_int_equal(back->value_case, GRAIND__FIELD__VALUE_INT);
	assert_true(back->int_ == INT64_MIN);
	pbmsg_free(&back->base);

	back = (Graind__Field *)from_json(&graind__field__descriptor,
					  "{\"int\":-42}");
	assert_true(back->int_ == -42);
	pbmsg_free(&back->base);

	expect_bad(&graind__field__descriptor,
		   "{\"int\":\"-9223372036854775809\"}",
		   "int: -9223372036854775809 is out of range for int64");
	expect_bad(&graind__field__descriptor,
		   "{\"int\":\"9223372036854775808\"}", "out of range for int64");
}

static void test_int32(void **state)
{
	Graind__UprobeAttach up = GRAIND__UPROBE_ATTACH__INIT;
	Graind__UprobeAttach *back;

	(void)state;
	up.pid = -7;
	expect_json(&up.base, "{\"pid\":-7}");
	back = (Graind__UprobeAttach *)from_json(&graind__uprobe_attach__descriptor,
						 "{\"pid\":\"42\"}");
	assert_int_equal(back->pid, 42);
	pbmsg_free(&back->base);

	expect_bad(&graind__uprobe_attach__descriptor, "{\"pid\":2147483648}",
		   "pid: 2147483648 is out of range for int32");
	expect_bad(&graind__map__descriptor, "{\"keySize\":-1}",
		   "keySize: -1 is out of range for uint32");
	expect_bad(&graind__map__descriptor, "{\"keySize\":4294967296}",
		   "out of range for uint32");
}

/* Both bounds of every integer width, as JSON number and as string, kept
 * exactly; one past each bound refused naming the field. */
static void test_integer_bounds(void **state)
{
	static const struct {
		const char *field;
		const char *type;
		const char *min, *max, *below, *above;
		int64_t smin;
		uint64_t umax;
	} widths[] = {
#define INT32_ROW(f) { f, "int32", "-2147483648", "2147483647", \
	"-2147483649", "2147483648", INT32_MIN, INT32_MAX }
#define UINT32_ROW(f) { f, "uint32", "0", "4294967295", "-1", "4294967296", \
	0, UINT32_MAX }
#define INT64_ROW(f) { f, "int64", "-9223372036854775808", \
	"9223372036854775807", "-9223372036854775809", "9223372036854775808", \
	INT64_MIN, INT64_MAX }
#define UINT64_ROW(f) { f, "uint64", "0", "18446744073709551615", "-1", \
	"18446744073709551616", 0, UINT64_MAX }
		INT32_ROW("i32"), INT32_ROW("si32"), INT32_ROW("sf32"),
		UINT32_ROW("u32"), UINT32_ROW("f32"),
		INT64_ROW("i64"), INT64_ROW("si64"), INT64_ROW("sf64"),
		UINT64_ROW("u64"), UINT64_ROW("f64"),
	};
	char json[160], want[160];

	(void)state;
	for (size_t i = 0; i < sizeof(widths) / sizeof(widths[0]); i++) {
		const ProtobufCFieldDescriptor *f =
			protobuf_c_message_descriptor_get_field_by_name(
				&all_types_descriptor, widths[i].field);

		assert_non_null(f);
		for (int quoted = 0; quoted < 2; quoted++) {
			const char *q = quoted ? "\"" : "";

			for (int hi = 0; hi < 2; hi++) {
				const char *lit = hi ? widths[i].max : widths[i].min;
				ProtobufCMessage *m;
				const char *member;
				uint64_t u64 = 0;
				int64_t got;

				snprintf(json, sizeof(json), "{\"%s\":%s%s%s}",
					 widths[i].field, q, lit, q);
				m = from_json(&all_types_descriptor, json);
				member = (const char *)m + f->offset;
				if (element_size(f->type) == 4) {
					uint32_t u32;

					memcpy(&u32, member, 4);
					u64 = !strcmp(widths[i].type, "int32") ?
						(uint64_t)(int64_t)(int32_t)u32 : u32;
				} else {
					memcpy(&u64, member, 8);
				}
				if (hi) {
					if (u64 != widths[i].umax)
						fail_msg("%s read back as %" PRIu64, json, u64);
				} else {
					got = (int64_t)u64;
					if (got != widths[i].smin)
						fail_msg("%s read back as %" PRId64, json, got);
				}
				/* and out again, then in again: the same value */
				{
					char *again = to_json(m);
					ProtobufCMessage *back =
						from_json(&all_types_descriptor, again);

					assert_memory_equal((const char *)back + f->offset,
							    member, element_size(f->type));
					pbmsg_free(back);
					free(again);
				}
				pbmsg_free(m);
			}
			snprintf(want, sizeof(want), "%s: %s is out of range for %s",
				 widths[i].field, widths[i].below, widths[i].type);
			snprintf(json, sizeof(json), "{\"%s\":%s%s%s}",
				 widths[i].field, q, widths[i].below, q);
			expect_bad(&all_types_descriptor, json, want);
			snprintf(want, sizeof(want), "%s: %s is out of range for %s",
				 widths[i].field, widths[i].above, widths[i].type);
			snprintf(json, sizeof(json), "{\"%s\":%s%s%s}",
				 widths[i].field, q, widths[i].above, q);
			expect_bad(&all_types_descriptor, json, want);
		}
	}
	/* far beyond 64 bits, as number and string, shortened in the message */
	expect_bad(&all_types_descriptor,
		   "{\"child\":{\"u64\":123456789012345678901234567890123456789012345}}",
		   "child.u64: 1234567890123456789012345678901234567890... is out of range for uint64");
	expect_bad(&all_types_descriptor,
		   "{\"i64\":\"-123456789012345678901234567890\"}",
		   "i64: -123456789012345678901234567890 is out of range for int64");
	/* a big literal in an array, among other numbers, and as a double */
	{
		AllTypes *m = (AllTypes *)from_json(&all_types_descriptor,
			"{\"i32\":1,\"rChild\":[{\"u64\":18446744073709551614},"
			"{\"f64\":9223372036854775808,\"db\":18446744073709551616}],"
			"\"rFl\":[1.5,2],\"sf64\":-9223372036854775807}");

		assert_int_equal(m->n_r_child, 2);
		assert_true(m->r_child[0]->u64 == UINT64_MAX - 1);
		assert_true(m->r_child[1]->f64 == 1ull << 63);
		assert_true(m->r_child[1]->db == 18446744073709551616.0);
		assert_true(m->sf64 == -INT64_MAX);
		pbmsg_free(&m->base);
	}
	/* a big literal where no number belongs is still a number */
	expect_bad(&all_types_descriptor, "{\"s\":18446744073709551615}",
		   "s: expected a string, got number");
	expect_bad(&all_types_descriptor, "{\"e\":18446744073709551615}",
		   "e: 18446744073709551615 is out of range for int32");
	/* digits inside strings are not numbers */
	{
		AllTypes *m = (AllTypes *)from_json(&all_types_descriptor,
			"{\"s\":\"x\\\" 99999999999999999999\",\"u64\":18446744073709551615}");

		assert_string_equal(m->s, "x\" 99999999999999999999");
		assert_true(m->u64 == UINT64_MAX);
		pbmsg_free(&m->base);
	}
}

/* Packed protobuf of msg, decoded back: 0 or the codec's error. */
static int protobuf_round(const ProtobufCMessage *msg, struct gerr *err)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(len + 1);
	ProtobufCMessage *back = NULL;
	int rc;

	assert_non_null(buf);
	protobuf_c_message_pack(msg, buf);
	rc = codec_decode(CODEC_PROTOBUF, msg->descriptor, buf, len, &back, err);
	pbmsg_free(back);
	free(buf);
	return rc;
}

/* An enum number no value names is refused, in JSON and in protobuf (whose
 * unpack keeps any number), wherever it sits. */
static void test_unknown_enum_number(void **state)
{
	Graind__XdpAttach xdp = GRAIND__XDP_ATTACH__INIT;
	Graind__AttachSpec attach = GRAIND__ATTACH_SPEC__INIT;
	Graind__ProgramAttach pa[2] = { GRAIND__PROGRAM_ATTACH__INIT,
					GRAIND__PROGRAM_ATTACH__INIT };
	Graind__ProgramAttach *pas[2] = { &pa[0], &pa[1] };
	Graind__ProbeSpec spec = GRAIND__PROBE_SPEC__INIT;
	Graind__PutProbeRequest put = GRAIND__PUT_PROBE_REQUEST__INIT;
	struct gerr err = { 0 };

	(void)state;
	expect_bad(&graind__xdp_attach__descriptor, "{\"mode\":77}",
		   "mode: unknown enum value 77 for graind.XdpMode");
	expect_bad(&graind__xdp_attach__descriptor, "{\"mode\":-1}",
		   "mode: unknown enum value -1 for graind.XdpMode");
	expect_bad(&graind__put_probe_request__descriptor,
		   "{\"name\":\"p\",\"spec\":{\"desiredState\":99}}",
		   "spec.desiredState: unknown enum value 99 for graind.DesiredState");
	expect_bad(&graind__put_probe_request__descriptor,
		   "{\"spec\":{\"desiredState\":\"GONE\"}}",
		   "spec.desiredState: unknown enum value \"GONE\" for graind.DesiredState");
	expect_bad(&graind__probe_spec__descriptor,
		   "{\"programs\":[{},{\"attach\":{\"xdp\":{\"mode\":77}}}]}",
		   "programs[1].attach.xdp.mode: unknown enum value 77");

	/* protobuf: valid first, then each unknown value */
	xdp.ifname = "lo";
	xdp.mode = GRAIND__XDP_MODE__XDP_MODE_SKB;
	attach.kind_case = GRAIND__ATTACH_SPEC__KIND_XDP;
	attach.xdp = &xdp;
	pa[1].attach = &attach;
	spec.n_programs = 2;
	spec.programs = pas;
	spec.desired_state = GRAIND__DESIRED_STATE__DETACHED;
	put.name = "p";
	put.spec = &spec;
	assert_int_equal(protobuf_round(&put.base, &err), 0);

	xdp.mode = 77;
	assert_int_equal(protobuf_round(&put.base, &err), -1);
	assert_int_equal(err.status, 400);
	assert_string_equal(err.msg, "spec.programs[1].attach.xdp.mode: "
			    "unknown enum value 77 for graind.XdpMode");

	xdp.mode = GRAIND__XDP_MODE__XDP_MODE_SKB;
	spec.desired_state = 99;
	assert_int_equal(protobuf_round(&put.base, &err), -1);
	assert_string_equal(err.msg, "spec.desiredState: unknown enum value 99 "
			    "for graind.DesiredState");

	/* a repeated enum of the test message too (there is none in the
	 * schema): AllTypes' e, in a repeated child */
	{
		AllTypes child, *children[1] = { &child }, top;

		all_types_init(&child.base);
		all_types_init(&top.base);
		child.e = 5;
		top.n_r_child = 1;
		top.r_child = children;
		assert_int_equal(protobuf_round(&top.base, &err), -1);
		assert_string_equal(err.msg, "rChild[0].e: unknown enum value 5 "
				    "for graind.XdpMode");
		child.e = GRAIND__XDP_MODE__XDP_MODE_HW;
		assert_int_equal(protobuf_round(&top.base, &err), 0);
	}
}

/* ================================================================ bytes */

static void test_bytes_base64(void **state)
{
	static uint8_t content[] = { 0xfb, 0xff, 0xbf, 0x01 };
	Graind__UploadObjectRequest req = GRAIND__UPLOAD_OBJECT_REQUEST__INIT;
	Graind__UploadObjectRequest *back;
	const char *inputs[] = {
		"{\"content\":\"+/+/AQ==\"}",
		"{\"content\":\"+/+/AQ\"}",
		"{\"content\":\"-_-_AQ\"}",
		"{\"content\":\"-_-_AQ==\"}",
	};

	(void)state;
	req.content.data = content;
	req.content.len = sizeof(content);
	expect_json(&req.base, "{\"content\":\"+/+/AQ==\"}");

	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		back = (Graind__UploadObjectRequest *)from_json(
			&graind__upload_object_request__descriptor, inputs[i]);
		assert_int_equal(back->content.len, sizeof(content));
		assert_memory_equal(back->content.data, content, sizeof(content));
		pbmsg_free(&back->base);
	}

	/* every length modulo 3 */
	for (size_t n = 0; n <= 7; n++) {
		uint8_t raw[7] = { 0, 1, 0xfe, 0xff, 'a', 0x80, 0x7f };
		char *json;

		req.content.data = raw;
		req.content.len = n;
		json = to_json(&req.base);
		back = (Graind__UploadObjectRequest *)from_json(
			&graind__upload_object_request__descriptor, json);
		assert_int_equal(back->content.len, n);
		if (n)
			assert_memory_equal(back->content.data, raw, n);
		pbmsg_free(&back->base);
		free(json);
	}

	expect_bad(&graind__upload_object_request__descriptor,
		   "{\"content\":\"a\"}", "content: invalid base64");
	expect_bad(&graind__upload_object_request__descriptor,
		   "{\"content\":\"ab!c\"}", "content: invalid base64");
	expect_bad(&graind__upload_object_request__descriptor,
		   "{\"content\":\"ab=c\"}", "content: invalid base64");
	expect_bad(&graind__upload_object_request__descriptor,
		   "{\"content\":5}", "content: expected a base64 string, got number");
}

/* ================================================================ enums */

static void test_enum(void **state)
{
	Graind__XdpAttach xdp = GRAIND__XDP_ATTACH__INIT;
	Graind__XdpAttach *back;

	(void)state;
	xdp.mode = GRAIND__XDP_MODE__XDP_MODE_DRV;
	expect_json(&xdp.base, "{\"mode\":\"XDP_MODE_DRV\"}");
	xdp.mode = 42;  /* from a newer peer: kept as a number */
	expect_json(&xdp.base, "{\"mode\":42}");

	back = (Graind__XdpAttach *)from_json(&graind__xdp_attach__descriptor,
					      "{\"mode\":\"XDP_MODE_HW\"}");
	assert_int_equal(back->mode, GRAIND__XDP_MODE__XDP_MODE_HW);
	pbmsg_free(&back->base);
	back = (Graind__XdpAttach *)from_json(&graind__xdp_attach__descriptor,
					      "{\"mode\":2}");
	assert_int_equal(back->mode, GRAIND__XDP_MODE__XDP_MODE_DRV);
	pbmsg_free(&back->base);

	expect_bad(&graind__xdp_attach__descriptor, "{\"mode\":\"XDP_MODE_FOO\"}",
		   "mode: unknown enum value \"XDP_MODE_FOO\" for graind.XdpMode");
	expect_bad(&graind__xdp_attach__descriptor, "{\"mode\":true}",
		   "mode: expected an enum name or number for graind.XdpMode, got boolean");
	expect_bad(&graind__xdp_attach__descriptor, "{\"mode\":1.5}",
		   "mode: expected an integer");
}

static void test_error_path(void **state)
{
	struct gerr err = { 0 };
	ProtobufCMessage *msg = NULL;
	const char *json = "{\"programs\":[{},{\"program\":\"a\"},"
		"{\"attach\":{\"xdp\":{\"ifname\":\"lo\",\"mode\":\"XDP_MODE_FOO\"}}}]}";

	(void)state;
	assert_int_equal(codec_decode(CODEC_JSON, &graind__probe_spec__descriptor,
				      json, strlen(json), &msg, &err), -1);
	assert_null(msg);
	assert_int_equal(err.status, 400);
	assert_string_equal(err.msg, "programs[2].attach.xdp.mode: unknown enum "
			    "value \"XDP_MODE_FOO\" for graind.XdpMode");
}

/* ================================================================ presence */

static void test_defaults_omitted(void **state)
{
	Graind__Object obj = GRAIND__OBJECT__INIT;
	Graind__Sample sample = GRAIND__SAMPLE__INIT;
	Graind__Object *back;

	(void)state;
	expect_json(&obj.base, "{}");
	sample.kind = GRAIND__SAMPLE_KIND__SAMPLE_KIND_UNSPECIFIED;
	sample.value = 0.0;
	expect_json(&sample.base, "{}");

	/* explicit defaults and null read as unset */
	back = (Graind__Object *)from_json(&graind__object__descriptor,
		"{\"name\":\"\",\"size\":0,\"hasBtf\":false,\"programs\":[],"
		"\"warnings\":null,\"license\":null}");
	expect_json(&back->base, "{}");
	assert_string_equal(back->name, "");
	assert_string_equal(back->license, "");
	pbmsg_free(&back->base);

	for (size_t i = 0; i < N_SCHEMA; i++) {
		ProtobufCMessage *msg = pbmsg_new(schema_messages[i]);

		expect_json(msg, "{}");
		pbmsg_free(msg);
	}
}

static void test_oneof_at_default(void **state)
{
	Graind__OutputSpec out = GRAIND__OUTPUT_SPEC__INIT;
	Graind__Field field = GRAIND__FIELD__INIT;
	Graind__OutputSpec *back;
	char *pb;
	size_t len;

	(void)state;
	out.kind_case = GRAIND__OUTPUT_SPEC__KIND_NONE;
	out.none = 0;
	expect_json(&out.base, "{\"none\":false}");
	field.value_case = GRAIND__FIELD__VALUE_UINT;
	expect_json(&field.base, "{\"uint\":\"0\"}");
	field.value_case = GRAIND__FIELD__VALUE_REAL;
	expect_json(&field.base, "{\"real\":0}");

	back = (Graind__OutputSpec *)from_json(&graind__output_spec__descriptor,
					       "{\"none\":false}");
	assert_int_equal(back->kind_case, GRAIND__OUTPUT_SPEC__KIND_NONE);
	pb = pack(&back->base, &len);
	assert_int_equal(len, 2);  /* the member travels in protobuf too */
	free(pb);
	pbmsg_free(&back->base);

	/* an empty string and empty bytes stay selected */
	back = NULL;
	{
		Graind__Field *f = (Graind__Field *)from_json(
			&graind__field__descriptor, "{\"text\":\"\"}");

		assert_int_equal(f->value_case, GRAIND__FIELD__VALUE_TEXT);
		expect_json(&f->base, "{\"text\":\"\"}");
		pbmsg_free(&f->base);
	}
	{
		AllTypes *a = (AllTypes *)from_json(&all_types_descriptor,
						    "{\"cBytes\":\"\"}");

		expect_json(&a->base, "{\"cBytes\":\"\"}");
		pb = pack(&a->base, &len);
		assert_int_equal(len, 3);
		free(pb);
		pbmsg_free(&a->base);
	}
	{
		AllTypes *a = (AllTypes *)from_json(&all_types_descriptor,
						    "{\"optU32\":0,\"cChild\":{}}");

		assert_true(a->has_opt_u32);
		expect_json(&a->base, "{\"optU32\":0,\"cChild\":{}}");
		pbmsg_free(&a->base);
	}
}

static void test_two_oneof_members_rejected(void **state)
{
	(void)state;
	expect_bad(&graind__probe_spec__descriptor,
		   "{\"objectSha256\":\"ab\",\"builtin\":\"b\"}",
		   "builtin: only one field of a oneof may be set, and \"objectSha256\" already is");
	expect_bad(&graind__attach_spec__descriptor,
		   "{\"xdp\":{},\"tc\":{}}", "tc: only one field of a oneof");
	expect_bad(&graind__field__descriptor, "{\"int\":0,\"flag\":false}",
		   "flag: only one field of a oneof");
	/* null does not select */
	{
		Graind__ProbeSpec *s = (Graind__ProbeSpec *)from_json(
			&graind__probe_spec__descriptor,
			"{\"objectSha256\":null,\"builtin\":\"b\"}");

		assert_int_equal(s->object_case, GRAIND__PROBE_SPEC__OBJECT_BUILTIN);
		assert_string_equal(s->builtin, "b");
		pbmsg_free(&s->base);
	}
}

/* ================================================================ refusals */

static void test_unknown_field(void **state)
{
	(void)state;
	expect_bad(&graind__probe_spec__descriptor, "{\"fooBar\":1}",
		   "unknown field \"fooBar\" in graind.ProbeSpec");
	expect_bad(&graind__probe_spec__descriptor,
		   "{\"programs\":[{\"attach\":{\"xdp\":{\"speed\":1}}}]}",
		   "programs[0].attach.xdp: unknown field \"speed\" in graind.XdpAttach");
	expect_bad(&graind__object__descriptor, "{\"HasBtf\":true}",
		   "unknown field \"HasBtf\"");
}

static void test_duplicate_key(void **state)
{
	(void)state;
	expect_bad(&graind__object__descriptor,
		   "{\"name\":\"a\",\"name\":\"b\"}", "duplicate object key");
}

static void test_wrong_types(void **state)
{
	(void)state;
	expect_bad(&graind__object__descriptor, "{\"hasBtf\":\"true\"}",
		   "hasBtf: expected true or false, got string");
	expect_bad(&graind__object__descriptor, "{\"hasBtf\":1}",
		   "hasBtf: expected true or false, got number");
	expect_bad(&graind__object__descriptor, "{\"size\":{}}",
		   "size: expected an integer (string or number), got object");
	expect_bad(&graind__object__descriptor, "{\"name\":5}",
		   "name: expected a string, got number");
	expect_bad(&graind__probe__descriptor, "{\"spec\":[]}",
		   "spec: expected an object (graind.ProbeSpec), got array");
	expect_bad(&graind__object__descriptor, "{\"programs\":{}}",
		   "programs: expected an array, got object");
	expect_bad(&graind__object__descriptor, "{\"warnings\":[\"a\",3]}",
		   "warnings[1]: expected a string, got number");
	expect_bad(&graind__object__descriptor, "{\"warnings\":[null]}",
		   "warnings[0]: null is not allowed");
	expect_bad(&graind__object__descriptor,
		   "{\"programs\":[{\"insnCount\":\"x\"}]}",
		   "programs[0].insnCount: expected an integer, got \"x\"");
}

static void test_malformed_json(void **state)
{
	static const char bad_utf8[] = "{\"name\":\"\xff\xfe\"}";
	static const char with_nul[] = "{\"name\":\"a\"}\0";

	(void)state;
	expect_bad(&graind__object__descriptor, "{\"name\":\"a\"", "invalid JSON");
	expect_bad(&graind__object__descriptor, "{\"name\":\"a\",}", "invalid JSON");
	expect_bad(&graind__object__descriptor, "{} x", "invalid JSON");
	expect_bad(&graind__object__descriptor, "{}{}", "invalid JSON");
	expect_bad(&graind__object__descriptor, bad_utf8, "invalid JSON");
	expect_bad(&graind__object__descriptor, "{\"name\":\"a\\u0000b\"}",
		   "invalid JSON");
	expect_json_error(&graind__object__descriptor, with_nul,
			  sizeof(with_nul) - 1, "invalid JSON");
	/* integers beyond 64 bits are the field's error, not the parser's,
	 * but a malformed number still is the parser's */
	expect_bad(&graind__object__descriptor,
		   "{\"size\":18446744073709551616}",
		   "size: 18446744073709551616 is out of range for uint64");
	expect_bad(&graind__object__descriptor,
		   "{\"size\":018446744073709551616}", "invalid JSON");
	expect_bad(&graind__object__descriptor,
		   "{\"size\":18446744073709551616x}", "invalid JSON");
}

static void test_top_level(void **state)
{
	(void)state;
	expect_json_error(&graind__object__descriptor, "", 0,
			  "empty body: expected a JSON object");
	expect_bad(&graind__object__descriptor, "[]",
		   "expected a JSON object (graind.Object), got array");
	expect_bad(&graind__object__descriptor, "5", "invalid JSON");
	expect_bad(&graind__object__descriptor, "  ", "invalid JSON");
}

static void test_deep_nesting(void **state)
{
	char json[1024];
	size_t o = 0;
	int levels = CODEC_MAX_DEPTH + 10;

	(void)state;
	o += (size_t)sprintf(json + o, "{\"name\":");
	for (int i = 0; i < levels; i++)
		json[o++] = '[';
	for (int i = 0; i < levels; i++)
		json[o++] = ']';
	json[o++] = '}';
	json[o] = '\0';
	expect_bad(&graind__object__descriptor, json, "nested deeper than 64");

	/* within the limit, the value is refused for its type instead */
	o = (size_t)sprintf(json, "{\"name\":[[[]]]}");
	expect_bad(&graind__object__descriptor, json,
		   "name: expected a string, got array");
}

static void test_invalid_protobuf(void **state)
{
	static const struct {
		const char *buf;
		size_t len;
	} bad[] = {
		{ "\xff\xff\xff", 3 },
		{ "\x0a\x05" "ab", 4 },              /* truncated string */
		{ "\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12 },
	};
	struct gerr err = { 0 };
	ProtobufCMessage *msg = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(codec_decode(CODEC_PROTOBUF,
					      &graind__object__descriptor,
					      bad[i].buf, bad[i].len, &msg,
					      &err), -1);
		assert_null(msg);
		assert_int_equal(err.status, 400);
		assert_string_equal(err.msg,
				    "body is not a valid protobuf graind.Object");
	}

	/* a string that is not UTF-8 */
	assert_int_equal(codec_decode(CODEC_PROTOBUF, &graind__object__descriptor,
				      "\x12\x02\xff\xfe", 4, &msg, &err), -1);
	assert_int_equal(err.status, 400);
	assert_string_equal(err.msg, "name: string is not valid UTF-8");

	/* field number 0, its tag in two bytes (found by fuzzing: unpack
	 * kept it as an unknown field, packed again it did not read back),
	 * here and in a nested message */
	assert_int_equal(codec_decode(CODEC_PROTOBUF, &graind__status__descriptor,
				      "\x80\x00\x01", 3, &msg, &err), -1);
	assert_null(msg);
	assert_int_equal(err.status, 400);
	assert_string_equal(err.msg, "field number 0 is not valid protobuf");
	assert_int_equal(codec_decode(CODEC_PROTOBUF, &graind__put_probe_request__descriptor,
				      "\x12\x03\x80\x00\x01", 5, &msg, &err), -1);
	assert_string_equal(err.msg, "spec: field number 0 is not valid protobuf");

	/* an empty body is an empty message */
	assert_int_equal(codec_decode(CODEC_PROTOBUF, &graind__object__descriptor,
				      "", 0, &msg, &err), 0);
	expect_json(msg, "{}");
	pbmsg_free(msg);
}

/* ================================================================ floats */

static void test_floats(void **state)
{
	Graind__Sample sample = GRAIND__SAMPLE__INIT;
	Graind__Sample *back;
	AllTypes *a;

	(void)state;
	sample.value = NAN;
	expect_json(&sample.base, "{\"value\":\"NaN\"}");
	sample.value = INFINITY;
	expect_json(&sample.base, "{\"value\":\"Infinity\"}");
	sample.value = -INFINITY;
	expect_json(&sample.base, "{\"value\":\"-Infinity\"}");
	sample.value = 0.1;
	expect_json(&sample.base, "{\"value\":0.1}");
	sample.value = 1.0 / 3;
	expect_json(&sample.base, "{\"value\":0.3333333333333333}");
	sample.value = 1e300;
	expect_json(&sample.base, "{\"value\":1e+300}");
	sample.value = -2.5;
	expect_json(&sample.base, "{\"value\":-2.5}");

	back = (Graind__Sample *)from_json(&graind__sample__descriptor,
					   "{\"value\":\"NaN\"}");
	assert_true(isnan(back->value));
	pbmsg_free(&back->base);
	back = (Graind__Sample *)from_json(&graind__sample__descriptor,
					   "{\"value\":\"-Infinity\"}");
	assert_true(isinf(back->value) && back->value < 0);
	pbmsg_free(&back->base);
	back = (Graind__Sample *)from_json(&graind__sample__descriptor,
					   "{\"value\":\"1.25\"}");
	assert_true(back->value == 1.25);
	pbmsg_free(&back->base);
	back = (Graind__Sample *)from_json(&graind__sample__descriptor,
					   "{\"value\":3}");
	assert_true(back->value == 3.0);
	pbmsg_free(&back->base);

	expect_bad(&graind__sample__descriptor, "{\"value\":\"abc\"}",
		   "value: expected a number, got \"abc\"");
	expect_bad(&graind__sample__descriptor, "{\"value\":\"inf\"}",
		   "value: expected a number");
	expect_bad(&graind__sample__descriptor, "{\"value\":true}",
		   "value: expected a number");

	/* 32-bit floats print their own shortest form */
	a = (AllTypes *)pbmsg_new(&all_types_descriptor);
	a->fl = 0.1f;
	expect_json(&a->base, "{\"fl\":0.1}");
	pbmsg_free(&a->base);
	expect_bad(&all_types_descriptor, "{\"fl\":1e39}",
		   "fl: 1e+39 is out of range for float");
}

/* ================================================================ strings */

static void test_string_escapes(void **state)
{
	Graind__Health h = GRAIND__HEALTH__INIT;
	Graind__Health *back;

	(void)state;
	h.status = "a\"b\\c\n\x01 é";
	expect_json(&h.base, "{\"status\":\"a\\\"b\\\\c\\n\\u0001 é\"}");
	back = (Graind__Health *)from_json(&graind__health__descriptor,
		"{\"status\":\"a\\\"b\\\\c\\n\\u0001 \\u00e9\"}");
	assert_string_equal(back->status, h.status);
	pbmsg_free(&back->base);

	/* a hand-built message holding bytes that are not UTF-8 */
	h.status = "\xc3\x28";
	{
		struct gerr err = { 0 };
		char *out = (char *)1;
		size_t len;

		assert_int_equal(codec_encode(CODEC_JSON, &h.base, &out, &len,
					      &err), -1);
		assert_null(out);
		assert_int_equal(err.status, 500);
		assert_non_null(strstr(err.msg, "status: string is not valid UTF-8"));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_schema_list_is_complete),
		cmocka_unit_test(test_fill_sets_every_field),
		cmocka_unit_test(test_round_trip_every_message),
		cmocka_unit_test(test_round_trip_all_types),
		cmocka_unit_test(test_json_name),
		cmocka_unit_test(test_camel_case_out_both_in),
		cmocka_unit_test(test_uint64_max_as_string),
		cmocka_unit_test(test_negative_int64),
		cmocka_unit_test(test_int32),
		cmocka_unit_test(test_integer_bounds),
		cmocka_unit_test(test_unknown_enum_number),
		cmocka_unit_test(test_bytes_base64),
		cmocka_unit_test(test_enum),
		cmocka_unit_test(test_error_path),
		cmocka_unit_test(test_defaults_omitted),
		cmocka_unit_test(test_oneof_at_default),
		cmocka_unit_test(test_two_oneof_members_rejected),
		cmocka_unit_test(test_unknown_field),
		cmocka_unit_test(test_duplicate_key),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_malformed_json),
		cmocka_unit_test(test_top_level),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_invalid_protobuf),
		cmocka_unit_test(test_floats),
		cmocka_unit_test(test_string_escapes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
