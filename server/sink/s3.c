/* s3: one batch of samples → one gzip'd NDJSON object, PUT with SigV4. */
#include "server/sink/s3.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zlib.h>

#include "server/util/codec.h"
#include "server/util/curlso.h"
#include "server/util/sha256.h"

#ifndef GRAIND_VERSION
#define GRAIND_VERSION "dev"
#endif

#define S3_KEY_MAX 1024             /* S3's limit, in bytes */
#define S3_DEFAULT_REGION "us-east-1"
#define S3_CONNECT_TIMEOUT_S 5L
#define S3_TIMEOUT_S 60L
/* Slower than this for this long is a peer that has stopped answering. */
#define S3_LOW_SPEED_BYTES 64L
#define S3_LOW_SPEED_S 20L
#define S3_ERROR_BODY_MAX 16384     /* enough for any S3 XML error */
#define S3_SECRET_MAX 4096
#define GZIP_WINDOW_BITS (15 + 16)  /* deflate with a gzip header */
#define GZIP_CHUNK 16384

/* ================================================================ key */

static int is_key_safe(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* One path component made of [A-Za-z0-9._-] only; never empty, "." or
 * "..", which HTTP clients and file-backed stores treat as directories. */
static int sanitize_component(const char *in, char *out, size_t size)
{
	size_t len = strlen(in), i;
	int only_dots = 1;

	if (len == 0)
		in = "_", len = 1;
	if (len >= size)
		return -1;
	for (i = 0; i < len; i++) {
		out[i] = is_key_safe(in[i]) ? in[i] : '_';
		only_dots &= out[i] == '.';
	}
	out[len] = '\0';
	if (only_dots)
		memset(out, '_', len);
	return 0;
}

static int parse_digits(const char **p, int count)
{
	int v = 0;

	while (count--) {
		if (**p < '0' || **p > '9')
			return -1;
		v = v * 10 + (*(*p)++ - '0');
	}
	return v;
}

/* The UTC calendar time of an RFC 3339 timestamp ("2026-11-25T14:58:20.947Z"
 * or with a numeric offset "...+02:00"). */
static int parse_rfc3339(const char *s, struct tm *utc)
{
	struct tm tm = { 0 };
	long offset = 0;
	time_t t;
	int sign;

	if ((tm.tm_year = parse_digits(&s, 4)) < 0 || *s++ != '-' ||
	    (tm.tm_mon = parse_digits(&s, 2)) < 1 || *s++ != '-' ||
	    (tm.tm_mday = parse_digits(&s, 2)) < 1 ||
	    (*s != 'T' && *s != 't' && *s != ' ') ||
	    (++s, tm.tm_hour = parse_digits(&s, 2)) < 0 || *s++ != ':' ||
	    (tm.tm_min = parse_digits(&s, 2)) < 0 || *s++ != ':' ||
	    (tm.tm_sec = parse_digits(&s, 2)) < 0)
		return -1;
	if (tm.tm_mon > 12 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
	    tm.tm_min > 59 || tm.tm_sec > 60)
		return -1;
	if (*s == '.')
		for (s++; *s >= '0' && *s <= '9'; s++)
			;
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		int hh, mm;

		sign = *s++ == '-' ? -1 : 1;
		if ((hh = parse_digits(&s, 2)) < 0 || *s++ != ':' ||
		    (mm = parse_digits(&s, 2)) < 0)
			return -1;
		offset = sign * (hh * 3600L + mm * 60L);
	} else {
		return -1;
	}
	if (*s)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	t = timegm(&tm) - offset;
	return gmtime_r(&t, utc) ? 0 : -1;
}

/* key_prefix without leading and trailing slashes, as (start, length). */
static const char *trim_slashes(const char *s, int *len)
{
	size_t n;

	while (*s == '/')
		s++;
	n = strlen(s);
	while (n && s[n - 1] == '/')
		n--;
	*len = n > INT_MAX ? INT_MAX : (int)n;
	return s;
}

