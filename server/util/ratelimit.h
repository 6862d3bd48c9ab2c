/* ratelimit: a token bucket, thread-safe: `rate` tokens a second, at most
 * `burst` saved up. */
#ifndef GRAIND_RATELIMIT_H
#define GRAIND_RATELIMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct ratelimit {
	pthread_mutex_t lock;
	double rate, burst, tokens;
	uint64_t last_us;               /* monotonic */
	uint64_t refused;               /* takes that found no token, ever */
};

void ratelimit_init(struct ratelimit *rl, double rate, double burst);
void ratelimit_destroy(struct ratelimit *rl);
/* Take a token; false when there is none, with *retry_s the whole seconds
 * until there is (at least 1). */
bool ratelimit_take(struct ratelimit *rl, unsigned *retry_s);
uint64_t ratelimit_refused(struct ratelimit *rl);

#endif
