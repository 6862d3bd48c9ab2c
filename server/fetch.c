/* fetch: GETs bounded in every way (see fetch.h). */
#include "server/fetch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>

#include "server/util/curlso.h"

#ifndef GRAIND_VERSION
#define GRAIND_VERSION "dev"
#endif

struct body {
	uint8_t *data;
	size_t len, cap, max;
	bool too_large, out_of_memory;
};

static size_t body_write(char *src, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;

	if (n > b->max - b->len) {
		b->too_large = true;
		return 0;               /* CURLE_WRITE_ERROR */
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 65536;
		uint8_t *grown;

		while (cap < b->len + n)
			cap *= 2;
		if (cap > b->max)
			cap = b->max;
		grown = realloc(b->data, cap ? cap : 1);
		if (!grown) {
			b->out_of_memory = true;
			return 0;
		}
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, src, n);
	b->len += n;
	return n;
}

/* The headers of the answer: the last response's only (a redirect's go). */
static size_t header_seen(char *line, size_t size, size_t nmemb, void *arg)
{
	struct fetch_reply *r = arg;
	size_t n = size * nmemb, k, end, cap;
	char *field;

	if (n >= 5 && strncasecmp(line, "HTTP/", 5) == 0) {
		r->content_type[0] = r->www_authenticate[0] = '\0';
		return n;
	}
	if (n > 13 && strncasecmp(line, "content-type:", 13) == 0) {
		field = r->content_type, cap = sizeof(r->content_type), k = 13;
	} else if (n > 17 && strncasecmp(line, "www-authenticate:", 17) == 0 &&
		   !r->www_authenticate[0]) {
		field = r->www_authenticate, cap = sizeof(r->www_authenticate), k = 17;
	} else {
		return n;
	}
	while (k < n && (line[k] == ' ' || line[k] == '\t'))
		k++;
	/* The value up to the line's end (a content type's up to ';'). */
	end = k;
	while (end < n && line[end] != '\r' && line[end] != '\n' &&
	       !(field == r->content_type && line[end] == ';'))
		end++;
	while (end > k && isspace((unsigned char)line[end - 1]))
		end--;
	snprintf(field, cap, "%.*s", (int)(end - k), line + k);
	return n;
}

void fetch_reply_clear(struct fetch_reply *r)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
}

void fetch_display_url(const char *url, char *out, size_t size)
{
	const char *authority = strstr(url, "://");
	const char *at, *end;

	if (!authority) {
		snprintf(out, size, "%.200s", url);
		return;
	}
	authority += 3;
	end = authority + strcspn(authority, "/?#");
	at = memchr(authority, '@', (size_t)(end - authority));
	/* The user:password goes, the '@' after it too; and the query and
	 * fragment, where presigned URLs keep their signatures. */
	if (at)
		snprintf(out, size, "%.*s%.*s", (int)(authority - url), url,
			 (int)strcspn(at + 1, "?#"), at + 1);
	else
		snprintf(out, size, "%.*s", (int)strcspn(url, "?#"), url);
}

static int check_scheme(const struct fetch_opts *o, const char *url, const char *shown,
			struct gerr *err)
{
	if (strlen(url) > FETCH_URL_MAX)
		return gerr_set(err, 400, "url is longer than %d characters", FETCH_URL_MAX);
	if (strncasecmp(url, "https://", 8) == 0)
		return 0;
	if (strncasecmp(url, "http://", 7) == 0) {
		if (o->allow_http)
			return 0;
		return gerr_set(err, 400, "%s: plain http is refused; use https, or start "
				"graind with --fetch-allow-http", shown);
	}
	return gerr_set(err, 400, "%s: url must be https:// (or http:// with "
			"--fetch-allow-http)", shown);
}

static CURLcode configure(const struct curlso *curl, CURL *c, const struct fetch_opts *o,
			  const char *url, struct curl_slist *headers, struct body *b,
			  struct fetch_reply *r, char *errbuf)
{
	const char *schemes = o->allow_http ? "http,https" : "https";

	CURLSO_SETOPT(c, CURLOPT_URL, url);
	CURLSO_SETOPT(c, CURLOPT_PROTOCOLS_STR, schemes);
	CURLSO_SETOPT(c, CURLOPT_REDIR_PROTOCOLS_STR, schemes);
	CURLSO_SETOPT(c, CURLOPT_FOLLOWLOCATION, 1L);
	CURLSO_SETOPT(c, CURLOPT_MAXREDIRS, (long)FETCH_REDIRECTS);
	CURLSO_SETOPT(c, CURLOPT_NOSIGNAL, 1L);
	CURLSO_SETOPT(c, CURLOPT_ERRORBUFFER, errbuf);
	CURLSO_SETOPT(c, CURLOPT_USERAGENT, "graind/" GRAIND_VERSION);
	CURLSO_SETOPT(c, CURLOPT_CONNECTTIMEOUT, FETCH_CONNECT_TIMEOUT_S);
	CURLSO_SETOPT(c, CURLOPT_TIMEOUT, FETCH_TIMEOUT_S);
	CURLSO_SETOPT(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_bytes);
	CURLSO_SETOPT(c, CURLOPT_WRITEFUNCTION, body_write);
	CURLSO_SETOPT(c, CURLOPT_WRITEDATA, b);
	CURLSO_SETOPT(c, CURLOPT_HEADERFUNCTION, header_seen);
	CURLSO_SETOPT(c, CURLOPT_HEADERDATA, r);
	if (headers)
		CURLSO_SETOPT(c, CURLOPT_HTTPHEADER, headers);
	if (o->ca_file && o->ca_file[0])
		CURLSO_SETOPT(c, CURLOPT_CAINFO, o->ca_file);
	return CURLE_OK;
}

