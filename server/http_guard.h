/* http_guard: what keeps one REST client from starving the others.
 *
 *   - An address holds at most CONNECTIONS_PER_ADDRESS connections
 *     (refusals.h); more are closed at accept.
 *   - Deadlines: a request's headers must be in HTTP_HEADER_DEADLINE_S
 *     after its first byte (after the accept, TLS handshake included, for
 *     a connection's first request), and its body HTTP_BODY_DEADLINE_S
 *     after that, plus a second per HTTP_BODY_BYTES_PER_S it may carry.
 *     A connection that misses one is shut down. While an answer is sent
 *     (a watch may last hours) and between requests no deadline runs:
 *     libmicrohttpd's idle timeout closes a connection that does nothing.
 *
 * A thread checks the deadlines every HTTP_GUARD_TICK_MS; every refusal
 * and closure is counted (refusals.h). TCP connections only: a unix
 * socket's clients are local and its mode decides who they are. */
#ifndef GRAIND_HTTP_GUARD_H
#define GRAIND_HTTP_GUARD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "server/util/gerr.h"

#define HTTP_HEADER_DEADLINE_S 10
#define HTTP_BODY_DEADLINE_S 10
#define HTTP_BODY_BYTES_PER_S (64 * 1024)
#define HTTP_GUARD_TICK_MS 250

struct http_guard;
struct http_guard_conn;

int http_guard_start(struct http_guard **out, struct gerr *err);
void http_guard_stop(struct http_guard *g);

/* libmicrohttpd's accept policy: false, counted, when the address holds
 * its share already; true reserves a place that http_guard_open(), next
 * on the same thread, takes. */
bool http_guard_admit(struct http_guard *g, const struct sockaddr *peer);

/* A TCP connection on socket fd was accepted; NULL when out of memory
 * (the connection then has no deadlines). Closed: forget it, before the
 * socket is closed. */
struct http_guard_conn *http_guard_open(struct http_guard *g, int fd,
					const struct sockaddr *peer);
void http_guard_close(struct http_guard *g, struct http_guard_conn *c);

/* Its request's headers are in; the body may bring up to body_bytes. */
void http_guard_headers_in(struct http_guard *g, struct http_guard_conn *c,
			   uint64_t body_bytes);
/* The request is answered: no deadline while the answer goes out. */
void http_guard_answering(struct http_guard *g, struct http_guard_conn *c);
/* The request is over: the next one's clock starts at its first byte. */
void http_guard_request_done(struct http_guard *g, struct http_guard_conn *c);

#endif
