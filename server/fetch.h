/* fetch: an object's bytes from an http(s) URL (POST /v1/objects:fetch).
 *
 * One GET through libcurl (server/util/curlso): https checked against the
 * system's CAs or a CA file of its own; http only when allowed; at most
 * FETCH_REDIRECTS redirects, each to a scheme allowed too; a body of at
 * most `max_bytes`, refused as soon as a Content-Length says it is more;
 * FETCH_TIMEOUT_S in all. The caller checks the digest. Messages name the
 * URL without any user:password in it. */
#ifndef GRAIND_FETCH_H
#define GRAIND_FETCH_H

#include <stdbool.h>
#include <stddef.h>

#include "server/util/gerr.h"

#define FETCH_REDIRECTS 5
#define FETCH_CONNECT_TIMEOUT_S 10L
#define FETCH_TIMEOUT_S 120L
#define FETCH_URL_MAX 2048

struct fetch_opts {
	const char *ca_file;    /* NULL or "": the system's CAs */
	bool allow_http;        /* plain http:// URLs too */
	size_t max_bytes;       /* the largest body taken */
};

/* The body of `url`, in *bytes (malloc'd, caller frees; *len bytes).
 * 400: a URL that may not be fetched (not http(s), http not allowed, too
 * long); 413: a body over max_bytes; 502: the server's answer was not 200,
 * a redirect too many, or the transfer failed (no connection, TLS); 504:
 * it took too long; 500: no libcurl. */
int fetch_url(const struct fetch_opts *o, const char *url, void **bytes, size_t *len,
	      struct gerr *err);

/* `url` for messages and logs: without the user:password@ of its
 * authority, if any, and cut to fit. */
void fetch_display_url(const char *url, char *out, size_t size);

#endif
