#include "server/reconcile.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/util/pbmsg.h"
#include "proto/graind.pb-c.h"
#include "server/agent.h"
#include "server/probe/probe.h"
#include "server/signing.h"
#include "server/util/log.h"
#include "store/store.h"

struct names {
	char (*name)[64];
	size_t n;
};

static int add_name(struct names *names, const char *name)
{
	char (*grown)[64] = realloc(names->name, (names->n + 1) * sizeof(*grown));

	if (!grown)
		return -1;
	names->name = grown;
	snprintf(grown[names->n++], sizeof(*grown), "%s", name);
	return 0;
}

static bool has_name(const struct names *names, const char *name)
{
	for (size_t i = 0; i < names->n; i++)
		if (strcmp(names->name[i], name) == 0)
			return true;
	return false;
}

static int collect_stored(const struct store_probe *row, void *ctx)
{
	return add_name(ctx, row->name);
}

static int collect_pinned(const char *name, void *ctx)
{
	return add_name(ctx, name);
}

static void reconcile_one(struct agent *ag, const char *name, reconcile_report_fn report,
			  void *ctx)
{
	struct store_probe row = { 0 };
	Graind__ProbeSpec *spec = NULL;
	struct gerr err = { 0 };
	bool adopted = false;
	void *bytes = NULL;
	size_t len = 0;

	if (store_probe_get(ag->store, name, &row, &err) < 0)
		goto fail;
	/* Both calls first settle what a crash left of a change, in favour
	 * of the stored state (reconcile.h). */
	if (!row.attached) {
		if (probe_detach(ag->probes, name, NULL, &err) < 0)
			goto fail;
		if (report)
			report(ctx, name, RECONCILE_DETACHED, NULL);
		goto out;
	}
	spec = (Graind__ProbeSpec *)protobuf_c_message_unpack(&graind__probe_spec__descriptor,
							      NULL, row.spec_len, row.spec);
	if (!spec) {
		gerr_set(&err, 500, "stored spec does not decode");
		goto fail;
	}
	if (signing_kernel_object(ag->signing, ag->store, spec, &bytes, &len, &err) < 0 ||
	    probe_attach(ag->probes, name, row.generation, spec, bytes, len, &adopted,
			 NULL, NULL, &err) < 0)
		goto fail;
	log_info("msg=\"probe %s\" probe=%s generation=%llu", adopted ? "adopted" : "re-attached",
		 name, (unsigned long long)row.generation);
	if (report)
		report(ctx, name, adopted ? RECONCILE_ADOPTED : RECONCILE_ATTACHED, NULL);
	goto out;
fail:
	log_error("msg=\"cannot reconcile probe\" probe=%s error=\"%s\"", name, err.msg);
	if (report)
		report(ctx, name, RECONCILE_FAILED, &err);
out:
	free(bytes);
	pbmsg_free(spec ? &spec->base : NULL);
	store_probe_clear(&row);
}

void reconcile_probes(struct agent *ag, reconcile_report_fn report, void *ctx)
{
	struct names stored = { 0 }, pinned = { 0 };
	struct gerr err = { 0 };
	char after[64] = "";
	bool more = true;

	while (more) {
		size_t before = stored.n;

		if (store_probe_list(ag->store, after, 1000, collect_stored, &stored, &more,
				     &err) != 0) {
			log_error("msg=\"cannot list probes to reconcile\" error=\"%s\"", err.msg);
			goto out;
		}
		if (stored.n == before)
			break;
		snprintf(after, sizeof(after), "%s", stored.name[stored.n - 1]);
	}
	for (size_t i = 0; i < stored.n; i++)
		reconcile_one(ag, stored.name[i], report, ctx);

	probe_list_pinned(ag->probes, collect_pinned, &pinned);
	for (size_t i = 0; i < pinned.n; i++) {
		if (has_name(&stored, pinned.name[i]))
			continue;
		/* A fresh store knows nothing: that is no reason to stop what runs. */
		if (ag->cfg.adopt_orphans || (ag->store_was_new && !ag->cfg.reset)) {
			log_warn("msg=\"pinned probe the store does not know left running\" probe=%s "
				 "hint=\"PUT /v1/probes/%s takes it over\"", pinned.name[i],
				 pinned.name[i]);
			continue;
		}
		log_warn("msg=\"removing pins of a probe the store does not know\" probe=%s",
			 pinned.name[i]);
		if (probe_detach(ag->probes, pinned.name[i], NULL, &err) < 0)
			log_error("msg=\"cannot remove stale pins\" probe=%s error=\"%s\"",
				  pinned.name[i], err.msg);
	}
out:
	free(stored.name);
	free(pinned.name);
}
