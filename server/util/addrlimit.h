/* addrlimit: a token bucket per client address, in a table of fixed size.
 *
 * `rate` tokens a second per address, at most `burst` saved up. The table
 * holds ADDRLIMIT_SLOTS addresses; a new one takes the slot, among those
 * its address hashes to, that was used longest ago, which is the bucket
 * most likely full again anyway. Thread-safe. */
#ifndef GRAIND_ADDRLIMIT_H
#define GRAIND_ADDRLIMIT_H

#include <stdbool.h>
#include <stdint.h>

#define ADDRLIMIT_SLOTS 4096
#define ADDRLIMIT_ADDRESS_MAX 64        /* an IPv6 address as text fits */

struct addrlimit;

struct addrlimit *addrlimit_new(double rate, double burst);
void addrlimit_free(struct addrlimit *al);

/* Take a token for `address`; false when it has none, with *retry_s the
 * whole seconds until it has (at least 1). A NULL or empty address (a
 * unix socket) is never limited. */
bool addrlimit_take(struct addrlimit *al, const char *address, unsigned *retry_s);

#endif
