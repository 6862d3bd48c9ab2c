/* api: routing, authentication, content negotiation and the error model.
 * The handlers themselves live in api/h_*.c. */
#include "api/api.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api/codec.h"
#include "api/handlers.h"
#include "proto/graind.pb-c.h"
#include "server/agent.h"
#include "server/authlog.h"
#include "server/util/clock.h"
#include "server/util/log.h"
#include "server/util/utf8.h"
#include "store/store.h"

#define MIME_JSON "application/json"
#define MIME_PROTOBUF "application/x-protobuf"

enum body_kind {
	BODY_NONE,      /* the route takes no body; one sent is refused */
	BODY_MESSAGE,   /* a request message, JSON or protobuf */
	BODY_UPLOAD,    /* raw bytes (application/octet-stream) or a message */
};

struct api_route {
	const char *method;
	const char *pattern;            /* "*" matches one segment; "*:verb" too */
	enum auth_role role;            /* least role allowed; AUTH_NONE: open */
	enum body_kind body;
	const ProtobufCMessageDescriptor *request;
	api_handler_fn handler;
};

static const struct api_route routes[] = {
	{ "GET", "/healthz", AUTH_NONE, BODY_NONE, NULL, h_healthz },
	{ "GET", "/", AUTH_NONE, BODY_NONE, NULL, h_web },
	{ "GET", "/v1/status", AUTH_READER, BODY_NONE, NULL, h_status },
	{ "GET", "/v1/objects", AUTH_READER, BODY_NONE, NULL, h_object_list },
	{ "POST", "/v1/objects", AUTH_ADMIN, BODY_UPLOAD,
	  &graind__upload_object_request__descriptor, h_object_upload },
	{ "GET", "/v1/objects/*", AUTH_READER, BODY_NONE, NULL, h_object_get },
	{ "DELETE", "/v1/objects/*", AUTH_ADMIN, BODY_NONE, NULL, h_object_delete },
	{ "GET", "/v1/objects/*/content", AUTH_READER, BODY_NONE, NULL, h_object_content },
	{ "POST", "/v1/objects/*:verify", AUTH_ADMIN, BODY_NONE, NULL, h_object_verify },
	{ "GET", "/v1/probes", AUTH_READER, BODY_NONE, NULL, h_probe_list },
	{ "PUT", "/v1/probes/*", AUTH_ADMIN, BODY_MESSAGE,
	  &graind__probe_spec__descriptor, h_probe_put },
	{ "GET", "/v1/probes/*", AUTH_READER, BODY_NONE, NULL, h_probe_get },
	{ "DELETE", "/v1/probes/*", AUTH_ADMIN, BODY_NONE, NULL, h_probe_delete },
	{ "POST", "/v1/probes/*:attach", AUTH_ADMIN, BODY_NONE, NULL, h_probe_attach },
	{ "POST", "/v1/probes/*:detach", AUTH_ADMIN, BODY_NONE, NULL, h_probe_detach },
	{ "GET", "/v1/probes/*/maps/*", AUTH_READER, BODY_NONE, NULL, h_probe_map },
	{ "GET", "/v1/samples", AUTH_READER, BODY_NONE, NULL, h_samples_list },
	{ "GET", "/v1/sinks", AUTH_READER, BODY_NONE, NULL, h_sink_list },
	{ "PUT", "/v1/sinks/*", AUTH_ADMIN, BODY_MESSAGE, &graind__sink__descriptor, h_sink_put },
	{ "GET", "/v1/sinks/*", AUTH_READER, BODY_NONE, NULL, h_sink_get },
	{ "DELETE", "/v1/sinks/*", AUTH_ADMIN, BODY_NONE, NULL, h_sink_delete },
	{ "GET", "/metrics", AUTH_READER, BODY_NONE, NULL, h_metrics },
	{ "GET", "/v1/audit", AUTH_READER, BODY_NONE, NULL, h_audit_list },
};

