/* svc probes: put, list, get, attach, detach, delete, map dump.
 *
 * Every change holds agent->probe_lock from reading the stored row to
 * writing it back and changes the kernel before the store, so that what
 * the API says is what the kernel has: a request the kernel refuses
 * leaves the store as it was, and one the store then refuses puts the
 * kernel back (probe_txn_rollback). The collector hears of a change last. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/agent.h"
#include "server/budget.h"
#include "server/builtin.h"
#include "server/collect/collect.h"
#include "server/probe/probe.h"
#include "server/reconcile.h"
#include "server/signing.h"
#include "server/svc/svc_int.h"
#include "server/util/log.h"
#include "store/store.h"

/* The collector follows the store: tell it which probe changed. */
static void notify_collector(struct agent *ag, const char *name)
{
	if (ag->collector)
		collect_probe_changed(ag->collector, name);
}

static bool spec_wants_attached(const Graind__ProbeSpec *spec)
{
	return spec->desired_state != GRAIND__DESIRED_STATE__DETACHED;
}

/* The spec as stored: packed, with the desired state left out, so that
 * attaching or detaching does not count as a change of spec. */
static int pack_spec(const Graind__ProbeSpec *spec, uint8_t **out, size_t *len,
		     struct gerr *err)
{
	Graind__ProbeSpec copy = *spec;

	copy.desired_state = GRAIND__DESIRED_STATE__DESIRED_STATE_UNSPECIFIED;
	*len = graind__probe_spec__get_packed_size(&copy);
	*out = malloc(*len ? *len : 1);
	if (!*out)
		return gerr_set(err, 500, "out of memory");
	graind__probe_spec__pack(&copy, *out);
	return 0;
}

static Graind__ProbeSpec *unpack_spec(const struct store_probe *row, struct gerr *err)
{
	Graind__ProbeSpec *spec = graind__probe_spec__unpack(NULL, row->spec_len, row->spec);

	if (!spec) {
		gerr_set(err, 500, "stored spec of probe %s does not decode", row->name);
		return NULL;
	}
	spec->desired_state = row->attached ? GRAIND__DESIRED_STATE__ATTACHED :
					      GRAIND__DESIRED_STATE__DETACHED;
	return spec;
}

int svc_probe_from_row(struct agent *ag, const struct store_probe *row, Graind__Probe **out,
		       struct gerr *err)
{
	Graind__Probe *probe;

	if (SVC_NEW(out, &graind__probe__descriptor, err) < 0)
		return -1;
	probe = *out;
	probe->spec = unpack_spec(row, err);
	if (!probe->spec)
		return -1;
	probe->generation = row->generation;
	if (pbmsg_set_string(&probe->name, row->name) < 0 ||
	    pbmsg_set_time(&probe->created, row->created_ms) < 0 ||
	    pbmsg_set_time(&probe->updated, row->updated_ms) < 0)
		return gerr_set(err, 500, "out of memory");
	if (svc_owner_of(ag, STORE_MANAGED_PROBE, row->name, &probe->managed_by, err) < 0 ||
	    probe_status(ag->probes, probe, err) < 0)
		return -1;
	return svc_budget_fill(ag, probe, err);
}

static int stored_probe(struct agent *ag, const char *name, Graind__Probe **out,
			struct gerr *err)
{
	struct store_probe row = { 0 };
	int ret;

	if (store_probe_get(ag->store, name, &row, err) < 0)
		return -1;
	ret = svc_probe_from_row(ag, &row, out, err);
	store_probe_clear(&row);
	return ret;
}

/* The budget's view of probe `name` after a change in the kernel: an
 * attach measures it afresh; a detach keeps only a breach that caused it. */
static void budget_follow(struct agent *ag, const char *name, bool attached)
{
	if (!ag->budgets)
		return;
	if (attached)
		budgets_reset(ag->budgets, name);
	else
		budgets_pause(ag->budgets, name);
}

/* WatchProbes hears that the kernel refused to attach probe `name`: as
 * stored (row), or unknown yet (NULL: the PUT that failed stores nothing). */
