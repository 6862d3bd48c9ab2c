/* client: one HTTP request to each of many graind hosts, in parallel.
 *
 * A host is "http://host:port" (or https://) or "unix:/path/to/graind.sock".
 * client_run() sends the same request to every host through one libcurl
 * multi handle, with at most `parallel` transfers in flight and each host
 * given `timeout_ms` from the moment its transfer starts. Requests ask for
 * protobuf (Accept: application/x-protobuf); a reply is kept as it came. */
#ifndef GRAINCTL_CLIENT_H
#define GRAINCTL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct client_request {
	const char *method;        /* "GET", "PUT", "POST", "DELETE" */
	const char *path;          /* "/v1/probes/x", query included, escaped */
	const void *body;          /* NULL: no body */
	size_t body_len;
	const char *content_type;  /* of the body */
	const char *token;         /* bearer token, NULL: none */
	const char *if_match;      /* If-Match header, NULL: none */
	const char *accept;        /* NULL: protobuf */
	const char *last_event_id; /* Last-Event-ID header, NULL: none */
};

struct client_reply {
	const char *host;          /* as given */
	int status;                /* HTTP status; 0 when no answer came */
	char *content_type;        /* malloc'd, NULL when none */
	char *body;                /* malloc'd, NUL-terminated, body_len bytes */
	size_t body_len;
	char transport_error[256]; /* set when status is 0 */
	long elapsed_ms;
};

/* Send `req` to each of the n hosts; replies[i] is hosts[i]'s. Returns 0, or
 * -1 when libcurl could not be set up (every reply then has status 0 and a
 * transport_error). Free each reply with client_reply_clear(). */
int client_run(const char *const *hosts, size_t n, const struct client_request *req,
	       int parallel, long timeout_ms, struct client_reply *replies);

/* The same with a request of its own for each host: reqs[i] goes to
 * hosts[i]; a request whose method is NULL is not sent (its reply keeps
 * status 0 and an empty transport_error). */
int client_run_each(const char *const *hosts, size_t n, const struct client_request *reqs,
		    int parallel, long timeout_ms, struct client_reply *replies);

void client_reply_clear(struct client_reply *r);

/* Follow one host's stream (Server-Sent Events): the body of a 200 answer
 * goes to on_data piece by piece as it arrives (false stops the stream);
 * any other answer is kept in *reply as client_run() keeps it. Returns
 * when the stream ends: the agent ended it, the connection failed
 * (reply->transport_error), nothing came for `idle_ms` (the agent sends
 * a keep-alive every 15 s), or on_data stopped it. connect_timeout_ms
 * bounds the connect alone. -1 when libcurl could not be set up. */
int client_stream(const char *host, const struct client_request *req, long connect_timeout_ms,
		  long idle_ms, bool (*on_data)(void *ctx, const char *data, size_t n), void *ctx,
		  struct client_reply *reply);

/* For every https:// request from now on: the CA file that verifies the
 * agents (NULL: the system's), and a client certificate and its key for
 * mutual TLS (NULL: none). The strings must outlive the requests. */
void client_set_tls(const char *cacert, const char *cert, const char *key);

/* `s` escaped for a URL path segment or query value, malloc'd (NULL when
 * out of memory). */
char *client_escape(const char *s);

/* 0 when `host` is a URL client_run() accepts, else -1. */
int client_host_valid(const char *host);

#endif