/* Does `path` match `pattern`? On a match the "*" segments go to args
 * (at most API_MAX_ARGS of them). */
static bool route_match(const char *pattern, const char *path,
			char args[API_MAX_ARGS][API_ARG_MAX])
{
	int n_args = 0;

	while (*pattern && *path) {
		if (*pattern == '*') {
			const char *verb = strchr(pattern, ':');
			const char *seg_end = path + strcspn(path, "/");
			size_t len;

			/* A ":verb" belongs to this segment only if no '/' comes first. */
			if (verb && strchr(pattern, '/') && strchr(pattern, '/') < verb)
				verb = NULL;
			if (verb) {
				/* "*:verb": the segment must end with ":verb". */
				size_t vlen = strlen(verb);

				if ((size_t)(seg_end - path) <= vlen ||
				    strncmp(seg_end - vlen, verb, vlen) != 0)
					return false;
				len = (size_t)(seg_end - path) - vlen;
				pattern += 1 + vlen;
			} else {
				len = (size_t)(seg_end - path);
				pattern++;
			}
			if (len == 0 || len >= API_ARG_MAX || n_args == API_MAX_ARGS)
				return false;
			memcpy(args[n_args], path, len);
			args[n_args++][len] = '\0';
			path = seg_end;
			continue;
		}
		if (*pattern++ != *path++)
			return false;
	}
	return *pattern == '\0' && *path == '\0';
}

/* The route for the request; sets *path_known when some route has this
 * path (so a missing method is 405, not 404) and lists them in allow. */
static const struct api_route *route_find(const char *method, const char *path,
					  char args[API_MAX_ARGS][API_ARG_MAX],
					  bool *path_known, char *allow, size_t allow_n)
{
	const struct api_route *found = NULL;

	*path_known = false;
	allow[0] = '\0';
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (!route_match(routes[i].pattern, path, args))
			continue;
		*path_known = true;
		if (allow[0])
			strncat(allow, ", ", allow_n - strlen(allow) - 1);
		strncat(allow, routes[i].method, allow_n - strlen(allow) - 1);
		if (!found && strcmp(routes[i].method, method) == 0)
			found = &routes[i];
	}
	/* Re-match so args hold the chosen route's segments. */
	if (found)
		route_match(found->pattern, path, args);
	return found;
}

size_t api_body_limit(const struct agent *agent, const char *method, const char *path,
		      const char *authorization)
{
	char args[API_MAX_ARGS][API_ARG_MAX], allow[64];
	enum auth_role role = auth_role_of(agent->auth, authorization);
	const struct api_route *route;
	bool path_known;

	route = route_find(method, path, args, &path_known, allow, sizeof(allow));
	if (!route || (route->role != AUTH_NONE && role == AUTH_NONE) ||
	    (route->role == AUTH_ADMIN && role != AUTH_ADMIN))
		return 0;
	if (route->body == BODY_UPLOAD) {
		/* A JSON upload carries the object in base64: 4/3 of its size. */
		size_t upload = agent->cfg.max_object_size / 3 * 4 + 64 * 1024;

		return upload > API_MAX_MESSAGE_BODY ? upload : API_MAX_MESSAGE_BODY;
	}
	return API_MAX_MESSAGE_BODY;
}

/* The media type of a Content-Type or Accept value, without parameters. */
static bool media_is(const char *value, const char *type)
{
	size_t n = strlen(type);

	while (value && *value == ' ')
		value++;
	return value && strncasecmp(value, type, n) == 0 &&
	       (value[n] == '\0' || value[n] == ';' || value[n] == ' ' || value[n] == ',');
}

static bool is_protobuf_type(const char *value)
{
	return media_is(value, MIME_PROTOBUF) || media_is(value, "application/protobuf") ||
	       media_is(value, "application/vnd.google.protobuf");
}

static bool is_raw_type(const char *value)
{
	return !value || !*value || media_is(value, "application/octet-stream") ||
	       media_is(value, "application/x-elf");
}

