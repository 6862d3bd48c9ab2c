/* svc internals: what the operations of server/svc/ share. */
#ifndef GRAIND_SVC_INT_H
#define GRAIND_SVC_INT_H

#include <stddef.h>

#include "proto/graind.pb-c.h"
#include "server/svc/svc.h"
#include "server/util/gerr.h"
#include "server/util/pbmsg.h"
#include "server/util/sha256.h"
#include "store/store.h"

/* A new response message of the type `ptr` points to, into *ptr; -1 with
 * a 500 when out of memory. */
#define SVC_NEW(ptr, desc, err)                                               \
	((*(ptr) = (void *)pbmsg_new(desc)) ? 0 : gerr_set(err, 500, "out of memory"))

/* Probe and sink names: [a-z0-9][a-z0-9._-]{0,62}; 400 naming `what`. */
int svc_check_name(const char *what, const char *name, struct gerr *err);

/* 403: probe `probe` is out of the caller's scope. */
int svc_out_of_scope(const struct svc_call *call, const char *probe, struct gerr *err);

/* A page size: 0 means `dflt`; 400 above `max`. */
int svc_page_size(const char *field, uint32_t asked, unsigned dflt, unsigned max,
		  unsigned *size, struct gerr *err);

/* Every stored sink as a reply shows it (secret masked, health added).
 * *out is a malloc'd array of *n sinks, each freed with pbmsg_free(),
 * also when it fails half way. */
int svc_sinks_all(struct agent *agent, Graind__Sink ***out, size_t *n, struct gerr *err);

/* Owners of probes and sinks (svc_managed.c): "file:" and a path. */
#define SVC_OWNER_MAX 4200

/* 409 when a file other than call->manager owns (kind, name). */
int svc_check_owner(struct svc_call *call, enum store_managed_kind kind, const char *name,
		    struct gerr *err);
/* After a change succeeded: call->manager owns what it changed; nobody
 * owns what was deleted. Nothing to do for an API caller's change. */
int svc_record_owner(struct svc_call *call, enum store_managed_kind kind, const char *name,
		     bool deleted, struct gerr *err);
/* The owner of (kind, name) into *managed_by (left as it is when none). */
int svc_owner_of(struct agent *ag, enum store_managed_kind kind, const char *name,
		 char **managed_by, struct gerr *err);

/* Publish a change of a probe to WatchProbes (svc_watch.c): `probe` as it
 * is now, or NULL for one known only by `name` (deleted, never stored);
 * `error` for ATTACH_FAILED. Called with agent->probe_lock held, so that
 * events come in the order of the changes. */
/* The object of a probe spec's image, into sha256: with IfNotPresent an
 * object pulled from that image before, else pulled now (as FetchObject,
 * audited within the caller's call). */
int svc_image_object(struct svc_call *call, const Graind__ImageSource *image,
		     char sha256[SHA256_HEX_LEN + 1], struct gerr *err);

void svc_probe_event(struct agent *agent, Graind__ProbeEventKind kind, const Graind__Probe *probe,
		     const char *name, const char *error);

/* The Probe message for a stored row: the kernel's view and the budget's
 * added (svc_probes.c). */
int svc_probe_from_row(struct agent *ag, const struct store_probe *row, Graind__Probe **out,
		       struct gerr *err);

/* Budgets (svc_budget.c): 400 for a spec's budget that makes no sense;
 * Probe.usage and Probe.budget_exceeded from what was measured. */
int svc_budget_check_spec(const Graind__Budget *budget, struct gerr *err);
int svc_budget_fill(struct agent *ag, Graind__Probe *probe, struct gerr *err);

#endif
