/* svc samples: the buffered samples. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/agent.h"
#include "server/svc/svc_int.h"
#include "store/store.h"

struct sample_list {
	const struct auth_principal *who;       /* samples of probes out of its scope are left out */
	Graind__ListSamplesResponse *resp;
	size_t cap, gaps_cap;
	uint64_t last_id;                       /* the last sample read, kept or not */
};

/* The store lends each sample for the call: keep a copy. */
static int keep_sample(const Graind__Sample *s, void *ctx)
{
	struct sample_list *list = ctx;
	Graind__ListSamplesResponse *resp = list->resp;
	size_t len = graind__sample__get_packed_size(s);
	uint8_t *buf = malloc(len ? len : 1);
	Graind__Sample *copy;

	list->last_id = s->id;
	if (!auth_in_scope(list->who, s->probe)) {
		free(buf);
		return 0;
	}
	if (!buf)
		return -1;
	graind__sample__pack(s, buf);
	copy = graind__sample__unpack(NULL, len, buf);
	free(buf);
	if (!copy)
		return -1;
	if (resp->n_samples == list->cap) {
		size_t cap = list->cap ? list->cap * 2 : 64;
		Graind__Sample **grown = realloc(resp->samples, cap * sizeof(*grown));

		if (!grown) {
			pbmsg_free(&copy->base);
			return -1;
		}
		resp->samples = grown;
		list->cap = cap;
	}
	resp->samples[resp->n_samples++] = copy;
	return 0;
}

/* A damaged block: said in the answer, and the cursor moves past it. The
 * reason names no probe, so a gap of a probe out of scope tells nothing
 * but its ids. */
static int note_gap(const struct store_damage *d, void *ctx)
{
	struct sample_list *list = ctx;
	Graind__ListSamplesResponse *resp = list->resp;
	Graind__SampleGap *gap;

	list->last_id = d->last_id;
	if (resp->n_skipped == list->gaps_cap) {
		size_t cap = list->gaps_cap ? list->gaps_cap * 2 : 4;
		Graind__SampleGap **grown = realloc(resp->skipped, cap * sizeof(*grown));

		if (!grown)
			return -1;
		resp->skipped = grown;
		list->gaps_cap = cap;
	}
	gap = (Graind__SampleGap *)pbmsg_new(&graind__sample_gap__descriptor);
	if (!gap || pbmsg_set_string(&gap->reason, d->what) < 0) {
		pbmsg_free(gap ? &gap->base : NULL);
		return -1;
	}
	gap->first_id = d->first_id;
	gap->last_id = d->last_id;
	resp->skipped[resp->n_skipped++] = gap;
	return 0;
}

int svc_list_samples(struct svc_call *call, const Graind__ListSamplesRequest *req,
		     Graind__ListSamplesResponse **resp, struct gerr *err)
{
	struct sample_list list = { .who = &call->who };
	uint64_t after = req->after;
	char next[24];
	unsigned limit;
	bool more = false;

	if (req->probe[0] && !auth_in_scope(&call->who, req->probe))
		return svc_out_of_scope(call, req->probe, err);
	if (svc_page_size("limit", req->limit, 100, 10000, &limit, err) < 0 ||
	    SVC_NEW(resp, &graind__list_samples_response__descriptor, err) < 0)
		return -1;
	list.resp = *resp;
	if (store_samples_list(call->agent->store, req->probe[0] ? req->probe : NULL,
			       req->map[0] ? req->map : NULL, after, limit, keep_sample, note_gap, &list,
			       &more, err) != 0) {
		if (!err->msg[0])
			gerr_set(err, 500, "out of memory listing samples");
		return -1;
	}
	/* The cursor: the last id read (returned, out of scope or skipped),
	 * or the one given when nothing new. */
	if (list.last_id)
		after = list.last_id;
	snprintf(next, sizeof(next), "%llu", (unsigned long long)after);
	if (pbmsg_set_string(&list.resp->next_page_token, next) < 0)
		return gerr_set(err, 500, "out of memory");
	return 0;
}