/* Protobuf when the client asks for it anywhere in Accept; JSON otherwise. */
static enum codec_format reply_format(const char *accept)
{
	const char *p = accept;

	while (p && *p) {
		if (is_protobuf_type(p))
			return CODEC_PROTOBUF;
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return CODEC_JSON;
}

static void set_body(struct api_response *resp, enum codec_format fmt,
		     const ProtobufCMessage *msg)
{
	struct gerr err;

	if (codec_encode(fmt, msg, &resp->body, &resp->body_len, &err) < 0) {
		log_error("msg=\"cannot encode reply\" error=\"%s\"", err.msg);
		resp->status = 500;
		resp->body = strdup("{\"code\":500,\"message\":\"cannot encode the reply\"}");
		resp->body_len = resp->body ? strlen(resp->body) : 0;
		fmt = CODEC_JSON;
	}
	resp->content_type = fmt == CODEC_PROTOBUF ? MIME_PROTOBUF : MIME_JSON;
}

static void set_error(struct api_response *resp, enum codec_format fmt,
		      const struct gerr *err)
{
	Graind__Status status = GRAIND__STATUS__INIT;

	char msg[GERR_MSG_MAX];

	/* Messages quote client input (paths, names): keep them valid text. */
	snprintf(msg, sizeof(msg), "%s", err->msg);
	utf8_scrub(msg);
	resp->status = err->status >= 400 && err->status <= 599 ? err->status : 500;
	status.code = resp->status;
	status.message = msg;
	set_body(resp, fmt, &status.base);
}

/* Decode the request body for the route into call->body. */
static int decode_body(const struct api_route *route, struct api_call *call,
		       struct gerr *err)
{
	const struct api_request *req = call->req;
	enum codec_format fmt;

	if (route->body == BODY_NONE) {
		if (req->body_len)
			return gerr_set(err, 400, "%s %s takes no request body",
					route->method, req->path);
		return 0;
	}
	if (route->body == BODY_UPLOAD && is_raw_type(req->content_type))
		return 0;       /* the handler reads the raw bytes */
	if (media_is(req->content_type, MIME_JSON))
		fmt = CODEC_JSON;
	else if (is_protobuf_type(req->content_type))
		fmt = CODEC_PROTOBUF;
	else
		return gerr_set(err, 415, "unsupported Content-Type '%s': send %s or %s%s",
				req->content_type ? req->content_type : "",
				MIME_JSON, MIME_PROTOBUF,
				route->body == BODY_UPLOAD ?
				" (or the raw object as application/octet-stream)" : "");
	if (route->body == BODY_MESSAGE && req->body_len > API_MAX_MESSAGE_BODY)
		return gerr_set(err, 413, "request body of %zu bytes is over the %d-byte limit",
				req->body_len, API_MAX_MESSAGE_BODY);
	if (fmt == CODEC_JSON && req->body_len == 0)
		return gerr_set(err, 400, "empty body: expected a JSON %s message",
				route->request->name);
	return codec_decode(fmt, route->request, req->body, req->body_len,
			    &call->body, err);
}

/* A change attempted by a known principal goes to the audit log. A
 * request without a valid token is never stored (anyone could fill the
 * database with them): a 401 is counted and logged, rate-limited. */
static void audit(struct api_call *call, const struct api_route *route,
		  const struct api_response *resp, const struct gerr *err)
{
	const char *method = call->req->method;
	char action[96];
	struct gerr aerr;

	char target[API_ARG_MAX], message[GERR_MSG_MAX];

	if (resp->status == 401)
		authlog_refused(call->req->authorization ? AUTHLOG_INVALID : AUTHLOG_MISSING,
				method, call->req->path);
	if (call->role == AUTH_NONE || !strcmp(method, "GET") || !strcmp(method, "HEAD"))
		return;
	/* The audit log is read back as JSON: only valid text goes in. */
	snprintf(action, sizeof(action), "%s %s", call->req->method,
		 route ? route->pattern : call->req->path);
	snprintf(target, sizeof(target), "%s", call->audit_target[0] ? call->audit_target : call->args[0]);
	snprintf(message, sizeof(message), "%s", resp->status >= 400 ? err->msg : "");
	utf8_scrub(action);
	utf8_scrub(target);
	utf8_scrub(message);
	if (store_audit_append(call->agent->store, auth_role_name(call->role), action,
			       target, resp->status, message, &aerr) < 0)
		log_error("msg=\"cannot write audit record\" error=\"%s\"", aerr.msg);
}

void api_handle(struct agent *agent, const struct api_request *req,
		struct api_response *resp)
{
	struct api_call call = { .agent = agent, .req = req, .status = 200 };
	const struct api_route *route;
	enum codec_format fmt = reply_format(req->accept);
	struct gerr err = { 0 };
	bool path_known;

