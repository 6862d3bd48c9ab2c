/* grpc: the gRPC transport, h2c (HTTP/2 with prior knowledge) on nghttp2.
 *
 * Listens on cfg.grpc_host:grpc_port and/or cfg.grpc_socket_path and
 * serves `service Graind` (path /graind.Graind/<Rpc>, each rpc the svc
 * operation of that name, so REST and gRPC never disagree), plus the
 * standard grpc.health.v1.Health/Check and the server reflection
 * services (v1 and v1alpha). One thread runs an epoll loop over every
 * connection; svc calls, which may block (the verifier, the kernel, the
 * store), run on a few worker threads and hand their answers back
 * through an eventfd, so a slow call never stalls another stream. */
#ifndef GRAIND_GRPC_H
#define GRAIND_GRPC_H

#include "server/util/gerr.h"

struct agent;
struct grpc_server;

/* Start listening as agent->cfg says (nothing when both are disabled);
 * agent->grpc_tcp gets the bound address. *out is the caller's, to stop
 * with grpc_stop(). */
int grpc_start(struct agent *agent, struct grpc_server **out, struct gerr *err);

/* Stop: health turns NOT_SERVING, listeners close, every connection gets
 * a GOAWAY, calls in flight finish (for at most a few seconds), then the
 * threads end. NULL is fine. */
void grpc_stop(struct grpc_server *srv);

#endif
