/* svc: the table of operations, the role check and the audit record. */
#include "server/svc/svc.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/agent.h"
#include "server/authlog.h"
#include "server/refusals.h"
#include "server/svc/svc_int.h"
#include "server/util/clock.h"
#include "server/util/keylimit.h"
#include "server/util/log.h"
#include "server/util/utf8.h"
#include "store/store.h"

/* Each operation behind the one signature of the table. The typed
 * functions stay the contract; these only convert the pointers. */
#define SVC_ENTRY(fn, Req, Resp)                                                     \
	static int fn##_entry(struct svc_call *call, const ProtobufCMessage *req,      \
			      ProtobufCMessage **resp, struct gerr *err)               \
	{                                                                              \
		Resp *out = NULL;                                                      \
		int ret = fn(call, (const Req *)req, &out, err);                       \
		*resp = out ? &out->base : NULL;                                       \
		return ret;                                                            \
	}

SVC_ENTRY(svc_get_health, Graind__HealthRequest, Graind__Health)
SVC_ENTRY(svc_get_status, Graind__GetStatusRequest, Graind__AgentStatus)
SVC_ENTRY(svc_upload_object, Graind__UploadObjectRequest, Graind__Object)
SVC_ENTRY(svc_list_objects, Graind__ListObjectsRequest, Graind__ListObjectsResponse)
SVC_ENTRY(svc_get_object, Graind__GetObjectRequest, Graind__Object)
SVC_ENTRY(svc_get_object_content, Graind__GetObjectContentRequest, Graind__ObjectContent)
SVC_ENTRY(svc_verify_object, Graind__VerifyObjectRequest, Graind__VerifyReport)
SVC_ENTRY(svc_delete_object, Graind__DeleteObjectRequest, Graind__Empty)
SVC_ENTRY(svc_put_probe, Graind__PutProbeRequest, Graind__Probe)
SVC_ENTRY(svc_list_probes, Graind__ListProbesRequest, Graind__ListProbesResponse)
SVC_ENTRY(svc_get_probe, Graind__GetProbeRequest, Graind__Probe)
SVC_ENTRY(svc_attach_probe, Graind__AttachProbeRequest, Graind__Probe)
SVC_ENTRY(svc_detach_probe, Graind__DetachProbeRequest, Graind__Probe)
SVC_ENTRY(svc_delete_probe, Graind__DeleteProbeRequest, Graind__Empty)
SVC_ENTRY(svc_dump_map, Graind__DumpMapRequest, Graind__MapDump)
SVC_ENTRY(svc_list_samples, Graind__ListSamplesRequest, Graind__ListSamplesResponse)
SVC_ENTRY(svc_put_sink, Graind__PutSinkRequest, Graind__Sink)
SVC_ENTRY(svc_list_sinks, Graind__ListSinksRequest, Graind__ListSinksResponse)
SVC_ENTRY(svc_get_sink, Graind__GetSinkRequest, Graind__Sink)
SVC_ENTRY(svc_delete_sink, Graind__DeleteSinkRequest, Graind__Empty)
SVC_ENTRY(svc_list_audit, Graind__ListAuditRequest, Graind__ListAuditResponse)
SVC_ENTRY(svc_get_metrics, Graind__GetMetricsRequest, Graind__MetricsText)
SVC_ENTRY(svc_fetch_object, Graind__FetchObjectRequest, Graind__Object)

/* In the order of service Graind; svc_method_at() and a unit test hold
 * the two together. */
