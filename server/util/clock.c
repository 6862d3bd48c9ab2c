#include "server/util/clock.h"

#include <stdio.h>

void clock_format(int64_t unix_ms, char buf[CLOCK_TEXT_MAX])
{
	time_t secs = (time_t)(unix_ms / 1000);
	struct tm tm;
	size_t n;

	gmtime_r(&secs, &tm);
	n = strftime(buf, CLOCK_TEXT_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, CLOCK_TEXT_MAX - n, ".%03dZ", (int)(unix_ms % 1000));
}
