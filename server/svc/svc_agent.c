/* svc agent: health, status, the audit log, metrics. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "server/agent.h"
#include "server/confstat.h"
#include "server/collect/collect.h"
#include "server/features.h"
#include "server/signing.h"
#include "server/svc/svc_int.h"
#include "server/util/clock.h"
#include "store/store.h"

bool svc_serving(struct agent *agent)
{
	struct store_health h;

	store_health_get(agent->store, &h);
	return !h.failing;
}

int svc_get_health(struct svc_call *call, const Graind__HealthRequest *req,
		   Graind__Health **resp, struct gerr *err)
{
	struct store_health h;
	char since[CLOCK_TEXT_MAX];

	(void)req;
	store_health_get(call->agent->store, &h);
	if (h.failing) {
		clock_format(h.since_ms, since);
		return gerr_set(err, 503, "storage failing since %s: %s", since, h.error);
	}
	if (SVC_NEW(resp, &graind__health__descriptor, err) < 0)
		return -1;
	if (pbmsg_set_string(&(*resp)->status, "ok") < 0)
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

static int storage_status(struct agent *ag, Graind__StorageHealth **out, struct gerr *err)
{
	struct store_health h;
	struct collect_stats cs;
	Graind__StorageHealth *sh;

	if (SVC_NEW(out, &graind__storage_health__descriptor, err) < 0)
		return -1;
	sh = *out;
	store_health_get(ag->store, &h);
	collect_get_stats(ag->collector, &cs);
	sh->failed_writes = h.failed_writes;
	sh->faults = h.faults;
	sh->reserve_bytes = h.reserve_bytes;
	sh->checkpoint_bytes = h.checkpoint_bytes;
	sh->samples_waiting = cs.queue_depth;
	sh->samples_dropped = cs.queue_dropped;
	sh->write_retries = cs.write_retries;
	sh->corrupt_reads = h.corrupt_reads;
	sh->damaged_objects = h.damaged_objects;
	sh->damaged_sample_blocks = h.damaged_blocks;
	sh->damaged_samples = h.damaged_samples;
	sh->integrity_scans = h.scans;
	sh->last_scan_damage = h.scan_damage;
	if (pbmsg_set_string(&sh->state, h.failing ? "failing" : "ok") < 0 ||
	    (h.scan_ms && pbmsg_set_time(&sh->last_scan, h.scan_ms) < 0) ||
	    pbmsg_set_string(&sh->error, h.error) < 0 ||
	    (h.since_ms && pbmsg_set_time(&sh->since, h.since_ms) < 0) ||
	    (h.recovered_ms && pbmsg_set_time(&sh->recovered, h.recovered_ms) < 0))
		return gerr_set(err, 500, "out of memory");
	return 0;
}

static int caller_status(const struct auth_principal *who, Graind__Caller **out)
{
	Graind__Caller *c = (Graind__Caller *)pbmsg_new(&graind__caller__descriptor);

	if (!c)
		return -1;
	*out = c;
	c->scopes = calloc(who->n_scopes ? who->n_scopes : 1, sizeof(*c->scopes));
	if (!c->scopes || pbmsg_set_string(&c->principal, who->name) < 0 ||
	    pbmsg_set_string(&c->role, auth_role_name(who->role)) < 0 ||
	    (who->expires_ms && pbmsg_set_time(&c->expires, who->expires_ms) < 0))
		return -1;
	for (; c->n_scopes < who->n_scopes; c->n_scopes++)
		if (pbmsg_set_string(&c->scopes[c->n_scopes], who->scopes[c->n_scopes]) < 0)
			return -1;
	return 0;
}

struct status_key {
	const struct agent *agent;
	/* The caller, as status shows it. */
	char principal[AUTH_NAME_MAX];
	enum auth_role role;
	int64_t expires_ms;
	unsigned n_scopes;
	char scopes[AUTH_SCOPES_MAX][AUTH_SCOPE_MAX];
	uint64_t uptime_s;
	struct store_summary summary;
	struct store_health health;
	struct collect_stats collected;
	uint64_t features, config_dir, signing;
};

_Static_assert(sizeof(struct status_key) <= SVC_MEMO_KEY_MAX, "status key too long");

size_t svc_status_memo_key(const struct svc_call *call, const ProtobufCMessage *req, void *key,
			   size_t max)
{
	const struct agent *ag = call->agent;
	struct status_key *k = key;

	(void)req;
	if (max < sizeof(*k))
		return 0;
	memset(k, 0, sizeof(*k));
	store_summary_get(ag->store, &k->summary);
	if (k->summary.sinks)
		return 0;
	k->agent = ag;
	memcpy(k->principal, call->who.name, sizeof(k->principal));
	k->role = call->who.role;
	k->expires_ms = call->who.expires_ms;
	k->n_scopes = call->who.n_scopes;
	memcpy(k->scopes, call->who.scopes, sizeof(k->scopes));
	k->uptime_s = (uint64_t)(clock_unix_ms() - ag->started_ms) / 1000;
	store_health_get(ag->store, &k->health);
	collect_get_stats(ag->collector, &k->collected);
	k->features = features_generation();
	k->config_dir = ag->confstat ? confstat_generation(ag->confstat) : 0;
	k->signing = ag->signing ? signing_generation(ag->signing) : 0;
	return sizeof(*k);
}

