/* units: sizes and durations as people write them (units.h). */
#include "server/util/units.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct unit {
	const char *suffixes;           /* the letters that name it */
	unsigned long long mult;
};

/* A decimal number, optionally followed by one of units' letters, at most
 * max in all. */
static int parse_scaled(const char *s, const struct unit *units, unsigned long long max,
			unsigned long long *out)
{
	unsigned long long v, mult = 1;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || s[0] == '-')
		return -1;
	for (; *end && units->suffixes; units++)
		if (strchr(units->suffixes, *end)) {
			mult = units->mult;
			end++;
			break;
		}
	if (*end || v > max / mult)
		return -1;
	*out = v * mult;
	return 0;
}

int units_parse_bytes(const char *s, uint64_t *out)
{
	static const struct unit sizes[] = {
		{ "kK", 1ull << 10 }, { "mM", 1ull << 20 }, { "gG", 1ull << 30 }, { NULL, 0 },
	};
	unsigned long long v;

	if (parse_scaled(s, sizes, 1ull << 40, &v) < 0)
		return -1;
	*out = v;
	return 0;
}

int units_parse_seconds(const char *s, unsigned long long max, unsigned long long *out)
{
	static const struct unit times[] = {
		{ "s", 1 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 }, { NULL, 0 },
	};

	return parse_scaled(s, times, max, out);
}
