/* units: sizes and durations as people write them (units.h). */
#include "server/util/units.h"

#include <errno.h>
#include <stdlib.h>

int units_parse_bytes(const char *s, uint64_t *out)
{
	unsigned long long v, mult = 1;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || s[0] == '-')
		return -1;
	switch (*end) {
	case 'k': case 'K': mult = 1ull << 10; end++; break;
	case 'm': case 'M': mult = 1ull << 20; end++; break;
	case 'g': case 'G': mult = 1ull << 30; end++; break;
	}
	if (*end || v > (1ull << 40) / mult)
		return -1;
	*out = v * mult;
	return 0;
}

int units_parse_seconds(const char *s, unsigned long long max, unsigned long long *out)
{
	unsigned long long v, mult = 1;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || s[0] == '-')
		return -1;
	switch (*end) {
	case 's': end++; break;
	case 'm': mult = 60; end++; break;
	case 'h': mult = 3600; end++; break;
	case 'd': mult = 86400; end++; break;
	}
	if (*end || v > max / mult)
		return -1;
	*out = v * mult;
	return 0;
}
