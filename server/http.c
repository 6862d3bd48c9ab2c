#include "server/http.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api/api.h"
#include "server/agent.h"
#include "server/http_guard.h"
#include "server/sse.h"
#include "server/svc/svc.h"
#include "server/tls/tls.h"
#include "server/util/keylimit.h"
#include "server/util/listen.h"
#include "server/util/log.h"

#define CONNECTION_TIMEOUT_S 60
#define CONNECTION_LIMIT 1024

struct http_server;

/* What a daemon's callbacks are given: whether its connections are TLS. */
struct http_listener {
	struct http_server *srv;
	bool tls;
};

struct http_server {
	struct agent *agent;
	struct MHD_Daemon *tcp;
	struct MHD_Daemon *unix_sock;
	struct http_listener tcp_l, unix_l;
	struct sse_hub *sse;            /* the watch routes' streams */
	struct http_guard *guard;       /* per-address limit, deadlines (TCP) */
};

/* A connection's state (its socket context), from accept to close. */
struct http_conn {
	struct http_guard_conn *guard;  /* NULL on the unix socket */
	char address[KEYLIMIT_KEY_MAX]; /* the client's; "" on the unix socket */
	/* TLS: the session's credentials, held (NULL: the set-up failed and
	 * the connection is never served), and the client certificate's
	 * names, read once after the handshake. */
	struct tls_creds *creds;
	char *identity;
	bool identity_read;
};

/* Per-request state: the body read so far. */
struct request_state {
	uint8_t *body;
	size_t len, cap;
	size_t limit;           /* api_body_limit() of this request */
	bool too_large;
	struct http_conn *conn; /* the connection's state */
};

static const char *header(struct MHD_Connection *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

static enum MHD_Result count_authorization(void *cls, enum MHD_ValueKind kind, const char *key,
					   const char *value)
{
	(void)kind, (void)value;
	if (strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION) == 0)
		(*(unsigned *)cls)++;
	return MHD_YES;
}

/* The Authorization header; " " (a credential that grants nothing) when
 * it came twice, as neither can be taken for the caller's. */
static const char *authorization(struct MHD_Connection *conn)
{
	unsigned n = 0;

	MHD_get_connection_values(conn, MHD_HEADER_KIND, count_authorization, &n);
	return n > 1 ? " " : header(conn, MHD_HTTP_HEADER_AUTHORIZATION);
}

static const char *query_param(void *conn, const char *key)
{
	return MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, key);
}

/* On every answer: the console runs no script but its own files, in no
 * frame, and nothing an answer holds is sniffed into something else. */
static void add_security_headers(struct MHD_Response *resp)
{
	MHD_add_response_header(resp, "Content-Security-Policy",
				"default-src 'none'; script-src 'self'; style-src 'self'; "
				"img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
				"form-action 'self'; frame-ancestors 'none'");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(resp, "X-Frame-Options", "DENY");
}

static void release_shared(void *memo)
{
	svc_memo_release(memo);
}

