/* svc: the agent's operations, one function each, free of any transport.
 *
 * Every rpc of `service Graind` (proto/graind.proto) is one function here
 * that takes its typed request message and returns its typed response
 * message, or fails with a gerr whose status names the cause (400 bad
 * input, 401/403, 404, 409 in use, 412 stale generation, 413, 422 unusable
 * object or refused by the verifier, 500 the agent's own failure).
 * Transports (REST in api/, gRPC) decode a request, run it through
 * svc_run() and encode the answer; they never reach a subsystem.
 *
 * What makes an operation safe lives here: the caller's role is checked,
 * probe changes hold agent->probe_lock from reading the stored row to
 * writing it back, the kernel changes first and is rolled back when the
 * store then refuses, the collector hears of a change last, and every
 * authorised change leaves an audit record.
 *
 * Memory: requests are the caller's and are not changed; a response is
 * allocated by the operation (pbmsg_new) and handed to the caller, who
 * frees it with pbmsg_free(), also when the call failed half way. */
#ifndef GRAIND_SVC_H
#define GRAIND_SVC_H

#include <stdbool.h>
#include <protobuf-c/protobuf-c.h>

#include "proto/graind.pb-c.h"
#include "server/auth.h"
#include "server/util/codec.h"
#include "server/util/gerr.h"

struct agent;

/* One call of an operation: who calls, and what the operation tells the
 * transport beside its response. */
struct svc_call {
	struct agent *agent;
	/* Who calls (auth.h): role AUTH_NONE when the agent knows nobody by
	 * what was sent, and `verdict` says why. svc_call_identify() fills
	 * both. A scoped principal sees and changes only its probes. */
	struct auth_principal who;
	enum auth_verdict verdict;
	/* The names of the client certificate the transport verified (mutual
	 * TLS; server/util/peerid.h), NULL without one. Without a token, a
	 * name the credentials file lists is the caller. */
	const char *client_identity;
	/* The client's address as text, NULL on a unix socket: an address that
	 * fails to authenticate too often is slowed down (refusals.h). */
	const char *peer_address;
	/* The request as the transport received it ("POST", "/v1/objects"),
	 * for messages and the log of refusals; NULL: use the rpc's name. */
	const char *method;
	const char *path;
	/* The --config-dir file a change comes from ("file:/path"); NULL for
	 * API callers. What a file owns, only that file may change. */
	const char *manager;

	/* Set by the operation. */
	bool created;                   /* it created its resource (REST: 201) */
	unsigned retry_after_s;         /* with a 429: when to try again */
	char target[160];               /* what a change was about, for the audit log */
	/* With a 422 from the verifier: its report, the caller's to free. */
	Graind__VerifyReport *report;
};

typedef int (*svc_fn)(struct svc_call *call, const ProtobufCMessage *req,
		      ProtobufCMessage **resp, struct gerr *err);

/* How an operation meets a scoped principal (auth_principal.scopes). */
enum svc_scope {
	SVC_SCOPE_ANY,          /* nothing probe-specific: anyone of the role */
	SVC_SCOPE_PROBE,        /* about the probe the request names: in scope only */
	SVC_SCOPE_FILTER,       /* a listing: out-of-scope probes are left out */
	SVC_SCOPE_UNSCOPED,     /* about every probe (sinks, audit, metrics): unscoped only */
};

struct svc_method {
	unsigned index;                         /* of the rpc in service Graind */
	enum auth_role role;                    /* least role allowed; AUTH_NONE: anyone */
	bool changes;                           /* a change: audited */
	svc_fn run;                             /* NULL for a stream: see svc_watch_open */
	bool streams;                           /* server-streaming (WatchSamples, WatchProbes) */
	enum svc_scope scope;
	/* Answers from memory: no SQLite, no disk or network I/O (a look at
	 * /sys or /proc once a second is all), no lock held across either. A
	 * transport may run it on its event loop rather than hand it to a
	 * worker. */
	bool quick;
	/* A read whose answer is a function of a few figures: writes them to
	 * key[max] and returns how many bytes (0: build the answer afresh).
	 * Equal keys mean equal answers, so svc_run_encoded() gives the last
	 * one it encoded again. */
	size_t (*memo_key)(const struct svc_call *call, const ProtobufCMessage *req, void *key,
			   size_t max);
};

#define SVC_MEMO_KEY_MAX 2048

/* Who calls, from what the transport received: the Authorization header
 * (NULL: none), the verified client certificate names (NULL: none) and
 * the client's address (NULL: a unix socket). */
void svc_call_identify(struct svc_call *call, struct agent *agent, const char *authorization,
		       const char *client_identity, const char *peer_address);

/* Who a transport's connection last identified, by its authorization
 * header: a client sends the same one on every call, and hashing it once
 * is enough while the credentials stay as they were. Zeroed to start;
 * its client identity and address must be the connection's. */
struct svc_caller_cache {
	bool valid;
	uint64_t generation;            /* auth_generation() when identified */
	size_t auth_len;
	char auth[1024];
	struct svc_call call;
};

