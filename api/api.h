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
	/* The verified client certificate's names (server/util/peerid.h),
	 * NULL without one. */
	const char *client_identity;
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
	char allow[64];                 /* Allow header for 405, or "" */
	char location[160];             /* Location header for 201, or "" */
};

/* How many body bytes a request may carry, judged from its method, path
 * and token alone: the upload limit on the upload route for an admin,
 * a message-sized limit on other routes, and 0 when the request will be
 * refused anyway (unknown route, missing or insufficient token). The
 * transport reads no more than this, so nobody without a token can make
 * the agent buffer a large body. */
size_t api_body_limit(const struct agent *agent, const char *method, const char *path,
		      const char *authorization);

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
