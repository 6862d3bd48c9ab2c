/* authlog: requests refused for want of a valid token (401).
 *
 * Anyone who reaches the port can send these, so they are never written
 * to the database one row each: they are counted by reason, for
 * /metrics, and logged at most once per AUTHLOG_INTERVAL_S seconds, the
 * line saying how many were refused since the previous one. Requests
 * with a valid token are the audit log's (store.h). One per process,
 * like the logger; safe from any thread. */
#ifndef GRAIND_AUTHLOG_H
#define GRAIND_AUTHLOG_H

#include <stdint.h>

#define AUTHLOG_INTERVAL_S 10

enum authlog_reason {
	AUTHLOG_MISSING,        /* no Authorization header */
	AUTHLOG_INVALID,        /* a header that holds no token of the agent */
	AUTHLOG_EXPIRED,        /* a principal's token past its expiry */
	AUTHLOG__REASONS,
};

/* Count one refused request, and log it unless a line was logged less
 * than AUTHLOG_INTERVAL_S ago. method and path are the client's; they
 * are shortened and quoted safely. */
void authlog_refused(enum authlog_reason reason, const char *method, const char *path);

/* Requests refused for `reason` since the start. */
uint64_t authlog_count(enum authlog_reason reason);

/* "missing", "invalid" or "expired": the label in /metrics and the log. */
const char *authlog_reason_name(enum authlog_reason reason);

#endif