#define RPC(i) (i)
#define R AUTH_READER
#define OP AUTH_OPERATOR
#define ADM AUTH_ADMIN
static const struct svc_method methods[] = {
	{ RPC(0), AUTH_NONE, false, svc_get_health_entry, .quick = true },
	{ RPC(1), R, false, svc_get_status_entry, .quick = true,
	  .memo_key = svc_status_memo_key },
	{ RPC(2), ADM, true, svc_upload_object_entry },
	{ RPC(3), R, false, svc_list_objects_entry, .memo_key = svc_objects_memo_key },
	{ RPC(4), R, false, svc_get_object_entry },
	{ RPC(5), R, false, svc_get_object_content_entry },
	{ RPC(6), OP, true, svc_verify_object_entry },
	{ RPC(7), ADM, true, svc_delete_object_entry },
	{ RPC(8), OP, true, svc_put_probe_entry, false, SVC_SCOPE_PROBE },
	{ RPC(9), R, false, svc_list_probes_entry, false, SVC_SCOPE_FILTER },
	{ RPC(10), R, false, svc_get_probe_entry, false, SVC_SCOPE_PROBE },
	{ RPC(11), OP, true, svc_attach_probe_entry, false, SVC_SCOPE_PROBE },
	{ RPC(12), OP, true, svc_detach_probe_entry, false, SVC_SCOPE_PROBE },
	{ RPC(13), OP, true, svc_delete_probe_entry, false, SVC_SCOPE_PROBE },
	{ RPC(14), R, false, svc_dump_map_entry, false, SVC_SCOPE_PROBE },
	{ RPC(15), R, false, svc_list_samples_entry, false, SVC_SCOPE_FILTER },
	{ RPC(16), OP, true, svc_put_sink_entry, false, SVC_SCOPE_UNSCOPED },
	{ RPC(17), R, false, svc_list_sinks_entry },
	{ RPC(18), R, false, svc_get_sink_entry },
	{ RPC(19), OP, true, svc_delete_sink_entry, false, SVC_SCOPE_UNSCOPED },
	{ RPC(20), R, false, svc_list_audit_entry, false, SVC_SCOPE_UNSCOPED },
	{ RPC(21), R, false, svc_get_metrics_entry, false, SVC_SCOPE_UNSCOPED },
	{ RPC(22), R, false, NULL, true, SVC_SCOPE_FILTER },
	{ RPC(23), R, false, NULL, true, SVC_SCOPE_FILTER },
	{ RPC(24), ADM, true, svc_fetch_object_entry },
};
#undef R
#undef OP
#undef ADM
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

const ProtobufCMethodDescriptor *svc_rpc(const struct svc_method *m)
{
	return &graind__graind__descriptor.methods[m->index];
}

const struct svc_method *svc_method_at(size_t i)
{
	return i < N_METHODS && i < graind__graind__descriptor.n_methods ? &methods[i] : NULL;
}

const struct svc_method *svc_method_find(const char *name)
{
	for (size_t i = 0; i < N_METHODS; i++)
		if (strcmp(svc_rpc(&methods[i])->name, name) == 0)
			return &methods[i];
	return NULL;
}

/* The request's name field ("name", "sha256" or "probe"), the default
 * audit target of a change. */
static const char *request_name(const ProtobufCMessage *req)
{
	static const char *const fields[] = { "name", "sha256", "probe" };

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const ProtobufCFieldDescriptor *f =
			protobuf_c_message_descriptor_get_field_by_name(req->descriptor, fields[i]);

		if (f && f->type == PROTOBUF_C_TYPE_STRING &&
		    f->label != PROTOBUF_C_LABEL_REPEATED)
			return *(const char *const *)((const char *)req + f->offset);
	}
	return "";
}

/* Only authorised changes are recorded: who sent no valid credential is
 * noise anyone can make, and the audit log must not be theirs to fill. */
static void audit(struct svc_call *call, const struct svc_method *m, const char *what,
		  int status, const char *message)
{
	if (!m->changes || call->who.role == AUTH_NONE || !call->agent)
		return;
	char target[sizeof(call->target)], msg[GERR_MSG_MAX];
	struct gerr aerr;

	/* The audit log is read back as JSON: only valid text goes in. */
	snprintf(target, sizeof(target), "%s", what ? what : "");
	snprintf(msg, sizeof(msg), "%s", message);
	utf8_scrub(target);
	utf8_scrub(msg);
	if (store_audit_append(call->agent->store, auth_role_name(call->who.role), call->who.name,
			       svc_rpc(m)->name, target, status, msg, &aerr) < 0 &&
	    aerr.status != 503)
		log_error("msg=\"cannot write audit record\" error=\"%s\"", aerr.msg);
}

/* The status of a success, as REST answers it. */
static int success_status(const struct svc_call *call, const struct svc_method *m)
{
	if (call->created)
		return 201;
	return svc_rpc(m)->output == &graind__empty__descriptor ? 204 : 200;
}

