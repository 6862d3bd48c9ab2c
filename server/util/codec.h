/* codec: the one reflective codec between protobuf-c messages and the wire.
 *
 * Works for every message in proto/graind.proto through the protobuf-c
 * descriptors; there is no per-message code anywhere. JSON follows the
 * proto3 canonical JSON mapping:
 *   - field names in lowerCamelCase on output; on input the lowerCamelCase
 *     name and the original proto name are both accepted;
 *   - int64/uint64/fixed64/sint64 as JSON strings on output; strings or
 *     integral numbers accepted on input, exactly over the type's whole
 *     range (numbers past int64 too, which jansson alone cannot hold);
 *     32-bit ints as numbers (numeric strings accepted on input);
 *   - bytes as standard base64 (padded) on output; standard or URL-safe,
 *     padded or not, accepted on input;
 *   - enums by value name on output; name or number accepted on input,
 *     in JSON and protobuf only one the enum has (protobuf-c keeps any);
 *   - float/double as numbers, "NaN"/"Infinity"/"-Infinity" as strings;
 *   - oneof members emitted when set (even at their default value; a
 *     string or message member must then be non-NULL and, as protobuf-c
 *     requires for packing, not the descriptor's default pointer);
 *   - repeated as arrays, nested messages as objects;
 *   - fields at their default value (0, "", false, empty, first enum value,
 *     unset message) omitted on output; `null` accepted on input as "unset".
 * Unknown fields, duplicate keys, two members of one oneof, wrong JSON types,
 * out-of-range numbers and invalid UTF-8 are rejected with status 400 and a
 * message naming the field path, e.g. `programs[2].attach.xdp.mode: ...`.
 *
 * Memory: every message the codec returns, and every message handed to it,
 * is a heap tree freeable by pbmsg_free() (server/util/pbmsg.h). */
#ifndef GRAIND_CODEC_H
#define GRAIND_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "server/util/gerr.h"

enum codec_format {
	CODEC_JSON,      /* application/json */
	CODEC_PROTOBUF,  /* application/x-protobuf */
};

/* Maximum nesting depth accepted when decoding JSON. */
#define CODEC_MAX_DEPTH 64

/* Decode `len` bytes into a new message of type `desc`. On success *out is
 * the caller's, to free with pbmsg_free(). On failure *out is NULL and err
 * holds status 400 and the reason. */
int codec_decode(enum codec_format fmt, const ProtobufCMessageDescriptor *desc,
		 const void *buf, size_t len, ProtobufCMessage **out,
		 struct gerr *err);

/* Encode `msg`. On success *out is a malloc'd buffer of *len bytes (JSON is
 * also NUL-terminated) that the caller frees with free(). Fails only when
 * out of memory or, for JSON, when a string is not UTF-8 (status 500). */
int codec_encode(enum codec_format fmt, const ProtobufCMessage *msg,
		 char **out, size_t *len, struct gerr *err);

/* Set the singular scalar field `field` (its proto name) of `msg` from
 * text, read as a proto3 JSON string of that field would be: decimal
 * integers, enum names or numbers, "true"/"false", strings as they are.
 * 400 naming the field when the text does not fit its type. */
int codec_set_text(ProtobufCMessage *msg, const char *field, const char *text,
		   struct gerr *err);

/* lowerCamelCase of a proto field name ("has_btf_ext" -> "hasBtfExt") into
 * buf of size n. Exposed for tests and error messages. */
void codec_json_name(const char *proto_name, char *buf, size_t n);

#endif
