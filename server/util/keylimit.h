/* keylimit: a token bucket per key (a client address, a principal's
 * name), in a table of fixed size.
 *
 * `rate` tokens a second per key, at most `burst` saved up. The table
 * holds KEYLIMIT_SLOTS keys; a new one takes the slot, among those it
 * hashes to, that was used longest ago, which is the bucket most likely
 * full again anyway. Thread-safe. */
#ifndef GRAIND_KEYLIMIT_H
#define GRAIND_KEYLIMIT_H

#include <stdbool.h>
#include <stdint.h>

#define KEYLIMIT_SLOTS 4096
#define KEYLIMIT_KEY_MAX 64            /* an IPv6 address, a principal name */

struct keylimit;

struct keylimit *keylimit_new(double rate, double burst);
void keylimit_free(struct keylimit *al);

/* Take a token for `key`; false when it has none, with *retry_s the whole
 * seconds until it has (at least 1). A NULL or empty key (the address of
 * a unix socket) is never limited. A NULL table limits nothing. */
bool keylimit_take(struct keylimit *al, const char *key, unsigned *retry_s);
/* Takes that found no token, ever. */
uint64_t keylimit_refused(struct keylimit *al);

#endif
