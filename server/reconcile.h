/* reconcile: at start, make the kernel match the store.
 *
 * Probes that should be attached are attached, or adopted as they are
 * when their pins match the stored generation (no gap in counting);
 * probes that should be detached are detached; pins of probes the store
 * does not know are removed and logged. Failures are logged per probe and
 * do not stop the agent: the API reports them. */
#ifndef GRAIND_RECONCILE_H
#define GRAIND_RECONCILE_H

struct agent;

void reconcile_probes(struct agent *agent);

#endif
