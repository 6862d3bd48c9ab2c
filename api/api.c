/* api: REST over the service layer.
 *
 * Each route maps a method and a path onto one rpc of service Graind.
 * The request message is built from the path ("{field}" segments), the
 * query (any parameter named like a scalar field of the request) and the
 * body (the whole request, or one field of it, JSON or protobuf by
 * Content-Type); the response message goes back as JSON or protobuf by
 * Accept, or as raw bytes where a route says so. Errors are a
 * graind.Status body with the status the service chose. */
#include "api/api.h"
#include "api/api_int.h"
#include "api/console.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/graind.pb-c.h"
#include "server/agent.h"
#include "server/svc/svc.h"
#include "server/util/codec.h"
#include "server/util/log.h"
#include "server/util/pbmsg.h"
#include "server/util/utf8.h"

#define MIME_JSON "application/json"
#define MIME_PROTOBUF "application/x-protobuf"
#define MIME_OCTETS "application/octet-stream"

/* Largest body of any route but the object upload (bytes). */
#define API_MAX_MESSAGE_BODY (1024 * 1024)
#define API_MAX_BINDINGS 2
#define API_ARG_MAX 256

enum route_flag {
	ROUTE_RAW_UPLOAD = 1 << 0,      /* an octet-stream body is the request's `content` */
	ROUTE_IF_MATCH = 1 << 1,        /* If-Match: the request's `if_generation` */
};

struct api_route {
	const char *method;
	const char *pattern;            /* "{field}" binds one segment; may end in ":verb" */
	const char *rpc;                /* NULL: the console page */
	const char *body;               /* NULL: none; "*": the request; else that field */
	unsigned flags;
	const char *location;           /* Location of a 201: "{field}" of the response */
	const char *raw_reply;          /* the response field sent as the body itself */
	const char *raw_type;
};

