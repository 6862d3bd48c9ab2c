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

/* Attach, adopt or detach one stored probe as the store says; -1 with
 * err when the kernel refused it. */
static int reconcile_one(struct agent *ag, const char *name, reconcile_report_fn report,
			 void *ctx, struct gerr *err)
{
	struct store_probe row = { 0 };
	Graind__ProbeSpec *spec = NULL;
	bool adopted = false;
	void *bytes = NULL;
	size_t len = 0;
	int ret = -1;

	if (store_probe_get(ag->store, name, &row, err) < 0)
		goto out;
	/* Both calls first settle what a crash left of a change, in favour
	 * of the stored state (reconcile.h). */
	if (!row.attached) {
		if (probe_detach(ag->probes, name, NULL, err) < 0)
			goto out;
		if (report)
			report(ctx, name, RECONCILE_DETACHED, NULL);
		ret = 0;
		goto out;
	}
	spec = (Graind__ProbeSpec *)protobuf_c_message_unpack(&graind__probe_spec__descriptor,
							      NULL, row.spec_len, row.spec);
	if (!spec) {
		gerr_set(err, 500, "stored spec does not decode");
		goto out;
	}
	if (signing_kernel_object(ag->signing, ag->store, spec, &bytes, &len, err) < 0 ||
	    probe_attach(ag->probes, name, row.generation, spec, bytes, len, &adopted,
			 NULL, NULL, err) < 0)
		goto out;
	log_info("msg=\"probe %s\" probe=%s generation=%llu", adopted ? "adopted" : "re-attached",
		 name, (unsigned long long)row.generation);
	if (report)
		report(ctx, name, adopted ? RECONCILE_ADOPTED : RECONCILE_ATTACHED, NULL);
	ret = 0;
out:
	free(bytes);
	pbmsg_free(spec ? &spec->base : NULL);
	store_probe_clear(&row);
	return ret;
}

/* When a probe is attached afresh among others: TC links placed first
 * or last go after the rest, so that they end up first or last again as
 * they did when they were put (the kernel places them once, at attach). */
enum attach_turn { TURN_ANY, TURN_FIRST, TURN_LAST };

static enum attach_turn attach_turn(struct agent *ag, const char *name)
{
	struct store_probe row = { 0 };
	Graind__ProbeSpec *spec;
	struct gerr err = { 0 };
	enum attach_turn turn = TURN_ANY;

	if (store_probe_get(ag->store, name, &row, &err) < 0)
		return TURN_ANY;
	spec = (Graind__ProbeSpec *)protobuf_c_message_unpack(&graind__probe_spec__descriptor,
							      NULL, row.spec_len, row.spec);
	for (size_t i = 0; spec && i < spec->n_programs; i++) {
		const Graind__AttachSpec *a = spec->programs[i]->attach;

		if (!a || a->kind_case != GRAIND__ATTACH_SPEC__KIND_TC)
			continue;
		if (a->tc->place_case == GRAIND__TC_ATTACH__PLACE_LAST && a->tc->last)
			turn = TURN_LAST;
		else if (a->tc->place_case == GRAIND__TC_ATTACH__PLACE_FIRST && a->tc->first &&
			 turn == TURN_ANY)
			turn = TURN_FIRST;
	}
	pbmsg_free(spec ? &spec->base : NULL);
	store_probe_clear(&row);
	return turn;
}

struct pending {
	const char *name;
	enum attach_turn turn;
	bool failed;
	struct gerr err;
};

static int by_turn(const void *x, const void *y)
{
	const struct pending *a = x, *b = y;

	if (a->turn != b->turn)
		return a->turn < b->turn ? -1 : 1;
	return strcmp(a->name, b->name);
}

/* Every stored probe, in name order within its turn; those that fail
 * are tried again while that helps, since a probe placed against another
 * (tc before or after) needs that one attached first. What still fails
 * is logged and reported with its last error. */
static void reconcile_stored(struct agent *ag, const struct names *stored,
			     reconcile_report_fn report, void *ctx)
{
	struct pending *all = calloc(stored->n ? stored->n : 1, sizeof(*all));
	size_t left = 0, before;

	if (!all) {
		log_error("msg=\"out of memory reconciling probes\"");
		return;
	}
	for (size_t i = 0; i < stored->n; i++) {
		all[i].name = stored->name[i];
		all[i].turn = attach_turn(ag, all[i].name);
	}
	qsort(all, stored->n, sizeof(*all), by_turn);
	for (size_t i = 0; i < stored->n; i++)
		if (reconcile_one(ag, all[i].name, report, ctx, &all[i].err) < 0)
			all[i].failed = true, left++;
	do {
		before = left;
		for (size_t i = 0; i < stored->n; i++) {
			struct gerr err = { 0 };

			if (!all[i].failed)
				continue;
			if (reconcile_one(ag, all[i].name, report, ctx, &err) == 0)
				all[i].failed = false, left--;
			else
				all[i].err = err;
		}
	} while (left && left < before);
	for (size_t i = 0; i < stored->n; i++) {
		if (!all[i].failed)
			continue;
		log_error("msg=\"cannot reconcile probe\" probe=%s error=\"%s\"", all[i].name,
			  all[i].err.msg);
		if (report)
			report(ctx, all[i].name, RECONCILE_FAILED, &all[i].err);
	}
	free(all);
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
	reconcile_stored(ag, &stored, report, ctx);

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