void svc_call_identify(struct svc_call *call, struct agent *agent, const char *authorization,
		       const char *client_identity, const char *peer_address)
{
	call->agent = agent;
	call->client_identity = client_identity;
	call->peer_address = peer_address;
	call->verdict = auth_identify(agent->auth, authorization, client_identity, &call->who);
}

/* a[n] == b[n] in a time that depends on n only: a word at a time. */
static bool same_bytes(const char *a, const char *b, size_t n)
{
	uint64_t diff = 0, x, y;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		diff |= x ^ y;
	}
	for (; i < n; i++)
		diff |= (uint8_t)(a[i] ^ b[i]);
	return diff == 0;
}

void svc_call_identify_cached(struct svc_call *call, struct svc_caller_cache *cache,
			      struct agent *agent, const char *authorization,
			      const char *client_identity, const char *peer_address)
{
	size_t len = authorization ? strlen(authorization) : 0;
	uint64_t generation;

	if (!cache || !agent->auth || !authorization || len >= sizeof(cache->auth)) {
		memset(call, 0, sizeof(*call));
		svc_call_identify(call, agent, authorization, client_identity, peer_address);
		return;
	}
	generation = auth_generation(agent->auth);
	if (cache->valid && cache->generation == generation && len == cache->auth_len &&
	    same_bytes(authorization, cache->auth, len) &&
	    (!cache->call.who.expires_ms || clock_unix_ms() < cache->call.who.expires_ms)) {
		*call = cache->call;
		return;
	}
	/* Cleared only on a miss: a hit is a whole copy already. */
	memset(call, 0, sizeof(*call));
	svc_call_identify(call, agent, authorization, client_identity, peer_address);
	/* The generation read before: a reload meanwhile only costs a miss. */
	cache->valid = true;
	cache->generation = generation;
	cache->auth_len = len;
	memcpy(cache->auth, authorization, len);
	cache->call = *call;
}

void svc_caller_cache_clear(struct svc_caller_cache *cache)
{
	explicit_bzero(cache, sizeof(*cache));
}

int svc_out_of_scope(const struct svc_call *call, const char *probe, struct gerr *err)
{
	char scope[AUTH_SCOPES_MAX * AUTH_SCOPE_MAX];

	return gerr_set(err, 403, "principal %s may only see and change probes matching %s, "
			"not %s", call->who.name, auth_scope_text(&call->who, scope, sizeof(scope)),
			probe);
}

/* 401 for a caller the agent does not know (429 once its address has
 * failed too often). */
static int unauthenticated(struct svc_call *call, const struct svc_method *m, struct gerr *err)
{
	bool spelled = call->method && call->path;
	char when[CLOCK_TEXT_MAX];

	if (call->agent &&
	    !keylimit_take(call->agent->auth_failures, call->peer_address, &call->retry_after_s)) {
		refusal_count(REFUSAL_AUTH_FAILURES);
		return gerr_set(err, 429, "too many requests without a valid token from %s "
				"(%d a second at most): retry in %u s", call->peer_address,
				AUTH_FAILURES_PER_S, call->retry_after_s);
	}
	authlog_refused(call->verdict == AUTH_NO_CREDENTIAL ? AUTHLOG_MISSING :
			call->verdict == AUTH_EXPIRED ? AUTHLOG_EXPIRED : AUTHLOG_INVALID,
			spelled ? call->method : "", spelled ? call->path : svc_rpc(m)->name);
	switch (call->verdict) {
	case AUTH_NO_CREDENTIAL:
		return gerr_set(err, 401, "missing token: send 'Authorization: Bearer <token>'");
	case AUTH_EXPIRED:
		clock_format(call->who.expires_ms, when);
		return gerr_set(err, 401, "the token of principal %s expired at %s: ask for a "
				"new one (graind token add)", call->who.name, when);
	default:
		return gerr_set(err, 401, "invalid token: use a token from the agent's admin.token "
				"or reader.token, or one its --auth-file lists");
	}
}

int svc_authorize(struct svc_call *call, const struct svc_method *m, const char *target,
		  struct gerr *err)
{
	bool spelled = call->method && call->path;
	const struct auth_principal *who = &call->who;
	char scope[AUTH_SCOPES_MAX * AUTH_SCOPE_MAX];

