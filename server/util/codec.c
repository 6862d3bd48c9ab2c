/* codec: protobuf-c messages to and from protobuf and proto3 JSON.
 *
 * Everything here walks ProtobufCMessageDescriptor/ProtobufCFieldDescriptor;
 * no message type is known by name. The JSON decoder parses with jansson and
 * fills a message; the JSON encoder writes text directly, which keeps field
 * order, compact output and shortest round-tripping floats under our
 * control. Decoded messages hold only malloc'd memory laid out the way
 * protobuf_c_message_free_unpacked() expects, so pbmsg_free() frees both
 * kinds alike. */
#include "server/util/codec.h"
#include "server/util/pbmsg.h"
#include "server/util/utf8.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define JSON_NAME_MAX 128

/* ================================================================ shared */

/* Where in the message a value sits, for error messages:
 * "programs[2].attach.xdp.mode". */
struct bignums;

struct path {
	char buf[256];
	size_t len;
	const struct bignums *big;  /* JSON decode: integers jansson cannot hold */
};

/* Runs for every field encoded or decoded: plain copies, no printf. */
static size_t path_push_name(struct path *p, const char *json_name, size_t n)
{
	size_t saved = p->len;

	if (p->len && p->len < sizeof(p->buf) - 1)
		p->buf[p->len++] = '.';
	if (n > sizeof(p->buf) - 1 - p->len)
		n = sizeof(p->buf) - 1 - p->len;
	memcpy(p->buf + p->len, json_name, n);
	p->len += n;
	p->buf[p->len] = '\0';
	return saved;
}

static size_t path_push_field(struct path *p, const char *json_name)
{
	return path_push_name(p, json_name, strlen(json_name));
}

static size_t path_push_index(struct path *p, size_t i)
{
	size_t saved = p->len;
	int n;

	n = snprintf(p->buf + p->len, sizeof(p->buf) - p->len, "[%zu]", i);
	if (n > 0)
		p->len += (size_t)n;
	if (p->len >= sizeof(p->buf))
		p->len = sizeof(p->buf) - 1;
	return saved;
}

static void path_pop(struct path *p, size_t saved)
{
	p->len = saved;
	p->buf[saved] = '\0';
}

/* gerr_set() with the path in front, when there is one. */
__attribute__((format(printf, 4, 5)))
static int path_err(struct gerr *err, int status, const struct path *p,
		    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	gerr_vset(err, status, fmt, ap);
	va_end(ap);
	if (p->len)
		gerr_prefix(err, "%s", p->buf);
	return -1;
}

static void *member_of(const ProtobufCMessage *msg,
		       const ProtobufCFieldDescriptor *f)
{
	return (char *)msg + f->offset;
}

static void *quantifier_of(const ProtobufCMessage *msg,
			   const ProtobufCFieldDescriptor *f)
{
	return (char *)msg + f->quantifier_offset;
}

static bool is_oneof(const ProtobufCFieldDescriptor *f)
{
	return f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF;
}

