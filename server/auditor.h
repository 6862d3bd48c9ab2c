/* auditor: the audit log's background work, in a thread of its own.
 *
 * The store queues audit records (store.h); the auditor writes them in
 * one transaction AUDITOR_FLUSH_MS after the first one starts waiting, so
 * a burst of changes costs one commit instead of one each. It applies the
 * retention: the row bound at every write (by the store) and the age
 * bound every AUDITOR_PRUNE_MS (a quarter of the age when shorter, at
 * least a second), and once at start. Stopping writes what still waits. */
#ifndef GRAIND_AUDITOR_H
#define GRAIND_AUDITOR_H

#include <stdint.h>

#include "server/util/gerr.h"

#define AUDITOR_FLUSH_MS 100
#define AUDITOR_PRUNE_MS 10000

struct store;
struct auditor;

/* Start the thread on `st`: rows kept at most (0: the store's default),
 * and the age in seconds past which records go (0: no age bound). */
int auditor_start(struct store *st, uint64_t max_rows, uint64_t max_age_s,
		  struct auditor **out, struct gerr *err);

/* Stop the thread and write what is queued; NULL is a no-op. Call it
 * once no request can append any more. */
void auditor_stop(struct auditor *a);

#endif
