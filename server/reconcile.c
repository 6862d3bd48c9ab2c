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

/* When a probe is attached afresh among others: TC links placed first
 * or last go after the rest, so that they end up first or last again as
 * they did when they were put (the kernel places them once, at attach). */
enum attach_turn { TURN_ANY, TURN_FIRST, TURN_LAST };

/* One stored probe on its way into the kernel: its row and spec, read
 * once, kept for the attempts reconcile_stored() makes. */
struct pending {
	struct store_probe row;
	Graind__ProbeSpec *spec;        /* NULL for a detached probe */
	enum attach_turn turn;
	bool loaded;                    /* row and spec read: worth an attempt */
	bool failed;
	struct gerr err;                /* the last attempt's, when it failed */
};

/* Read the probe's row and decode its spec. */
static void pending_load(struct agent *ag, const char *name, struct pending *p)
{
	if (store_probe_get(ag->store, name, &p->row, &p->err) < 0) {
		snprintf(p->row.name, sizeof(p->row.name), "%s", name);
		return;
	}
	if (p->row.attached) {
		p->spec = (Graind__ProbeSpec *)protobuf_c_message_unpack(
			&graind__probe_spec__descriptor, NULL, p->row.spec_len, p->row.spec);
		if (!p->spec) {
			gerr_set(&p->err, 500, "stored spec does not decode");
			return;
		}
	}
	p->loaded = true;
}

static enum attach_turn attach_turn(const Graind__ProbeSpec *spec)
{
	enum attach_turn turn = TURN_ANY;

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
	return turn;
}

static int by_turn(const void *x, const void *y)
{
	const struct pending *a = x, *b = y;

	if (a->turn != b->turn)
		return a->turn < b->turn ? -1 : 1;
	return strcmp(a->row.name, b->row.name);
}

/* Attach, adopt or detach one loaded probe as the store says; -1 with
 * p->err when the kernel refused it. */
static int reconcile_one(struct agent *ag, struct pending *p, reconcile_report_fn report,
			 void *ctx)
{
	const char *name = p->row.name;
	struct gerr err = { 0 };
	bool adopted = false;
	void *bytes = NULL;
	size_t len = 0;
	int ret = -1;

	/* Both calls first settle what a crash left of a change, in favour
	 * of the stored state (reconcile.h). */
	if (!p->row.attached) {
		if (probe_detach(ag->probes, name, NULL, &err) < 0)
			goto out;
		if (report)
			report(ctx, name, RECONCILE_DETACHED, NULL);
		ret = 0;
		goto out;
	}
	if (signing_kernel_object(ag->signing, ag->store, p->spec, &bytes, &len, &err) < 0 ||
	    probe_attach(ag->probes, name, p->row.generation, p->spec, bytes, len, &adopted,
			 NULL, NULL, &err) < 0)
		goto out;
	log_info("msg=\"probe %s\" probe=%s generation=%llu", adopted ? "adopted" : "re-attached",
		 name, (unsigned long long)p->row.generation);
	if (report)
		report(ctx, name, adopted ? RECONCILE_ADOPTED : RECONCILE_ATTACHED, NULL);
	ret = 0;
out:
	if (ret < 0)
		p->err = err;
	free(bytes);
	return ret;
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
		pending_load(ag, stored->name[i], &all[i]);
		all[i].turn = attach_turn(all[i].spec);
	}
	qsort(all, stored->n, sizeof(*all), by_turn);
	for (size_t i = 0; i < stored->n; i++)
		if (!all[i].loaded || reconcile_one(ag, &all[i], report, ctx) < 0)
			all[i].failed = true, left++;
	do {
		before = left;
		for (size_t i = 0; i < stored->n; i++)
			if (all[i].failed && all[i].loaded && reconcile_one(ag, &all[i], report, ctx) == 0)
				all[i].failed = false, left--;
	} while (left && left < before);
	for (size_t i = 0; i < stored->n; i++) {
		if (all[i].failed) {
			log_error("msg=\"cannot reconcile probe\" probe=%s error=\"%s\"",
				  all[i].row.name, all[i].err.msg);
			if (report)
				report(ctx, all[i].row.name, RECONCILE_FAILED, &all[i].err);
		}
		pbmsg_free(all[i].spec ? &all[i].spec->base : NULL);
		store_probe_clear(&all[i].row);
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