/* Size of one element of a repeated field's array. */
static size_t element_size(ProtobufCType type)
{
	switch (type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_ENUM:
		return 4;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return 8;
	case PROTOBUF_C_TYPE_FLOAT:
		return sizeof(float);
	case PROTOBUF_C_TYPE_DOUBLE:
		return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	return 0;
}

void codec_json_name(const char *proto_name, char *buf, size_t n)
{
	bool upper_next = false;
	size_t o = 0;

	if (!n)
		return;
	for (const char *c = proto_name; *c && o + 1 < n; c++) {
		if (*c == '_') {
			upper_next = true;
			continue;
		}
		buf[o++] = upper_next ? (char)toupper((unsigned char)*c) : *c;
		upper_next = false;
	}
	buf[o] = '\0';
}

/* ================================================================ base64 */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The 6-bit value of a standard or URL-safe base64 digit, or -1. */
static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Decode standard or URL-safe base64, padded or not, into a malloc'd
 * buffer. Returns -1 on bad input, -2 when out of memory. */
static int b64_decode(const char *in, size_t len, uint8_t **out,
		      size_t *out_len)
{
	uint32_t acc = 0;
	size_t bits = 0, o = 0;
	uint8_t *buf;

	if (len % 4 == 0 && len >= 1 && in[len - 1] == '=')
		len--;
	if (len % 4 == 3 && in[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return -1;
	buf = malloc(len / 4 * 3 + 3);
	if (!buf)
		return -2;
	for (size_t i = 0; i < len; i++) {
		int v = b64_value(in[i]);

		if (v < 0) {
			free(buf);
			return -1;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[o++] = (uint8_t)(acc >> bits);
		}
	}
	*out = buf;
	*out_len = o;
	return 0;
}

/* ================================================================ JSON decode */

static int decode_message(json_t *obj, ProtobufCMessage *msg,
			  struct path *p, struct gerr *err);

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "boolean";
	case JSON_NULL:
		return "null";
	}
	return "value";
}

static size_t json_depth(json_t *v)
{
	size_t deepest = 0, d;
	const char *key;
	json_t *child;
	size_t i;

	if (json_is_object(v)) {
		json_object_foreach(v, key, child) {
			d = json_depth(child);
			if (d > deepest)
				deepest = d;
		}
		return deepest + 1;
	}
	if (json_is_array(v)) {
		json_array_foreach(v, i, child) {
			d = json_depth(child);
			if (d > deepest)
				deepest = d;
		}
		return deepest + 1;
	}
	return 0;
}

/* A decimal integer: optional '-', then digits, nothing else. Returns 0,
 * -EINVAL when it is not one, -ERANGE when the magnitude passes 2^64-1. */
static int parse_int_text(const char *s, size_t len, bool *negative,
			  uint64_t *mag)
{
	const char *end = s + len;
	uint64_t v = 0;
	bool overflow = false;

	*negative = s < end && *s == '-';
	if (*negative)
		s++;
	if (s == end)
		return -EINVAL;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			overflow = true;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*mag = v;
	return overflow ? -ERANGE : 0;
}

/* ---------------------------------------------------------------- big numbers
 *
 * jansson holds integers as int64 and fails to parse any integer literal
 * beyond it, yet uint64 fields take numbers up to 2^64-1 and a number one
 * past a bound must be an out-of-range error naming the field. So before
 * parsing, integer literals that do not fit int64 are found in the text
 * and overwritten (in a copy) by "0" and spaces, which keeps line and
 * column of parse errors; after parsing, the tree is walked in document
 * order, numbering its numbers as the scan numbered the literals, so each
 * such 0 node is known with its literal. */
struct bignum {
	const json_t *node;
	size_t ordinal;         /* among all number literals of the text */
	const char *text;       /* the literal, in the caller's buffer */
	size_t text_len;
};

struct bignums {
	struct bignum *v;
	size_t n;
};

static bool is_number_char(char c)
{
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' ||
	       c == 'e' || c == 'E';
}

/* An integer literal as JSON writes it that int64 cannot hold. */
static bool is_big_literal(const char *s, size_t len)
{
	bool negative;
	uint64_t mag;
	int rc;

	if (len < 19 || s[*s == '-'] == '0')
		return false;
	rc = parse_int_text(s, len, &negative, &mag);
	if (rc == -ERANGE)
		return true;
	return !rc && (negative ? mag > 1ull << 63 : mag > INT64_MAX);
}

/* Find the big literals of buf; *copy is the text jansson is to parse
 * (NULL: buf itself, there being none). 0 or -ENOMEM. */
static int bignums_scan(const char *buf, size_t len, struct bignums *b,
			char **copy)
{
	size_t ordinal = 0, cap = 0;
	bool in_string = false;

	*copy = NULL;
	for (size_t i = 0; i < len; i++) {
		char c = buf[i];
		size_t start = i;

		if (in_string) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"') {
			in_string = true;
			continue;
		}
		if (c != '-' && (c < '0' || c > '9'))
			continue;
		while (i + 1 < len && is_number_char(buf[i + 1]))
			i++;
		ordinal++;
		if (!is_big_literal(buf + start, i + 1 - start))
			continue;
		if (b->n == cap) {
			struct bignum *grown;

			cap = cap ? cap * 2 : 4;
			grown = realloc(b->v, cap * sizeof(*grown));
			if (!grown)
				goto nomem;
			b->v = grown;
		}
		if (!*copy) {
			*copy = malloc(len);
			if (!*copy)
				goto nomem;
			memcpy(*copy, buf, len);
		}
		b->v[b->n++] = (struct bignum){ NULL, ordinal - 1, buf + start,
						i + 1 - start };
		(*copy)[start] = '0';
		memset(*copy + start + 1, ' ', i - start);
	}
	return 0;
nomem:
	free(*copy);
	*copy = NULL;
	return -ENOMEM;
}

/* Pair each big literal with its node: numbers in document order (jansson
 * keeps objects in insertion order, and duplicate keys are refused). */
static void bignums_bind(const json_t *v, size_t *ordinal, size_t *next,
			 struct bignums *b)
{
	const char *key;
	json_t *child;
	size_t i;

	if (json_is_number(v)) {
		if (*next < b->n && b->v[*next].ordinal == *ordinal)
			b->v[(*next)++].node = v;
		(*ordinal)++;
	} else if (json_is_object(v)) {
		json_object_foreach((json_t *)v, key, child)
			bignums_bind(child, ordinal, next, b);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, child)
			bignums_bind(child, ordinal, next, b);
	}
}

static int bignum_cmp(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)((const struct bignum *)a)->node;
	uintptr_t y = (uintptr_t)((const struct bignum *)b)->node;

	return (x > y) - (x < y);
}

/* Bind, then sort by node for lookups. -1 when the tree does not match the
 * scan, which valid JSON never does. */
static int bignums_index(const json_t *root, struct bignums *b)
{
	size_t ordinal = 0, next = 0;

	if (!b->n)
		return 0;
	bignums_bind(root, &ordinal, &next, b);
	if (next != b->n)
		return -1;
	qsort(b->v, b->n, sizeof(*b->v), bignum_cmp);
	return 0;
}

static const struct bignum *bignum_of(const struct path *p, const json_t *v)
{
	struct bignum key = { .node = v };

	if (!p->big || !p->big->n || !json_is_integer(v))
		return NULL;
	return bsearch(&key, p->big->v, p->big->n, sizeof(key), bignum_cmp);
}

/* Range of each integer type, as sign and magnitude bounds. */
struct int_range {
	const char *name;
	uint64_t max_neg;       /* largest magnitude allowed when negative */
	uint64_t max_pos;
};

static struct int_range int_range_of(ProtobufCType type)
{
	switch (type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_ENUM:
		return (struct int_range){ "int32", 1ull << 31, INT32_MAX };
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return (struct int_range){ "uint32", 0, UINT32_MAX };
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return (struct int_range){ "uint64", 0, UINT64_MAX };
	default:
		return (struct int_range){ "int64", 1ull << 63, INT64_MAX };
	}
}