	if (m->role == AUTH_NONE)
		return 0;
	if (who->role == AUTH_NONE)
		return unauthenticated(call, m, err);
	if (who->role < m->role) {
		gerr_set(err, 403, "principal %s (role %s) may not call %s%s%s: it needs the %s role",
			 who->name, auth_role_name(who->role), spelled ? call->method : "",
			 spelled ? " " : "", spelled ? call->path : svc_rpc(m)->name,
			 auth_role_name(m->role));
		goto refused;
	}
	if (who->n_scopes && m->scope == SVC_SCOPE_UNSCOPED) {
		gerr_set(err, 403, "principal %s may only see and change probes matching %s; %s is "
			 "for principals without a scope", who->name,
			 auth_scope_text(who, scope, sizeof(scope)), svc_rpc(m)->name);
		goto refused;
	}
	if (m->scope == SVC_SCOPE_PROBE && target && !auth_in_scope(who, target)) {
		svc_out_of_scope(call, target, err);
		goto refused;
	}
	return 0;
refused:
	audit(call, m, target, err->status, err->msg);
	return -1;
}

/* ---------------------------------------------------------------- memos */

/* An encoded answer, shared by the memo and the callers it is given to
 * (svc_answer.memo): it never changes once made, and goes with its last
 * reference, so that memo_lock is held for no copy. */
struct svc_memo {
	atomic_uint refs;
	uint8_t key[SVC_MEMO_KEY_MAX];
	size_t key_len;
	char *encoded;          /* NUL-terminated */
	size_t len;
};

#define N_ENCODINGS 2   /* enum codec_format */

/* The last answer of each method with a memo_key, in each encoding. */
static pthread_mutex_t memo_lock = PTHREAD_MUTEX_INITIALIZER;
static struct svc_memo *memos[sizeof(methods) / sizeof(methods[0])][N_ENCODINGS];

static void memo_unref(struct svc_memo *mo)
{
	if (mo && atomic_fetch_sub(&mo->refs, 1) == 1) {
		free(mo->encoded);
		free(mo);
	}
}

/* A reference to the memo of m in fmt when its key is `key`; NULL when none. */
static struct svc_memo *memo_find(const struct svc_method *m, enum codec_format fmt,
				  const void *key, size_t key_len)
{
	struct svc_memo *mo;

	pthread_mutex_lock(&memo_lock);
	mo = memos[m - methods][fmt];
	if (mo)
		atomic_fetch_add(&mo->refs, 1);
	pthread_mutex_unlock(&memo_lock);
	if (mo && (mo->key_len != key_len || memcmp(mo->key, key, key_len))) {
		memo_unref(mo);
		mo = NULL;
	}
	return mo;
}

/* mo becomes the memo of m in fmt; the caller keeps its reference. */
static void memo_keep(const struct svc_method *m, enum codec_format fmt, struct svc_memo *mo)
{
	struct svc_memo *old;

	atomic_fetch_add(&mo->refs, 1);
	pthread_mutex_lock(&memo_lock);
	old = memos[m - methods][fmt];
	memos[m - methods][fmt] = mo;
	pthread_mutex_unlock(&memo_lock);
	memo_unref(old);
}

/* resp encoded in fmt, NUL-terminated, as a new answer of one reference. */
static struct svc_memo *encode(const ProtobufCMessage *resp, enum codec_format fmt,
			       struct gerr *err)
{
	struct svc_memo *mo = calloc(1, sizeof(*mo));

	if (!mo) {
		gerr_set(err, 500, "out of memory for the response");
		return NULL;
	}
	if (fmt == CODEC_PROTOBUF) {
		mo->len = protobuf_c_message_get_packed_size(resp);
		mo->encoded = malloc(mo->len + 1);
		if (mo->encoded) {
			protobuf_c_message_pack(resp, (uint8_t *)mo->encoded);
			mo->encoded[mo->len] = '\0';
		} else {
			gerr_set(err, 500, "out of memory for the response");
		}
	} else {
		codec_encode(fmt, resp, &mo->encoded, &mo->len, err);
	}
	if (!mo->encoded) {
		free(mo);
		return NULL;
	}
	atomic_init(&mo->refs, 1);
	return mo;
}

