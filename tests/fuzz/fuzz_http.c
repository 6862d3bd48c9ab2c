/* Fuzz the REST request path: api_handle() on a raw request, as the HTTP
 * layer hands it over. The input is
 *
 *   METHOD PATH[?QUERY]\n
 *   Header: value\n          (Content-Type, Accept, Authorization, If-Match,
 *                             If-None-Match, Last-Event-ID)
 *   \n
 *   body
 *
 * "Bearer admin" and "Bearer reader" stand for the agent's tokens. The
 * agent has a store in a temporary directory and tokens, but no probe
 * manager, collector or sinks: requests that would load programs into the
 * kernel (PUT, attach, detach and delete of probes, map dumps, verify) are
 * skipped here; their bodies are the codec targets' business. Every
 * answer must be a status with a body that decodes as what it claims. */
#define _GNU_SOURCE     /* nftw, in fuzz_agent.h */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api/api.h"
#include "proto/graind.pb-c.h"
#include "server/agent.h"
#include "server/auth.h"
#include "server/builtin.h"
#include "server/elf/elfchk.h"
#include "server/util/codec.h"
#include "server/util/feed.h"
#include "server/util/log.h"
#include "server/util/pbmsg.h"
#include "store/store.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_agent.h"

static char admin[128], reader[128];

static void read_token(enum auth_role role, char *buf, size_t n)
{
	FILE *f = fopen(auth_token_path(agent.auth, role), "r");

	fuzz_check(f && fgets(buf, (int)n, f), "cannot read the %s token", auth_role_name(role));
	buf[strcspn(buf, "\r\n")] = '\0';
	fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static char *const flags[] = { NULL };

	(void)argc;
	(void)argv;
	fuzz_agent_open("http", flags);
	read_token(AUTH_ADMIN, admin, sizeof(admin));
	read_token(AUTH_READER, reader, sizeof(reader));
	return 0;
}

/* Whether the route the request names could reach the kernel. */
static bool reaches_kernel(const char *method, const char *path)
{
	const char *probe = "/v1/probes/";

	if (strstr(path, ":verify"))
		return true;
	if (strncmp(path, probe, strlen(probe)))
		return false;
	return strcmp(method, "GET") || strchr(path + strlen(probe), '/');
}

/* "k=v&k2=v2" with each '&' made a NUL. */
struct query {
	const char *text, *end;
};

static const char *query_get(void *ctx, const char *key)
{
	const struct query *q = ctx;
	size_t klen = strlen(key);

	for (const char *p = q->text; p < q->end; p += strlen(p) + 1)
		if (!strncmp(p, key, klen) && p[klen] == '=')
			return p + klen + 1;
	return NULL;
}

/* A line of the input [*p, end) as a NUL-terminated copy in *out. */
static bool take_line(const uint8_t **p, const uint8_t *end, char **out)
{
	const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
	size_t n;

	if (!nl)
		return false;
	n = (size_t)(nl - *p);
	*out = malloc(n + 1);
	fuzz_check(*out, "out of memory");
	memcpy(*out, *p, n);
	(*out)[n] = '\0';
	*p = nl + 1;
	return true;
}

/* The response: a known status, a body that decodes as a Status when it
 * is an error, in the format it claims. */
static void check_response(const struct api_response *resp)
{
	const ProtobufCMessageDescriptor *desc = &graind__status__descriptor;
	ProtobufCMessage *st = NULL;
	struct gerr err = { 0 };
	enum codec_format fmt;

	fuzz_check(resp->status >= 200 && resp->status <= 599, "status %d", resp->status);
	fuzz_check(resp->status != 500, "500: %.*s", (int)resp->body_len,
		   resp->body ? resp->body : "");
	/* A console file unchanged since the client's copy: no body, its ETag. */
	if (resp->status == 304)
		fuzz_check(!resp->body && resp->etag, "a 304 with a body or without an ETag");
	if (resp->status < 400)
		return;
	fuzz_check(resp->content_type, "no content type");
	fmt = strstr(resp->content_type, "protobuf") ? CODEC_PROTOBUF : CODEC_JSON;
	fuzz_check(!codec_decode(fmt, desc, resp->body ? resp->body : "", resp->body_len, &st, &err),
		   "error body does not decode: %s", err.msg);
	pbmsg_free(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	struct api_request req = { 0 };
	struct api_response resp = { 0 };
	char *line = NULL, *headers[16] = { 0 }, *auth = NULL, *qmark, *sp;
	struct query q = { NULL, NULL };
	struct gerr err = { 0 };
	size_t nh = 0;

	if (!take_line(&p, end, &line) || !(sp = strchr(line, ' ')))
		goto out;
	*sp = '\0';
	req.method = line;
	req.path = sp + 1;
	qmark = strchr(sp + 1, '?');
	if (qmark) {
		*qmark = '\0';
		q.text = qmark + 1;
		q.end = q.text + strlen(q.text);
		for (char *a = qmark + 1; (a = strchr(a, '&')); )
			*a++ = '\0';
		req.query = query_get;
		req.query_ctx = &q;
	}
	while (nh < 16 && take_line(&p, end, &headers[nh])) {
		char *h = headers[nh++], *v = strchr(h, ':');

		if (!*h)
			break;
		if (!v)
			continue;
		*v++ = '\0';
		while (*v == ' ')
			v++;
		if (!strcasecmp(h, "content-type"))
			req.content_type = v;
		else if (!strcasecmp(h, "accept"))
			req.accept = v;
		else if (!strcasecmp(h, "if-match"))
			req.if_match = v;
		else if (!strcasecmp(h, "if-none-match"))
			req.if_none_match = v;
		else if (!strcasecmp(h, "last-event-id"))
			req.last_event_id = v;
		else if (!strcasecmp(h, "authorization"))
			req.authorization = v;
	}
	if (req.authorization && (!strcmp(req.authorization, "Bearer admin") ||
				  !strcmp(req.authorization, "Bearer reader"))) {
		const char *tok = req.authorization[7] == 'a' ? admin : reader;

		auth = malloc(strlen(tok) + 8);
		fuzz_check(auth, "out of memory");
		sprintf(auth, "Bearer %s", tok);
		req.authorization = auth;
	}
	if (reaches_kernel(req.method, req.path))
		goto out;
	req.body = p;
	req.body_len = (size_t)(end - p);
	if (req.body_len > api_body_limit(&agent, req.method, req.path, req.authorization, NULL))
		goto out;       /* the transport refuses it before reading it */
	api_handle(&agent, &req, &resp);
	if (resp.watch) {
		/* A watch: one step of its events, as the SSE stream would. */
		char *text = NULL;
		size_t len = 0;

		fuzz_check(resp.status == 200 && !resp.body, "a watch with status %d", resp.status);
		fuzz_check(api_watch_next(resp.watch, &text, &len) >= 0, "%.*s", (int)len,
			   text ? text : "");
		free(text);
		api_watch_free(resp.watch);
	} else {
		check_response(&resp);
	}
	api_response_clear(&resp);
	/* as the auditor would; an input that keeps memory costs a leak scan */
	fuzz_check(store_audit_flush(agent.store, &err) == 0, "%s", err.msg);
out:
	for (size_t i = 0; i < nh; i++)
		free(headers[i]);
	free(auth);
	free(line);
	return 0;
}