/* Read any JSON integer form (number, integral real, numeric string) as a
 * sign and magnitude, checked against the type's range. */
static int json_to_int(json_t *v, ProtobufCType type, bool *negative,
		       uint64_t *mag, struct path *p, struct gerr *err)
{
	struct int_range r = int_range_of(type);
	const struct bignum *big = bignum_of(p, v);
	const char *text = NULL;
	size_t text_len = 0;

	if (big) {
		text = big->text;
		text_len = big->text_len;
	} else if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);

		*negative = i < 0;
		*mag = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
	} else if (json_is_real(v)) {
		double d = json_real_value(v);

		if (d != floor(d))
			return path_err(err, 400, p,
					"expected an integer, got %g", d);
		if (!(d > -18446744073709551616.0 && d < 18446744073709551616.0))
			return path_err(err, 400, p, "%g is out of range for %s",
					d, r.name);
		*negative = d < 0;
		*mag = (uint64_t)fabs(d);
	} else if (json_is_string(v)) {
		text = json_string_value(v);
		text_len = json_string_length(v);
	} else {
		return path_err(err, 400, p,
				"expected an integer (string or number), got %s",
				json_kind(v));
	}
	if (text) {
		int rc = parse_int_text(text, text_len, negative, mag);

		if (rc == -ERANGE)
			return path_err(err, 400, p, "%.*s%s is out of range for %s",
					(int)(text_len > 40 ? 40 : text_len), text,
					text_len > 40 ? "..." : "", r.name);
		if (rc)
			return path_err(err, 400, p,
					"expected an integer, got \"%.*s\"",
					(int)text_len, text);
	}
	if (*negative ? *mag > r.max_neg : *mag > r.max_pos)
		return path_err(err, 400, p, "%s%" PRIu64 " is out of range for %s",
				*negative ? "-" : "", *mag, r.name);
	return 0;
}

static int decode_int(json_t *v, const ProtobufCFieldDescriptor *f,
		      void *dst, struct path *p, struct gerr *err)
{
	bool negative = false;
	uint64_t mag = 0;

	if (json_to_int(v, f->type, &negative, &mag, p, err))
		return -1;
	/* two's complement: the magnitude negated is the value's bits */
	if (negative)
		mag = (uint64_t)0 - mag;
	if (element_size(f->type) == 4) {
		uint32_t u32 = (uint32_t)mag;

		memcpy(dst, &u32, sizeof(u32));
	} else {
		memcpy(dst, &mag, sizeof(mag));
	}
	return 0;
}

static int decode_floating(json_t *v, const ProtobufCFieldDescriptor *f,
			   void *dst, struct path *p, struct gerr *err)
{
	bool is_float = f->type == PROTOBUF_C_TYPE_FLOAT;
	const struct bignum *big = bignum_of(p, v);
	double d;

	if (big) {
		d = strtod(big->text, NULL);
	} else if (json_is_number(v)) {
		d = json_number_value(v);
	} else if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;

		if (!strcmp(s, "NaN")) {
			d = NAN;
		} else if (!strcmp(s, "Infinity")) {
			d = INFINITY;
		} else if (!strcmp(s, "-Infinity")) {
			d = -INFINITY;
		} else {
			errno = 0;
			d = strtod(s, &end);
			if (!*s || *end || isspace((unsigned char)*s) ||
			    !isfinite(d) || errno == ERANGE)
				return path_err(err, 400, p,
						"expected a number, got \"%s\"", s);
		}
	} else {
		return path_err(err, 400, p,
				"expected a number (or \"NaN\", \"Infinity\"), got %s",
				json_kind(v));
	}
	if (is_float) {
		float fl;

		if (isfinite(d) && fabs(d) > FLT_MAX)
			return path_err(err, 400, p,
					"%g is out of range for float", d);
		fl = (float)d;
		memcpy(dst, &fl, sizeof(fl));
	} else {
		memcpy(dst, &d, sizeof(d));
	}
	return 0;
}

static int decode_bool(json_t *v, void *dst, struct path *p, struct gerr *err)
{
	protobuf_c_boolean b;

	if (!json_is_boolean(v))
		return path_err(err, 400, p, "expected true or false, got %s",
				json_kind(v));
	b = json_is_true(v);
	memcpy(dst, &b, sizeof(b));
	return 0;
}

static int decode_enum(json_t *v, const ProtobufCFieldDescriptor *f,
		       void *dst, struct path *p, struct gerr *err)
{
	const ProtobufCEnumDescriptor *ed = f->descriptor;
	const ProtobufCEnumValue *ev;
	int32_t value;

	if (json_is_string(v)) {
		ev = protobuf_c_enum_descriptor_get_value_by_name(
			ed, json_string_value(v));
		if (!ev)
			return path_err(err, 400, p,
					"unknown enum value \"%s\" for %s",
					json_string_value(v), ed->name);
		value = ev->value;
		memcpy(dst, &value, sizeof(value));
		return 0;
	}
	if (json_is_number(v)) {
		if (decode_int(v, f, dst, p, err))
			return -1;
		memcpy(&value, dst, sizeof(value));
		if (!protobuf_c_enum_descriptor_get_value(ed, value))
			return path_err(err, 400, p,
					"unknown enum value %" PRId32 " for %s",
					value, ed->name);
		return 0;
	}
	return path_err(err, 400, p,
			"expected an enum name or number for %s, got %s",
			ed->name, json_kind(v));
}

