/* grpc_call: one rpc of service Graind over gRPC, and the replies. */
#include "server/grpc/grpc_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/agent.h"
#include "server/util/codec.h"
#include "server/util/pbmsg.h"
#include "server/util/pbwire.h"
#include "server/util/utf8.h"

void grpc_reply_clear(struct grpc_reply *r)
{
	free(r->data);
	free(r->details_bin);
	grpc_reply_init(r);
}

int grpc_reply_status(struct grpc_reply *r, int code, const char *fmt, ...)
{
	va_list ap;

	r->code = code;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	return -1;
}

/* gRPC's 5-byte message prefix: not compressed, then the length. */
static void put_prefix(uint8_t *p, size_t n)
{
	p[0] = 0;
	p[1] = (uint8_t)(n >> 24);
	p[2] = (uint8_t)(n >> 16);
	p[3] = (uint8_t)(n >> 8);
	p[4] = (uint8_t)n;
}

int grpc_reply_message(struct grpc_reply *r, const ProtobufCMessage *msg)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	uint8_t *grown;

	if (n > UINT32_MAX || !(grown = realloc(r->data, r->len + GRPC_PREFIX + n)))
		return grpc_reply_status(r, GRPC_INTERNAL, "out of memory for the response");
	r->data = grown;
	grown += r->len;
	put_prefix(grown, n);
	protobuf_c_message_pack(msg, grown + GRPC_PREFIX);
	r->len += GRPC_PREFIX + n;
	return 0;
}

/* Base64 without padding, as gRPC writes binary metadata. */
static char *base64(const uint8_t *p, size_t n)
{
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc(n / 3 * 4 + 5), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
			     (i + 2 < n ? p[i + 2] : 0);

		*o++ = abc[v >> 18 & 63];
		*o++ = abc[v >> 12 & 63];
		if (i + 1 < n)
			*o++ = abc[v >> 6 & 63];
		if (i + 2 < n)
			*o++ = abc[v & 63];
	}
	*o = '\0';
	return out;
}

/* grpc-status-details-bin: a google.rpc.Status (code 1, message 2,
 * details 3) whose one detail is an Any (type_url 1, value 2) holding the
 * verifier's graind.VerifyReport. */
static void set_report(struct grpc_reply *r, const Graind__VerifyReport *report)
{
	struct pbwire w = { 0 };
	size_t n = protobuf_c_message_get_packed_size(&report->base), any;
	uint8_t *packed = malloc(n ? n : 1);

	if (!packed)
		return;
	protobuf_c_message_pack(&report->base, packed);
	pbwire_int(&w, 1, r->code);
	pbwire_string(&w, 2, r->msg);
	any = pbwire_open(&w, 3);
	pbwire_string(&w, 1, "type.googleapis.com/graind.VerifyReport");
	pbwire_bytes(&w, 2, packed, n);
	pbwire_close(&w, any);
	if (!w.failed)
		r->details_bin = base64(w.data, w.len);
	pbwire_free(&w);
	free(packed);
}

static void set_error(struct grpc_reply *r, const struct gerr *err,
		      const Graind__VerifyReport *report)
{
	grpc_reply_status(r, gerr_grpc_code(err->status), "%s", err->msg);
	/* Messages quote client input (paths, names): keep them valid text. */
	utf8_scrub(r->msg);
	if (report)
		set_report(r, report);
}

int grpc_call_identify(struct agent *agent, const struct svc_method *m,
		       const char *authorization, const char *identity, const char *address,
		       struct svc_caller_cache *cache, struct svc_call *call,
		       struct grpc_reply *r)
{
	struct gerr err = { 0 };

	svc_call_identify_cached(call, cache, agent, authorization, identity, address);
	if (svc_authorize(call, m, NULL, &err) < 0) {
		set_error(r, &err, NULL);
		return -1;
	}
	return 0;
}

void grpc_call_run(struct svc_call *call, const struct svc_method *m,
		   const uint8_t *msg, size_t len, struct grpc_reply *r)
{
	ProtobufCMessage *req = NULL;
	struct gerr err = { 0 };
	uint8_t *out;
	size_t n;

	if (codec_decode(CODEC_PROTOBUF, svc_rpc(m)->input, msg, len, &req, &err) < 0 ||
	    svc_run_encoded(call, m, req, CODEC_PROTOBUF, GRPC_PREFIX, &out, &n, &err) < 0) {
		set_error(r, &err, call->report);
	} else if (n - GRPC_PREFIX > UINT32_MAX) {
		free(out);
		grpc_reply_status(r, GRPC_INTERNAL, "the response is too large");
	} else {
		/* One message: the reply's first and only data. */
		free(r->data);
		put_prefix(out, n - GRPC_PREFIX);
		r->data = out;
		r->len = n;
		r->code = GRPC_OK;
	}
	pbmsg_free(req);
	pbmsg_free(call->report ? &call->report->base : NULL);
	call->report = NULL;
}

/* Messages of one watch step; ~1 MiB at most, so one page waits per stream. */
#define WATCH_STEP_MESSAGES 512

static int emit_framed(void *ctx, const ProtobufCMessage *msg, uint64_t id)
{
	(void)id;
	return grpc_reply_message(ctx, msg);
}

int grpc_watch_step(const struct svc_call *caller, const struct svc_method *m,
		    const uint8_t *msg, size_t len, struct svc_watch **w, struct grpc_reply *r)
{
	struct gerr err = { 0 };
	int n;

	if (!*w) {
		ProtobufCMessage *req = NULL;
		struct svc_call call = *caller;
		int ret;

		ret = codec_decode(CODEC_PROTOBUF, svc_rpc(m)->input, msg, len, &req, &err) < 0 ?
		      -1 : svc_watch_open(&call, m, req, w, &err);
		pbmsg_free(req);
		if (ret < 0) {
			set_error(r, &err, NULL);
			return -1;
		}
	}
	n = svc_watch_step(*w, WATCH_STEP_MESSAGES, emit_framed, r, &err);
	if (n < 0) {
		if (err.status)
			set_error(r, &err, NULL);
		return -1;
	}
	r->code = GRPC_OK;
	return n;
}