static const struct api_route routes[] = {
	{ "GET", "/healthz", "GetHealth" },
	{ "GET", "/", NULL },                   /* the console (console.h) */
	{ "GET", "/ui/{file}", NULL },
	{ "GET", "/v1/status", "GetStatus" },
	{ "GET", "/v1/objects", "ListObjects" },
	{ "POST", "/v1/objects", "UploadObject", "*", ROUTE_RAW_UPLOAD, "/v1/objects/{sha256}" },
	{ "POST", "/v1/objects:fetch", "FetchObject", "*", 0, "/v1/objects/{sha256}" },
	{ "GET", "/v1/objects/{sha256}", "GetObject" },
	{ "DELETE", "/v1/objects/{sha256}", "DeleteObject" },
	{ "GET", "/v1/objects/{sha256}/content", "GetObjectContent", .raw_reply = "content",
	  .raw_type = MIME_OCTETS },
	{ "POST", "/v1/objects/{sha256}:verify", "VerifyObject" },
	{ "GET", "/v1/probes", "ListProbes" },
	{ "PUT", "/v1/probes/{name}", "PutProbe", "spec", ROUTE_IF_MATCH, "/v1/probes/{name}" },
	{ "GET", "/v1/probes/{name}", "GetProbe" },
	{ "DELETE", "/v1/probes/{name}", "DeleteProbe" },
	{ "POST", "/v1/probes/{name}:attach", "AttachProbe" },
	{ "POST", "/v1/probes/{name}:detach", "DetachProbe" },
	{ "GET", "/v1/probes/{probe}/maps/{map}", "DumpMap" },
	{ "GET", "/v1/samples", "ListSamples" },
	{ "GET", "/v1/samples:watch", "WatchSamples" },
	{ "GET", "/v1/probes:watch", "WatchProbes" },
	{ "GET", "/v1/sinks", "ListSinks" },
	{ "PUT", "/v1/sinks/{name}", "PutSink", "sink", ROUTE_IF_MATCH, "/v1/sinks/{name}" },
	{ "GET", "/v1/sinks/{name}", "GetSink" },
	{ "DELETE", "/v1/sinks/{name}", "DeleteSink" },
	{ "GET", "/metrics", "GetMetrics", .raw_reply = "text",
	  .raw_type = "text/plain; version=0.0.4; charset=utf-8" },
	{ "GET", "/v1/audit", "ListAudit" },
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

/* A path segment bound to a request field. */
struct binding {
	char field[32];
	char value[API_ARG_MAX];
};

/* Does `path` match `pattern`? On a match the "{field}" segments go to b
 * (*n of them). `strict`: a plain "{field}" does not take a segment with
 * a ':' (that is a ":verb" route's). */
static bool route_match(const char *pattern, const char *path, bool strict,
			struct binding b[API_MAX_BINDINGS], size_t *n)
{
	*n = 0;
	while (*pattern && *path) {
		if (*pattern == '{') {
			const char *close = strchr(pattern, '}');
			const char *seg_end = path + strcspn(path, "/");
			const char *verb = close[1] == ':' ? close + 1 : NULL;
			size_t flen = (size_t)(close - pattern - 1), len;

			len = (size_t)(seg_end - path);
			if (verb) {
				/* "{field}:verb": the segment must end with ":verb". */
				size_t vlen = strcspn(verb, "/");

				if (len <= vlen || strncmp(seg_end - vlen, verb, vlen) != 0)
					return false;
				len -= vlen;
				pattern = verb + vlen;
			} else {
				if (strict && memchr(path, ':', len))
					return false;
				pattern = close + 1;
			}
			if (len == 0 || len >= API_ARG_MAX || *n == API_MAX_BINDINGS ||
			    flen >= sizeof(b[0].field))
				return false;
			memcpy(b[*n].field, close - flen, flen);
			b[*n].field[flen] = '\0';
			memcpy(b[*n].value, path, len);
			b[(*n)++].value[len] = '\0';
			path = seg_end;
			continue;
		}
		if (*pattern++ != *path++)
			return false;
	}
	return *pattern == '\0' && *path == '\0';
}

static const struct api_route *route_scan(const char *method, const char *path, bool strict,
					  struct binding b[API_MAX_BINDINGS], size_t *n,
					  bool *path_known, char *allow, size_t allow_n)
{
	const struct api_route *found = NULL;

	*path_known = false;
	allow[0] = '\0';
	for (size_t i = 0; i < N_ROUTES; i++) {
		if (!route_match(routes[i].pattern, path, strict, b, n))
			continue;
		*path_known = true;
		if (allow[0])
			strncat(allow, ", ", allow_n - strlen(allow) - 1);
		strncat(allow, routes[i].method, allow_n - strlen(allow) - 1);
		if (!found && strcmp(routes[i].method, method) == 0)
			found = &routes[i];
	}
	/* Match again so the bindings are the chosen route's. */
	if (found)
		route_match(found->pattern, path, strict, b, n);
	return found;
}

/* The route for the request; sets *path_known when some route has this
 * path (so a missing method is 405, not 404) and lists them in allow.
 * ":verb" routes are tried first, so GET of "x:verify" is a 405 of the
 * verify route; only a path that no verb takes is then read as a name
 * holding a ':' (and refused as a bad name, with 400). */
static const struct api_route *route_find(const char *method, const char *path,
					  struct binding b[API_MAX_BINDINGS], size_t *n,
					  bool *path_known, char *allow, size_t allow_n)
{
	const struct api_route *found = route_scan(method, path, true, b, n, path_known,
						   allow, allow_n);

	if (found || *path_known)
		return found;
	return route_scan(method, path, false, b, n, path_known, allow, allow_n);
}

size_t api_body_limit(const struct agent *agent, const char *method, const char *path,
		      const char *authorization, const char *client_identity)
{
	struct binding b[API_MAX_BINDINGS];
	struct auth_principal who;
	const struct svc_method *m;
	const struct api_route *route;
	bool path_known;
	char allow[64];
	size_t n;

	route = route_find(method, path, b, &n, &path_known, allow, sizeof(allow));
	m = route && route->rpc ? svc_method_find(route->rpc) : NULL;
	/* A body on a route without one still reaches the route, to be
	 * refused with a clear 400. */
	auth_identify(agent->auth, authorization, client_identity, &who);
	if (!m || who.role < m->role)
		return 0;
	if (route->flags & ROUTE_RAW_UPLOAD) {
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
	return !value || !*value || media_is(value, MIME_OCTETS) ||
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

/* A Status body; `report` (may be NULL) is the verifier's, lent. */
static void set_error(struct api_response *resp, enum codec_format fmt,
		      const struct gerr *err, Graind__VerifyReport *report)
{
	Graind__Status status = GRAIND__STATUS__INIT;
	char msg[GERR_MSG_MAX];

	/* Messages quote client input (paths, names): keep them valid text. */
	snprintf(msg, sizeof(msg), "%s", err->msg);
	utf8_scrub(msg);
	resp->status = err->status >= 400 && err->status <= 599 ? err->status : 500;
	status.code = resp->status;
	status.message = msg;
	status.verify_report = report;
	set_body(resp, fmt, &status.base);
}

static const ProtobufCFieldDescriptor *field_of(const ProtobufCMessageDescriptor *desc,
						const char *name)
{
	return protobuf_c_message_descriptor_get_field_by_name(desc, name);
}

/* A string field's value, or NULL when the message has no such field. */
static const char *string_field(const ProtobufCMessage *msg, const char *name)
{
	const ProtobufCFieldDescriptor *f = field_of(msg->descriptor, name);

	if (!f || f->type != PROTOBUF_C_TYPE_STRING)
		return NULL;
	return *(const char *const *)((const char *)msg + f->offset);
}

/* The body, decoded into the whole request or into one field of it. An
 * octet-stream upload lends the body bytes to `content` (*lent set). */
static int decode_body(const struct api_route *route, const struct api_request *req,
		       ProtobufCMessage **msg, bool *lent, struct gerr *err)
{
	const ProtobufCMessageDescriptor *desc = (*msg)->descriptor;
	const ProtobufCFieldDescriptor *f = NULL;
	ProtobufCMessage *part;
	enum codec_format fmt;

	if (!route->body) {
		if (req->body_len)
			return gerr_set(err, 400, "%s %s takes no request body",
					route->method, req->path);
		return 0;
	}
	if ((route->flags & ROUTE_RAW_UPLOAD) && is_raw_type(req->content_type)) {
		ProtobufCBinaryData *content =
			(ProtobufCBinaryData *)((char *)*msg + field_of(desc, "content")->offset);

		content->data = (uint8_t *)req->body;
		content->len = req->body_len;
		*lent = true;
		/* Headers are one line: the signature file comes base64. */
		if (req->signature)
			return codec_set_text(*msg, "signature", req->signature, err);
		return 0;
	}
	if (media_is(req->content_type, MIME_JSON))
		fmt = CODEC_JSON;
	else if (is_protobuf_type(req->content_type))
		fmt = CODEC_PROTOBUF;
	else
		return gerr_set(err, 415, "unsupported Content-Type '%s': send %s or %s%s",
				req->content_type ? req->content_type : "",
				MIME_JSON, MIME_PROTOBUF,
				route->flags & ROUTE_RAW_UPLOAD ?
				" (or the raw object as application/octet-stream)" : "");
	if (!(route->flags & ROUTE_RAW_UPLOAD) && req->body_len > API_MAX_MESSAGE_BODY)
		return gerr_set(err, 413, "request body of %zu bytes is over the %d-byte limit",
				req->body_len, API_MAX_MESSAGE_BODY);
	if (strcmp(route->body, "*") != 0) {
		f = field_of(desc, route->body);
		desc = f->descriptor;
	}
	if (fmt == CODEC_JSON && req->body_len == 0)
		return gerr_set(err, 400, "empty body: expected a JSON %s message", desc->name);
	if (codec_decode(fmt, desc, req->body, req->body_len, &part, err) < 0)
		return -1;
	if (f) {
		*(ProtobufCMessage **)((char *)*msg + f->offset) = part;
	} else {
		pbmsg_free(*msg);
		*msg = part;
	}
	return 0;
}

/* If-Match: a probe generation, bare or as a quoted entity tag. */
static int parse_if_match(const char *value, uint64_t *generation, struct gerr *err)
{
	char buf[32], *end;
	size_t len = strlen(value);

	if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
		value++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(buf))
		goto bad;
	memcpy(buf, value, len);
	buf[len] = '\0';
	*generation = strtoull(buf, &end, 10);
	if (*end || buf[0] < '0' || buf[0] > '9' || *generation == 0)
		goto bad;
	return 0;
bad:
	return gerr_set(err, 400, "If-Match must be a probe generation (a positive integer)");
}

static bool is_bound(const char *field, const struct binding *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(b[i].field, field) == 0)
			return true;
	return false;
}

/* The request message of the route: body, then path, query and headers. */
static int build_request(const struct api_route *route, const struct svc_method *m,
			 const struct api_request *req, const struct binding *b, size_t n,
			 ProtobufCMessage **msg, bool *lent, struct gerr *err)
{
	const ProtobufCMessageDescriptor *desc = svc_rpc(m)->input;

	*msg = pbmsg_new(desc);
	if (!*msg)
		return gerr_set(err, 500, "out of memory");
	if (decode_body(route, req, msg, lent, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (codec_set_text(*msg, b[i].field, b[i].value, err) < 0)
			return -1;
	/* Any scalar field the path does not bind may come as a query
	 * parameter; a body's own value wins over the query's. */
	for (unsigned i = 0; req->query && i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		const char *value, *given;

		if (f->label == PROTOBUF_C_LABEL_REPEATED || f->type == PROTOBUF_C_TYPE_MESSAGE ||
		    f->type == PROTOBUF_C_TYPE_BYTES || is_bound(f->name, b, n))
			continue;
		value = req->query(req->query_ctx, f->name);
		given = string_field(*msg, f->name);
		if (!value || (given && given[0]))
			continue;
		if (codec_set_text(*msg, f->name, value, err) < 0)
			return -1;
	}
	if ((route->flags & ROUTE_IF_MATCH) && req->if_match) {
		uint64_t generation = 0;

		if (parse_if_match(req->if_match, &generation, err) < 0)
			return -1;
		*(uint64_t *)((char *)*msg + field_of(desc, "if_generation")->offset) = generation;
	}
	return 0;
}

/* Location of a created resource: the route's template, its "{field}"
 * taken from the response. */
static void set_location(struct api_response *resp, const char *tmpl,
			 const ProtobufCMessage *reply)
{
	const char *open = strchr(tmpl, '{'), *close = open ? strchr(open, '}') : NULL;
	char field[32];
	const char *value;

	if (!close || (size_t)(close - open) > sizeof(field))
		return;
	snprintf(field, sizeof(field), "%.*s", (int)(close - open - 1), open + 1);
	value = string_field(reply, field);
	if (value)
		snprintf(resp->location, sizeof(resp->location), "%.*s%s%s",
			 (int)(open - tmpl), tmpl, value, close + 1);
}

/* A response field sent as the body itself (object bytes, metrics text). */
static void set_raw(struct api_response *resp, const struct api_route *route,
		    ProtobufCMessage *reply)
{
	const ProtobufCFieldDescriptor *f = field_of(reply->descriptor, route->raw_reply);
	char *member = (char *)reply + f->offset;

	if (f->type == PROTOBUF_C_TYPE_BYTES) {
		ProtobufCBinaryData *bd = (ProtobufCBinaryData *)member;

		resp->body = (char *)bd->data;
		resp->body_len = bd->len;
		bd->data = NULL;
		bd->len = 0;
	} else {
		char **text = (char **)member;

		resp->body_len = strlen(*text);
		resp->body = *text == protobuf_c_empty_string ? strdup("") : *text;
		*text = (char *)protobuf_c_empty_string;
	}
	resp->content_type = route->raw_type;
}

void api_handle(struct agent *agent, const struct api_request *req,
		struct api_response *resp)
{
	struct svc_call call = { .agent = agent };
	struct binding b[API_MAX_BINDINGS];
	enum codec_format fmt = reply_format(req->accept);
	ProtobufCMessage *msg = NULL, *reply = NULL;
	const struct svc_method *m = NULL;
	const struct api_route *route;
	struct gerr err = { 0 };
	bool path_known, lent = false;
	size_t n;

	memset(resp, 0, sizeof(*resp));
	route = route_find(req->method, req->path, b, &n, &path_known,
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
	if (!route->rpc) {
		console_serve(n ? b[0].value : "", req->if_none_match, req->accept, resp);
		return;
	}
	m = svc_method_find(route->rpc);
	call.method = req->method;
	call.path = req->path;
	svc_call_identify(&call, agent, req->authorization, req->client_identity,
			  req->peer_address);
	/* Who may not call it learns so before any body is looked at. */
	if (svc_authorize(&call, m, n ? b[0].value : "", &err) < 0)
		goto fail;
	if (build_request(route, m, req, b, n, &msg, &lent, &err) < 0) {
		svc_refused(&call, m, n ? b[0].value : "", &err);
		goto fail;
	}
	if (m->streams) {
		if (api_watch_open(&call, m, msg, req->last_event_id, &resp->watch, &err) < 0)
			goto fail;
		resp->status = 200;
		resp->content_type = "text/event-stream";
		goto out;
	}
	/* A read with a memo answers in its encoding, built once per change
	 * and lent, not copied. */
	if (m->memo_key && !route->raw_reply) {
		struct svc_answer answer;

		if (svc_run_shared(&call, m, msg, fmt, &answer, &err) < 0)
			goto fail;
		resp->status = 200;
		resp->shared = answer.memo;
		resp->body = (char *)answer.data;
		resp->body_len = answer.len;
		resp->content_type = fmt == CODEC_PROTOBUF ? MIME_PROTOBUF : MIME_JSON;
		goto out;
	}
	if (svc_run(&call, m, msg, &reply, &err) < 0)
		goto fail;
	resp->status = call.created ? 201 : svc_rpc(m)->output == &graind__empty__descriptor ? 204 : 200;
	if (call.created && route->location)
		set_location(resp, route->location, reply);
	if (route->raw_reply)
		set_raw(resp, route, reply);
	else if (resp->status != 204)
		set_body(resp, fmt, reply);
	goto out;
fail:
	set_error(resp, fmt, &err, call.report);
	resp->retry_after_s = call.retry_after_s;
out:
	if (lent) {
		ProtobufCBinaryData *content = &((Graind__UploadObjectRequest *)msg)->content;

		content->data = NULL;
		content->len = 0;
	}
	pbmsg_free(msg);
	pbmsg_free(reply);
	pbmsg_free(call.report ? &call.report->base : NULL);
}

void api_refuse(const char *accept, int status, const char *msg,
		struct api_response *resp)
{
	struct gerr err;

	memset(resp, 0, sizeof(*resp));
	gerr_set(&err, status, "%s", msg);
	set_error(resp, reply_format(accept), &err, NULL);
}

void api_response_clear(struct api_response *resp)
{
	if (resp->shared)
		svc_memo_release(resp->shared);
	else if (!resp->body_static)
		free(resp->body);
	resp->shared = NULL;
	resp->body = NULL;
	resp->body_len = 0;
}