/* `keep_empty`: an empty string is stored (malloc'd) rather than left as
 * the default, so that a oneof or optional member stays present. */
static int decode_string(json_t *v, void *dst, bool keep_empty,
			 struct path *p, struct gerr *err)
{
	char *s;

	if (!json_is_string(v))
		return path_err(err, 400, p, "expected a string, got %s",
				json_kind(v));
	if (!json_string_length(v) && !keep_empty)
		return 0;
	s = strdup(json_string_value(v));
	if (!s)
		return path_err(err, 500, p, "out of memory");
	memcpy(dst, &s, sizeof(s));
	return 0;
}

static int decode_bytes(json_t *v, void *dst, bool keep_empty,
			struct path *p, struct gerr *err)
{
	ProtobufCBinaryData bd = { 0, NULL };
	int rc;

	if (!json_is_string(v))
		return path_err(err, 400, p,
				"expected a base64 string, got %s", json_kind(v));
	if (!json_string_length(v) && !keep_empty)
		return 0;
	rc = b64_decode(json_string_value(v), json_string_length(v),
			&bd.data, &bd.len);
	if (rc == -2)
		return path_err(err, 500, p, "out of memory");
	if (rc)
		return path_err(err, 400, p, "invalid base64");
	memcpy(dst, &bd, sizeof(bd));
	return 0;
}

static int decode_submessage(json_t *v, const ProtobufCFieldDescriptor *f,
			     void *dst, struct path *p, struct gerr *err)
{
	ProtobufCMessage *sub;

	if (!json_is_object(v))
		return path_err(err, 400, p, "expected an object (%s), got %s",
				((const ProtobufCMessageDescriptor *)f->descriptor)->name,
				json_kind(v));
	sub = pbmsg_new(f->descriptor);
	if (!sub)
		return path_err(err, 500, p, "out of memory");
	/* owned by the parent from here on, even if decoding fails */
	memcpy(dst, &sub, sizeof(sub));
	return decode_message(v, sub, p, err);
}

/* One value of field `f` into its storage `dst`. */
static int decode_value(json_t *v, const ProtobufCFieldDescriptor *f,
			void *dst, bool keep_empty, struct path *p,
			struct gerr *err)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return decode_int(v, f, dst, p, err);
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE:
		return decode_floating(v, f, dst, p, err);
	case PROTOBUF_C_TYPE_BOOL:
		return decode_bool(v, dst, p, err);
	case PROTOBUF_C_TYPE_ENUM:
		return decode_enum(v, f, dst, p, err);
	case PROTOBUF_C_TYPE_STRING:
		return decode_string(v, dst, keep_empty, p, err);
	case PROTOBUF_C_TYPE_BYTES:
		return decode_bytes(v, dst, keep_empty, p, err);
	case PROTOBUF_C_TYPE_MESSAGE:
		return decode_submessage(v, f, dst, p, err);
	}
	return path_err(err, 500, p, "unsupported field type %d", f->type);
}

static int decode_repeated(json_t *arr, ProtobufCMessage *msg,
			   const ProtobufCFieldDescriptor *f, struct path *p,
			   struct gerr *err)
{
	size_t n = json_array_size(arr), esize = element_size(f->type);
	size_t *count = quantifier_of(msg, f);
	char *elems;

	if (!json_is_array(arr))
		return path_err(err, 400, p, "expected an array, got %s",
				json_kind(arr));
	if (!n)
		return 0;
	elems = calloc(n, esize);
	if (!elems)
		return path_err(err, 500, p, "out of memory");
	/* the message owns the array now; *count grows with each element so
	 * that a failure part way leaves a tree pbmsg_free() can free */
	memcpy(member_of(msg, f), &elems, sizeof(elems));
	*count = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_array_get(arr, i);
		size_t saved = path_push_index(p, i);
		int rc;

		if (json_is_null(v)) {
			rc = path_err(err, 400, p, "null is not allowed in an array");
		} else {
			/* a message element is owned as soon as it exists */
			if (f->type == PROTOBUF_C_TYPE_MESSAGE)
				*count = i + 1;
			rc = decode_value(v, f, elems + i * esize, true, p, err);
		}
		if (rc)
			return rc;
		*count = i + 1;
		path_pop(p, saved);
	}
	return 0;
}

/* Select oneof member `f`, refusing when another member is already set. */
static int select_oneof(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
			struct path *p, struct gerr *err)
{
	uint32_t *which = quantifier_of(msg, f);
	const ProtobufCFieldDescriptor *other;
	char other_name[JSON_NAME_MAX];

	if (*which && *which != f->id) {
		other = protobuf_c_message_descriptor_get_field(msg->descriptor,
								*which);
		codec_json_name(other ? other->name : "?", other_name,
				sizeof(other_name));
		return path_err(err, 400, p,
				"only one field of a oneof may be set, and \"%s\" already is",
				other_name);
	}
	*which = f->id;
	return 0;
}

static int decode_field(json_t *v, ProtobufCMessage *msg,
			const ProtobufCFieldDescriptor *f, struct path *p,
			struct gerr *err)
{
	void *dst = member_of(msg, f);