/* The running kernel's release does not change under us. */
static struct utsname uts;
static pthread_once_t uts_once = PTHREAD_ONCE_INIT;

static void uts_read(void)
{
	uname(&uts);
}

int svc_get_status(struct svc_call *call, const Graind__GetStatusRequest *req,
		   Graind__AgentStatus **resp, struct gerr *err)
{
	const struct agent *ag = call->agent;
	Graind__AgentStatus *st;
	struct store_summary sum;
	char unix_listen[128];

	(void)req;
	if (SVC_NEW(resp, &graind__agent_status__descriptor, err) < 0)
		return -1;
	st = *resp;
	if (SVC_NEW(&st->features, &graind__features__descriptor, err) < 0)
		return -1;
	features_detect(st->features);
	pthread_once(&uts_once, uts_read);
	st->uptime_seconds = (uint64_t)(clock_unix_ms() - ag->started_ms) / 1000;
	store_summary_get(ag->store, &sum);
	st->object_count = sum.objects;
	st->probe_count = sum.probes;
	st->sample_count = sum.samples;
	st->last_sample_id = sum.last_sample_id;
	st->sample_bytes = sum.sample_bytes;
	st->buffer_rows = ag->cfg.buffer_rows;
	st->buffer_bytes = ag->cfg.buffer_bytes;
	st->database_bytes = sum.db_bytes;
	snprintf(unix_listen, sizeof(unix_listen), "unix:%s", ag->cfg.socket_path);
	if (pbmsg_set_string(&st->version, GRAIND_VERSION) < 0 ||
	    pbmsg_set_string(&st->kernel_release, uts.release) < 0 ||
	    pbmsg_set_time(&st->started, ag->started_ms) < 0 ||
	    (ag->listen_tcp[0] && add_listen(st, ag->listen_tcp) < 0) ||
	    (ag->cfg.socket_path[0] && add_listen(st, unix_listen) < 0))
		return gerr_set(err, 500, "out of memory");
	if (caller_status(&call->who, &st->caller) < 0)
		return gerr_set(err, 500, "out of memory");
	if (storage_status(call->agent, &st->storage, err) < 0)
		return -1;
	if (ag->confstat && confstat_status(ag->confstat, &st->config_dir, err) < 0)
		return -1;
	if (ag->signing && signing_policy(ag->signing, &st->signatures) < 0)
		return gerr_set(err, 500, "out of memory");
	return svc_sinks_all(call->agent, &st->sinks, &st->n_sinks, err);
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
	if (pbmsg_set_time(&e->time, rec->time_ms) < 0 ||
	    pbmsg_set_string(&e->role, rec->role) < 0 ||
	    pbmsg_set_string(&e->principal, rec->principal) < 0 ||
	    pbmsg_set_string(&e->action, rec->action) < 0 ||
	    pbmsg_set_string(&e->target, rec->target) < 0 ||
	    pbmsg_set_string(&e->message, rec->message) < 0)
		return -1;
	return 0;
}

int svc_list_audit(struct svc_call *call, const Graind__ListAuditRequest *req,
		   Graind__ListAuditResponse **resp, struct gerr *err)
{
	const char *token = req->page_token;
	struct audit_ctx ctx = { 0 };
	unsigned long long after = 0;
	char next[24], *end;
	unsigned limit;
	bool more = false;

	if (svc_page_size("page_size", req->page_size, 100, 1000, &limit, err) < 0)
		return -1;
	if (token[0]) {
		errno = 0;
		after = strtoull(token, &end, 10);
		if (*end || token[0] == '-' || errno == ERANGE)
			return gerr_set(err, 400, "page_token must be a token from next_page_token");
	}
	if (SVC_NEW(resp, &graind__list_audit_response__descriptor, err) < 0)
		return -1;
	ctx.resp = *resp;
	if (store_audit_list(call->agent->store, after, limit, req->newest_first, audit_one, &ctx, &more, err) != 0) {
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

int svc_get_metrics(struct svc_call *call, const Graind__GetMetricsRequest *req,
		    Graind__MetricsText **resp, struct gerr *err)
{
	size_t len;
	char *text;

	(void)req;
	if (SVC_NEW(resp, &graind__metrics_text__descriptor, err) < 0)
		return -1;
	text = collect_metrics_text(call->agent, &len);
	if (pbmsg_take_string(&(*resp)->text, text) < 0)
		return gerr_set(err, 500, "out of memory writing metrics");
	return 0;
}
