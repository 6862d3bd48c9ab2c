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

/* Requests whose declared body is larger than this are refused (413)
 * before it is read, whatever the route. */
size_t api_max_body(const struct agent *agent);

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
