/* authlog: counting and rate-limited logging of 401s (see authlog.h). */
#include "server/authlog.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "server/util/clock.h"
#include "server/util/log.h"

/* How much of the client's method and path a log line shows. */
#define SHOWN_MAX 96

static uint64_t refused[AUTHLOG__REASONS];     /* atomic */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool logged_once;
static uint64_t last_line_us;                  /* monotonic */
static uint64_t suppressed;                    /* since that line */

const char *authlog_reason_name(enum authlog_reason reason)
{
	return reason == AUTHLOG_MISSING ? "missing" : reason == AUTHLOG_EXPIRED ? "expired" :
										 "invalid";
}

uint64_t authlog_count(enum authlog_reason reason)
{
	return (unsigned)reason < AUTHLOG__REASONS ?
	       __atomic_load_n(&refused[reason], __ATOMIC_RELAXED) : 0;
}

/* Client text fit for a quoted log value: printable ASCII without quotes
 * or backslashes, the rest as '?', cut at SHOWN_MAX bytes. */
static void shown(const char *s, char out[SHOWN_MAX + 1])
{
	size_t i = 0;

	for (; s && s[i] && i < SHOWN_MAX; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\' ?
			 s[i] : '?';
	out[i] = '\0';
}

void authlog_refused(enum authlog_reason reason, const char *method, const char *path)
{
	char m[SHOWN_MAX + 1], p[SHOWN_MAX + 1];
	uint64_t now = clock_mono_us(), before;

	if ((unsigned)reason >= AUTHLOG__REASONS)
		reason = AUTHLOG_INVALID;
	__atomic_add_fetch(&refused[reason], 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&lock);
	if (logged_once && now - last_line_us < AUTHLOG_INTERVAL_S * 1000000ull) {
		suppressed++;
		pthread_mutex_unlock(&lock);
		return;
	}
	before = suppressed;
	suppressed = 0;
	logged_once = true;
	last_line_us = now;
	pthread_mutex_unlock(&lock);
	shown(method, m);
	shown(path, p);
	log_warn("msg=\"request refused without a valid token\" reason=%s method=\"%s\""
		 " path=\"%s\" refused_since_last_line=%llu missing_total=%llu invalid_total=%llu",
		 authlog_reason_name(reason), m, p, (unsigned long long)before,
		 (unsigned long long)authlog_count(AUTHLOG_MISSING),
		 (unsigned long long)authlog_count(AUTHLOG_INVALID));
}
