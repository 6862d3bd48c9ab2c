/* The codec targets' shared check: input byte 0 picks a message type of
 * the schema, the rest is decoded in one format. Whatever decodes must
 * encode in both formats, decode back from each, and encode again to the
 * same JSON: a round trip that is exact and stable. Header only: each
 * target is one source file. */
#ifndef GRAIND_FUZZ_CODEC_H
#define GRAIND_FUZZ_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/graind.pb-c.h"
#include "server/util/codec.h"
#include "server/util/pbmsg.h"
#include "tests/fuzz/fuzz.h"

static const ProtobufCMessageDescriptor *const fuzz_messages[] = {
#include "fuzz/messages.h"
};
#define FUZZ_N_MESSAGES (sizeof(fuzz_messages) / sizeof(fuzz_messages[0]))

static char *fuzz_encode(enum codec_format fmt, const ProtobufCMessage *msg, size_t *len)
{
	struct gerr err = { 0 };
	char *out = NULL;

	/* a decoded message always encodes */
	fuzz_check(!codec_encode(fmt, msg, &out, len, &err), "%s", err.msg);
	return out;
}

static ProtobufCMessage *fuzz_decode_again(enum codec_format fmt,
					   const ProtobufCMessageDescriptor *desc,
					   const char *buf, size_t len)
{
	struct gerr err = { 0 };
	ProtobufCMessage *msg = NULL;

	/* what the codec wrote it reads back */
	fuzz_check(!codec_decode(fmt, desc, buf, len, &msg, &err), "%s: %s: %.*s",
		   desc->name, err.msg, (int)len, buf);
	return msg;
}

static void fuzz_same_json(const ProtobufCMessage *msg, const char *json, size_t len)
{
	size_t again_len;
	char *again = fuzz_encode(CODEC_JSON, msg, &again_len);

	fuzz_check(again_len == len && !memcmp(again, json, len),
		   "JSON changed: %.*s then %.*s", (int)len, json, (int)again_len, again);
	free(again);
}

static int fuzz_codec_one(enum codec_format fmt, const uint8_t *data, size_t size)
{
	const ProtobufCMessageDescriptor *desc;
	ProtobufCMessage *msg = NULL, *from_json, *from_pb;
	struct gerr err = { 0 };
	char *json, *pb;
	size_t json_len, pb_len;

	if (!size)
		return 0;
	desc = fuzz_messages[data[0] % FUZZ_N_MESSAGES];
	if (codec_decode(fmt, desc, data + 1, size - 1, &msg, &err)) {
		fuzz_check(!msg && err.status == 400 && err.msg[0], "%d %s",
			   err.status, err.msg);
		return 0;
	}
	json = fuzz_encode(CODEC_JSON, msg, &json_len);
	pb = fuzz_encode(CODEC_PROTOBUF, msg, &pb_len);
	from_json = fuzz_decode_again(CODEC_JSON, desc, json, json_len);
	from_pb = fuzz_decode_again(CODEC_PROTOBUF, desc, pb, pb_len);
	fuzz_same_json(from_json, json, json_len);
	fuzz_same_json(from_pb, json, json_len);
	pbmsg_free(from_pb);
	pbmsg_free(from_json);
	pbmsg_free(msg);
	free(pb);
	free(json);
	return 0;
}

#endif