static int object_key(const Graind__S3Sink *cfg, const char *host, const char *probe,
		      Graind__Sample *const *samples, size_t n, char *key,
		      size_t key_size, struct gerr *err)
{
	char safe_host[S3_KEY_MAX + 1], safe_probe[S3_KEY_MAX + 1];
	const char *prefix = "";
	struct tm day;
	int prefix_len = 0, len;

	if (n == 0 || !samples[0] || !samples[n - 1])
		return gerr_set(err, 500, "S3 object key: empty batch");
	if (parse_rfc3339(samples[0]->time ? samples[0]->time : "", &day) < 0)
		return gerr_set(err, 500, "S3 object key: sample %" PRIu64
				" has no RFC 3339 time (\"%s\")", samples[0]->id,
				samples[0]->time ? samples[0]->time : "");
	if (sanitize_component(host ? host : "", safe_host, sizeof(safe_host)) < 0 ||
	    sanitize_component(probe ? probe : "", safe_probe, sizeof(safe_probe)) < 0)
		return gerr_set(err, 500, "S3 object key: host or probe name longer than %d bytes",
				S3_KEY_MAX);
	if (cfg && cfg->key_prefix)
		prefix = trim_slashes(cfg->key_prefix, &prefix_len);

	len = snprintf(key, key_size,
		       "%.*s%s%s/%s/dt=%04d-%02d-%02d/hour=%02d/%" PRIu64 "-%" PRIu64 ".ndjson.gz",
		       prefix_len, prefix, prefix_len ? "/" : "", safe_host, safe_probe,
		       day.tm_year + 1900, day.tm_mon + 1, day.tm_mday, day.tm_hour,
		       samples[0]->id, samples[n - 1]->id);
	if (len < 0 || (size_t)len >= key_size || len > S3_KEY_MAX)
		return gerr_set(err, 500, "S3 object key longer than %d bytes", S3_KEY_MAX);
	return 0;
}

int s3_object_key(const Graind__S3Sink *cfg, const char *host, const char *probe,
		  Graind__Sample *const *samples, size_t n, char *key, size_t key_size)
{
	return object_key(cfg, host, probe, samples, n, key, key_size, NULL);
}

/* ================================================================ body */

struct buf {
	unsigned char *data;
	size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t extra)
{
	size_t cap = b->cap ? b->cap : GZIP_CHUNK;
	unsigned char *p;

	if (b->cap - b->len >= extra)
		return 0;
	while (cap - b->len < extra)
		cap *= 2;
	p = realloc(b->data, cap);
	if (!p)
		return -1;
	b->data = p;
	b->cap = cap;
	return 0;
}

/* Push `len` bytes through the compressor into `out`. */
static int deflate_into(z_stream *z, const void *in, size_t len, int flush, struct buf *out)
{
	int rc;

	z->next_in = (Bytef *)in;
	z->avail_in = (uInt)len;
	do {
		if (buf_reserve(out, GZIP_CHUNK) < 0)
			return -1;
		z->next_out = out->data + out->len;
		z->avail_out = (uInt)(out->cap - out->len > UINT_MAX ? UINT_MAX
								 : out->cap - out->len);
		rc = deflate(z, flush);
		if (rc == Z_STREAM_ERROR)
			return -1;
		out->len = (size_t)(z->next_out - out->data);
	} while (z->avail_out == 0 || z->avail_in > 0);
	return flush == Z_FINISH && rc != Z_STREAM_END ? -1 : 0;
}

/* The object: one proto3 JSON line per sample, gzip-compressed. A big
 * batch takes a while: *cancel is looked at every 1024 samples. */
static int build_body(Graind__Sample *const *samples, size_t n, const atomic_bool *cancel,
		      struct buf *out, struct gerr *err)
{
	z_stream z = { 0 };
	char *line = NULL;
	size_t len, i;
	int ret = -1;

	if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, GZIP_WINDOW_BITS, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return gerr_set(err, 500, "S3 body: cannot start gzip");
	for (i = 0; i < n; i++) {
		if (i % 1024 == 1023 && cancel && atomic_load(cancel)) {
			gerr_set(err, 503, "S3 body: cancelled");
			goto out;
		}
		if (codec_encode(CODEC_JSON, &samples[i]->base, &line, &len, err) < 0) {
			gerr_prefix(err, "S3 body: sample %" PRIu64, samples[i]->id);
			goto out;
		}
		if (len > UINT_MAX || deflate_into(&z, line, len, Z_NO_FLUSH, out) < 0 ||
		    deflate_into(&z, "\n", 1, Z_NO_FLUSH, out) < 0) {
			gerr_set(err, 500, "S3 body: gzip failed (out of memory?)");
			goto out;
		}
		free(line);
		line = NULL;
	}
	if (deflate_into(&z, NULL, 0, Z_FINISH, out) < 0) {
		gerr_set(err, 500, "S3 body: gzip failed (out of memory?)");
		goto out;
	}
	ret = 0;
out:
	free(line);
	deflateEnd(&z);
	return ret;
}