static int transfer_error(const struct curlso *curl, CURLcode rc, const char *errbuf,
			  const struct body *b, const struct fetch_opts *o, const char *shown,
			  struct gerr *err)
{
	const char *why = errbuf[0] ? errbuf : curl->easy_strerror(rc);

	if (b->too_large || rc == CURLE_FILESIZE_EXCEEDED)
		return gerr_set(err, 413, "%s: the object is over the %zu-byte limit "
				"(--max-object-size)", shown, o->max_bytes);
	if (b->out_of_memory)
		return gerr_set(err, 500, "%s: out of memory", shown);
	switch (rc) {
	case CURLE_TOO_MANY_REDIRECTS:
		return gerr_set(err, 502, "%s: more than %d redirects", shown, FETCH_REDIRECTS);
	case CURLE_UNSUPPORTED_PROTOCOL:
		return gerr_set(err, 502, "%s: redirected to a scheme that is not allowed "
				"(%s)%s", shown, why, o->allow_http ? "" :
				"; plain http needs --fetch-allow-http");
	case CURLE_OPERATION_TIMEDOUT:
		return gerr_set(err, 504, "%s: %s", shown, why);
	default:
		return gerr_set(err, 502, "%s: %s", shown, why);
	}
}

/* The request's headers as libcurl takes them; NULL and *failed when out
 * of memory. */
static struct curl_slist *header_list(const struct curlso *curl, const char *accept,
				      const char *const *headers, bool *failed)
{
	struct curl_slist *list = NULL, *grown;
	char line[512];

	*failed = false;
	if (accept) {
		snprintf(line, sizeof(line), "Accept: %s", accept);
		if (!(list = curl->slist_append(NULL, line)))
			goto fail;
	}
	for (size_t i = 0; headers && headers[i]; i++) {
		if (!(grown = curl->slist_append(list, headers[i])))
			goto fail;
		list = grown;
	}
	return list;
fail:
	curl->slist_free_all(list);
	*failed = true;
	return NULL;
}

int fetch_get(const struct fetch_opts *o, const char *url, const char *accept,
	      const char *const *headers, struct fetch_reply *r, struct gerr *err)
{
	char shown[256], errbuf[CURL_ERROR_SIZE] = "";
	struct body b = { .max = o->max_bytes };
	struct curl_slist *list = NULL;
	const struct curlso *curl;
	bool failed;
	CURLcode rc;
	CURL *c;
	int ret = -1;

	memset(r, 0, sizeof(*r));
	fetch_display_url(url, shown, sizeof(shown));
	if (check_scheme(o, url, shown, err) < 0)
		return -1;
	curl = curlso_get("object fetches", err);
	if (!curl)
		return -1;
	list = header_list(curl, accept, headers, &failed);
	c = failed ? NULL : curl->easy_init();
	if (!c) {
		curl->slist_free_all(list);
		return gerr_set(err, 500, "out of memory");
	}
	rc = configure(curl, c, o, url, list, &b, r, errbuf);
	if (rc != CURLE_OK) {
		gerr_set(err, 500, "libcurl: %s", curl->easy_strerror(rc));
		goto out;
	}
	rc = curl->easy_perform(c);
	if (rc != CURLE_OK) {
		transfer_error(curl, rc, errbuf, &b, o, shown, err);
		goto out;
	}
	curl->easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	r->body = b.data;
	r->len = b.len;
	b.data = NULL;
	ret = 0;
out:
	free(b.data);
	curl->easy_cleanup(c);
	curl->slist_free_all(list);
	return ret;
}

int fetch_url(const struct fetch_opts *o, const char *url, void **bytes, size_t *len,
	      struct gerr *err)
{
	struct fetch_reply r;
	char shown[256];

	*bytes = NULL;
	*len = 0;
	if (fetch_get(o, url, NULL, NULL, &r, err) < 0)
		return -1;
	if (r.status != 200) {
		long status = r.status;

		fetch_display_url(url, shown, sizeof(shown));
		fetch_reply_clear(&r);
		return gerr_set(err, 502, "%s: the server answered HTTP %ld", shown, status);
	}
	*bytes = r.body;
	*len = r.len;
	return 0;
}
