#include "server/util/gerr.h"

#include <stdio.h>
#include <string.h>

int gerr_vset(struct gerr *err, int status, const char *fmt, va_list ap)
{
	if (err) {
		err->status = status;
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	}
	return -1;
}

int gerr_set(struct gerr *err, int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	gerr_vset(err, status, fmt, ap);
	va_end(ap);
	return -1;
}

void gerr_prefix(struct gerr *err, const char *fmt, ...)
{
	char joined[2 * GERR_MSG_MAX + 3];
	va_list ap;
	int n;

	if (!err)
		return;
	va_start(ap, fmt);
	n = vsnprintf(joined, GERR_MSG_MAX, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n >= GERR_MSG_MAX)
		n = GERR_MSG_MAX - 1;
	snprintf(joined + n, sizeof(joined) - (size_t)n, ": %s", err->msg);
	/* Cut the result to the message size. */
	memcpy(err->msg, joined, GERR_MSG_MAX - 1);
	err->msg[GERR_MSG_MAX - 1] = '\0';
}