static void attach_failed(struct agent *ag, const struct store_probe *row, const char *name,
			  const struct gerr *why)
{
	Graind__Probe *probe = NULL;
	struct gerr err = { 0 };

	if (row && svc_probe_from_row(ag, row, &probe, &err) < 0) {
		pbmsg_free(probe ? &probe->base : NULL);
		probe = NULL;
	}
	svc_probe_event(ag, GRAIND__PROBE_EVENT_KIND__PROBE_ATTACH_FAILED, probe, name, why->msg);
	pbmsg_free(probe ? &probe->base : NULL);
}

/* The sha256 of the object a spec runs (a built-in's too), lowercased,
 * so that the store knows which object is in use. */
static int spec_object_sha256(const Graind__ProbeSpec *spec, char sha256[SHA256_HEX_LEN + 1],
			      struct gerr *err)
{
	const char *id = spec->object_sha256;
	size_t len;

	sha256[0] = '\0';
	if (spec->object_case == GRAIND__PROBE_SPEC__OBJECT_BUILTIN)
		return builtin_object_sha256(spec->builtin, sha256, err);
	if (spec->object_case != GRAIND__PROBE_SPEC__OBJECT_OBJECT_SHA256)
		return 0;
	len = strlen(id);
	for (size_t i = 0; i < len; i++)
		if (!isxdigit((unsigned char)id[i]))
			len = 0;
	if (len != SHA256_HEX_LEN)
		return gerr_set(err, 400, "objectSha256 must be an object's sha256: 64 hex digits");
	for (size_t i = 0; i <= len; i++)
		sha256[i] = (char)tolower((unsigned char)id[i]);
	return 0;
}

/* Make the kernel run (or stop running) `spec` for probe `name`; *txn
 * receives the change, to commit once the store has it. A verifier
 * refusal leaves its report in call->report. */
static int apply_to_kernel(struct svc_call *call, const char *name, uint64_t generation,
			   const Graind__ProbeSpec *spec, bool attached,
			   struct probe_txn **txn, struct gerr *err)
{
	struct agent *ag = call->agent;
	bool adopted = false;
	void *bytes = NULL;
	size_t len = 0;
	int ret;

	if (!attached)
		return probe_detach(ag->probes, name, txn, err);
	if (signing_kernel_object(ag->signing, ag->store, spec, &bytes, &len, err) < 0)
		return -1;
	ret = probe_attach(ag->probes, name, generation, spec, bytes, len, &adopted,
			   &call->report, txn, err);
	free(bytes);
	return ret;
}

static int parse_generation_mismatch(const struct store_probe *old, bool exists,
				     uint64_t wanted, const char *name, struct gerr *err)
{
	if (!exists)
		return gerr_set(err, 404, "no probe named %s (a generation to match was given)",
				name);
	return gerr_set(err, 412,
			"probe %s is at generation %llu, not the one in If-Match (%llu): re-read it and retry",
			name, (unsigned long long)old->generation, (unsigned long long)wanted);
}

/* If-Match, checked without the lock: a stale generation is refused
 * before anything slow is done for it. */
static int precheck_generation(struct agent *ag, const Graind__PutProbeRequest *req,
			       struct gerr *err)
{
	struct store_probe old = { 0 };
	struct gerr get_err = { 0 };
	bool exists;
	int ret = 0;

	if (!req->if_generation)
		return 0;
	exists = store_probe_get(ag->store, req->name, &old, &get_err) == 0;
	if (!exists || old.generation != req->if_generation)
		ret = parse_generation_mismatch(&old, exists, req->if_generation, req->name, err);
	store_probe_clear(&old);
	return ret;
}

