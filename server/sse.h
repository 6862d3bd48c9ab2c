/* sse: the REST watch routes as Server-Sent Events over libmicrohttpd.
 *
 * Each stream is a callback response that writes what api_watch_next()
 * gives; when nothing is new, the connection is suspended rather than
 * polled, and a thread of the hub, woken through an eventfd by what the
 * watches follow (svc_watch_subscribe), resumes the streams that have
 * something new. It also resumes every idle stream each 15 s for a
 * comment line, so that proxies keep the stream open and a client that
 * went away is noticed by the failed write. At most SSE_MAX streams are
 * open (503 beyond). */
#ifndef GRAIND_SSE_H
#define GRAIND_SSE_H

#include <microhttpd.h>

#include "api/api.h"
#include "server/util/gerr.h"

#define SSE_MAX 256

struct agent;
struct sse_hub;

int sse_hub_start(struct agent *agent, struct sse_hub **out, struct gerr *err);

/* Answer conn with the watch as a text/event-stream; the watch is taken
 * whatever the outcome. `accept`: for a refusal's body. */
enum MHD_Result sse_respond(struct sse_hub *hub, struct MHD_Connection *conn,
			    struct api_watch *watch, const char *accept);

/* Before the daemons stop: every stream ends (suspended ones are resumed
 * to do so), and no new one starts. */
void sse_hub_end(struct sse_hub *hub);
/* After the daemons stopped (they may free streams until then). */
void sse_hub_free(struct sse_hub *hub);

#endif
