/* gerr: the error a failing function hands back to its caller.
 *
 * Functions that can fail for a reason a person should read take a
 * `struct gerr *err` as their last argument, return 0 on success and a
 * negative value on failure, and on failure fill `err` with the HTTP
 * status that fits the cause and a one-line message that names it.
 * `err` may be NULL when the caller does not care. */
#ifndef GRAIND_GERR_H
#define GRAIND_GERR_H

#include <stdarg.h>

#define GERR_MSG_MAX 512

struct gerr {
	int status;                 /* HTTP status: 400, 404, 409, 422, 500... */
	char msg[GERR_MSG_MAX];
};

/* Fill err (when not NULL) and return -1, so callers can write
 * `return gerr_set(err, 400, "bad %s", what);`. */
int gerr_set(struct gerr *err, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int gerr_vset(struct gerr *err, int status, const char *fmt, va_list ap);

/* Prefix an existing message: "context: old message". Keeps the status. */
void gerr_prefix(struct gerr *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The gRPC status code (google.rpc.Code) of an HTTP-like status; the one
 * table both transports agree on. 409 is FAILED_PRECONDITION: the service
 * answers it for a resource in use; 422 (unusable object, verifier
 * refusal) too. Anything unknown is INTERNAL (13). */
int gerr_grpc_code(int status);

#endif