	if (json_is_null(v))
		return 0;
	if (f->label == PROTOBUF_C_LABEL_REPEATED)
		return decode_repeated(v, msg, f, p, err);
	if (is_oneof(f)) {
		if (select_oneof(msg, f, p, err))
			return -1;
		return decode_value(v, f, dst, true, p, err);
	}
	if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
		/* strings and messages are present when non-NULL */
		if (f->type != PROTOBUF_C_TYPE_STRING &&
		    f->type != PROTOBUF_C_TYPE_MESSAGE)
			*(protobuf_c_boolean *)quantifier_of(msg, f) = 1;
		return decode_value(v, f, dst, true, p, err);
	}
	return decode_value(v, f, dst, false, p, err);
}

/* The field named `key` by its JSON name or its proto name, or NULL. */
static const ProtobufCFieldDescriptor *
find_field(const ProtobufCMessageDescriptor *desc, const char *key)
{
	const ProtobufCFieldDescriptor *f;
	char json_name[JSON_NAME_MAX];

	f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
	if (f)
		return f;
	for (unsigned i = 0; i < desc->n_fields; i++) {
		codec_json_name(desc->fields[i].name, json_name,
				sizeof(json_name));
		if (!strcmp(json_name, key))
			return &desc->fields[i];
	}
	return NULL;
}

static int decode_message(json_t *obj, ProtobufCMessage *msg,
			  struct path *p, struct gerr *err)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;
	char json_name[JSON_NAME_MAX];
	bool *seen;
	const char *key;
	json_t *v;
	int rc = 0;

	seen = calloc(desc->n_fields + 1, sizeof(*seen));
	if (!seen)
		return path_err(err, 500, p, "out of memory");
	json_object_foreach(obj, key, v) {
		const ProtobufCFieldDescriptor *f = find_field(desc, key);
		size_t saved;

		if (!f) {
			rc = path_err(err, 400, p, "unknown field \"%s\" in %s",
				      key, desc->name);
			goto out;
		}
		codec_json_name(f->name, json_name, sizeof(json_name));
		saved = path_push_field(p, json_name);
		if (seen[f - desc->fields]) {
			rc = path_err(err, 400, p,
				      "field given twice (as \"%s\" and \"%s\")",
				      json_name, f->name);
			goto out;
		}
		seen[f - desc->fields] = true;
		rc = decode_field(v, msg, f, p, err);
		if (rc)
			goto out;
		path_pop(p, saved);
	}
out:
	free(seen);
	return rc;
}

static int decode_json(const ProtobufCMessageDescriptor *desc, const void *buf,
		       size_t len, ProtobufCMessage **out, struct gerr *err)
{
	struct bignums big = { NULL, 0 };
	struct path p = { .len = 0, .big = &big };
	ProtobufCMessage *msg = NULL;
	json_t *root = NULL;
	json_error_t jerr;
	char *copy;
	int rc = -1;

	if (!len)
		return gerr_set(err, 400, "empty body: expected a JSON object");
	if (bignums_scan(buf, len, &big, &copy)) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	root = json_loadb(copy ? copy : buf, len, JSON_REJECT_DUPLICATES, &jerr);
	free(copy);
	if (!root) {
		gerr_set(err, 400, "invalid JSON at line %d column %d: %s",
			 jerr.line, jerr.column, jerr.text);
		goto out;
	}
	if (!json_is_object(root)) {
		gerr_set(err, 400, "expected a JSON object (%s), got %s",
			 desc->name, json_kind(root));
		goto out;
	}
	if (json_depth(root) > CODEC_MAX_DEPTH) {
		gerr_set(err, 400, "JSON nested deeper than %d levels",
			 CODEC_MAX_DEPTH);
		goto out;
	}
	if (bignums_index(root, &big)) {
		gerr_set(err, 400, "invalid JSON: numbers out of step");
		goto out;
	}
	msg = pbmsg_new(desc);
	if (!msg) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	rc = decode_message(root, msg, &p, err);
out:
	json_decref(root);
	free(big.v);
	if (rc) {
		pbmsg_free(msg);
		msg = NULL;
	}
	*out = msg;
	return rc;
}

int codec_set_text(ProtobufCMessage *msg, const char *field, const char *text,
		   struct gerr *err)
{
	const ProtobufCFieldDescriptor *f =
		protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, field);
	struct path p = { .len = 0 };
	json_t *v;
	int rc;

	if (!f || f->label == PROTOBUF_C_LABEL_REPEATED || f->type == PROTOBUF_C_TYPE_MESSAGE)
		return gerr_set(err, 500, "%s has no scalar field %s", msg->descriptor->name, field);
	/* Text comes by the field's proto name (a query parameter, a path
	 * segment): errors name it so. */
	path_push_field(&p, f->name);
	if (f->type == PROTOBUF_C_TYPE_BOOL && (!strcmp(text, "true") || !strcmp(text, "false")))
		v = json_boolean(!strcmp(text, "true"));
	else
		v = json_string(text);
	if (!v)
		return path_err(err, 400, &p, "not valid UTF-8 text");
	rc = decode_field(v, msg, f, &p, err);
	json_decref(v);
	return rc;
}

/* ================================================================ protobuf decode */

static int check_message(const ProtobufCMessage *msg, struct path *p,
			 struct gerr *err);

