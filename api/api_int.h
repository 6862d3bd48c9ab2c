/* api internals: what api.c hands to the watch streams (watch.c). */
#ifndef GRAIND_API_INT_H
#define GRAIND_API_INT_H

#include <protobuf-c/protobuf-c.h>

#include "api/api.h"
#include "server/svc/svc.h"
#include "server/util/gerr.h"

/* Open the watch of rpc m for `call` with request req (kept by the
 * caller). A Last-Event-ID (decimal, the last id or seq received)
 * replaces the request's `after`: a reconnecting EventSource repeats the
 * URL it first used. */
int api_watch_open(struct svc_call *call, const struct svc_method *m, ProtobufCMessage *req,
		   const char *last_event_id, struct api_watch **out, struct gerr *err);

#endif
