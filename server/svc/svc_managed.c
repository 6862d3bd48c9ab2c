/* svc managed: what a file of --config-dir owns, only that file changes.
 *
 * The config-dir driver calls the operations with call->manager set to
 * its file ("file:/path"); the API calls them with none. A change of an
 * owned probe or sink by anyone else is refused with 409 naming the file,
 * so that the file stays the truth. */
#include <stdio.h>
#include <string.h>

#include "server/agent.h"
#include "server/svc/svc_int.h"
#include "server/util/log.h"

static const char *kind_name(enum store_managed_kind kind)
{
	return kind == STORE_MANAGED_PROBE ? "probe" : "sink";
}

int svc_check_owner(struct svc_call *call, enum store_managed_kind kind, const char *name,
		    struct gerr *err)
{
	char owner[SVC_OWNER_MAX];

	if (store_managed_get(call->agent->store, kind, name, owner, sizeof(owner), err) < 0)
		return -1;
	if (!owner[0] || (call->manager && strcmp(owner, call->manager) == 0))
		return 0;
	if (call->manager)
		return gerr_set(err, 409, "%s %s is already managed by %s", kind_name(kind), name,
				owner);
	return gerr_set(err, 409, "%s %s is managed by %s: change or remove that file instead",
			kind_name(kind), name, owner);
}

int svc_record_owner(struct svc_call *call, enum store_managed_kind kind, const char *name,
		     bool deleted, struct gerr *err)
{
	if (!call->manager && !deleted)
		return 0;
	return store_managed_set(call->agent->store, kind, name,
				 deleted ? NULL : call->manager, err);
}

int svc_owner_of(struct agent *ag, enum store_managed_kind kind, const char *name,
		 char **managed_by, struct gerr *err)
{
	char owner[SVC_OWNER_MAX];

	if (store_managed_get(ag->store, kind, name, owner, sizeof(owner), err) < 0)
		return -1;
	if (owner[0] && pbmsg_set_string(managed_by, owner) < 0)
		return gerr_set(err, 500, "out of memory");
	return 0;
}