/* svc_call_identify(), with the cache's caller when the header is the
 * same (compared in constant time: a proxy may carry several clients'
 * calls on one connection) and it has not expired since; NULL: none.
 * *call is written whole: the caller need not clear it first. */
void svc_call_identify_cached(struct svc_call *call, struct svc_caller_cache *cache,
			      struct agent *agent, const char *authorization,
			      const char *client_identity, const char *peer_address);
/* Forget it, the token with it: the connection is gone. */
void svc_caller_cache_clear(struct svc_caller_cache *cache);

/* The caller of the agent's own changes (--config-dir): admin, unscoped. */
#define SVC_AGENT_CALLER { .name = "config-dir", .role = AUTH_ADMIN }

/* The rpc of service Graind that m runs: its name, request and response
 * message types. */
const ProtobufCMethodDescriptor *svc_rpc(const struct svc_method *m);

/* The operation named like an rpc of service Graind ("PutProbe"), or NULL. */
const struct svc_method *svc_method_find(const char *name);

/* The i-th operation, in the order of service Graind (NULL past the end). */
const struct svc_method *svc_method_at(size_t i);

/* 401 without a valid credential (counted and logged by authlog, never
 * stored; 429 for an address that failed too often), 403 when the role
 * is too low for m or `target` (the probe it is about; NULL: not known
 * yet) is out of the caller's scope (a refused change is audited against
 * `target`).
 * svc_run() checks this itself; a transport calls it first only to
 * refuse before it reads a request. */
int svc_authorize(struct svc_call *call, const struct svc_method *m, const char *target,
		  struct gerr *err);

/* Audit a change the transport refused before it could run it (a body
 * that does not decode, a wrong Content-Type): what svc_run() would have
 * recorded. Nothing for a read, or a caller without a valid credential. */
void svc_refused(struct svc_call *call, const struct svc_method *m, const char *target,
		 const struct gerr *err);

/* Run one operation for `call`: 401 without a valid credential, 403 when
 * the role is too low (see svc_authorize), else the operation itself; an
 * authorised change is audited whatever its outcome. Who sent no valid
 * credential is never recorded: that is noise anyone can make. On return
 * *resp (NULL on failure) is the caller's. */
int svc_run(struct svc_call *call, const struct svc_method *m, const ProtobufCMessage *req,
	    ProtobufCMessage **resp, struct gerr *err);

/* svc_run, with the response encoded in fmt and shared: data (NUL-
 * terminated) stays valid until svc_memo_release(memo). A method with a
 * memo_key answers from its memo (one per encoding) while its key is
 * unchanged, without a copy. Errors as svc_run's. */
struct svc_memo;
struct svc_answer {
	const char *data;
	size_t len;
	struct svc_memo *memo;          /* what holds data */
};

int svc_run_shared(struct svc_call *call, const struct svc_method *m,
		   const ProtobufCMessage *req, enum codec_format fmt, struct svc_answer *out,
		   struct gerr *err);
void svc_memo_release(struct svc_memo *memo);

/* svc_run_shared, copied after `headroom` bytes the
 * caller fills in (its framing): *out malloc'd and NUL-terminated, *len
 * bytes with the headroom. */
int svc_run_encoded(struct svc_call *call, const struct svc_method *m,
		    const ProtobufCMessage *req, enum codec_format fmt, size_t headroom,
		    uint8_t **out, size_t *len, struct gerr *err);

/* Whether the agent serves (GetHealth answers ok): false while its storage
 * fails. Never waits for the store; for gRPC's health service. */
struct agent;
bool svc_serving(struct agent *agent);

/* The operations. Names of probes and sinks: [a-z0-9][a-z0-9._-]{0,62};
 * object ids: 64 hex digits, either case. */
int svc_get_health(struct svc_call *call, const Graind__HealthRequest *req,
		   Graind__Health **resp, struct gerr *err);
int svc_get_status(struct svc_call *call, const Graind__GetStatusRequest *req,
		   Graind__AgentStatus **resp, struct gerr *err);
/* What GetStatus shows, as a memo key (svc_method.memo_key): the caller,
 * the uptime in seconds, the store's summary and health, the collector's
 * counters and the generations of the features, the config dir and the
 * trusted keys. 0 with sinks, whose lag moves with the clock. */
size_t svc_status_memo_key(const struct svc_call *call, const ProtobufCMessage *req, void *key,
			   size_t max);

int svc_fetch_object(struct svc_call *call, const Graind__FetchObjectRequest *req,
		     Graind__Object **resp, struct gerr *err);
int svc_upload_object(struct svc_call *call, const Graind__UploadObjectRequest *req,
		      Graind__Object **resp, struct gerr *err);
int svc_list_objects(struct svc_call *call, const Graind__ListObjectsRequest *req,
		     Graind__ListObjectsResponse **resp, struct gerr *err);
/* What a page of ListObjects shows, as a memo key: the store and its
 * objects version, the trusted keys' generation and the page asked for. */
size_t svc_objects_memo_key(const struct svc_call *call, const ProtobufCMessage *req, void *key,
			    size_t max);
int svc_get_object(struct svc_call *call, const Graind__GetObjectRequest *req,
		   Graind__Object **resp, struct gerr *err);
