/* clock: wall and monotonic time in the units the project uses. */
#ifndef GRAIND_CLOCK_H
#define GRAIND_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t clock_unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline uint64_t clock_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Room for clock_format's text, NUL included. */
#define CLOCK_TEXT_MAX 32

/* Unix ms as RFC 3339 UTC with milliseconds: "2026-11-25T13:52:36.123Z". */
void clock_format(int64_t unix_ms, char buf[CLOCK_TEXT_MAX]);

#endif
