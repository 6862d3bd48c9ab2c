/* Sample handlers: the buffered samples, live map dumps, /metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/util/pbmsg.h"
#include "api/handlers.h"
#include "proto/graind.pb-c.h"
#include "server/agent.h"
#include "server/collect/collect.h"
#include "store/store.h"

struct sample_list {
	Graind__ListSamplesResponse *resp;
	size_t cap;
};

/* The store lends each sample for the call: keep a copy. */
static int keep_sample(const Graind__Sample *s, void *ctx)
{
	struct sample_list *list = ctx;
	Graind__ListSamplesResponse *resp = list->resp;
	size_t len = protobuf_c_message_get_packed_size(&s->base);
	uint8_t *buf = malloc(len ? len : 1);
	Graind__Sample *copy;

	if (!buf)
		return -1;
	protobuf_c_message_pack(&s->base, buf);
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

int h_samples_list(struct api_call *call, struct gerr *err)
{
	const char *after_s = api_query(call, "after");
	struct sample_list list = { 0 };
	unsigned long long after = 0;
	unsigned long limit = 100;
	const char *limit_s = api_query(call, "limit");
	char next[24], *end;
	bool more = false;

	if (after_s) {
		after = strtoull(after_s, &end, 10);
		if (!*after_s || *end || after_s[0] == '-')
			return gerr_set(err, 400, "after must be a sample id (a non-negative integer), got '%s'",
					after_s);
	}
	if (limit_s) {
		limit = strtoul(limit_s, &end, 10);
		if (!*limit_s || *end || limit == 0 || limit > 10000 || limit_s[0] == '-')
			return gerr_set(err, 400, "limit must be 1 to 10000, got '%s'", limit_s);
	}
	list.resp = (Graind__ListSamplesResponse *)pbmsg_new(&graind__list_samples_response__descriptor);
	if (!list.resp)
		return gerr_set(err, 500, "out of memory");
	call->reply = &list.resp->base;
	if (store_samples_list(call->agent->store, api_query(call, "probe"), api_query(call, "map"),
			       after, (unsigned)limit, keep_sample, &list, &more, err) != 0) {
		if (!err->msg[0])
			gerr_set(err, 500, "out of memory listing samples");
		return -1;
	}
	/* The cursor: the last id returned, or the one given when nothing new. */
	if (list.resp->n_samples)
		after = list.resp->samples[list.resp->n_samples - 1]->id;
	snprintf(next, sizeof(next), "%llu", after);
	if (pbmsg_set_string(&list.resp->next_page_token, next) < 0)
		return gerr_set(err, 500, "out of memory");
	return 0;
}

int h_probe_map(struct api_call *call, struct gerr *err)
{
	Graind__MapDump *dump = NULL;

	if (api_check_probe_name(call->args[0], err) < 0)
		return -1;
	if (collect_dump_map(call->agent, call->args[0], call->args[1], &dump, err) < 0)
		return -1;
	call->reply = &dump->base;
	return 0;
}

int h_metrics(struct api_call *call, struct gerr *err)
{
	call->raw = collect_metrics_text(call->agent, &call->raw_len);
	if (!call->raw)
		return gerr_set(err, 500, "out of memory writing metrics");
	call->raw_type = "text/plain; version=0.0.4; charset=utf-8";
	return 0;
}