int svc_put_probe(struct svc_call *call, const Graind__PutProbeRequest *req,
		  Graind__Probe **resp, struct gerr *err)
{
	struct agent *ag = call->agent;
	struct store_probe old = { 0 }, row = { 0 };
	struct probe_txn *txn = NULL;
	char object_sha256[SHA256_HEX_LEN + 1], pulled[SHA256_HEX_LEN + 1];
	Graind__ProbeSpec norm, *spec = &norm;
	uint64_t generation = 1;
	bool exists, created, changed = false, attached, kernel = false;
	struct gerr get_err = { 0 };
	uint8_t *packed = NULL;
	size_t packed_len;
	int ret = -1;

	if (svc_check_name("probe", req->name, err) < 0)
		return -1;
	if (!req->spec)
		return gerr_set(err, 400, "spec is missing: send the probe's ProbeSpec");
	if (svc_budget_check_spec(req->spec->budget, err) < 0)
		return -1;
	/* A shallow copy whose object id is the lowercased one, so that either
	 * case names the same object, in the store and in the spec. */
	norm = *req->spec;
	attached = spec_wants_attached(spec);
	/* An image names the object: pulled (before the lock: it may take a
	 * while) and put into the spec as its digest. */
	if (norm.image && norm.image->reference[0]) {
		if (norm.object_case != GRAIND__PROBE_SPEC__OBJECT__NOT_SET)
			return gerr_set(err, 400, "spec.image names the object: leave objectSha256 "
					"and builtin out");
		/* What would refuse the PUT anyway is told before a pull (and
		 * told again under the lock, where it counts). */
		if (svc_check_owner(call, STORE_MANAGED_PROBE, req->name, err) < 0 ||
		    precheck_generation(ag, req, err) < 0 ||
		    svc_image_object(call, norm.image, pulled, err) < 0)
			return -1;
		norm.object_case = GRAIND__PROBE_SPEC__OBJECT_OBJECT_SHA256;
		norm.object_sha256 = pulled;
	}
	if (spec_object_sha256(spec, object_sha256, err) < 0)
		return -1;
	if (norm.object_case == GRAIND__PROBE_SPEC__OBJECT_OBJECT_SHA256)
		norm.object_sha256 = object_sha256;
	if (collect_check_stored_spec(ag->store, spec, err) < 0 ||
	    pack_spec(spec, &packed, &packed_len, err) < 0)
		return -1;
	pthread_mutex_lock(&ag->probe_lock);
	exists = store_probe_get(ag->store, req->name, &old, &get_err) == 0;
	if (!exists && get_err.status != 404) {
		*err = get_err;
		goto out;
	}
	if (svc_check_owner(call, STORE_MANAGED_PROBE, req->name, err) < 0)
		goto out;
	if (req->if_generation && (!exists || old.generation != req->if_generation)) {
		parse_generation_mismatch(&old, exists, req->if_generation, req->name, err);
		goto out;
	}
	if (exists) {
		changed = old.spec_len != packed_len || memcmp(old.spec, packed, packed_len) != 0;
		generation = old.generation + (changed ? 1 : 0);
	}
	/* Same spec, same state, kernel in step: nothing to touch. */
	if (!exists || changed || old.attached != attached ||
	    (attached && probe_pinned_generation(ag->probes, req->name) != generation)) {
		if (apply_to_kernel(call, req->name, generation, spec, attached, &txn, err) < 0) {
			if (attached)
				attach_failed(ag, exists ? &old : NULL, req->name, err);
			goto out;
		}
		kernel = true;
	}
	if (store_probe_put(ag->store, req->name, object_sha256, packed, packed_len, attached,
			    &row, &created, &changed, err) < 0) {
		probe_txn_rollback(txn);
		goto out;
	}
	probe_txn_commit(txn);
	call->created = created;
	/* New programs, or none: what was measured was of the old ones. */
	if (kernel)
		budget_follow(ag, req->name, attached);
	if (svc_record_owner(call, STORE_MANAGED_PROBE, req->name, false, err) < 0)
		goto out;
	log_info("msg=\"probe stored\" probe=%s generation=%llu attached=%d", req->name,
		 (unsigned long long)row.generation, attached);
	/* A PUT that changes nothing leaves the collector (and the series'
	 * delta state) alone. */
	if (kernel || created || changed)
		notify_collector(ag, req->name);
	/* The answer is built under the lock, so that the event it makes
	 * comes before any later change's. */
	ret = svc_probe_from_row(ag, &row, resp, err);
	if (ret == 0 && (created || changed))
		svc_probe_event(ag, GRAIND__PROBE_EVENT_KIND__PROBE_STORED, *resp, req->name, NULL);
	else if (ret == 0 && kernel)
		svc_probe_event(ag, attached ? GRAIND__PROBE_EVENT_KIND__PROBE_ATTACHED :
				GRAIND__PROBE_EVENT_KIND__PROBE_DETACHED, *resp, req->name, NULL);
out:
	pthread_mutex_unlock(&ag->probe_lock);
	free(packed);
	store_probe_clear(&old);
	store_probe_clear(&row);
	return ret;
}

