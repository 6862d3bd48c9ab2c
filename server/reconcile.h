/* reconcile: at start, make the kernel match the store.
 *
 * Probes that should be attached are attached, or adopted as they are
 * when their pins match the stored generation (no gap in counting);
 * probes that should be detached are detached; pins of probes the store
 * does not know are removed and logged, unless the store is new
 * (agent->store_was_new, without --reset) or --adopt-orphans is given:
 * then they are left running. A probe that fails is tried again after
 * the others while that helps; what still fails is logged per probe and
 * does not stop the agent: the API reports it.
 *
 * A change cut short by a crash leaves a staging (_new_) or detached
 * (_old_) directory beside the probe's. The store wins: probe_attach()
 * with the stored generation brings back the side that runs it (the old
 * generation with its counters when the store never recorded the new
 * one), probe_detach() removes both, and a probe of which only such a
 * directory is left is still listed as pinned, so it is removed when the
 * store does not know it. */
#ifndef GRAIND_RECONCILE_H
#define GRAIND_RECONCILE_H

#include "server/util/gerr.h"

struct agent;

enum reconcile_outcome {
	RECONCILE_ADOPTED,              /* its pins ran the stored generation */
	RECONCILE_ATTACHED,             /* attached afresh */
	RECONCILE_DETACHED,             /* stored as detached: nothing runs */
	RECONCILE_FAILED,               /* the kernel refused it: err says why */
};

/* What became of one stored probe; err is NULL unless it failed. */
typedef void (*reconcile_report_fn)(void *ctx, const char *name, enum reconcile_outcome outcome,
				    const struct gerr *err);

/* report (may be NULL) hears of every stored probe: in name order, but
 * TC probes placed first or last after the others, and a probe that
 * failed only once it has been tried again after them (it may be placed
 * against one of them). */
void reconcile_probes(struct agent *agent, reconcile_report_fn report, void *ctx);

#endif
