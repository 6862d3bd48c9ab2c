/* http: libmicrohttpd glue. Listens on TCP and/or a unix socket, reads
 * request bodies up to api_max_body() (413 beyond, refused from the
 * Content-Length before the body is read), and hands every request to
 * api_handle() on a pool of worker threads; the watch routes' answers
 * become Server-Sent Events streams (server/sse.h). */
#ifndef GRAIND_HTTP_H
#define GRAIND_HTTP_H

#include "server/util/gerr.h"

struct agent;
struct http_server;

/* Start listening as agent->cfg says; agent->listen_tcp gets the bound
 * address. *out is the caller's, to stop with http_stop(). */
int http_start(struct agent *agent, struct http_server **out, struct gerr *err);

/* Stop listening, finish in-flight requests, free the server. */
void http_stop(struct http_server *srv);

#endif
