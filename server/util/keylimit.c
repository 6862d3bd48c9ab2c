/* keylimit: see keylimit.h. */
#include "server/util/keylimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "server/util/clock.h"

/* Slots an address may take: its hash and the next few. */
#define PROBE 8

struct slot {
	char address[KEYLIMIT_KEY_MAX];
	double tokens;
	uint64_t last_us;               /* monotonic; 0: never used */
};

struct keylimit {
	pthread_mutex_t lock;
	double rate, burst;
	uint64_t refused;
	struct slot slots[KEYLIMIT_SLOTS];
};

struct keylimit *keylimit_new(double rate, double burst)
{
	struct keylimit *al = calloc(1, sizeof(*al));

	if (!al)
		return NULL;
	pthread_mutex_init(&al->lock, NULL);
	al->rate = rate;
	al->burst = burst;
	return al;
}

void keylimit_free(struct keylimit *al)
{
	if (!al)
		return;
	pthread_mutex_destroy(&al->lock);
	free(al);
}

static uint32_t hash(const char *s)
{
	uint32_t h = 2166136261u;       /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

/* The slot of `address`, claimed afresh (a full bucket) when it has none. */
static struct slot *slot_of(struct keylimit *al, const char *address, uint64_t now)
{
	uint32_t h = hash(address);
	struct slot *oldest = NULL;

	for (unsigned i = 0; i < PROBE; i++) {
		struct slot *s = &al->slots[(h + i) % KEYLIMIT_SLOTS];

		if (s->last_us && strcmp(s->address, address) == 0)
			return s;
		if (!oldest || s->last_us < oldest->last_us)
			oldest = s;
	}
	snprintf(oldest->address, sizeof(oldest->address), "%s", address);
	oldest->tokens = al->burst;
	oldest->last_us = now;
	return oldest;
}

bool keylimit_take(struct keylimit *al, const char *address, unsigned *retry_s)
{
	uint64_t now = clock_mono_us();
	struct slot *s;
	bool ok;

	if (!al || !address || !address[0])
		return true;
	pthread_mutex_lock(&al->lock);
	s = slot_of(al, address, now);
	s->tokens += (double)(now - s->last_us) / 1e6 * al->rate;
	if (s->tokens > al->burst)
		s->tokens = al->burst;
	s->last_us = now;
	ok = s->tokens >= 1;
	if (ok) {
		s->tokens -= 1;
	} else {
		al->refused++;
		*retry_s = (unsigned)ceil((1 - s->tokens) / al->rate);
		if (*retry_s < 1)
			*retry_s = 1;
	}
	pthread_mutex_unlock(&al->lock);
	return ok;
}

uint64_t keylimit_refused(struct keylimit *al)
{
	uint64_t n;

	if (!al)
		return 0;
	pthread_mutex_lock(&al->lock);
	n = al->refused;
	pthread_mutex_unlock(&al->lock);
	return n;
}