static enum MHD_Result send_response(struct MHD_Connection *conn,
				     struct api_response *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (r->shared)
		resp = MHD_create_response_from_buffer_with_free_callback_cls(
			r->body_len, r->body, release_shared, r->shared);
	else
		resp = MHD_create_response_from_buffer(r->body_len, r->body ? r->body : (void *)"",
						       r->body && !r->body_static ? MHD_RESPMEM_MUST_FREE
						       : MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		api_response_clear(r);
		return MHD_NO;
	}
	r->body = NULL;        /* the response owns it now */
	r->shared = NULL;
	if (r->content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
	if (r->allow[0])
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	if (r->location[0])
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location);
	if (r->retry_after_s) {
		char after[16];

		snprintf(after, sizeof(after), "%u", r->retry_after_s);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, after);
	}
	if (r->etag)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, r->etag);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
				r->cache_control ? r->cache_control : "no-store");
	add_security_headers(resp);
	ret = MHD_queue_response(conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result answer(struct http_server *srv, struct MHD_Connection *conn,
			      const char *method, const char *url,
			      const struct request_state *st)
{
	struct api_request req = {
		.method = method,
		.path = url,
		.content_type = header(conn, MHD_HTTP_HEADER_CONTENT_TYPE),
		.accept = header(conn, MHD_HTTP_HEADER_ACCEPT),
		.authorization = authorization(conn),
		.if_match = header(conn, MHD_HTTP_HEADER_IF_MATCH),
		.if_none_match = header(conn, MHD_HTTP_HEADER_IF_NONE_MATCH),
		.last_event_id = header(conn, "Last-Event-ID"),
		.signature = header(conn, "Graind-Signature"),
		.client_identity = st->conn->identity,
		.peer_address = st->conn->address[0] ? st->conn->address : NULL,
		.body = st->body,
		.body_len = st->len,
		.query = query_param,
		.query_ctx = conn,
	};
	struct api_response resp;

	http_guard_answering(srv->guard, st->conn->guard);
	api_handle(srv->agent, &req, &resp);
	if (resp.watch)
		return sse_respond(srv->sse, conn, resp.watch, req.accept);
	return send_response(conn, &resp);
}

/* A body over the request's limit: a request refused anyway (limit 0) gets
 * that refusal, judged without its body; any other gets 413. */
static enum MHD_Result answer_too_large(struct http_server *srv, struct MHD_Connection *conn,
					const char *method, const char *url,
					struct request_state *st)
{
	struct api_response r;
	char msg[96];

	if (st->limit == 0) {
		st->len = 0;
		return answer(srv, conn, method, url, st);
	}
	http_guard_answering(srv->guard, st->conn->guard);
	snprintf(msg, sizeof(msg), "request body is over the %zu-byte limit", st->limit);
	api_refuse(header(conn, MHD_HTTP_HEADER_ACCEPT), 413, msg, &r);
	return send_response(conn, &r);
}

static bool append_body(struct request_state *st, const char *data, size_t n,
			size_t limit)
{
	if (st->too_large || n > limit - st->len) {
		st->too_large = true;
		return true;            /* keep reading, discard */
	}
	if (st->len + n > st->cap) {
		size_t cap = st->cap ? st->cap : 16384;
		uint8_t *grown;

		while (cap < st->len + n)
			cap *= 2;
		if (cap > limit)
			cap = limit;
		grown = realloc(st->body, cap);
		if (!grown)
			return false;
		st->body = grown;
		st->cap = cap;
	}
	memcpy(st->body + st->len, data, n);
	st->len += n;
	return true;
}

/* The connection's state; NULL when its set-up failed, which only a
 * shortage of memory or a TLS session without the agent's credentials
 * leaves: such a connection is closed, never served. A TLS connection's
 * client certificate names are read here once, after its handshake. */
static struct http_conn *conn_state(const struct http_listener *l, struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct http_conn *hc = ci ? ci->socket_context : NULL;

	if (!hc || (l->tls && !hc->creds))
		return NULL;
	if (l->tls && !hc->identity_read) {
		ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
		if (ci && ci->tls_session)
			hc->identity = tls_peer_identity(ci->tls_session);
		hc->identity_read = true;
	}
	return hc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct http_listener *l = cls;
	struct http_server *srv = l->srv;
	struct request_state *st = *con_cls;

	(void)version;
	if (!st) {
		const char *cl = header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
		struct http_conn *hc = conn_state(l, conn);
		uint64_t announced;

		if (!hc)
			return MHD_NO;
		st = calloc(1, sizeof(*st));
		if (!st)
			return MHD_NO;
		*con_cls = st;
		st->conn = hc;
		st->limit = api_body_limit(srv->agent, method, url, authorization(conn),
					   hc->identity);
		announced = cl ? strtoull(cl, NULL, 10) : st->limit;
		http_guard_headers_in(srv->guard, hc->guard,
				      announced < st->limit ? announced : st->limit);
		/* Refuse an announced oversized body before reading any of it. */
		if (cl && strtoull(cl, NULL, 10) > st->limit) {
			st->too_large = true;
			return answer_too_large(srv, conn, method, url, st);
		}
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (!append_body(st, upload_data, *upload_data_size, st->limit))
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (st->too_large)
		return answer_too_large(srv, conn, method, url, st);
	return answer(srv, conn, method, url, st);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http_server *srv = cls;
	struct request_state *st = *con_cls;

	(void)conn, (void)toe;
	if (st) {
		http_guard_request_done(srv->guard, st->conn->guard);
		free(st->body);
		free(st);
		*con_cls = NULL;
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decoding of paths and query values that leaves "%00" as it is:
 * a decoded NUL would silently cut an id or a name short, while the
 * literal "%00" fails validation with a clear message. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	char *out = s;

	(void)cls, (void)conn;
	for (char *in = s; *in; in++) {
		int hi, lo;

		if (*in == '%' && (hi = hexval(in[1])) >= 0 && (lo = hexval(in[2])) >= 0 &&
		    (hi | lo) != 0) {
			*out++ = (char)(hi << 4 | lo);
			in += 2;
		} else {
			*out++ = *in;
		}
	}
	*out = '\0';
	return (size_t)(out - s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	log_debug("msg=\"libmicrohttpd\" detail=\"%s\"", line);
}

/* Every TLS session gets the agent's current credentials from
 * on_connection(); this stands in for libmicrohttpd's own and fails
 * the handshake, so a session that did not get them can never complete
 * one. */
static int no_certificate(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
			  const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
			  gnutls_pcert_st **pcert, unsigned int *pcert_length,
			  gnutls_privkey_t *privkey)
{
	(void)session, (void)req_ca_rdn, (void)nreqs, (void)pk_algos, (void)pk_algos_length;
	(void)pcert, (void)privkey;
	*pcert_length = 0;
	return -1;
}

/* libmicrohttpd's accept policy: one address holds its share at most. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	struct http_listener *l = cls;

	(void)addrlen;
	return http_guard_admit(l->srv->guard, addr) ? MHD_YES : MHD_NO;
}

/* A connection was accepted (a TLS one's session exists, its handshake
 * has not begun) or closed (before its socket is). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct http_listener *l = cls;
	struct http_conn *hc = *socket_context;
	const union MHD_ConnectionInfo *fd, *addr, *ci;

	if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		if (hc) {
			http_guard_close(l->srv->guard, hc->guard);
			tls_release(hc->creds);
			free(hc->identity);
			free(hc);
			*socket_context = NULL;
		}
		return;
	}
	if (!(hc = calloc(1, sizeof(*hc)))) {
		log_warn("msg=\"connection not set up (out of memory); it will be closed\"");
		return;
	}
	*socket_context = hc;
	fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	addr = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (l == &l->srv->tcp_l && fd && addr) {
		listen_peer_text(addr->client_addr, hc->address, sizeof(hc->address));
		hc->guard = http_guard_open(l->srv->guard, fd->connect_fd, addr->client_addr);
	}
	if (!l->tls)
		return;
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	if (!ci || !ci->tls_session ||
	    tls_session_prepare(l->srv->agent->tls, ci->tls_session, &hc->creds) < 0)
		log_warn("msg=\"TLS connection not set up; it will be closed\"");
}

static struct MHD_Daemon *start_daemon(struct http_server *srv, int fd, struct http_listener *l)
{
	const struct agent *ag = srv->agent;
	struct MHD_OptionItem tls_opts[] = {
		{ MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)no_certificate },
		{ MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES },
		{ MHD_OPTION_END, 0, NULL },
	};

	return MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
		MHD_ALLOW_SUSPEND_RESUME |
		(l->tls ? MHD_USE_TLS : 0),
		0, on_accept, l, on_request, l,
		MHD_OPTION_ARRAY, l->tls ? tls_opts : tls_opts + 2,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, l,
		MHD_OPTION_LISTEN_SOCKET, fd,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)ag->cfg.threads,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONNECTION_TIMEOUT_S,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONNECTION_LIMIT,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
		MHD_OPTION_UNESCAPE_CALLBACK, unescape, srv,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv,
		MHD_OPTION_END);
}

int http_start(struct agent *agent, struct http_server **out, struct gerr *err)
{
	struct http_server *srv = calloc(1, sizeof(*srv));
	int fd;

	*out = NULL;
	if (!srv)
		return gerr_set(err, 500, "out of memory");
	srv->agent = agent;
	srv->tcp_l = (struct http_listener){ .srv = srv, .tls = agent->tls != NULL };
	srv->unix_l = (struct http_listener){ .srv = srv };
	if (sse_hub_start(agent, &srv->sse, err) < 0 || http_guard_start(&srv->guard, err) < 0)
		goto fail;
	if (agent->tls && (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES ||
			   MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK) != MHD_YES)) {
		gerr_set(err, 500, "this libmicrohttpd was built without TLS (GnuTLS) support");
		goto fail;
	}
	if (agent->cfg.listen_host[0]) {
		fd = listen_tcp(agent->cfg.listen_host, agent->cfg.listen_port,
				agent->listen_tcp, sizeof(agent->listen_tcp), err);
		if (fd < 0)
			goto fail;
		srv->tcp = start_daemon(srv, fd, &srv->tcp_l);
		if (!srv->tcp) {
			close(fd);
			gerr_set(err, 500, "cannot start the HTTP server on %s", agent->listen_tcp);
			goto fail;
		}
	}
	if (agent->cfg.socket_path[0]) {
		fd = listen_unix(agent->cfg.socket_path, "--socket", err);
		if (fd < 0)
			goto fail;
		srv->unix_sock = start_daemon(srv, fd, &srv->unix_l);
		if (!srv->unix_sock) {
			close(fd);
			gerr_set(err, 500, "cannot start the HTTP server on %s",
				 agent->cfg.socket_path);
			goto fail;
		}
	}
	*out = srv;
	return 0;
fail:
	http_stop(srv);
	return -1;
}

void http_stop(struct http_server *srv)
{
	if (!srv)
		return;
	sse_hub_end(srv->sse);          /* suspended streams must not outlive the daemons */
	if (srv->tcp)
		MHD_stop_daemon(srv->tcp);
	if (srv->unix_sock) {
		MHD_stop_daemon(srv->unix_sock);
		unlink(srv->agent->cfg.socket_path);
	}
	sse_hub_free(srv->sse);
	http_guard_stop(srv->guard);
	free(srv);
}