/* :attach and :detach: change the desired state of a stored probe. */
static int set_state(struct svc_call *call, const char *name, bool attached,
		     Graind__Probe **resp, struct gerr *err)
{
	struct agent *ag = call->agent;
	struct store_probe row = { 0 };
	Graind__ProbeSpec *spec = NULL;
	struct probe_txn *txn = NULL;
	bool changed;
	int ret = -1;

	if (svc_check_name("probe", name, err) < 0)
		return -1;
	pthread_mutex_lock(&ag->probe_lock);
	if (store_probe_get(ag->store, name, &row, err) < 0 ||
	    svc_check_owner(call, STORE_MANAGED_PROBE, name, err) < 0)
		goto out;
	spec = unpack_spec(&row, err);
	if (!spec)
		goto out;
	if (apply_to_kernel(call, name, row.generation, spec, attached, &txn, err) < 0) {
		if (attached)
			attach_failed(ag, &row, name, err);
		goto out;
	}
	if (store_probe_set_attached(ag->store, name, attached, err) < 0) {
		probe_txn_rollback(txn);
		goto out;
	}
	/* Attaching an attached probe adopts it as it runs: nothing changed. */
	changed = txn || row.attached != attached;
	probe_txn_commit(txn);
	/* An operator's attach (of an attached probe too) forgives a breach
	 * and measures it afresh. */
	if (changed || attached)
		budget_follow(ag, name, attached);
	if (changed)
		notify_collector(ag, name);
	ret = stored_probe(ag, name, resp, err);
	if (ret == 0 && changed)
		svc_probe_event(ag, attached ? GRAIND__PROBE_EVENT_KIND__PROBE_ATTACHED :
				GRAIND__PROBE_EVENT_KIND__PROBE_DETACHED, *resp, name, NULL);
out:
	pthread_mutex_unlock(&ag->probe_lock);
	pbmsg_free(spec ? &spec->base : NULL);
	store_probe_clear(&row);
	return ret;
}

int svc_attach_probe(struct svc_call *call, const Graind__AttachProbeRequest *req,
		     Graind__Probe **resp, struct gerr *err)
{
	return set_state(call, req->name, true, resp, err);
}

int svc_detach_probe(struct svc_call *call, const Graind__DetachProbeRequest *req,
		     Graind__Probe **resp, struct gerr *err)
{
	return set_state(call, req->name, false, resp, err);
}

int svc_delete_probe(struct svc_call *call, const Graind__DeleteProbeRequest *req,
		     Graind__Empty **resp, struct gerr *err)
{
	struct agent *ag = call->agent;
	struct store_probe row = { 0 };
	struct probe_txn *txn = NULL;
	int ret = -1;

	if (svc_check_name("probe", req->name, err) < 0 ||
	    SVC_NEW(resp, &graind__empty__descriptor, err) < 0)
		return -1;
	pthread_mutex_lock(&ag->probe_lock);
	if (store_probe_get(ag->store, req->name, &row, err) < 0 ||
	    svc_check_owner(call, STORE_MANAGED_PROBE, req->name, err) < 0 ||
	    probe_detach(ag->probes, req->name, &txn, err) < 0)
		goto out;
	if (store_probe_delete(ag->store, req->name, err) < 0) {
		probe_txn_rollback(txn);
		goto out;
	}
	probe_txn_commit(txn);
	if (ag->budgets)
		budgets_reset(ag->budgets, req->name);
	if (svc_record_owner(call, STORE_MANAGED_PROBE, req->name, true, err) < 0)
		goto out;
	notify_collector(ag, req->name);
	svc_probe_event(ag, GRAIND__PROBE_EVENT_KIND__PROBE_DELETED, NULL, req->name, NULL);
	ret = 0;
out:
	/* A probe its file's owner row outlived (a crash between the two). */
	if (ret < 0 && err->status == 404 && call->manager)
		svc_record_owner(call, STORE_MANAGED_PROBE, req->name, true, &(struct gerr){ 0 });
	pthread_mutex_unlock(&ag->probe_lock);
	store_probe_clear(&row);
	if (ret == 0)
		log_info("msg=\"probe deleted\" probe=%s", req->name);
	return ret;
}

int svc_get_probe(struct svc_call *call, const Graind__GetProbeRequest *req,
		  Graind__Probe **resp, struct gerr *err)
{
	if (svc_check_name("probe", req->name, err) < 0)
		return -1;
	return stored_probe(call->agent, req->name, resp, err);
}

/* Rows are copied out first: the store is locked while listing, and the
 * kernel's view is added afterwards. */