/* ================================================================ request */

/* The secret key: inline, or the first line of secret_file. */
static int load_secret(const Graind__S3Sink *cfg, char **out, struct gerr *err)
{
	char buf[S3_SECRET_MAX + 1];
	size_t len;
	FILE *f;

	if (!cfg->secret_file || !cfg->secret_file[0]) {
		*out = strdup(cfg->secret_access_key ? cfg->secret_access_key : "");
		return *out ? 0 : gerr_set(err, 500, "out of memory");
	}
	f = fopen(cfg->secret_file, "re");
	if (!f)
		return gerr_set(err, 500, "S3 secret_file %s: %s", cfg->secret_file,
				strerror(errno));
	len = fread(buf, 1, S3_SECRET_MAX, f);
	if (ferror(f)) {
		int e = errno;

		fclose(f);
		return gerr_set(err, 500, "S3 secret_file %s: %s", cfg->secret_file,
				strerror(e));
	}
	fclose(f);
	buf[len] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	*out = strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	if (!*out)
		return gerr_set(err, 500, "out of memory");
	if (!**out) {
		free(*out);
		*out = NULL;
		return gerr_set(err, 500, "S3 secret_file %s is empty", cfg->secret_file);
	}
	return 0;
}

static void free_secret(char *secret)
{
	if (secret) {
		explicit_bzero(secret, strlen(secret));
		free(secret);
	}
}

/* Percent-encode everything but RFC 3986 unreserved characters and '/',
 * as SigV4 canonical URIs do, so the path libcurl signs is the path S3
 * derives from the key. */
static void put_encoded(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (is_key_safe((char)c) || c == '~' || c == '/')
			fputc(c, f);
		else
			fprintf(f, "%%%02X", c);
	}
}

/* Path style:         <scheme>://<host>[/<path>]/<bucket>/<key>
 * Virtual-host style: <scheme>://<bucket>.<host>[/<path>]/<key>
 * The endpoint's scheme defaults to https. */
static int object_url(const Graind__S3Sink *cfg, const char *key, char **url,
		      struct gerr *err)
{
	const char *endpoint = cfg->endpoint, *scheme = "https", *host, *path;
	int scheme_len = 5, host_len, path_len;
	const char *sep = strstr(endpoint, "://");
	size_t size;
	FILE *f;

	if (sep) {
		scheme = endpoint;
		scheme_len = (int)(sep - endpoint);
		host = sep + 3;
	} else {
		host = endpoint;
	}
	path = host + strcspn(host, "/");
	host_len = (int)(path - host);
	path_len = (int)strlen(path);
	while (path_len && path[path_len - 1] == '/')
		path_len--;
	if (host_len == 0)
		return gerr_set(err, 400, "S3 endpoint \"%s\" has no host", endpoint);

	f = open_memstream(url, &size);
	if (!f)
		return gerr_set(err, 500, "out of memory");
	if (cfg->path_style) {
		fprintf(f, "%.*s://%.*s%.*s/", scheme_len, scheme, host_len, host,
			path_len, path);
		put_encoded(f, cfg->bucket);
	} else {
		fprintf(f, "%.*s://%s.%.*s%.*s", scheme_len, scheme, cfg->bucket,
			host_len, host, path_len, path);
	}
	fputc('/', f);
	put_encoded(f, key);
	if (fclose(f) != 0) {
		free(*url);
		*url = NULL;
		return gerr_set(err, 500, "out of memory");
	}
	return 0;
}

/* The response body, cut at S3_ERROR_BODY_MAX: only errors are read. */
static size_t response_write(char *src, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;
	size_t n = size * nmemb, keep = n;

	if (keep > S3_ERROR_BODY_MAX - b->len)
		keep = S3_ERROR_BODY_MAX - b->len;
	if (buf_reserve(b, keep + 1) < 0)
		return 0;
	memcpy(b->data + b->len, src, keep);
	b->len += keep;
	b->data[b->len] = '\0';
	return n;
}

/* Called by libcurl about once a second at the least, also while it
 * connects or waits for an answer: non-zero aborts the transfer. */
static int transfer_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
			     curl_off_t ultotal, curl_off_t ulnow)
{
	const atomic_bool *cancel = arg;

	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	return cancel && atomic_load(cancel);
}

