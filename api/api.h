/* api: the REST API, independent of the transport.
 *
 * The HTTP layer (server/http.c) turns each request into a struct
 * api_request and calls api_handle(), which routes it, checks the token,
 * decodes the body (JSON or protobuf, by Content-Type) into the route's
 * request message, runs the handler, and encodes the reply (JSON or
 * protobuf, by Accept) or a Status error body. Handlers (api/h_*.c) take
 * and return protobuf-c messages; they never see JSON or HTTP. */
#ifndef GRAIND_API_H
#define GRAIND_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent;

struct api_request {
	const char *method;
	const char *path;               /* percent-decoded, without the query */
	const char *content_type;       /* header values, NULL when absent */
	const char *accept;
	const char *authorization;
	const char *if_match;
	const char *if_none_match;      /* the console's revalidations */
	const char *last_event_id;      /* Server-Sent Events' reconnect header */
	const char *signature;          /* Graind-Signature: an upload's, in base64 */
	/* The verified client certificate's names (server/util/peerid.h),
	 * NULL without one. */
	const char *client_identity;
	/* The client's address as text ("198.18.0.2"); NULL on a unix socket. */
	const char *peer_address;
	const uint8_t *body;
	size_t body_len;
	/* A percent-decoded query parameter, or NULL when absent. */
	const char *(*query)(void *query_ctx, const char *key);
	void *query_ctx;
};

struct api_response {
	int status;
	const char *content_type;       /* static string */
	char *body;                     /* malloc'd, NULL when empty */
	size_t body_len;
	bool body_static;               /* body is embedded: never freed */
	/* body belongs to this shared answer (svc_run_shared), NULL: none;
	 * the transport gives it back with svc_memo_release(), not free(). */
	struct svc_memo *shared;
	const char *etag;               /* ETag header (static), or NULL */
	const char *cache_control;      /* static; NULL: "no-store" */
	char allow[64];                 /* Allow header for 405, or "" */
	char location[160];             /* Location header for 201, or "" */
	unsigned retry_after_s;         /* Retry-After of a 429, or 0 */
	/* A watch route (GET /v1/samples:watch, /v1/probes:watch) answered
	 * 200: stream it as Server-Sent Events with api_watch_next(); the
	 * transport frees it with api_watch_free(). NULL otherwise. */
	struct api_watch *watch;
};

/* ---------------------------------------------------------------- watches
 *
 * Each message of the watch is one event: `id:` the sample id or the
 * probe event's seq (what Last-Event-ID resumes after), `event:` sample
 * or probe, `data:` its proto3 JSON on one line. A failure ends the
 * stream with an `event: error` whose data is a graind.Status. */
struct api_watch;

/* The next events into *text (malloc'd, *len bytes): 1 with some, 0 when
 * nothing is new (wait until api_watch_changed()), -1 when the stream
 * ends (*text may hold its error event). Runs the store query: may take
 * a few milliseconds. */
int api_watch_next(struct api_watch *w, char **text, size_t *len);
/* Whether api_watch_next() may find something new. Cheap. */
bool api_watch_changed(struct api_watch *w);
void api_watch_free(struct api_watch *w);

/* How many body bytes a request may carry, judged from its method, path
 * and caller alone (token, or client certificate names): the upload
 * limit on the upload route for an admin, a message-sized limit on other
 * routes, and 0 when the request will be refused anyway (unknown route,
 * no caller or a role too low). The transport reads no more than this,
 * so nobody without a credential can make the agent buffer a large body. */
size_t api_body_limit(const struct agent *agent, const char *method, const char *path,
		      const char *authorization, const char *client_identity);

/* Answer one request. Never fails: every outcome is a response. */
void api_handle(struct agent *agent, const struct api_request *req,
		struct api_response *resp);

/* An error response (a graind.Status in the format `accept` asks for),
 * for refusals the transport makes itself, such as a body over the limit. */
void api_refuse(const char *accept, int status, const char *msg,
		struct api_response *resp);

/* Free what api_handle put into resp. */
void api_response_clear(struct api_response *resp);

#endif
