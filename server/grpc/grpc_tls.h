/* grpc_tls: TLS under one gRPC connection (GnuTLS), for the loop in
 * grpc.c, which owns the socket and waits on it.
 *
 * The contract is the loop's whole view of TLS:
 *   - grpc_tls_new() when a socket is accepted on a TLS listener;
 *   - grpc_tls_handshake() whenever the socket is ready, until it returns
 *     1 (done: ALPN "h2" agreed, the client certificate verified when one
 *     is asked for) or -1 (refused or failed: close the connection);
 *     on 0 wait for the socket to be readable, and writable too when
 *     grpc_tls_wants_write() says so;
 *   - then grpc_tls_read() and grpc_tls_write() in place of read() and
 *     write() on the non-blocking socket: the same results (-1 with errno
 *     EAGAIN when it would block, 0 from read at the end). A write that
 *     returned -1/EAGAIN must be repeated with the same bytes (GnuTLS has
 *     sealed them into a record already);
 *     after a handshake that ended in a write, grpc_tls_pending() says
 *     whether records already wait to be read;
 *   - grpc_tls_free() before the socket is closed.
 * Everything runs on the loop's thread; nothing here blocks. */
#ifndef GRAIND_GRPC_TLS_H
#define GRAIND_GRPC_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct tls;
struct grpc_tls;

/* A server session over fd with the agent's current credentials; NULL
 * when GnuTLS cannot make one (out of memory). */
struct grpc_tls *grpc_tls_new(struct tls *tls, int fd);

/* 1 done, 0 under way, -1 failed (the reason logged at debug level). */
int grpc_tls_handshake(struct grpc_tls *t);
bool grpc_tls_wants_write(const struct grpc_tls *t);

ssize_t grpc_tls_read(struct grpc_tls *t, void *buf, size_t n);
ssize_t grpc_tls_write(struct grpc_tls *t, const void *buf, size_t n);

/* Whether records are read and decrypted already, waiting for
 * grpc_tls_read() while the socket itself may have nothing more. */
bool grpc_tls_pending(const struct grpc_tls *t);

/* The verified client certificate's names (server/util/peerid.h), NULL
 * without one; valid until grpc_tls_free(). */
const char *grpc_tls_identity(const struct grpc_tls *t);

/* Send close_notify if the socket takes it at once, free the session;
 * the fd stays the caller's. NULL is fine. */
void grpc_tls_free(struct grpc_tls *t);

#endif