static int check_value(const ProtobufCFieldDescriptor *f, const void *member,
		       struct path *p, struct gerr *err)
{
	const ProtobufCEnumDescriptor *ed;
	const ProtobufCMessage *sub;
	const char *s;
	int32_t value;

	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING:
		memcpy(&s, member, sizeof(s));
		if (s && !utf8_valid(s, strlen(s)))
			return path_err(err, 400, p, "string is not valid UTF-8");
		break;
	case PROTOBUF_C_TYPE_ENUM:
		ed = f->descriptor;
		memcpy(&value, member, sizeof(value));
		if (!protobuf_c_enum_descriptor_get_value(ed, value))
			return path_err(err, 400, p,
					"unknown enum value %" PRId32 " for %s",
					value, ed->name);
		break;
	case PROTOBUF_C_TYPE_MESSAGE:
		memcpy(&sub, member, sizeof(sub));
		if (sub)
			return check_message(sub, p, err);
		break;
	default:
		break;
	}
	return 0;
}

/* What protobuf-c's unpack does not check: proto3 strings are UTF-8 (JSON
 * output needs it), enum fields hold values their enum names (unpack
 * keeps any number, which would then act as some default), and no field
 * is numbered 0. */
static int check_message(const ProtobufCMessage *msg, struct path *p,
			 struct gerr *err)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;
	char json_name[JSON_NAME_MAX];

	/* Kept unknown fields are packed again: one numbered 0 (a tag
	 * written in more bytes than it needs gets past unpack) would make
	 * bytes that protobuf-c refuses to read back. */
	for (unsigned i = 0; i < msg->n_unknown_fields; i++)
		if (msg->unknown_fields[i].tag == 0)
			return path_err(err, 400, p, "field number 0 is not valid protobuf");
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		size_t saved;
		int rc = 0;

		if (f->type != PROTOBUF_C_TYPE_STRING &&
		    f->type != PROTOBUF_C_TYPE_ENUM &&
		    f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (is_oneof(f) &&
		    *(uint32_t *)quantifier_of(msg, f) != f->id)
			continue;
		codec_json_name(f->name, json_name, sizeof(json_name));
		saved = path_push_field(p, json_name);
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(size_t *)quantifier_of(msg, f);
			char *elems = *(char **)member_of(msg, f);

			for (size_t j = 0; j < n && !rc; j++) {
				size_t saved_i = path_push_index(p, j);

				rc = check_value(f, elems + j * element_size(f->type),
						 p, err);
				if (!rc)
					path_pop(p, saved_i);
			}
		} else {
			rc = check_value(f, member_of(msg, f), p, err);
		}
		if (rc)
			return rc;
		path_pop(p, saved);
	}
	return 0;
}

static int decode_protobuf(const ProtobufCMessageDescriptor *desc,
			   const void *buf, size_t len, ProtobufCMessage **out,
			   struct gerr *err)
{
	struct path p = { .len = 0 };
	ProtobufCMessage *msg;

	*out = NULL;
	msg = protobuf_c_message_unpack(desc, NULL, len, buf);
	if (!msg)
		return gerr_set(err, 400, "body is not a valid protobuf %s",
				desc->name);
	if (check_message(msg, &p, err)) {
		pbmsg_free(msg);
		return -1;
	}
	*out = msg;
	return 0;
}

int codec_decode(enum codec_format fmt, const ProtobufCMessageDescriptor *desc,
		 const void *buf, size_t len, ProtobufCMessage **out,
		 struct gerr *err)
{
	*out = NULL;
	if (fmt == CODEC_PROTOBUF)
		return decode_protobuf(desc, buf, len, out, err);
	return decode_json(desc, buf, len, out, err);
}

/* ================================================================ JSON encode */

/* A growing text buffer; `failed` makes every later append a no-op. */
struct sbuf {
	char *buf;
	size_t len, cap;
	bool failed;
};

static bool sb_grow(struct sbuf *sb, size_t n)
{
	size_t cap = sb->cap ? sb->cap : 4096;
	char *grown;

	while (sb->len + n + 1 > cap)
		cap *= 2;
	grown = realloc(sb->buf, cap);
	if (!grown) {
		sb->failed = true;
		return false;
	}
	sb->buf = grown;
	sb->cap = cap;
	return true;
}

/* Room for n more bytes and the NUL that ends the text at last. */
static inline bool sb_reserve(struct sbuf *sb, size_t n)
{
	if (sb->failed)
		return false;
	return sb->cap - sb->len > n || sb_grow(sb, n);
}

static inline void sb_put(struct sbuf *sb, const char *s, size_t n)
{
	if (sb_reserve(sb, n)) {
		memcpy(sb->buf + sb->len, s, n);
		sb->len += n;
	}
}

static void sb_puts(struct sbuf *sb, const char *s)
{
	sb_put(sb, s, strlen(s));
}

/* Decimal digits of v, optionally negative and quoted (64-bit JSON ints). */
static void emit_integer(struct sbuf *sb, uint64_t v, bool negative, bool quoted)
{
	char tmp[24];
	size_t i = sizeof(tmp);

	if (quoted)
		tmp[--i] = '"';
	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (negative)
		tmp[--i] = '-';
	if (quoted)
		tmp[--i] = '"';
	sb_put(sb, tmp + i, sizeof(tmp) - i);
}

static void emit_signed(struct sbuf *sb, int64_t v, bool quoted)
{
	/* Negate in unsigned arithmetic: INT64_MIN has no positive twin. */
	emit_integer(sb, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, v < 0, quoted);
}

/* A JSON string literal; the caller has checked s is UTF-8. */
static void emit_string(struct sbuf *sb, const char *s, size_t len)
{
	size_t run = 0;

	sb_put(sb, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		char hex[8];

		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		default:
			if (c < 0x20) {
				snprintf(hex, sizeof(hex), "\\u%04x", c);
				esc = hex;
			}
		}
		if (!esc)
			continue;
		sb_put(sb, s + run, i - run);
		sb_puts(sb, esc);
		run = i + 1;
	}
	sb_put(sb, s + run, len - run);
	sb_put(sb, "\"", 1);
}