/* curl: libcurl (curlso.h), loaded when the first S3 batch goes out. */
static CURLcode configure(const struct curlso *curl, CURL *c, const Graind__S3Sink *cfg,
			  const char *url, const char *secret, struct curl_slist *headers,
			  const struct buf *body, struct buf *response, char *errbuf,
			  const char *sigv4, const atomic_bool *cancel)
{
	CURLSO_SETOPT(c, CURLOPT_URL, url);
	CURLSO_SETOPT(c, CURLOPT_PROTOCOLS_STR, "http,https");
	CURLSO_SETOPT(c, CURLOPT_NOSIGNAL, 1L);
	CURLSO_SETOPT(c, CURLOPT_ERRORBUFFER, errbuf);
	CURLSO_SETOPT(c, CURLOPT_USERAGENT, "graind/" GRAIND_VERSION);
	CURLSO_SETOPT(c, CURLOPT_CONNECTTIMEOUT, S3_CONNECT_TIMEOUT_S);
	CURLSO_SETOPT(c, CURLOPT_TIMEOUT, S3_TIMEOUT_S);
	CURLSO_SETOPT(c, CURLOPT_LOW_SPEED_LIMIT, S3_LOW_SPEED_BYTES);
	CURLSO_SETOPT(c, CURLOPT_LOW_SPEED_TIME, S3_LOW_SPEED_S);
	CURLSO_SETOPT(c, CURLOPT_XFERINFOFUNCTION, transfer_progress);
	CURLSO_SETOPT(c, CURLOPT_XFERINFODATA, (void *)cancel);
	CURLSO_SETOPT(c, CURLOPT_NOPROGRESS, 0L);
	/* An aborted transfer does not wait for its name lookup thread
	 * (libcurl 7.87 and later; older ones refuse the option and wait). */
	curl->easy_setopt(c, CURLOPT_QUICK_EXIT, 1L);
	/* Keep "." and ".." in keys: S3 does not resolve them. */
	CURLSO_SETOPT(c, CURLOPT_PATH_AS_IS, 1L);
	CURLSO_SETOPT(c, CURLOPT_AWS_SIGV4, sigv4);
	CURLSO_SETOPT(c, CURLOPT_USERNAME, cfg->access_key_id);
	CURLSO_SETOPT(c, CURLOPT_PASSWORD, secret);
	CURLSO_SETOPT(c, CURLOPT_HTTPHEADER, headers);
	/* A PUT sent like a POST body: libcurl then asks for
	 * "100-continue" only above 1 MiB, where an early refusal saves the
	 * upload (an "Expect:" header to suppress it would be signed). */
	CURLSO_SETOPT(c, CURLOPT_CUSTOMREQUEST, "PUT");
	CURLSO_SETOPT(c, CURLOPT_POSTFIELDS, body->data);
	CURLSO_SETOPT(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
	CURLSO_SETOPT(c, CURLOPT_WRITEFUNCTION, response_write);
	CURLSO_SETOPT(c, CURLOPT_WRITEDATA, response);
	if (cfg->ca_file && cfg->ca_file[0])
		CURLSO_SETOPT(c, CURLOPT_CAINFO, cfg->ca_file);
	if (cfg->insecure_skip_verify) {
		CURLSO_SETOPT(c, CURLOPT_SSL_VERIFYPEER, 0L);
		CURLSO_SETOPT(c, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	return CURLE_OK;
}

static int build_headers(const struct curlso *curl, const char *payload_hash,
			 struct curl_slist **out)
{
	char hash_header[sizeof("x-amz-content-sha256: ") + SHA256_HEX_LEN];
	const char *lines[] = {
		"Content-Type: application/gzip",
		/* libcurl signs this value as the payload hash; S3 checks it
		 * against the body it receives. */
		hash_header,
	};
	struct curl_slist *h;
	size_t i;

	snprintf(hash_header, sizeof(hash_header), "x-amz-content-sha256: %s", payload_hash);
	for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		h = curl->slist_append(*out, lines[i]);
		if (!h)
			return -1;
		*out = h;
	}
	return 0;
}

/* ================================================================ errors */

/* The text of <tag>...</tag> in an S3 XML error, entities decoded and
 * control characters dropped, into out (empty when absent). */
static void xml_text(const char *xml, const char *tag, char *out, size_t size)
{
	static const struct { const char *entity; char c; } entities[] = {
		{ "&lt;", '<' }, { "&gt;", '>' }, { "&amp;", '&' },
		{ "&quot;", '"' }, { "&apos;", '\'' },
	};
	char open[32], close[32];
	const char *start, *end;
	size_t len = 0, i;

	out[0] = '\0';
	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	start = strstr(xml, open);
	if (!start)
		return;
	start += strlen(open);
	end = strstr(start, close);
	if (!end)
		return;
	while (start < end && len + 1 < size) {
		char c = *start++;

		if (c == '&') {
			for (i = 0; i < sizeof(entities) / sizeof(entities[0]); i++) {
				size_t n = strlen(entities[i].entity);

				if (strncmp(start - 1, entities[i].entity, n) == 0) {
					c = entities[i].c;
					start += n - 1;
					break;
				}
			}
		}
		if ((unsigned char)c >= 0x20)
			out[len++] = c;
	}
	out[len] = '\0';
}

static int http_error(const char *key, long status, const struct buf *response,
		      struct gerr *err)
{
	const char *body = response->data ? (const char *)response->data : "";
	char code[128], message[GERR_MSG_MAX];

	xml_text(body, "Code", code, sizeof(code));
	xml_text(body, "Message", message, sizeof(message));
	if (code[0] && message[0])
		return gerr_set(err, 502, "S3 PUT %s: %ld %s: %s", key, status, code, message);
	if (code[0])
		return gerr_set(err, 502, "S3 PUT %s: %ld %s", key, status, code);
	return gerr_set(err, 502, "S3 PUT %s: HTTP %ld%s%.*s", key, status,
			body[0] ? ": " : "", (int)strcspn(body, "\r\n"), body);
}

/* ================================================================ put */

int s3_put_batch(const Graind__S3Sink *cfg, const char *host, const char *probe,
		 Graind__Sample *const *samples, size_t n, const atomic_bool *cancel,
		 size_t *bytes, struct gerr *err)
{
	char key[S3_KEY_MAX + 1], hash[SHA256_HEX_LEN + 1];
	char errbuf[CURL_ERROR_SIZE] = "", sigv4[160];
	struct buf body = { 0 }, response = { 0 };
	struct curl_slist *headers = NULL;
	char *url = NULL, *secret = NULL;
	const struct curlso *curl;
	CURL *c = NULL;
	CURLcode rc;
	long status = 0;
	int ret = -1;

	if (bytes)
		*bytes = 0;
	if (!cfg->bucket || !cfg->bucket[0])
		return gerr_set(err, 400, "S3 sink has no bucket");
	if (!cfg->endpoint || !cfg->endpoint[0])
		return gerr_set(err, 400, "S3 sink has no endpoint");
	if (!cfg->access_key_id || !cfg->access_key_id[0])
		return gerr_set(err, 400, "S3 sink has no access_key_id");
	if (object_key(cfg, host, probe, samples, n, key, sizeof(key), err) < 0)
		return -1;
	curl = curlso_get("S3 sinks", err);
	if (!curl)
		return -1;

	if (load_secret(cfg, &secret, err) < 0 || object_url(cfg, key, &url, err) < 0 ||
	    build_body(samples, n, cancel, &body, err) < 0)
		goto out;

	sha256_hex(body.data, body.len, hash);
	snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:s3",
		 cfg->region && cfg->region[0] ? cfg->region : S3_DEFAULT_REGION);
	if (build_headers(curl, hash, &headers) < 0) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}

	c = curl->easy_init();
	if (!c) {
		gerr_set(err, 500, "S3: cannot create a libcurl handle");
		goto out;
	}
	rc = configure(curl, c, cfg, url, secret, headers, &body, &response, errbuf, sigv4, cancel);
	if (rc != CURLE_OK) {
		gerr_set(err, 500, "S3: libcurl: %s", curl->easy_strerror(rc));
		goto out;
	}
	rc = curl->easy_perform(c);
	if (rc == CURLE_ABORTED_BY_CALLBACK) {
		gerr_set(err, 503, "S3 PUT %s: cancelled", key);
		goto out;
	}
	if (rc != CURLE_OK) {
		gerr_set(err, 502, "S3 PUT %s: %s", key,
			 errbuf[0] ? errbuf : curl->easy_strerror(rc));
		goto out;
	}
	curl->easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status > 299) {
		http_error(key, status, &response, err);
		goto out;
	}
	if (bytes)
		*bytes = body.len;
	ret = 0;
out:
	if (c)
		curl->easy_cleanup(c);
	if (headers)
		curl->slist_free_all(headers);
	free(response.data);
	free(body.data);
	free(url);
	free_secret(secret);
	return ret;
}
