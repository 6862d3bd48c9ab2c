/* ratelimit: see ratelimit.h. */
#include "server/util/ratelimit.h"

#include <math.h>

#include "server/util/clock.h"

void ratelimit_init(struct ratelimit *rl, double rate, double burst)
{
	pthread_mutex_init(&rl->lock, NULL);
	rl->rate = rate;
	rl->burst = burst;
	rl->tokens = burst;
	rl->last_us = clock_mono_us();
	rl->refused = 0;
}

void ratelimit_destroy(struct ratelimit *rl)
{
	pthread_mutex_destroy(&rl->lock);
}

bool ratelimit_take(struct ratelimit *rl, unsigned *retry_s)
{
	uint64_t now = clock_mono_us();
	bool ok;

	pthread_mutex_lock(&rl->lock);
	rl->tokens += (double)(now - rl->last_us) / 1e6 * rl->rate;
	if (rl->tokens > rl->burst)
		rl->tokens = rl->burst;
	rl->last_us = now;
	ok = rl->tokens >= 1;
	if (ok) {
		rl->tokens -= 1;
	} else {
		rl->refused++;
		*retry_s = (unsigned)ceil((1 - rl->tokens) / rl->rate);
		if (*retry_s < 1)
			*retry_s = 1;
	}
	pthread_mutex_unlock(&rl->lock);
	return ok;
}

uint64_t ratelimit_refused(struct ratelimit *rl)
{
	uint64_t n;

	pthread_mutex_lock(&rl->lock);
	n = rl->refused;
	pthread_mutex_unlock(&rl->lock);
	return n;
}