struct row_list {
	const struct auth_principal *who;       /* probes out of its scope are left out */
	struct store_probe *rows;
	size_t n;
	char last[64];                          /* the last probe read, kept or not */
};

static int collect_row(const struct store_probe *row, void *ctx)
{
	struct row_list *list = ctx;
	struct store_probe *grown;

	snprintf(list->last, sizeof(list->last), "%s", row->name);
	if (!auth_in_scope(list->who, row->name))
		return 0;
	grown = realloc(list->rows, (list->n + 1) * sizeof(*grown));
	if (!grown)
		return -1;
	list->rows = grown;
	grown[list->n] = *row;
	grown[list->n].spec = malloc(row->spec_len ? row->spec_len : 1);
	if (!grown[list->n].spec)
		return -1;
	memcpy(grown[list->n].spec, row->spec, row->spec_len);
	list->n++;
	return 0;
}

int svc_list_probes(struct svc_call *call, const Graind__ListProbesRequest *req,
		    Graind__ListProbesResponse **resp, struct gerr *err)
{
	Graind__ListProbesResponse *list_resp;
	struct row_list list = { .who = &call->who };
	unsigned limit;
	bool more = false;
	int ret = -1;

	if (svc_page_size("page_size", req->page_size, 100, 1000, &limit, err) < 0 ||
	    SVC_NEW(resp, &graind__list_probes_response__descriptor, err) < 0)
		return -1;
	list_resp = *resp;
	ret = store_probe_list(call->agent->store, req->page_token[0] ? req->page_token : NULL,
			       limit, collect_row, &list, &more, err);
	if (ret != 0) {
		if (!err->msg[0])
			gerr_set(err, 500, "out of memory listing probes");
		ret = -1;
		goto out;
	}
	list_resp->probes = calloc(list.n ? list.n : 1, sizeof(*list_resp->probes));
	if (!list_resp->probes) {
		ret = gerr_set(err, 500, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < list.n; i++) {
		Graind__Probe *probe = NULL;

		ret = svc_probe_from_row(call->agent, &list.rows[i], &probe, err);
		if (probe)
			list_resp->probes[list_resp->n_probes++] = probe;
		if (ret < 0)
			goto out;
	}
	/* The next page starts after the last probe read, so that a page
	 * whose probes were all out of scope still moves on. */
	if (more && list.last[0] && pbmsg_set_string(&list_resp->next_page_token, list.last) < 0)
		ret = gerr_set(err, 500, "out of memory");
out:
	for (size_t i = 0; i < list.n; i++)
		store_probe_clear(&list.rows[i]);
	free(list.rows);
	return ret;
}

int svc_dump_map(struct svc_call *call, const Graind__DumpMapRequest *req,
		 Graind__MapDump **resp, struct gerr *err)
{
	if (svc_check_name("probe", req->probe, err) < 0)
		return -1;
	return collect_dump_map(call->agent, req->probe, req->map, resp, err);
}

/* ---------------------------------------------------------------- start */

static void reconciled(void *ctx, const char *name, enum reconcile_outcome outcome,
		       const struct gerr *why)
{
	static const Graind__ProbeEventKind kinds[] = {
		[RECONCILE_ADOPTED] = GRAIND__PROBE_EVENT_KIND__PROBE_ADOPTED,
		[RECONCILE_ATTACHED] = GRAIND__PROBE_EVENT_KIND__PROBE_ATTACHED,
		[RECONCILE_DETACHED] = GRAIND__PROBE_EVENT_KIND__PROBE_DETACHED,
		[RECONCILE_FAILED] = GRAIND__PROBE_EVENT_KIND__PROBE_ATTACH_FAILED,
	};
	struct agent *ag = ctx;
	Graind__Probe *probe = NULL;
	struct gerr err = { 0 };

	if (stored_probe(ag, name, &probe, &err) < 0) {
		pbmsg_free(probe ? &probe->base : NULL);
		probe = NULL;
	}
	svc_probe_event(ag, kinds[outcome], probe, name, why ? why->msg : NULL);
	pbmsg_free(probe ? &probe->base : NULL);
}

void svc_reconcile(struct agent *agent)
{
	pthread_mutex_lock(&agent->probe_lock);
	reconcile_probes(agent, reconciled, agent);
	pthread_mutex_unlock(&agent->probe_lock);
}
