/* fetch: bounded GETs over libcurl (server/util/curlso), for objects from
 * URLs (POST /v1/objects:fetch) and from OCI registries (server/oci/).
 *
 * https is checked against the system's CAs or a CA file of its own;
 * plain http only when allowed; at most FETCH_REDIRECTS redirects, each
 * to a scheme allowed too; a body of at most `max_bytes`, refused as soon
 * as a Content-Length says it is more; FETCH_TIMEOUT_S in all. Messages
 * name the URL without any user:password in it. */
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

/* An answer, whatever its status. */
struct fetch_reply {
	long status;
	void *body;                     /* malloc'd; fetch_reply_clear() frees */
	size_t len;
	char content_type[128];         /* without parameters, "" none */
	char www_authenticate[1024];    /* the first challenge header, "" none */
};

void fetch_reply_clear(struct fetch_reply *r);

/* GET `url` with the extra request `headers` (NULL-terminated, may be
 * NULL) and `accept` (may be NULL). 0 for any answer (r->status says
 * which); -1 when there is none: 400 a URL that may not be fetched (not
 * http(s), http not allowed, too long); 413 a body over max_bytes; 502 a
 * redirect too many or a transfer that failed (no connection, TLS); 504
 * too slow; 500 no libcurl. */
int fetch_get(const struct fetch_opts *o, const char *url, const char *accept,
	      const char *const *headers, struct fetch_reply *r, struct gerr *err);

/* The body of `url` when the answer is 200 (*bytes malloc'd, caller
 * frees); a 502 naming the status otherwise; the errors of fetch_get. */
int fetch_url(const struct fetch_opts *o, const char *url, void **bytes, size_t *len,
	      struct gerr *err);

/* `url` for messages, logs and an object's origin: without the
 * user:password@ of its authority, nor its query and fragment (where a
 * presigned URL keeps its signature), cut to fit. */
void fetch_display_url(const char *url, char *out, size_t size);

#endif
