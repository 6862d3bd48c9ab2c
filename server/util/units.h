/* units: sizes and durations as people write them on a command line. */
#ifndef GRAIND_UNITS_H
#define GRAIND_UNITS_H

#include <stdint.h>

/* A decimal count of bytes, optionally followed by K, M or G (powers of
 * 1024, either case), at most 2^40: -1 for anything else. */
int units_parse_bytes(const char *s, uint64_t *out);

/* A count of seconds, 0 allowed, at most `max`, optionally followed by s,
 * m, h or d: -1 for anything else. */
int units_parse_seconds(const char *s, unsigned long long max, unsigned long long *out);

#endif
