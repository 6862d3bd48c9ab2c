/* grainctl's HTTP: a libcurl multi handle with a bounded set of transfers. */
#include "server/grainctl/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define MIME_PROTOBUF "application/x-protobuf"

struct transfer {
	CURL *easy;
	struct curl_slist *headers;
	char *url;
	struct client_reply *reply;
	size_t cap;
	char errbuf[CURL_ERROR_SIZE];
	struct timespec started;
	/* client_stream(): where a 200 answer's body goes. */
	bool (*on_data)(void *ctx, const char *data, size_t n);
	void *ctx;
};

/* client_set_tls(): the same for every transfer. */
static const char *tls_cacert, *tls_cert, *tls_key;

void client_set_tls(const char *cacert, const char *cert, const char *key)
{
	tls_cacert = cacert;
	tls_cert = cert;
	tls_key = key;
}

static long ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

int client_host_valid(const char *host)
{
	if (strncmp(host, "unix:", 5) == 0)
		return host[5] ? 0 : -1;
	if (strncmp(host, "http://", 7) == 0)
		return host[7] ? 0 : -1;
	if (strncmp(host, "https://", 8) == 0)
		return host[8] ? 0 : -1;
	return -1;
}

char *client_escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0), *copy;

	if (!e)
		return NULL;
	copy = strdup(e);
	curl_free(e);
	return copy;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct transfer *t = arg;
	struct client_reply *r = t->reply;
	size_t n = size * nmemb;
	long status = 0;

	if (t->on_data && curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
	    status == 200)
		return t->on_data(t->ctx, data, n) ? n : 0;

	if (r->body_len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 4096;
		char *b;

		while (cap < r->body_len + n + 1)
			cap *= 2;
		if (!(b = realloc(r->body, cap)))
			return 0;
		r->body = b;
		t->cap = cap;
	}
	memcpy(r->body + r->body_len, data, n);
	r->body_len += n;
	r->body[r->body_len] = 0;
	return n;
}

static int transfer_setup(struct transfer *t, const char *host,
			  const struct client_request *req, long timeout_ms)
{
	const char *base = host;
	char line[1024];
	size_t blen;

	if (strncmp(host, "unix:", 5) == 0) {
		if (curl_easy_setopt(t->easy, CURLOPT_UNIX_SOCKET_PATH, host + 5) != CURLE_OK)
			return -1;
		base = "http://localhost";
	}
	blen = strlen(base);
	while (blen && base[blen - 1] == '/')
		blen--;
	if (!(t->url = malloc(blen + strlen(req->path) + 1)))
		return -1;
	memcpy(t->url, base, blen);
	strcpy(t->url + blen, req->path);

	snprintf(line, sizeof(line), "Accept: %s", req->accept ? req->accept : MIME_PROTOBUF);
	t->headers = curl_slist_append(t->headers, line);
	if (req->last_event_id) {
		snprintf(line, sizeof(line), "Last-Event-ID: %s", req->last_event_id);
		t->headers = curl_slist_append(t->headers, line);
	}
	/* libcurl would otherwise send "Expect: 100-continue" for large bodies. */
	t->headers = curl_slist_append(t->headers, "Expect:");
	if (req->token) {
		snprintf(line, sizeof(line), "Authorization: Bearer %s", req->token);
		t->headers = curl_slist_append(t->headers, line);
	}
	if (req->if_match) {
		snprintf(line, sizeof(line), "If-Match: %s", req->if_match);
		t->headers = curl_slist_append(t->headers, line);
	}
	if (req->body && req->content_type) {
		snprintf(line, sizeof(line), "Content-Type: %s", req->content_type);
		t->headers = curl_slist_append(t->headers, line);
	}
	if (!t->headers)
		return -1;
	curl_easy_setopt(t->easy, CURLOPT_URL, t->url);
	curl_easy_setopt(t->easy, CURLOPT_CUSTOMREQUEST, req->method);
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	if (tls_cacert)
		curl_easy_setopt(t->easy, CURLOPT_CAINFO, tls_cacert);
	if (tls_cert) {
		curl_easy_setopt(t->easy, CURLOPT_SSLCERT, tls_cert);
		curl_easy_setopt(t->easy, CURLOPT_SSLKEY, tls_key);
	}
	if (req->body) {
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
	} else if (strcmp(req->method, "GET") != 0) {
		/* A POST or PUT without a body still says so. */
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	}
	if (strcmp(req->method, "DELETE") == 0 && !req->body)
		curl_easy_setopt(t->easy, CURLOPT_POST, 0L);
	if (strcmp(req->method, "GET") == 0)
		curl_easy_setopt(t->easy, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
	return 0;
}

static void transfer_done(struct transfer *t, CURLcode code)
{
	struct client_reply *r = t->reply;
	long status = 0;
	char *ct = NULL;

	r->elapsed_ms = ms_since(&t->started);
	if (code != CURLE_OK) {
		snprintf(r->transport_error, sizeof(r->transport_error), "%s",
			 t->errbuf[0] ? t->errbuf : curl_easy_strerror(code));
		return;
	}
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ct);
	r->status = (int)status;
	if (ct)
		r->content_type = strdup(ct);
	if (!r->body && (r->body = malloc(1)))
		r->body[0] = 0;
	if (!r->body) {
		r->status = 0;
		snprintf(r->transport_error, sizeof(r->transport_error), "out of memory");
	}
}