/* The shortest %g form that reads back as the same value. */
static void emit_floating(struct sbuf *sb, double d, bool is_float)
{
	char tmp[40];

	if (isnan(d)) {
		sb_puts(sb, "\"NaN\"");
		return;
	}
	if (isinf(d)) {
		sb_puts(sb, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
		return;
	}
	/* "-0" would read back as the integer 0: keep it a real. */
	if (d == 0 && signbit(d)) {
		sb_puts(sb, "-0.0");
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
		if (is_float ? (float)strtod(tmp, NULL) == (float)d
			     : strtod(tmp, NULL) == d)
			break;
	}
	sb_puts(sb, tmp);
}

static void emit_bytes(struct sbuf *sb, const ProtobufCBinaryData *bd)
{
	char quad[4];

	sb_put(sb, "\"", 1);
	for (size_t i = 0; i < bd->len; i += 3) {
		size_t left = bd->len - i;
		uint32_t v = (uint32_t)bd->data[i] << 16;

		if (left > 1)
			v |= (uint32_t)bd->data[i + 1] << 8;
		if (left > 2)
			v |= bd->data[i + 2];
		quad[0] = b64_alphabet[(v >> 18) & 63];
		quad[1] = b64_alphabet[(v >> 12) & 63];
		quad[2] = left > 1 ? b64_alphabet[(v >> 6) & 63] : '=';
		quad[3] = left > 2 ? b64_alphabet[v & 63] : '=';
		sb_put(sb, quad, 4);
	}
	sb_put(sb, "\"", 1);
}

static void emit_enum(struct sbuf *sb, const ProtobufCFieldDescriptor *f,
		      int32_t value)
{
	const ProtobufCEnumValue *ev;

	ev = protobuf_c_enum_descriptor_get_value(f->descriptor, value);
	if (ev)
		emit_string(sb, ev->name, strlen(ev->name));
	else
		emit_signed(sb, value, false);  /* a value newer than us */
}

static int emit_message(struct sbuf *sb, const ProtobufCMessage *msg,
			struct path *p, struct gerr *err);

/* One value of field `f` from its storage `src`. */
static int emit_value(struct sbuf *sb, const ProtobufCFieldDescriptor *f,
		      const void *src, struct path *p, struct gerr *err)
{
	int32_t i32;
	uint32_t u32;
	int64_t i64;
	uint64_t u64;
	float fl;
	double d;
	protobuf_c_boolean b;
	const char *s;
	const ProtobufCMessage *sub;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		memcpy(&i32, src, sizeof(i32));
		emit_signed(sb, i32, false);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		memcpy(&u32, src, sizeof(u32));
		emit_integer(sb, u32, false, false);
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		memcpy(&i64, src, sizeof(i64));
		emit_signed(sb, i64, true);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		memcpy(&u64, src, sizeof(u64));
		emit_integer(sb, u64, false, true);
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		memcpy(&fl, src, sizeof(fl));
		emit_floating(sb, fl, true);
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		memcpy(&d, src, sizeof(d));
		emit_floating(sb, d, false);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		memcpy(&b, src, sizeof(b));
		sb_puts(sb, b ? "true" : "false");
		break;
	case PROTOBUF_C_TYPE_ENUM:
		memcpy(&i32, src, sizeof(i32));
		emit_enum(sb, f, i32);
		break;
	case PROTOBUF_C_TYPE_STRING:
		memcpy(&s, src, sizeof(s));
		if (!s)
			s = "";
		if (!utf8_valid(s, strlen(s)))
			return path_err(err, 500, p, "string is not valid UTF-8");
		emit_string(sb, s, strlen(s));
		break;
	case PROTOBUF_C_TYPE_BYTES:
		emit_bytes(sb, src);
		break;
	case PROTOBUF_C_TYPE_MESSAGE:
		memcpy(&sub, src, sizeof(sub));
		if (!sub)
			sb_puts(sb, "{}");
		else
			return emit_message(sb, sub, p, err);
		break;
	}
	return 0;
}

static int emit_repeated(struct sbuf *sb, const ProtobufCMessage *msg,
			 const ProtobufCFieldDescriptor *f, struct path *p,
			 struct gerr *err)
{
	size_t n = *(const size_t *)quantifier_of(msg, f);
	const char *elems = *(char * const *)member_of(msg, f);
	size_t esize = element_size(f->type);

	sb_put(sb, "[", 1);
	for (size_t i = 0; i < n; i++) {
		size_t saved = path_push_index(p, i);

		if (i)
			sb_put(sb, ",", 1);
		if (emit_value(sb, f, elems + i * esize, p, err))
			return -1;
		path_pop(p, saved);
	}
	sb_put(sb, "]", 1);
	return 0;
}

/* Whether a proto3 field holds something other than its default, by the
 * same rule protobuf-c uses to decide whether to pack it. */
