/* ticker: a thread that calls fn(ctx) every period, until stopped.
 *
 * The period is on the monotonic clock and counts from the end of the last
 * call, so a slow call delays the next one instead of piling them up.
 * Stopping waits for a call in progress to end. */
#ifndef GRAIND_TICKER_H
#define GRAIND_TICKER_H

#include "server/util/gerr.h"

struct ticker;

int ticker_start(const char *thread_name, unsigned period_ms, void (*fn)(void *ctx), void *ctx,
		 struct ticker **out, struct gerr *err);
/* NULL is a no-op. */
void ticker_stop(struct ticker *t);

#endif
