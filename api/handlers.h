/* handlers: what every API handler sees, and the handlers themselves.
 *
 * Internal to api/. A handler reads the call (path argument, decoded
 * body, query) and sets call->reply (a message, freed after encoding) or
 * call->raw (bytes sent as they are), plus call->status when it is not
 * 200. It returns 0, or fails through gerr_set() and the caller answers
 * with a Status body carrying err's status and message. */
#ifndef GRAIND_API_HANDLERS_H
#define GRAIND_API_HANDLERS_H

#include <protobuf-c/protobuf-c.h>

#include "api/api.h"
#include "proto/graind.pb-c.h"
#include "server/auth.h"
#include "server/util/gerr.h"

#define API_MAX_ARGS 2
#define API_ARG_MAX 256
/* Largest body of any route but the object upload (bytes). */
#define API_MAX_MESSAGE_BODY (1024 * 1024)

struct api_call {
	struct agent *agent;
	const struct api_request *req;
	enum auth_role role;
	char args[API_MAX_ARGS][API_ARG_MAX];   /* the "*" path segments */
	ProtobufCMessage *body;         /* decoded request, when the route has one */

	int status;                     /* reply status, 200 by default */
	ProtobufCMessage *reply;
	void *raw;                      /* malloc'd raw reply body */
	size_t raw_len;
	const char *raw_type;
	char location[160];
	char audit_target[128];         /* what a change was about, for the audit log */
};

typedef int (*api_handler_fn)(struct api_call *call, struct gerr *err);

/* A query parameter of the call, or NULL. */
const char *api_query(const struct api_call *call, const char *key);

/* Parse the page_size query parameter: default 100, at most 1000. */
int api_page_size(const struct api_call *call, unsigned *size, struct gerr *err);

/* Current time, or a unix-ms time, as RFC 3339 UTC ("2026-11-25T13:52:36.123Z"),
 * malloc'd. */
char *api_time_string(int64_t unix_ms);

int h_healthz(struct api_call *call, struct gerr *err);
int h_status(struct api_call *call, struct gerr *err);
int h_object_upload(struct api_call *call, struct gerr *err);
int h_object_list(struct api_call *call, struct gerr *err);
int h_object_get(struct api_call *call, struct gerr *err);
int h_object_content(struct api_call *call, struct gerr *err);
int h_object_delete(struct api_call *call, struct gerr *err);
int h_object_verify(struct api_call *call, struct gerr *err);
/* Probe names: [a-z0-9][a-z0-9._-]{0,62}, else 400. */
int api_check_probe_name(const char *name, struct gerr *err);

int h_probe_put(struct api_call *call, struct gerr *err);
int h_probe_list(struct api_call *call, struct gerr *err);
int h_probe_get(struct api_call *call, struct gerr *err);
int h_probe_attach(struct api_call *call, struct gerr *err);
int h_probe_detach(struct api_call *call, struct gerr *err);
int h_probe_delete(struct api_call *call, struct gerr *err);
int h_probe_map(struct api_call *call, struct gerr *err);
int h_samples_list(struct api_call *call, struct gerr *err);
int h_sink_put(struct api_call *call, struct gerr *err);
int h_sink_list(struct api_call *call, struct gerr *err);
int h_sink_get(struct api_call *call, struct gerr *err);
int h_sink_delete(struct api_call *call, struct gerr *err);
/* Every stored sink as a reply shows it (secret masked, health added).
 * *out is a malloc'd array of *n sinks, each freed with pbmsg_free(),
 * also when it fails half way. */
int api_sinks_all(struct agent *agent, Graind__Sink ***out, size_t *n, struct gerr *err);
int h_metrics(struct api_call *call, struct gerr *err);
int h_audit_list(struct api_call *call, struct gerr *err);
int h_web(struct api_call *call, struct gerr *err);

#endif
