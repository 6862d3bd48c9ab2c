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
	char prefix[GERR_MSG_MAX], old[GERR_MSG_MAX];
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old);
}
