/* svc internals: what the operations of server/svc/ share. */
#ifndef GRAIND_SVC_INT_H
#define GRAIND_SVC_INT_H

#include <stddef.h>

#include "proto/graind.pb-c.h"
#include "server/svc/svc.h"
#include "server/util/gerr.h"
#include "server/util/pbmsg.h"

/* A new response message of the type `ptr` points to, into *ptr; -1 with
 * a 500 when out of memory. */
#define SVC_NEW(ptr, desc, err)                                               \
	((*(ptr) = (void *)pbmsg_new(desc)) ? 0 : gerr_set(err, 500, "out of memory"))

/* Probe and sink names: [a-z0-9][a-z0-9._-]{0,62}; 400 naming `what`. */
int svc_check_name(const char *what, const char *name, struct gerr *err);

/* A page size: 0 means `dflt`; 400 above `max`. */
int svc_page_size(const char *field, uint32_t asked, unsigned dflt, unsigned max,
		  unsigned *size, struct gerr *err);

/* Every stored sink as a reply shows it (secret masked, health added).
 * *out is a malloc'd array of *n sinks, each freed with pbmsg_free(),
 * also when it fails half way. */
int svc_sinks_all(struct agent *agent, Graind__Sink ***out, size_t *n, struct gerr *err);

#endif
