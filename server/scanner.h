/* scanner: the integrity scan of the database, in a thread of its own.
 *
 * Every `interval` seconds (the first pass SCANNER_FIRST_S after start,
 * or sooner when the interval is shorter) it checks every object against
 * its SHA-256 and every sample block against its checksum and framing
 * (store_scan_step), reading at most SCANNER_BYTES_PER_S so that the
 * agent's own store calls hardly notice. What it finds is noted in the
 * store's health (status, /metrics, the log once per damaged thing); a
 * pass that found damage says so in one log line at its end. */
#ifndef GRAIND_SCANNER_H
#define GRAIND_SCANNER_H

#include <stdint.h>

#include "server/util/gerr.h"

#define SCANNER_BYTES_PER_S (8u << 20)
#define SCANNER_FIRST_S 60

struct store;
struct scanner;

/* Start scanning `st` every interval_s seconds; 0 starts nothing (*out
 * NULL). */
int scanner_start(struct store *st, uint64_t interval_s, struct scanner **out,
		  struct gerr *err);

/* Stop the thread, mid-pass if need be; NULL is a no-op. */
void scanner_stop(struct scanner *s);

#endif