int svc_get_object_content(struct svc_call *call, const Graind__GetObjectContentRequest *req,
			   Graind__ObjectContent **resp, struct gerr *err);
int svc_verify_object(struct svc_call *call, const Graind__VerifyObjectRequest *req,
		      Graind__VerifyReport **resp, struct gerr *err);
/* 409 while a probe (of an uploaded or a built-in object) uses it. */
int svc_delete_object(struct svc_call *call, const Graind__DeleteObjectRequest *req,
		      Graind__Empty **resp, struct gerr *err);

/* Idempotent: the same spec twice is one generation. 412 when
 * if_generation is set and differs; 422 (with call->report) when the
 * verifier refuses a program. */
int svc_put_probe(struct svc_call *call, const Graind__PutProbeRequest *req,
		  Graind__Probe **resp, struct gerr *err);
int svc_list_probes(struct svc_call *call, const Graind__ListProbesRequest *req,
		    Graind__ListProbesResponse **resp, struct gerr *err);
int svc_get_probe(struct svc_call *call, const Graind__GetProbeRequest *req,
		  Graind__Probe **resp, struct gerr *err);
int svc_attach_probe(struct svc_call *call, const Graind__AttachProbeRequest *req,
		     Graind__Probe **resp, struct gerr *err);
int svc_detach_probe(struct svc_call *call, const Graind__DetachProbeRequest *req,
		     Graind__Probe **resp, struct gerr *err);
int svc_delete_probe(struct svc_call *call, const Graind__DeleteProbeRequest *req,
		     Graind__Empty **resp, struct gerr *err);
int svc_dump_map(struct svc_call *call, const Graind__DumpMapRequest *req,
		 Graind__MapDump **resp, struct gerr *err);

int svc_list_samples(struct svc_call *call, const Graind__ListSamplesRequest *req,
		     Graind__ListSamplesResponse **resp, struct gerr *err);

int svc_put_sink(struct svc_call *call, const Graind__PutSinkRequest *req,
		 Graind__Sink **resp, struct gerr *err);
int svc_list_sinks(struct svc_call *call, const Graind__ListSinksRequest *req,
		   Graind__ListSinksResponse **resp, struct gerr *err);
int svc_get_sink(struct svc_call *call, const Graind__GetSinkRequest *req,
		 Graind__Sink **resp, struct gerr *err);
int svc_delete_sink(struct svc_call *call, const Graind__DeleteSinkRequest *req,
		    Graind__Empty **resp, struct gerr *err);

/* ---------------------------------------------------------------- watches
 *
 * The server-streaming rpcs are served in steps, so that a transport
 * decides when it has room: each step emits the messages that follow the
 * watch's position (a replay first, then what is new) and moves it on;
 * a step that emits nothing means the transport waits until
 * svc_watch_changed() says otherwise, woken by the eventfd it subscribed
 * with svc_watch_subscribe(). Nothing is buffered per watch: a client
 * that reads slowly only lags, and one that reads nothing costs nothing. */
struct svc_watch;

/* One message of a watch. `id`: the sample's id or the event's seq (what
 * a client resumes after). Non-zero stops the step. */
typedef int (*svc_emit_fn)(void *ctx, const ProtobufCMessage *msg, uint64_t id);

/* A watch of m (m->streams) for the caller: the role checked as
 * svc_authorize() does, the request's filters checked (400). req stays
 * the caller's. */
int svc_watch_open(struct svc_call *call, const struct svc_method *m, const ProtobufCMessage *req,
		   struct svc_watch **out, struct gerr *err);
/* Emit up to max messages; the count (0: nothing new), -1 on failure
 * (err; the watch cannot go on) or when emit stopped it. */
int svc_watch_step(struct svc_watch *w, size_t max, svc_emit_fn emit, void *ctx,
		   struct gerr *err);
/* Whether a step may find something new since the last one. Cheap. */
bool svc_watch_changed(struct svc_watch *w);
/* The position a client would resume after (its last id or seq). */
uint64_t svc_watch_position(const struct svc_watch *w);
void svc_watch_free(struct svc_watch *w);
/* Write eventfd fd whenever a watch may have something new. */
int svc_watch_subscribe(struct agent *agent, int fd);
void svc_watch_unsubscribe(struct agent *agent, int fd);

/* At start: make the kernel match the stored probes (server/reconcile.h)
 * and tell watchers what became of each (WatchProbes: ADOPTED, ATTACHED,
 * DETACHED, ATTACH_FAILED). */
void svc_reconcile(struct agent *agent);

/* Measure every attached probe against its budget, flag (and, with a
 * DETACH budget, detach) those that went over: every BUDGET_TICK_MS, on
 * a thread of its own. */
void svc_check_budgets(struct agent *agent);

int svc_list_audit(struct svc_call *call, const Graind__ListAuditRequest *req,
		   Graind__ListAuditResponse **resp, struct gerr *err);
int svc_get_metrics(struct svc_call *call, const Graind__GetMetricsRequest *req,
		    Graind__MetricsText **resp, struct gerr *err);

#endif