int svc_run_shared(struct svc_call *call, const struct svc_method *m,
		   const ProtobufCMessage *req, enum codec_format fmt, struct svc_answer *out,
		   struct gerr *err)
{
	uint8_t key[SVC_MEMO_KEY_MAX], after[SVC_MEMO_KEY_MAX];
	size_t key_len = 0;
	ProtobufCMessage *resp = NULL;
	struct svc_memo *mo = NULL;

	memset(out, 0, sizeof(*out));
	if (m->memo_key && !m->changes) {
		/* A read's target matters only for a probe's scope (a refused
		 * read is not audited): no field lookup per call otherwise. */
		if (svc_authorize(call, m, m->scope == SVC_SCOPE_PROBE ? request_name(req) : NULL,
				  err) < 0)
			return -1;
		key_len = m->memo_key(call, req, key, sizeof(key));
		if (key_len)
			mo = memo_find(m, fmt, key, key_len);
	}
	if (!mo) {
		if (svc_run(call, m, req, &resp, err) < 0)
			return -1;
		mo = encode(resp, fmt, err);
		pbmsg_free(resp);
		if (!mo)
			return -1;
		/* Kept only when nothing moved while it was built: the answer
		 * is then the one of that key. */
		if (key_len && m->memo_key(call, req, after, sizeof(after)) == key_len &&
		    !memcmp(key, after, key_len)) {
			memcpy(mo->key, key, key_len);
			mo->key_len = key_len;
			memo_keep(m, fmt, mo);
		}
	}
	out->data = mo->encoded;
	out->len = mo->len;
	out->memo = mo;
	return 0;
}

void svc_memo_release(struct svc_memo *memo)
{
	memo_unref(memo);
}

int svc_run_encoded(struct svc_call *call, const struct svc_method *m,
		    const ProtobufCMessage *req, enum codec_format fmt, size_t headroom,
		    uint8_t **out, size_t *len, struct gerr *err)
{
	struct svc_answer a;

	*out = NULL;
	*len = 0;
	if (svc_run_shared(call, m, req, fmt, &a, err) < 0)
		return -1;
	*out = malloc(headroom + a.len + 1);
	if (*out) {
		memcpy(*out + headroom, a.data, a.len + 1);
		*len = headroom + a.len;
	}
	svc_memo_release(a.memo);
	return *out ? 0 : gerr_set(err, 500, "out of memory for the response");
}

int svc_run(struct svc_call *call, const struct svc_method *m, const ProtobufCMessage *req,
	    ProtobufCMessage **resp, struct gerr *err)
{
	int ret;

	*resp = NULL;
	if (svc_authorize(call, m, request_name(req), err) < 0)
		return -1;
	if (m->streams)
		return gerr_set(err, 400, "%s is a stream: it is served by svc_watch_open",
				svc_rpc(m)->name);
	/* A client that changes too fast waits; --config-dir's passes do not. */
	if (m->changes && !call->manager && call->agent->write_limit &&
	    !keylimit_take(call->agent->write_limit, call->who.name, &call->retry_after_s)) {
		gerr_set(err, 429, "too many changes: principal %s may make %u a second "
			 "(--write-rate); retry in %u s", call->who.name, call->agent->cfg.write_rate,
			 call->retry_after_s);
		audit(call, m, request_name(req), 429, err->msg);
		return -1;
	}
	ret = m->run(call, req, resp, err);
	if (ret < 0) {
		pbmsg_free(*resp);
		*resp = NULL;
	}
	audit(call, m, call->target[0] ? call->target : request_name(req),
		      ret < 0 ? (err->status ? err->status : 500) : success_status(call, m),
		      ret < 0 ? err->msg : "");
	return ret;
}

void svc_refused(struct svc_call *call, const struct svc_method *m, const char *target,
		 const struct gerr *err)
{
	audit(call, m, target, err->status ? err->status : 500, err->msg);
}

int svc_check_name(const char *what, const char *name, struct gerr *err)
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
			"%s name must match [a-z0-9][a-z0-9._-]{0,62} (lowercase letters, digits, '.', '_', '-')",
			what);
}

int svc_page_size(const char *field, uint32_t asked, unsigned dflt, unsigned max,
		  unsigned *size, struct gerr *err)
{
	*size = asked ? asked : dflt;
	if (asked > max)
		return gerr_set(err, 400, "%s must be 1 to %u, got %u", field, max, asked);
	return 0;
}
