/* listen: the listening sockets of the transports (REST and gRPC).
 *
 * Both return a listening, close-on-exec socket, or -1 with err set. */
#ifndef GRAIND_LISTEN_H
#define GRAIND_LISTEN_H

#include <stddef.h>

#include "server/util/gerr.h"

/* TCP on host:port (port 0: any free one); `bound` (size n) gets the
 * address as bound, "127.0.0.1:9730" or "[::1]:9730". */
int listen_tcp(const char *host, unsigned port, char *bound, size_t n, struct gerr *err);

/* A unix socket at path, mode 0660 from the moment bind creates it. A
 * socket left by an earlier run is replaced, any other file is not;
 * `flag` names the option that moves it, for the message. */
int listen_unix(const char *path, const char *flag, struct gerr *err);

struct sockaddr;

/* A client's address as text without its port ("198.18.0.2", "::1"),
 * what per-address limits key on; "" for a unix socket or NULL. */
void listen_peer_text(const struct sockaddr *peer, char *out, size_t n);

#endif
