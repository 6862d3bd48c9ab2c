/* Agent handlers: health, status, audit log and the web UI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "server/util/pbmsg.h"
#include "api/handlers.h"
#include "proto/graind.pb-c.h"
#include "server/agent.h"
#include "server/features.h"
#include "server/util/clock.h"
#include "store/store.h"

int h_healthz(struct api_call *call, struct gerr *err)
{
	Graind__Health *health = (Graind__Health *)pbmsg_new(&graind__health__descriptor);

	if (!health)
		return gerr_set(err, 500, "out of memory");
	call->reply = &health->base;
	if (pbmsg_set_string(&health->status, "ok") < 0)
		return gerr_set(err, 500, "out of memory");
	return 0;
}

static int add_listen(Graind__AgentStatus *st, const char *what)
{
	char **grown = realloc(st->listen, (st->n_listen + 1) * sizeof(*grown));

	if (!grown)
		return -1;
	st->listen = grown;
	st->listen[st->n_listen] = strdup(what);
	return st->listen[st->n_listen++] ? 0 : -1;
}

int h_status(struct api_call *call, struct gerr *err)
{
	const struct agent *ag = call->agent;
	Graind__AgentStatus *st;
	struct utsname uts;
	char unix_listen[128];

	st = (Graind__AgentStatus *)pbmsg_new(&graind__agent_status__descriptor);
	if (!st)
		return gerr_set(err, 500, "out of memory");
	call->reply = &st->base;
	st->features = (Graind__Features *)pbmsg_new(&graind__features__descriptor);
	if (!st->features)
		return gerr_set(err, 500, "out of memory");
	features_detect(st->features);
	uname(&uts);
	st->uptime_seconds = (uint64_t)(clock_unix_ms() - ag->started_ms) / 1000;
	st->object_count = store_object_count(ag->store);
	st->probe_count = store_probe_count(ag->store);
	st->sample_count = store_sample_count(ag->store);
	st->database_bytes = store_db_bytes(ag->store);
	snprintf(unix_listen, sizeof(unix_listen), "unix:%s", ag->cfg.socket_path);
	if (pbmsg_set_string(&st->version, GRAIND_VERSION) < 0 ||
	    pbmsg_set_string(&st->kernel_release, uts.release) < 0 ||
	    pbmsg_take_string(&st->started, api_time_string(ag->started_ms)) < 0 ||
	    (ag->listen_tcp[0] && add_listen(st, ag->listen_tcp) < 0) ||
	    (ag->cfg.socket_path[0] && add_listen(st, unix_listen) < 0))
		return gerr_set(err, 500, "out of memory");
	return api_sinks_all(call->agent, &st->sinks, &st->n_sinks, err);
}

struct audit_ctx {
	Graind__ListAuditResponse *resp;
	uint64_t last_id;
};

static int audit_one(const struct store_audit *rec, void *ctx_)
{
	struct audit_ctx *ctx = ctx_;
	Graind__ListAuditResponse *resp = ctx->resp;
	Graind__AuditEntry **grown, *e;

	grown = realloc(resp->entries, (resp->n_entries + 1) * sizeof(*grown));
	if (!grown)
		return -1;
	resp->entries = grown;
	e = (Graind__AuditEntry *)pbmsg_new(&graind__audit_entry__descriptor);
	if (!e)
		return -1;
	resp->entries[resp->n_entries++] = e;
	e->id = rec->id;
	e->result = rec->result;
	ctx->last_id = rec->id;
	if (pbmsg_take_string(&e->time, api_time_string(rec->time_ms)) < 0 ||
	    pbmsg_set_string(&e->role, rec->role) < 0 ||
	    pbmsg_set_string(&e->action, rec->action) < 0 ||
	    pbmsg_set_string(&e->target, rec->target) < 0 ||
	    pbmsg_set_string(&e->message, rec->message) < 0)
		return -1;
	return 0;
}

int h_audit_list(struct api_call *call, struct gerr *err)
{
	const char *token = api_query(call, "page_token");
	struct audit_ctx ctx = { 0 };
	unsigned long long after = 0;
	char next[24], *end;
	unsigned limit;
	bool more = false;

	if (api_page_size(call, &limit, err) < 0)
		return -1;
	if (token) {
		after = strtoull(token, &end, 10);
		if (!*token || *end)
			return gerr_set(err, 400, "page_token must be a token from next_page_token");
	}
	ctx.resp = (Graind__ListAuditResponse *)pbmsg_new(&graind__list_audit_response__descriptor);
	if (!ctx.resp)
		return gerr_set(err, 500, "out of memory");
	call->reply = &ctx.resp->base;
	if (store_audit_list(call->agent->store, after, limit, audit_one, &ctx, &more, err) != 0) {
		if (!err->msg[0])
			gerr_set(err, 500, "out of memory listing the audit log");
		return -1;
	}
	if (more) {
		snprintf(next, sizeof(next), "%llu", (unsigned long long)ctx.last_id);
		if (pbmsg_set_string(&ctx.resp->next_page_token, next) < 0)
			return gerr_set(err, 500, "out of memory");
	}
	return 0;
}

/* The web UI's page, embedded at build time (see the Makefile). */
extern const char embed_index_html_start[], embed_index_html_end[];

int h_web(struct api_call *call, struct gerr *err)
{
	size_t len = (size_t)(embed_index_html_end - embed_index_html_start);

	call->raw = malloc(len ? len : 1);
	if (!call->raw)
		return gerr_set(err, 500, "out of memory");
	memcpy(call->raw, embed_index_html_start, len);
	call->raw_len = len;
	call->raw_type = "text/html; charset=utf-8";
	return 0;
}