static void fail_all(const char *const *hosts, size_t n, const struct client_request *reqs,
		     struct client_reply *replies, const char *why)
{
	for (size_t i = 0; i < n; i++) {
		if (!reqs[i].method || replies[i].status || replies[i].transport_error[0])
			continue;
		replies[i].host = hosts[i];
		snprintf(replies[i].transport_error, sizeof(replies[i].transport_error), "%s", why);
	}
}

int client_run(const char *const *hosts, size_t n, const struct client_request *req,
	       int parallel, long timeout_ms, struct client_reply *replies)
{
	struct client_request *reqs = calloc(n ? n : 1, sizeof(*reqs));
	int ret;

	if (!reqs) {
		memset(replies, 0, n * sizeof(*replies));
		for (size_t i = 0; i < n; i++) {
			replies[i].host = hosts[i];
			snprintf(replies[i].transport_error, sizeof(replies[i].transport_error),
				 "out of memory");
		}
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		reqs[i] = *req;
	ret = client_run_each(hosts, n, reqs, parallel, timeout_ms, replies);
	free(reqs);
	return ret;
}

int client_run_each(const char *const *hosts, size_t n, const struct client_request *reqs,
		    int parallel, long timeout_ms, struct client_reply *replies)
{
	struct transfer *ts = calloc(n ? n : 1, sizeof(*ts));
	CURLM *multi = NULL;
	size_t next = 0, active = 0, i;
	int ret = -1;

	memset(replies, 0, n * sizeof(*replies));
	for (i = 0; i < n; i++)
		replies[i].host = hosts[i];
	if (!ts || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
	    !(multi = curl_multi_init())) {
		fail_all(hosts, n, reqs, replies, "cannot set up libcurl");
		goto out;
	}
	if (parallel < 1)
		parallel = 1;
	while (next < n || active) {
		CURLMsg *msg;
		int running, left;

		/* Start transfers up to the bound; a host's timeout counts from here. */
		while (next < n && active < (size_t)parallel) {
			struct transfer *t = &ts[next];

			if (!reqs[next].method) {
				next++;
				continue;
			}
			t->reply = &replies[next];
			clock_gettime(CLOCK_MONOTONIC, &t->started);
			if (!(t->easy = curl_easy_init()) ||
			    transfer_setup(t, hosts[next], &reqs[next], timeout_ms) < 0 ||
			    curl_multi_add_handle(multi, t->easy) != CURLM_OK) {
				snprintf(t->reply->transport_error,
					 sizeof(t->reply->transport_error), "cannot set up the request");
				next++;
				continue;
			}
			next++;
			active++;
		}
		if (curl_multi_perform(multi, &running) != CURLM_OK)
			break;
		while ((msg = curl_multi_info_read(multi, &left))) {
			struct transfer *t;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
			transfer_done(t, msg->data.result);
			curl_multi_remove_handle(multi, t->easy);
			active--;
		}
		if (active && curl_multi_poll(multi, NULL, 0, 100, NULL) != CURLM_OK)
			break;
	}
	fail_all(hosts, n, reqs, replies, "transfer aborted");
	ret = 0;
out:
	for (i = 0; ts && i < n; i++) {
		if (ts[i].easy) {
			if (multi)
				curl_multi_remove_handle(multi, ts[i].easy);
			curl_easy_cleanup(ts[i].easy);
		}
		curl_slist_free_all(ts[i].headers);
		free(ts[i].url);
	}
	if (multi)
		curl_multi_cleanup(multi);
	free(ts);
	return ret;
}

void client_reply_clear(struct client_reply *r)
{
	free(r->content_type);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

int client_stream(const char *host, const struct client_request *req, long connect_timeout_ms,
		  long idle_ms, bool (*on_data)(void *ctx, const char *data, size_t n), void *ctx,
		  struct client_reply *reply)
{
	struct transfer t = { .reply = reply, .on_data = on_data, .ctx = ctx };
	CURLcode code;
	int ret = -1;

	memset(reply, 0, sizeof(*reply));
	reply->host = host;
	if (!(t.easy = curl_easy_init()) || transfer_setup(&t, host, req, 0) < 0) {
		snprintf(reply->transport_error, sizeof(reply->transport_error),
			 "cannot set up the request");
		goto out;
	}
	curl_easy_setopt(t.easy, CURLOPT_TIMEOUT_MS, 0L);
	curl_easy_setopt(t.easy, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
	curl_easy_setopt(t.easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(t.easy, CURLOPT_LOW_SPEED_TIME, (idle_ms + 999) / 1000);
	clock_gettime(CLOCK_MONOTONIC, &t.started);
	code = curl_easy_perform(t.easy);
	/* Stopped by on_data, or the stream ended: a 200 all the same. */
	transfer_done(&t, code == CURLE_WRITE_ERROR ? CURLE_OK : code);
	ret = 0;
out:
	if (t.easy)
		curl_easy_cleanup(t.easy);
	curl_slist_free_all(t.headers);
	free(t.url);
	return ret;
}
