/* Probe handlers: create/update, list, get, attach, detach, delete.
 *
 * Every change holds agent->probe_lock from reading the stored row to
 * writing it back, and changes the kernel before the store: a request
 * that fails in the kernel leaves the store as it was, so what the API
 * says is what the kernel has. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/codec.h"
#include "api/handlers.h"
#include "proto/graind.pb-c.h"
#include "server/agent.h"
#include "server/builtin.h"
#include "server/collect/collect.h"
#include "server/probe/probe.h"
#include "server/util/log.h"
#include "store/store.h"

int api_check_probe_name(const char *name, struct gerr *err)
{
	size_t len = strlen(name);

	if (len == 0 || len > 63 || !(islower((unsigned char)name[0]) ||
				      isdigit((unsigned char)name[0])))
		goto bad;
	for (size_t i = 1; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (!islower(c) && !isdigit(c) && !strchr("._-", c))
			goto bad;
	}
	return 0;
bad:
	return gerr_set(err, 400,
			"probe name must match [a-z0-9][a-z0-9._-]{0,62} (lowercase letters, digits, '.', '_', '-')");
}

static int parse_if_match(const char *value, uint64_t *generation, struct gerr *err)
{
	char buf[32], *end;
	size_t len;

	*generation = 0;
	if (!value)
		return 0;
	/* Accept the generation bare or as a quoted entity tag. */
	len = strlen(value);
	if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
		value++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(buf))
		goto bad;
	memcpy(buf, value, len);
	buf[len] = '\0';
	*generation = strtoull(buf, &end, 10);
	if (*end || !isdigit((unsigned char)buf[0]) || *generation == 0)
		goto bad;
	return 0;
bad:
	return gerr_set(err, 400, "If-Match must be a probe generation (a positive integer)");
}

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
	*len = protobuf_c_message_get_packed_size(&copy.base);
	*out = malloc(*len ? *len : 1);
	if (!*out)
		return gerr_set(err, 500, "out of memory");
	protobuf_c_message_pack(&copy.base, *out);
	return 0;
}

static Graind__ProbeSpec *unpack_spec(const struct store_probe *row, struct gerr *err)
{
	Graind__ProbeSpec *spec;

	spec = (Graind__ProbeSpec *)protobuf_c_message_unpack(&graind__probe_spec__descriptor,
							      NULL, row->spec_len, row->spec);
	if (!spec) {
		gerr_set(err, 500, "stored spec of probe %s does not decode", row->name);
		return NULL;
	}
	spec->desired_state = row->attached ? GRAIND__DESIRED_STATE__ATTACHED :
					      GRAIND__DESIRED_STATE__DETACHED;
	return spec;
}

/* The Probe message for a stored row, with the kernel's view added. */
static int probe_reply(struct api_call *call, const struct store_probe *row,
		       Graind__Probe **out, struct gerr *err)
{
	Graind__Probe *probe = (Graind__Probe *)codec_new(&graind__probe__descriptor);

	*out = probe;
	if (!probe)
		return gerr_set(err, 500, "out of memory");
	probe->spec = unpack_spec(row, err);
	if (!probe->spec)
		return -1;
	probe->generation = row->generation;
	if (codec_set_string(&probe->name, row->name) < 0 ||
	    codec_take_string(&probe->created, api_time_string(row->created_ms)) < 0 ||
	    codec_take_string(&probe->updated, api_time_string(row->updated_ms)) < 0)
		return gerr_set(err, 500, "out of memory");
	return probe_status(call->agent->probes, probe, err);
}

static int reply_probe(struct api_call *call, const char *name, struct gerr *err)
{
	struct store_probe row = { 0 };
	Graind__Probe *probe = NULL;
	int ret;

	if (store_probe_get(call->agent->store, name, &row, err) < 0)
		return -1;
	ret = probe_reply(call, &row, &probe, err);
	store_probe_clear(&row);
	call->reply = probe ? &probe->base : NULL;
	return ret;
}

