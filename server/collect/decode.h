/* decode: raw bytes of map keys, map values and ring-buffer records turned
 * into named, typed fields, driven by the object's BTF.
 *
 * A decoder is compiled once per BTF type into a flat plan of leaves
 * (nested structs and unions flattened with dots: "key.addr.v4"), then
 * applied to every record. Leaves: signed/unsigned ints of every width,
 * bool, enums (by value name), char arrays (strings: stop at NUL, escape
 * non-printable bytes), other byte arrays (one hex leaf), other fixed
 * arrays (one leaf per element: "a[0]"), bitfields. Well-known shapes
 * are decoded by field-name convention (see decode.c's table, documented
 * in README): IPv4/IPv6 addresses, ports in network order, ifindex →
 * interface name, errno → name, syscall number → name, kernel address →
 * symbol, cgroup id → path, hex.
 *
 * Without BTF (btf NULL or type_id 0) a decoder emits two leaves, "raw"
 * (the bytes as hex pairs, cut after 4096 bytes with "...") and "size"
 * (the record's length), and says so (decode_is_raw).
 *
 * A decoder keeps nothing of the BTF it was made from, and is read-only
 * once made: threads may share it. */
#ifndef GRAIND_DECODE_H
#define GRAIND_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

struct btf;
struct decoder;
struct pbwire;

/* Compile a decoder for `type_id` of `btf` for records of `size` bytes.
 * A type whose size differs from `size`, BTF that makes no sense, or a
 * type beyond the limits (256 leaves, 8 levels of nesting) fails with 422
 * and a message naming the type and field. *out is freed by
 * decode_free(). */
int decode_new(const struct btf *btf, uint32_t type_id, size_t size,
	       struct decoder **out, struct gerr *err);
void decode_free(struct decoder *dec);

/* True for the hex-dump decoder of data without BTF. */
bool decode_is_raw(const struct decoder *dec);

/* Append one Graind__Field per leaf of the record to (*fields, *n) (a
 * codec-managed array that grows with realloc). `prefix` ("" or "key")
 * is put before every name with a dot ("key.addr"; "key[0]" for array
 * elements; the prefix alone for a leaf of a plain-number type). Returns
 * 0, or -1 when out of memory (the fields appended so far stay in the
 * array, for the caller to free). A record shorter than the decoder's
 * size is decoded as raw; bytes past the size (perf-buffer padding) are
 * ignored. */
int decode_fields(const struct decoder *dec, const void *data, size_t len,
		  const char *prefix, Graind__Field ***fields, size_t *n);

/* Append one graind.Field per leaf of the record to the message being
 * written to w, each as length-delimited field `field_no` of it (10 for
 * graind.Sample.fields): the same leaves, names and values that
 * decode_fields() gives (raw fallback included), in protobuf wire format,
 * byte for byte what protobuf-c packs for them, allocating nothing per
 * field. Returns 0, or -1 when out of memory (w->failed; the fields
 * written before stay in w). */
int decode_pack_fields(const struct decoder *dec, const void *data, size_t len,
		       const char *prefix, uint32_t field_no, struct pbwire *w);

/* decode_pack_fields() split in two, for records that share their names.
 * decode_pack_names() writes one graind.Field per leaf holding only its
 * name (an empty Field for an empty name; nothing for a decoder without
 * BTF): the same for every record of the decoder. decode_pack_values()
 * writes the record's Fields holding only their values, or, for a record
 * decoded as raw, whole as decode_pack_fields() writes them. Merging the
 * i-th name Field into the i-th value Field (their bytes one after the
 * other, as protobuf merges) gives decode_pack_fields()'s i-th Field, the
 * name of a raw record's own Field winning. Both return 0, or -1 when out
 * of memory (w->failed). */
int decode_pack_names(const struct decoder *dec, const char *prefix, uint32_t field_no,
		      struct pbwire *w);
int decode_pack_values(const struct decoder *dec, const void *data, size_t len,
		       const char *prefix, uint32_t field_no, struct pbwire *w);

/* One leaf's value, as decode_visit() hands it over: `is` tells which
 * member holds it. Text is not NUL-terminated. */
struct decode_value {
	Graind__Field__ValueCase is;
	union {
		int64_t i;
		uint64_t u;
		double real;
		bool flag;
	};
	const char *text;
	size_t text_len;
};

/* Gets every leaf in turn: its name relative to the record, without any
 * prefix ("" for the leaf of a plain-number type; "raw" and "size" for a
 * raw record), and its value, whose text is valid only during the call.
 * Returns 0 to go on; anything else stops the walk. */
typedef int (*decode_visit_fn)(void *ctx, const char *name, size_t name_len,
			       const struct decode_value *v);

/* Call fn for every leaf of the record, in order: the same leaves and
 * values as decode_fields() gives (raw fallback included), allocating
 * nothing per leaf. Returns 0 once every leaf was visited, what fn
 * returned when it stopped the walk, or -1 when out of memory for the
 * texts of a decoder whose longest text exceeds 16 KiB. */
int decode_visit(const struct decoder *dec, const void *data, size_t len,
		 decode_visit_fn fn, void *ctx);

/* A value as text (for tags, labels and groups) into buf, cut to n - 1
 * bytes: ints in decimal, reals "%.17g", bools "true"/"false", texts as
 * they are (up to a NUL). Returns the length written. Allocates nothing. */
size_t decode_value_text(const struct decode_value *v, char *buf, size_t n);

/* A value as a number, for metrics: false when it is not numeric (text:
 * strings, addresses, names of enum values, errnos, symbols...). Bools
 * are 0/1. */
bool decode_value_number(const struct decode_value *v, double *out);

/* decode_value_text() and decode_value_number() of a decoded field. */
void decode_field_text(const Graind__Field *f, char *buf, size_t n);
bool decode_field_number(const Graind__Field *f, double *out);

#endif
