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

int gerr_grpc_code(int status)
{
	static const struct { int status, code; } table[] = {
		{ 400, 3 },     /* INVALID_ARGUMENT */
		{ 401, 16 },    /* UNAUTHENTICATED */
		{ 403, 7 },     /* PERMISSION_DENIED */
		{ 404, 5 },     /* NOT_FOUND */
		{ 405, 12 },    /* UNIMPLEMENTED */
		{ 408, 4 },     /* DEADLINE_EXCEEDED */
		{ 409, 9 },     /* FAILED_PRECONDITION */
		{ 412, 10 },    /* ABORTED */
		{ 413, 8 },     /* RESOURCE_EXHAUSTED */
		{ 415, 3 },     /* INVALID_ARGUMENT */
		{ 422, 9 },     /* FAILED_PRECONDITION */
		{ 429, 8 },     /* RESOURCE_EXHAUSTED */
		{ 501, 12 },    /* UNIMPLEMENTED */
		{ 503, 14 },    /* UNAVAILABLE */
		{ 504, 4 },     /* DEADLINE_EXCEEDED */
	};

	if (status >= 200 && status < 300)
		return 0;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].status == status)
			return table[i].code;
	return 13;              /* INTERNAL */
}