/* On a verifier refusal the answer is a Status carrying the report. */
static int refuse_with_report(struct api_call *call, Graind__VerifyReport *report,
			      const struct gerr *cause)
{
	Graind__Status *status = (Graind__Status *)codec_new(&graind__status__descriptor);

	if (!status) {
		codec_free(&report->base);
		return -1;
	}
	status->code = cause->status;
	status->verify_report = report;
	call->status = cause->status;
	call->reply = &status->base;
	return codec_set_string(&status->message, cause->msg);
}

/* Make the kernel run (or stop running) `spec` for probe `name`. */
static int apply_to_kernel(struct api_call *call, const char *name, uint64_t generation,
			   const Graind__ProbeSpec *spec, bool attached, struct gerr *err)
{
	struct agent *ag = call->agent;
	Graind__VerifyReport *report = NULL;
	bool adopted = false;
	void *bytes = NULL;
	size_t len = 0;
	int ret;

	if (!attached)
		return probe_detach(ag->probes, name, err);
	if (builtin_spec_object(ag->store, spec, &bytes, &len, err) < 0)
		return -1;
	ret = probe_attach(ag->probes, name, generation, spec, bytes, len, &adopted,
			   &report, err);
	free(bytes);
	if (ret < 0 && report && refuse_with_report(call, report, err) == 0)
		return 1;       /* answered with the report */
	return ret;
}

int h_probe_put(struct api_call *call, struct gerr *err)
{
	Graind__ProbeSpec *spec = (Graind__ProbeSpec *)call->body;
	struct agent *ag = call->agent;
	struct store_probe old = { 0 }, row = { 0 };
	uint64_t if_generation, generation = 1;
	bool exists, created, changed = false, attached = spec_wants_attached(spec);
	uint8_t *packed = NULL;
	size_t packed_len;
	int ret = -1, applied;

	if (api_check_probe_name(call->args[0], err) < 0 ||
	    parse_if_match(call->req->if_match, &if_generation, err) < 0 ||
	    collect_check_stored_spec(ag->store, spec, err) < 0 ||
	    pack_spec(spec, &packed, &packed_len, err) < 0)
		return -1;
	pthread_mutex_lock(&ag->probe_lock);
	exists = store_probe_get(ag->store, call->args[0], &old, NULL) == 0;
	if (if_generation && (!exists || old.generation != if_generation)) {
		gerr_set(err, exists ? 412 : 404,
			 exists ? "probe %s is at generation %llu, not the one in If-Match: re-read it and retry" :
				  "no probe named %s (If-Match given)",
			 call->args[0], (unsigned long long)old.generation);
		goto out;
	}
	if (exists) {
		changed = old.spec_len != packed_len || memcmp(old.spec, packed, packed_len) != 0;
		generation = old.generation + (changed ? 1 : 0);
	}
	/* Same spec, same state, kernel in step: nothing to touch. */
	if (!exists || changed || old.attached != attached ||
	    (attached && probe_pinned_generation(ag->probes, call->args[0]) != generation)) {
		applied = apply_to_kernel(call, call->args[0], generation, spec, attached, err);
		if (applied != 0) {
			ret = applied > 0 ? 0 : -1;
			goto out;
		}
	}
	if (store_probe_put(ag->store, call->args[0],
			    spec->object_case == GRAIND__PROBE_SPEC__OBJECT_OBJECT_SHA256 ?
			    spec->object_sha256 : "",
			    packed, packed_len, attached, &row, &created, &changed, err) < 0)
		goto out;
	if (created)
		call->status = 201;
	log_info("msg=\"probe stored\" probe=%s generation=%llu attached=%d", call->args[0],
		 (unsigned long long)row.generation, attached);
	notify_collector(ag, call->args[0]);
	ret = 0;
out:
	pthread_mutex_unlock(&ag->probe_lock);
	free(packed);
	store_probe_clear(&old);
	if (ret == 0 && !call->reply) {
		Graind__Probe *probe = NULL;

		ret = probe_reply(call, &row, &probe, err);
		call->reply = probe ? &probe->base : NULL;
	}
	store_probe_clear(&row);
	return ret;
}

