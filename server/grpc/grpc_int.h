/* grpc internals: what a call answers, shared by the connection loop
 * (grpc.c), the Graind calls (grpc_call.c) and the standard services
 * (grpc_std.c). */
#ifndef GRAIND_GRPC_INT_H
#define GRAIND_GRPC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "server/svc/svc.h"
#include "server/util/gerr.h"

/* google.rpc.Code values the transport uses itself. */
enum grpc_code {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
};

/* Largest request message of any rpc but UploadObject (as REST bodies). */
#define GRPC_MAX_MESSAGE (1024 * 1024)
/* The length prefix of every message: a compressed flag, 4 bytes length. */
#define GRPC_PREFIX 5

/* The answer to a call: response messages, each framed, and the status
 * that ends the stream. */
struct grpc_reply {
	uint8_t *data;          /* framed messages, malloc'd; NULL: none */
	size_t len;
	int code;
	char msg[GERR_MSG_MAX];
	char *details_bin;      /* grpc-status-details-bin (base64), malloc'd or NULL */
};

/* An empty reply (OK, nothing yet) without writing all of msg: one is
 * made for every call. */
static inline void grpc_reply_init(struct grpc_reply *r)
{
	r->data = NULL;
	r->len = 0;
	r->code = GRPC_OK;
	r->msg[0] = '\0';
	r->details_bin = NULL;
}
/* Free what r holds; r is then as grpc_reply_init() leaves it. */
void grpc_reply_clear(struct grpc_reply *r);
/* Set the status; returns -1 for `return grpc_reply_status(...)` chains. */
int grpc_reply_status(struct grpc_reply *r, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Append msg packed, with its prefix; INTERNAL when out of memory. */
int grpc_reply_message(struct grpc_reply *r, const ProtobufCMessage *msg);

/* Who calls m, into *call, from its authorization header (NULL: none)
 * before any request is read; -1 with r's 401/403 for a caller who may not
 * call it (429 when its address failed too often). `identity`: the
 * connection's verified client certificate names (server/util/peerid.h),
 * or NULL; `address`: the client's, "" on the unix socket. Both must
 * outlive the call's use, or be replaced in it. `cache`: the connection's
 * (NULL: none); a call is authorised afresh every time. */
int grpc_call_identify(struct agent *agent, const struct svc_method *m,
		       const char *authorization, const char *identity, const char *address,
		       struct svc_caller_cache *cache, struct svc_call *call,
		       struct grpc_reply *r);
/* Run m for the caller grpc_call_identify() found, on one request message
 * (unframed): decode, svc_run, encode. The call is used up in place (the
 * operation writes its results into it; a copy per call cost more than
 * the call): run it once. */
void grpc_call_run(struct svc_call *call, const struct svc_method *m,
		   const uint8_t *msg, size_t len, struct grpc_reply *r);

/* One step of a watch (a server-streaming Graind rpc) on a worker: the
 * first opens it for the caller from the request message (*w NULL;
 * msg/len the request), every step appends the messages that follow to r.
 * Returns how many (0: nothing new yet), -1 with r's status when the
 * watch ends. */
int grpc_watch_step(const struct svc_call *caller, const struct svc_method *m,
		    const uint8_t *msg, size_t len, struct svc_watch **w, struct grpc_reply *r);

/* grpc.health.v1.Health/Check, or one answer of Watch (`watch`): a
 * HealthCheckResponse appended to r. An unknown service is NOT_FOUND for
 * Check, SERVICE_UNKNOWN for Watch; *known says which it was. -1 with r's
 * status when the request cannot be read. */
int grpc_health_check(bool serving, bool watch, const uint8_t *msg, size_t len, bool *known,
		      struct grpc_reply *r);
/* One ServerReflectionRequest (v1 or v1alpha: the same bytes) answered:
 * a response message appended to r; -1 with r's status when the request
 * cannot be read. */
int grpc_reflection_answer(const uint8_t *msg, size_t len, struct grpc_reply *r);

#endif
