/* orphans: a database that is missing or empty is not taken for a first
 * start when the state around it says otherwise.
 *
 * Before the store opens: the store's own files (graind.db-reserve, the
 * WAL) beside a missing or 0-byte graind.db mean the database was lost,
 * not that the agent is new (tokens prove nothing: they may be
 * provisioned before a first start). The start is refused, with what was
 * found (those files, and the probes pinned under the pin root) and the
 * two ways on: --reset (start
 * afresh: the pins the new database does not know are removed) or
 * --adopt-orphans (start afresh, but leave every pinned probe running as
 * it is; a PUT of its name takes it over).
 *
 * A new state dir beside pinned probes starts (two agents may share a
 * pin root; the probes may be another installation's), and a fresh store
 * never removes pins: *fresh tells reconcile so. */
#ifndef GRAIND_ORPHANS_H
#define GRAIND_ORPHANS_H

#include "server/config.h"
#include "server/util/gerr.h"

#include <stdbool.h>

/* *fresh: the database is missing or empty (a store about to be new). */
int orphans_check(const struct config *cfg, const char *db_path, bool *fresh, struct gerr *err);

#endif