/* :attach and :detach: change the desired state of a stored probe. */
static int set_state(struct api_call *call, bool attached, struct gerr *err)
{
	struct agent *ag = call->agent;
	struct store_probe row = { 0 };
	Graind__ProbeSpec *spec = NULL;
	int ret = -1, applied;

	if (api_check_probe_name(call->args[0], err) < 0)
		return -1;
	pthread_mutex_lock(&ag->probe_lock);
	if (store_probe_get(ag->store, call->args[0], &row, err) < 0)
		goto out;
	spec = unpack_spec(&row, err);
	if (!spec)
		goto out;
	applied = apply_to_kernel(call, call->args[0], row.generation, spec, attached, err);
	if (applied != 0) {
		ret = applied > 0 ? 0 : -1;
		goto out;
	}
	if (store_probe_set_attached(ag->store, call->args[0], attached, err) < 0)
		goto out;
	notify_collector(ag, call->args[0]);
	ret = 0;
out:
	pthread_mutex_unlock(&ag->probe_lock);
	codec_free(spec ? &spec->base : NULL);
	store_probe_clear(&row);
	if (ret == 0 && !call->reply)
		ret = reply_probe(call, call->args[0], err);
	return ret;
}

int h_probe_attach(struct api_call *call, struct gerr *err)
{
	return set_state(call, true, err);
}

int h_probe_detach(struct api_call *call, struct gerr *err)
{
	return set_state(call, false, err);
}

int h_probe_delete(struct api_call *call, struct gerr *err)
{
	struct agent *ag = call->agent;
	struct store_probe row = { 0 };
	int ret = -1;

	if (api_check_probe_name(call->args[0], err) < 0)
		return -1;
	pthread_mutex_lock(&ag->probe_lock);
	if (store_probe_get(ag->store, call->args[0], &row, err) == 0 &&
	    probe_detach(ag->probes, call->args[0], err) == 0 &&
	    store_probe_delete(ag->store, call->args[0], err) == 0) {
		notify_collector(ag, call->args[0]);
		ret = 0;
	}
	pthread_mutex_unlock(&ag->probe_lock);
	store_probe_clear(&row);
	if (ret == 0) {
		log_info("msg=\"probe deleted\" probe=%s", call->args[0]);
		call->status = 204;
	}
	return ret;
}

int h_probe_get(struct api_call *call, struct gerr *err)
{
	if (api_check_probe_name(call->args[0], err) < 0)
		return -1;
	return reply_probe(call, call->args[0], err);
}

/* Rows are copied out first: the store is locked while listing, and the
 * kernel's view is added afterwards. */
struct row_list {
	struct store_probe *rows;
	size_t n;
};

static int collect_row(const struct store_probe *row, void *ctx)
{
	struct row_list *list = ctx;
	struct store_probe *grown = realloc(list->rows, (list->n + 1) * sizeof(*grown));

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

int h_probe_list(struct api_call *call, struct gerr *err)
{
	Graind__ListProbesResponse *resp;
	struct row_list list = { 0 };
	unsigned limit;
	bool more = false;
	int ret = -1;

	if (api_page_size(call, &limit, err) < 0)
		return -1;
	resp = (Graind__ListProbesResponse *)codec_new(&graind__list_probes_response__descriptor);
	if (!resp)
		return gerr_set(err, 500, "out of memory");
	call->reply = &resp->base;
	ret = store_probe_list(call->agent->store, api_query(call, "page_token"), limit,
			       collect_row, &list, &more, err);
	if (ret != 0) {
		if (!err->msg[0])
			gerr_set(err, 500, "out of memory listing probes");
		ret = -1;
		goto out;
	}
	resp->probes = calloc(list.n ? list.n : 1, sizeof(*resp->probes));
	if (!resp->probes) {
		ret = gerr_set(err, 500, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < list.n; i++) {
		Graind__Probe *probe = NULL;

		ret = probe_reply(call, &list.rows[i], &probe, err);
		if (probe)
			resp->probes[resp->n_probes++] = probe;
		if (ret < 0)
			goto out;
	}
	if (more && list.n && codec_set_string(&resp->next_page_token, list.rows[list.n - 1].name) < 0)
		ret = gerr_set(err, 500, "out of memory");
out:
	for (size_t i = 0; i < list.n; i++)
		store_probe_clear(&list.rows[i]);
	free(list.rows);
	return ret;
}