static bool is_nondefault(const ProtobufCFieldDescriptor *f, const void *member)
{
	const ProtobufCBinaryData *bd = member;
	const char *s;
	uint32_t u32;
	uint64_t u64;
	float fl;
	double d;

	switch (f->type) {
	case PROTOBUF_C_TYPE_FLOAT:
		memcpy(&fl, member, sizeof(fl));
		return fl != 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		memcpy(&d, member, sizeof(d));
		return d != 0;
	case PROTOBUF_C_TYPE_STRING:
		memcpy(&s, member, sizeof(s));
		return s && *s;
	case PROTOBUF_C_TYPE_BYTES:
		return bd->len > 0;
	case PROTOBUF_C_TYPE_MESSAGE:
		return *(void * const *)member != NULL;
	default:
		break;
	}
	if (element_size(f->type) == 4) {
		memcpy(&u32, member, sizeof(u32));
		return u32 != 0;
	}
	memcpy(&u64, member, sizeof(u64));
	return u64 != 0;
}

/* Whether field `f` of `msg` appears in the output. */
static bool is_present(const ProtobufCMessage *msg,
		       const ProtobufCFieldDescriptor *f)
{
	const void *member = member_of(msg, f);
	const void *ptr = NULL;

	if (f->type == PROTOBUF_C_TYPE_STRING ||
	    f->type == PROTOBUF_C_TYPE_MESSAGE)
		memcpy(&ptr, member, sizeof(ptr));

	switch (f->label) {
	case PROTOBUF_C_LABEL_REQUIRED:
		return true;
	case PROTOBUF_C_LABEL_REPEATED:
		return *(const size_t *)quantifier_of(msg, f) > 0;
	case PROTOBUF_C_LABEL_OPTIONAL:
	case PROTOBUF_C_LABEL_NONE:
		break;
	}
	if (is_oneof(f)) {
		if (*(const uint32_t *)quantifier_of(msg, f) != f->id)
			return false;
	} else if (f->label == PROTOBUF_C_LABEL_NONE) {
		return is_nondefault(f, member);
	} else if (f->type != PROTOBUF_C_TYPE_STRING &&
		   f->type != PROTOBUF_C_TYPE_MESSAGE) {
		return *(const protobuf_c_boolean *)quantifier_of(msg, f);
	}
	/* oneof or optional: set even at the default value, but, as in
	 * protobuf-c's packing, not when pointing at the default */
	if (f->type == PROTOBUF_C_TYPE_STRING ||
	    f->type == PROTOBUF_C_TYPE_MESSAGE)
		return ptr && ptr != f->default_value;
	return true;
}

/* `"jsonName":`, after a comma unless first, made from the field's proto
 * name as codec_json_name() makes it; its JSON name goes on the path.
 * Proto names are identifiers: their JSON names need no escaping. */
static size_t emit_key(struct sbuf *sb, const char *proto_name, bool first, struct path *p)
{
	size_t n = strlen(proto_name), start;
	bool upper_next = false;
	char *o;

	if (!sb_reserve(sb, n + 4))
		return p->len;
	o = sb->buf + sb->len;
	if (!first)
		*o++ = ',';
	*o++ = '"';
	start = (size_t)(o - sb->buf);
	for (const char *c = proto_name; *c; c++) {
		if (*c == '_') {
			upper_next = true;
			continue;
		}
		*o++ = upper_next ? (char)toupper((unsigned char)*c) : *c;
		upper_next = false;
	}
	n = (size_t)(o - sb->buf) - start;
	*o++ = '"';
	*o++ = ':';
	sb->len = (size_t)(o - sb->buf);
	return path_push_name(p, sb->buf + start, n);
}

static int emit_message(struct sbuf *sb, const ProtobufCMessage *msg,
			struct path *p, struct gerr *err)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;
	bool first = true;

	sb_put(sb, "{", 1);
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		size_t saved;
		int rc;

		if (!is_present(msg, f))
			continue;
		saved = emit_key(sb, f->name, first, p);
		first = false;
		if (f->label == PROTOBUF_C_LABEL_REPEATED)
			rc = emit_repeated(sb, msg, f, p, err);
		else
			rc = emit_value(sb, f, member_of(msg, f), p, err);
		if (rc)
			return rc;
		path_pop(p, saved);
	}
	sb_put(sb, "}", 1);
	return 0;
}

static int encode_json(const ProtobufCMessage *msg, char **out, size_t *len,
		       struct gerr *err)
{
	struct sbuf sb = { .buf = NULL };
	struct path p = { .len = 0 };

	if (emit_message(&sb, msg, &p, err)) {
		gerr_prefix(err, "cannot encode %s", msg->descriptor->name);
		goto fail;
	}
	if (!sb_reserve(&sb, 0)) {
		gerr_set(err, 500, "out of memory encoding %s",
			 msg->descriptor->name);
		goto fail;
	}
	sb.buf[sb.len] = '\0';
	*out = sb.buf;
	*len = sb.len;
	return 0;
fail:
	free(sb.buf);
	return -1;
}

/* ================================================================ protobuf encode */

static int encode_protobuf(const ProtobufCMessage *msg, char **out,
			   size_t *len, struct gerr *err)
{
	size_t size = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(size + 1);

	if (!buf)
		return gerr_set(err, 500, "out of memory encoding %s",
				msg->descriptor->name);
	*len = protobuf_c_message_pack(msg, buf);
	buf[*len] = 0;
	*out = (char *)buf;
	return 0;
}

int codec_encode(enum codec_format fmt, const ProtobufCMessage *msg,
		 char **out, size_t *len, struct gerr *err)
{
	*out = NULL;
	*len = 0;
	if (fmt == CODEC_PROTOBUF)
		return encode_protobuf(msg, out, len, err);
	return encode_json(msg, out, len, err);
}