	memset(resp, 0, sizeof(*resp));
	call.role = auth_role_of(agent->auth, req->authorization);
	route = route_find(req->method, req->path, call.args, &path_known,
			   resp->allow, sizeof(resp->allow));
	if (!route) {
		if (path_known)
			gerr_set(&err, 405, "method %s is not allowed on %s (allowed: %s)",
				 req->method, req->path, resp->allow);
		else
			gerr_set(&err, 404, "no such endpoint: %s %s", req->method, req->path);
		goto fail;
	}
	resp->allow[0] = '\0';
	if (route->role != AUTH_NONE && call.role == AUTH_NONE) {
		gerr_set(&err, 401, req->authorization ?
			 "invalid token: use a token from the agent's admin.token or reader.token" :
			 "missing token: send 'Authorization: Bearer <token>'");
		goto fail;
	}
	if (route->role == AUTH_ADMIN && call.role != AUTH_ADMIN) {
		gerr_set(&err, 403, "the %s token may only read; %s %s needs the admin token",
			 auth_role_name(call.role), req->method, req->path);
		goto fail;
	}
	if (decode_body(route, &call, &err) < 0 || route->handler(&call, &err) < 0)
		goto fail;

	resp->status = call.status;
	snprintf(resp->location, sizeof(resp->location), "%s", call.location);
	if (call.raw || call.raw_type) {
		resp->body = call.raw;
		resp->body_len = call.raw_len;
		resp->content_type = call.raw_type;
		call.raw = NULL;
	} else if (call.reply) {
		set_body(resp, fmt, call.reply);
	}
	goto out;
fail:
	set_error(resp, fmt, &err);
out:
	audit(&call, route, resp, &err);
	codec_free(call.body);
	codec_free(call.reply);
	free(call.raw);
}

void api_refuse(const char *accept, int status, const char *msg,
		struct api_response *resp)
{
	struct gerr err;

	memset(resp, 0, sizeof(*resp));
	gerr_set(&err, status, "%s", msg);
	set_error(resp, reply_format(accept), &err);
}

void api_response_clear(struct api_response *resp)
{
	free(resp->body);
	resp->body = NULL;
	resp->body_len = 0;
}

const char *api_query(const struct api_call *call, const char *key)
{
	const struct api_request *req = call->req;

	return req->query ? req->query(req->query_ctx, key) : NULL;
}

int api_page_size(const struct api_call *call, unsigned *size, struct gerr *err)
{
	const char *s = api_query(call, "page_size");
	unsigned long v;
	char *end;

	*size = 100;
	if (!s)
		return 0;
	v = strtoul(s, &end, 10);
	if (!*s || *end || v == 0 || v > 1000 || s[0] == '-')
		return gerr_set(err, 400, "page_size must be 1 to 1000, got '%s'", s);
	*size = (unsigned)v;
	return 0;
}

char *api_time_string(int64_t unix_ms)
{
	char buf[CLOCK_TEXT_MAX];

	clock_format(unix_ms, buf);
	return strdup(buf);
}
