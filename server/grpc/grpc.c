/* grpc: connections, streams and the loop that serves them.
 *
 * One loop thread owns every connection, every nghttp2 session and every
 * stream; nothing else touches them. A Graind call becomes a job that a
 * worker runs; the worker puts the finished job on the done list and
 * wakes the loop through an eventfd, and the loop sends the answer if the
 * stream still wants it (a stream that was reset or ran out of time has
 * already been answered, and the job is only freed).
 *
 * Calls that answer from memory (svc_method.quick: health, status) run in
 * the loop itself. Hand-overs to the workers are batched both ways,
 * because a wake-up costs more than a small call: the jobs of one loop
 * turn reach the queue together with one signal, a worker that takes a job
 * wakes another only while more wait, and the loop hears of a done list
 * once, however long it grew.
 *
 * Bounds: SETTINGS_MAX_CONCURRENT_STREAMS per connection, a number of
 * connections, a request message limit per rpc (REST's body limits), and
 * the request bytes held by all streams together. Output waits in the
 * stream's buffer until nghttp2 asks for it under flow control; the
 * connection's write buffer holds at most FLUSH_BYTES and one frame
 * beyond it. */
#define _GNU_SOURCE             /* accept4 */
#include "server/grpc/grpc.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/agent.h"
#include "server/refusals.h"
#include "server/grpc/grpc_int.h"
#include "server/svc/svc.h"
#include "server/grpc/grpc_tls.h"
#include "server/util/keylimit.h"
#include "server/util/clock.h"
#include "server/util/listen.h"
#include "server/util/log.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif

#define MAX_STREAMS 100                 /* per connection */
#define MAX_CONNS 256
#define WORKERS 4
#define STREAM_WINDOW (1 << 20)
#define CONN_WINDOW (4 << 20)
#define DRAIN_MS 10000                  /* calls in flight at shutdown finish within */
#define HEADER_MAX 1024
#define PREFACE_MS 10000                /* to send the preface and SETTINGS */
#define IDLE_MS 60000                   /* a connection without streams, as REST's */
#define LINGER_MS 2000                  /* a finished connection waits for the client's close */
#define MAX_WATCHES 256                 /* WatchSamples/WatchProbes streams open at once */
#define FLUSH_BYTES 16384               /* gathered for one write */
#define SPARE_STREAMS MAX_STREAMS       /* freed streams kept for reuse */

enum item_kind { ITEM_LISTENER, ITEM_WAKE, ITEM_CONN };

enum stream_kind {
	KIND_GRAIND,
	KIND_HEALTH,
	KIND_HEALTH_WATCH,              /* stays open; NOT_SERVING at shutdown */
	KIND_REFLECTION,
	KIND_WATCH,                     /* a server-streaming Graind rpc */
};

struct grpc_server;
struct conn;
struct job;

struct stream {
	int32_t id;
	struct conn *conn;
	struct stream *prev, *next;     /* in conn->streams */
	enum stream_kind kind;
	const struct svc_method *m;
	/* Request messages. */
	uint8_t *in;
	size_t in_len, in_cap, limit;   /* limit: of one message */
	int64_t deadline_ms;            /* 0: none */
	struct job *job;                /* the call running for it */
	bool watching;                  /* a health Watch of a known service */
	struct svc_watch *watch;        /* KIND_WATCH, when no job has it */
	bool watch_more;                /* its last step emitted: step again once sent */
	/* The answer. */
	bool answered;                  /* status (or an HTTP error) decided */
	bool started;                   /* response HEADERS submitted */
	bool plain;                     /* an HTTP error, not a gRPC answer */
	uint8_t *out;
	size_t out_len, out_off;
	/* The status the trailers carry: a grpc_reply's, its message copied
	 * only when there is one (most answers are OK, and a whole reply
	 * per stream was a tenth of the cost of a call). */
	int code;
	char *msg;                      /* malloc'd, NULL: none */
	char *details_bin;              /* malloc'd, NULL: none */

	/* Not cleared when a spare is reused (stream_get): most of its
	 * bytes, written before they are read. */
	/* Request headers used after its header block (conn->hdr: the rest). */
	char path[160], timeout[32], encoding[32];
	/* KIND_GRAIND, KIND_WATCH: who calls m, written whole by
	 * grpc_call_identify() in stream_begin() before any use. */
	struct svc_call caller;
};

/* The headers of the request whose header block is being read, needed
 * only by stream_begin() at its end: HTTP/2 never interleaves two header
 * blocks, so one connection needs one set (cleared when a block starts). */
struct req_headers {
	struct stream *stream;          /* whose they are; NULL once it is freed */
	char method[16], ctype[128], auth[HEADER_MAX];
	bool too_long;                  /* one of the stream's headers did not fit */
	bool auth_seen;                 /* an authorization header came */
};

struct conn {
	enum item_kind kind;
	int fd;
	struct grpc_server *srv;
	struct conn *prev, *next;
	struct grpc_tls *tls;           /* NULL: plain h2c */
	struct sockaddr_storage peer;   /* its address (TCP), for the per-address bound */
	char address[KEYLIMIT_KEY_MAX]; /* the same as text; "" on the unix socket */
	socklen_t peer_len;
	bool tls_done;                  /* its handshake is complete */
	nghttp2_session *session;
	struct stream *streams;
	uint8_t *pend;                  /* bytes nghttp2 gave that the socket did not take */
	size_t pend_len, pend_off, pend_cap;
	size_t in_bytes, out_bytes;     /* what its streams hold, requests and answers */
	int64_t idle_since;             /* when it last had a stream, or opened */
	bool seen_frame;                /* the client spoke HTTP/2 */
	struct svc_caller_cache callers;        /* who its last call was */
	struct req_headers hdr;
	const struct svc_method *last_m;        /* its last stream's rpc, or NULL */
	bool want_out, dead;
	/* nghttp2 is done with it: our side is shut, and what the client
	 * still sends is read and dropped until it closes (or LINGER_MS), so
	 * that close() sends no RST that would discard our last answer. */
	bool lingering;
	int64_t linger_until;
	struct conn *dead_next;
};

struct listener {
	enum item_kind kind;
	int fd;
	bool tls;
};

struct job {
	struct job *next;
	struct stream *stream;          /* loop side: NULL once nobody waits */
	bool cancelled;                 /* under srv->lock */
	const struct svc_method *m;
	struct svc_call caller;         /* the stream's, pointing at identity */
	char *identity;                 /* the client certificate's names, or NULL */
	uint8_t *in;
	size_t in_len;
	struct grpc_reply reply;
	/* A watch step: the watch (NULL before it is opened from `in`). */
	bool watch_step;
	struct svc_watch *watch;
	int emitted;                    /* its count; -1: the watch ended */
};

struct grpc_server {
	struct agent *agent;
	int epfd;
	struct listener tcp, unix_sock;
	struct listener wake;           /* an eventfd: jobs done, or stop */
	pthread_t loop;
	bool loop_started;
	pthread_t workers[WORKERS];
	unsigned n_workers;
	struct conn *conns, *dead;
	unsigned n_conns;
	size_t in_bytes, in_max;        /* request bytes held by every stream */
	size_t conn_in_max, conn_out_max;       /* and by one connection's */
	unsigned n_deadlines;
	unsigned n_watches;             /* KIND_WATCH streams */
	bool subscribed;                /* wake.fd hears of what watches follow */
	/* Shared with workers and grpc_stop(), under lock. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *queue, **queue_tail;
	struct job *done;
	bool stop, workers_stop;
	/* Loop only. */
	struct job *ready, **ready_tail;        /* made this turn, not queued yet */
	bool draining;
	int64_t drain_until;
	/* Streams freed, kept for the next ones: a stream is larger than
	 * malloc's per-thread cache takes, and every call needs one. */
	struct stream *spare;
	unsigned n_spare;
};

/* ---------------------------------------------------------------- answers */

static int64_t now_ms(void)
{
	return (int64_t)(clock_mono_us() / 1000);
}

static void conn_flush(struct conn *c);
static int pend_append(struct conn *c, const uint8_t *data, size_t n);

/* grpc-message: printable ASCII but '%' as is, every other byte %XX. */
static void percent_encode(const char *in, char *out, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < n; p++) {
		if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	out[o] = '\0';
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

/* The status headers of s into nva (room for 3); their count. `msg` is
 * the buffer for the encoded message. */
static size_t status_headers(const struct stream *s, nghttp2_nv *nva, char code[12],
			     char *msg, size_t msg_n)
{
	size_t n = 0;

	/* Codes are 0 to 16: no printf for every call. */
	if (s->code >= 0 && s->code < 10) {
		code[0] = (char)('0' + s->code);
		code[1] = '\0';
	} else {
		snprintf(code, 12, "%d", s->code);
	}
	nva[n++] = (nghttp2_nv)NV("grpc-status", code);
	if (s->msg) {
		percent_encode(s->msg, msg, msg_n);
		nva[n++] = (nghttp2_nv)NV("grpc-message", msg);
	}
	if (s->details_bin)
		nva[n++] = (nghttp2_nv)NV("grpc-status-details-bin", s->details_bin);
	return n;
}

/* Header fields that live as long as the program: nghttp2 need not copy
 * them. */
#define NV_STATIC(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, \
			  NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE }

/* The trailers of most answers, built once. */
static const nghttp2_nv ok_trailers[] = { NV_STATIC("grpc-status", "0") };

/* The next DATA frame of s: up to `length` bytes of s->out, which
 * send_out() writes from where they are (NGHTTP2_DATA_FLAG_NO_COPY: no
 * copy into nghttp2's buffer first); its trailers after the last. */
static ssize_t read_out(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
			uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
	struct stream *s = source->ptr;
	size_t n = s->out_len - s->out_off;

	(void)buf, (void)user_data;
	if (n > length)
		n = length;
	if (n)
		*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (s->out_off + n < s->out_len)
		return (ssize_t)n;
	if (!s->answered)
		return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (!s->plain) {
		char code[12], msg[3 * GERR_MSG_MAX + 1];
		nghttp2_nv nva[3];
		size_t nv = 0;

		if (s->code != GRPC_OK || s->msg || s->details_bin)
			nv = status_headers(s, nva, code, msg, sizeof(msg));
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (nghttp2_submit_trailer(session, id, nv ? nva : ok_trailers, nv ? nv : 1) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return (ssize_t)n;
}

/* A DATA frame read_out() chose: its header, then its bytes from s->out,
 * to the connection's write buffer. Past FLUSH_BYTES nghttp2 pauses, so
 * that the buffer still holds at most one frame beyond it. */
static int send_out(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
		    size_t length, nghttp2_data_source *source, void *user_data)
{
	struct conn *c = user_data;
	struct stream *s = source->ptr;

	(void)session;
	/* Nothing asks nghttp2 for padding, which would go between. */
	if (frame->data.padlen || pend_append(c, framehd, 9) < 0 ||
	    pend_append(c, s->out + s->out_off, length) < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	s->out_off += length;
	c->out_bytes -= length;
	if (s->out_off == s->out_len) {
		free(s->out);
		s->out = NULL;
		s->out_len = s->out_off = 0;
	}
	return c->pend_len - c->pend_off >= FLUSH_BYTES ? NGHTTP2_ERR_PAUSE : 0;
}

/* Queue bytes of a response (framed messages, or an HTTP error's text). */
static int stream_out(struct stream *s, const uint8_t *data, size_t len)
{
	uint8_t *grown;

	if (!len)
		return 0;
	grown = realloc(s->out, s->out_len + len);
	if (!grown)
		return -1;
	memcpy(grown + s->out_len, data, len);
	s->out = grown;
	s->out_len += len;
	s->conn->out_bytes += len;
	return 0;
}

/* As stream_out, with a malloc'd *data: taken rather than copied when
 * nothing waits (a unary answer), NULL then. */
static int stream_out_take(struct stream *s, uint8_t **data, size_t len)
{
	if (s->out || !len)
		return stream_out(s, *data, len);
	s->out = *data;
	*data = NULL;
	s->out_len = len;
	s->conn->out_bytes += len;
	return 0;
}

/* The response headers of every gRPC answer. */
static const nghttp2_nv grpc_headers[] = {
	NV_STATIC(":status", "200"), NV_STATIC("content-type", "application/grpc"),
};

/* Start the gRPC response (once), or tell nghttp2 there is more to send. */
static void stream_kick(struct stream *s)
{
	nghttp2_session *session = s->conn->session;
	nghttp2_data_provider dp = { .source.ptr = s, .read_callback = read_out };

	if (s->started) {
		nghttp2_session_resume_data(session, s->id);
		return;
	}
	s->started = true;
	nghttp2_submit_response(session, s->id, grpc_headers, 2, &dp);
}

static void deadline_clear(struct stream *s)
{
	if (s->deadline_ms) {
		s->deadline_ms = 0;
		s->conn->srv->n_deadlines--;
	}
}

/* The job no longer answers s: a worker skips it or its answer is dropped. */
static void job_detach(struct stream *s)
{
	struct grpc_server *srv = s->conn->srv;

	if (!s->job)
		return;
	pthread_mutex_lock(&srv->lock);
	s->job->cancelled = true;
	pthread_mutex_unlock(&srv->lock);
	s->job->stream = NULL;
	s->job = NULL;
}

static void in_release(struct stream *s)
{
	s->conn->srv->in_bytes -= s->in_cap;
	s->conn->in_bytes -= s->in_cap;
	free(s->in);
	s->in = NULL;
	s->in_len = s->in_cap = 0;
}

/* End s with a status: trailers after what it sent, or trailers only
 * when it sent nothing. `r` is taken (its messages go first). The rest of
 * a request still arriving is read and dropped: gRPC clients take a
 * RST_STREAM(NO_ERROR) after the answer for a failure. */
static void stream_finish(struct stream *s, struct grpc_reply *r)
{
	nghttp2_session *session = s->conn->session;

	if (s->answered) {
		grpc_reply_clear(r);
		return;
	}
	/* A client that does not read its answers makes them wait here:
	 * past a bound, a new one is refused instead. */
	if (r->data && r->len > s->conn->srv->conn_out_max - s->conn->out_bytes) {
		size_t unread = s->conn->out_bytes;

		grpc_reply_clear(r);
		grpc_reply_status(r, GRPC_RESOURCE_EXHAUSTED,
				  "this connection has %zu bytes of answers unread", unread);
	} else if (r->data && stream_out_take(s, &r->data, r->len) < 0) {
		grpc_reply_clear(r);
		grpc_reply_status(r, GRPC_INTERNAL, "out of memory for the response");
	}
	s->code = r->code;
	/* Out of memory for its message, the status goes without it. */
	if (r->msg[0])
		s->msg = strdup(r->msg);
	s->details_bin = r->details_bin;
	r->details_bin = NULL;
	grpc_reply_clear(r);
	s->answered = true;
	deadline_clear(s);
	job_detach(s);
	in_release(s);
	if (!s->started && !s->out_len) {
		char code[12], msg[3 * GERR_MSG_MAX + 1];
		nghttp2_nv nva[5] = { grpc_headers[0], grpc_headers[1] };
		size_t n = 2 + status_headers(s, nva + 2, code, msg, sizeof(msg));

		s->started = true;
		nghttp2_submit_response(session, s->id, nva, n, NULL);
	} else {
		stream_kick(s);
	}
}

static void stream_fail(struct stream *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void stream_fail(struct stream *s, int code, const char *fmt, ...)
{
	struct grpc_reply r = { .code = code };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r.msg, sizeof(r.msg), fmt, ap);
	va_end(ap);
	stream_finish(s, &r);
}

/* An HTTP-level refusal (no gRPC request at all): a status and, as
 * gRPC clients show the headers only, the reason in grpc-message too. */
static void stream_http_error(struct stream *s, const char *status,
			      const char *text)
{
	char msg[3 * 256 + 1];
	nghttp2_nv nva[3] = { NV(":status", status), NV("content-type", "text/plain") };

	s->answered = s->plain = s->started = true;
	deadline_clear(s);
	in_release(s);
	percent_encode(text, msg, sizeof(msg));
	nva[2] = (nghttp2_nv)NV("grpc-message", msg);
	nghttp2_submit_response(s->conn->session, s->id, nva, 3, NULL);
}

/* ---------------------------------------------------------------- requests */

/* The names of the connection's verified client certificate, or NULL. */
static const char *conn_identity(const struct conn *c)
{
	return c->tls ? grpc_tls_identity(c->tls) : NULL;
}

/* grpc-timeout: up to 8 digits and a unit; the milliseconds, -1 when bad. */
static int64_t parse_timeout(const char *v)
{
	size_t n = strlen(v);
	int64_t x = 0;

	if (n < 2 || n > 9)
		return -1;
	for (size_t i = 0; i + 1 < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (v[i] - '0');
	}
	switch (v[n - 1]) {
	case 'H': return x * 3600000;
	case 'M': return x * 60000;
	case 'S': return x * 1000;
	case 'm': return x;
	case 'u': return (x + 999) / 1000;
	case 'n': return (x + 999999) / 1000000;
	}
	return -1;
}

static bool grpc_content_type(const char *v)
{
	static const char base[] = "application/grpc";
	size_t n = sizeof(base) - 1;

	/* What every gRPC client sends, as it is spelled. */
	if (strcmp(v, base) == 0)
		return true;
	if (strncasecmp(v, base, n) != 0)
		return false;
	v += n;
	if (strncasecmp(v, "+proto", 6) == 0)
		v += 6;
	return *v == '\0' || *v == ';';
}

static bool compressed_encoding(const struct stream *s)
{
	return s->encoding[0] && strcmp(s->encoding, "identity") != 0;
}

/* All request headers are in: decide what the stream is, or refuse it. */
static void stream_begin(struct stream *s)
{
	struct grpc_server *srv = s->conn->srv;
	const struct req_headers *h = &s->conn->hdr;
	const char *p = s->path;
	struct grpc_reply r;

	grpc_reply_init(&r);

	if (h->too_long) {
		stream_http_error(s, "431", "a request header is too long");
		return;
	}
	if (strcmp(h->method, "POST") != 0) {
		stream_http_error(s, "405", "gRPC requests are POST");
		return;
	}
	if (!grpc_content_type(h->ctype)) {
		char text[256];

		snprintf(text, sizeof(text), "unsupported content-type '%.128s': send application/grpc or application/grpc+proto",
			 h->ctype);
		stream_http_error(s, "415", text);
		return;
	}
	s->limit = GRPC_MAX_MESSAGE;
	if (strncmp(p, "/graind.Graind/", 15) == 0) {
		s->kind = KIND_GRAIND;
		/* A client calls the same rpc again and again. */
		if (!s->conn->last_m || strcmp(svc_rpc(s->conn->last_m)->name, p + 15) != 0)
			s->conn->last_m = svc_method_find(p + 15);
		s->m = s->conn->last_m;
		if (!s->m) {
			stream_fail(s, GRPC_UNIMPLEMENTED, "no rpc %.100s in graind.Graind", p + 15);
			return;
		}
		if (strcmp(p + 15, "UploadObject") == 0)
			s->limit = srv->agent->cfg.max_object_size + 64 * 1024;
		if (s->m->streams) {
			if (srv->n_watches >= MAX_WATCHES) {
				stream_fail(s, GRPC_RESOURCE_EXHAUSTED,
					    "%u watches are open already; close one or try later",
					    srv->n_watches);
				return;
			}
			s->kind = KIND_WATCH;
			srv->n_watches++;
		}
		/* Who may not call it hears so before any message is read. */
		if (grpc_call_identify(srv->agent, s->m, h->auth[0] ? h->auth : NULL,
				       conn_identity(s->conn), s->conn->address, &s->conn->callers,
				       &s->caller, &r) < 0) {
			stream_finish(s, &r);
			return;
		}
	} else if (strcmp(p, "/grpc.health.v1.Health/Check") == 0) {
		s->kind = KIND_HEALTH;
	} else if (strcmp(p, "/grpc.health.v1.Health/Watch") == 0) {
		s->kind = KIND_HEALTH_WATCH;
	} else if (strcmp(p, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo") == 0 ||
		   strcmp(p, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") == 0) {
		s->kind = KIND_REFLECTION;
	} else {
		stream_fail(s, GRPC_UNIMPLEMENTED, "no method %.140s here", p);
		return;
	}
	if (s->timeout[0]) {
		int64_t ms = parse_timeout(s->timeout);

		if (ms < 0) {
			stream_fail(s, GRPC_INTERNAL, "malformed grpc-timeout '%s'", s->timeout);
			return;
		}
		s->deadline_ms = now_ms() + ms;
		srv->n_deadlines++;
	}
}

/* A job for s's call, with a caller of its own: the connection may go
 * while a worker runs it. */
static struct job *job_new(struct stream *s)
{
	struct job *j = calloc(1, sizeof(*j));
	const char *identity = conn_identity(s->conn);

	if (!j)
		return NULL;
	if (identity && !(j->identity = strdup(identity))) {
		free(j);
		return NULL;
	}
	j->caller = s->caller;
	j->caller.client_identity = j->identity;
	j->caller.peer_address = NULL;
	j->m = s->m;
	j->stream = s;
	return j;
}

static void job_free(struct job *j);

/* j runs once the loop turn that made it ends (jobs_hand_over). */
static void job_queue(struct grpc_server *srv, struct job *j)
{
	*srv->ready_tail = j;
	srv->ready_tail = &j->next;
}

/* This turn's jobs go to the workers, with one wake-up. */
static void jobs_hand_over(struct grpc_server *srv)
{
	if (!srv->ready)
		return;
	pthread_mutex_lock(&srv->lock);
	*srv->queue_tail = srv->ready;
	srv->queue_tail = srv->ready_tail;
	pthread_cond_signal(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	srv->ready = NULL;
	srv->ready_tail = &srv->ready;
}

/* One whole request message of s, unframed: answer it. */
static void stream_message(struct stream *s, const uint8_t *msg, size_t len)
{
	struct grpc_server *srv = s->conn->srv;
	struct grpc_reply r;
	bool known;
	struct job *j;

	grpc_reply_init(&r);
	switch (s->kind) {
	case KIND_HEALTH:
		grpc_health_check(!srv->draining && svc_serving(srv->agent), false, msg, len,
				  &known, &r);
		stream_finish(s, &r);
		return;
	case KIND_HEALTH_WATCH:
	case KIND_REFLECTION:
		/* Each request answered as it comes; the status when the
		 * client half-closes (a watch: at shutdown). */
		if (s->kind == KIND_HEALTH_WATCH &&
		    grpc_health_check(!srv->draining && svc_serving(srv->agent), true, msg, len,
				      &s->watching, &r) < 0) {
			stream_finish(s, &r);
			return;
		}
		if (s->kind == KIND_REFLECTION && grpc_reflection_answer(msg, len, &r) < 0) {
			stream_finish(s, &r);
			return;
		}
		if (r.len > srv->conn_out_max - s->conn->out_bytes) {
			grpc_reply_clear(&r);
			stream_fail(s, GRPC_RESOURCE_EXHAUSTED,
				    "this connection has %zu bytes of answers unread", s->conn->out_bytes);
			return;
		}
		if (stream_out(s, r.data, r.len) < 0) {
			grpc_reply_clear(&r);
			stream_fail(s, GRPC_INTERNAL, "out of memory for the response");
			return;
		}
		grpc_reply_clear(&r);
		stream_kick(s);
		return;
	case KIND_GRAIND:
		/* An answer from memory costs less than a worker's wake-up. */
		if (s->m->quick) {
			grpc_call_run(&s->caller, s->m, msg, len, &r);
			stream_finish(s, &r);
			return;
		}
		break;
	case KIND_WATCH:
		break;
	}
	j = job_new(s);
	if (!j || !(j->in = malloc(len ? len : 1))) {
		job_free(j);
		stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "out of memory for the request");
		return;
	}
	memcpy(j->in, msg, len);
	j->in_len = len;
	j->watch_step = s->kind == KIND_WATCH;
	s->job = j;
	in_release(s);
	job_queue(srv, j);
}

/* The client half-closed: a unary call has its one message now. */
static void stream_input_done(struct stream *s)
{
	size_t len;

	if (s->answered)
		return;
	if (s->kind == KIND_HEALTH_WATCH && !s->started) {
		stream_fail(s, GRPC_INTERNAL, "no request message");
		return;
	}
	if (s->kind == KIND_HEALTH_WATCH)
		return;                 /* it goes on until shutdown */
	if (s->kind == KIND_REFLECTION) {
		if (s->in_len)
			stream_fail(s, GRPC_INTERNAL, "truncated message: %zu bytes after the last one",
				    s->in_len);
		else
			stream_fail(s, GRPC_OK, "%s", "");
		return;
	}
	if (s->in_len < GRPC_PREFIX) {
		stream_fail(s, GRPC_INTERNAL, s->in_len ? "truncated message prefix" :
			    "no request message: a unary rpc needs exactly one");
		return;
	}
	len = (size_t)s->in[1] << 24 | (size_t)s->in[2] << 16 | (size_t)s->in[3] << 8 | s->in[4];
	if (s->in_len - GRPC_PREFIX < len) {
		stream_fail(s, GRPC_INTERNAL, "truncated message: the prefix says %zu bytes, %zu came",
			    len, s->in_len - GRPC_PREFIX);
		return;
	}
	if (s->in_len - GRPC_PREFIX > len) {
		stream_fail(s, GRPC_UNIMPLEMENTED, "more than one request message for a unary rpc");
		return;
	}
	stream_message(s, s->in + GRPC_PREFIX, len);
}

/* Check the prefix of the message at the head of s->in; false when the
 * stream was refused. */
static bool prefix_ok(struct stream *s)
{
	size_t len;

	if (s->in_len < GRPC_PREFIX)
		return true;
	if (s->in[0] == 1) {
		if (compressed_encoding(s))
			stream_fail(s, GRPC_UNIMPLEMENTED,
				    "compressed messages (grpc-encoding %s) are not supported: send them uncompressed",
				    s->encoding);
		else
			stream_fail(s, GRPC_INTERNAL,
				    "compressed flag set but no grpc-encoding was sent");
		return false;
	}
	if (s->in[0] != 0) {
		stream_fail(s, GRPC_INTERNAL, "bad message flag %u", s->in[0]);
		return false;
	}
	len = (size_t)s->in[1] << 24 | (size_t)s->in[2] << 16 | (size_t)s->in[3] << 8 | s->in[4];
	if (len > s->limit) {
		stream_fail(s, GRPC_RESOURCE_EXHAUSTED,
			    "request message of %zu bytes is over the %zu-byte limit", len, s->limit);
		return false;
	}
	return true;
}

static void stream_data(struct stream *s, const uint8_t *data, size_t n)
{
	struct grpc_server *srv = s->conn->srv;

	if (s->answered || s->job)
		return;
	if ((s->kind == KIND_GRAIND || s->kind == KIND_WATCH) &&
	    s->in_len + n > s->limit + GRPC_PREFIX && prefix_ok(s)) {
		stream_fail(s, GRPC_RESOURCE_EXHAUSTED,
			    "more than one request message for a unary rpc, or one over the %zu-byte limit",
			    s->limit);
		return;
	}
	if (s->answered)
		return;
	if (s->in_len + n > s->in_cap) {
		/* Small to start: most requests are a few bytes, and an
		 * allocation this size comes from malloc's per-thread cache. */
		size_t cap = s->in_cap ? s->in_cap : 64;
		uint8_t *grown;

		while (cap < s->in_len + n)
			cap *= 2;
		/* Never more than its largest message takes. */
		if ((s->kind == KIND_GRAIND || s->kind == KIND_WATCH) && cap > s->limit + GRPC_PREFIX)
			cap = s->limit + GRPC_PREFIX;
		if (cap - s->in_cap > srv->in_max - srv->in_bytes) {
			stream_fail(s, GRPC_RESOURCE_EXHAUSTED,
				    "the agent holds %zu bytes of requests already; try again", srv->in_bytes);
			return;
		}
		if (cap - s->in_cap > srv->conn_in_max - s->conn->in_bytes) {
			stream_fail(s, GRPC_RESOURCE_EXHAUSTED,
				    "this connection's streams hold %zu bytes of requests already",
				    s->conn->in_bytes);
			return;
		}
		grown = realloc(s->in, cap);
		if (!grown) {
			stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "out of memory for the request");
			return;
		}
		srv->in_bytes += cap - s->in_cap;
		s->conn->in_bytes += cap - s->in_cap;
		s->in = grown;
		s->in_cap = cap;
	}
	memcpy(s->in + s->in_len, data, n);
	s->in_len += n;
	if (!prefix_ok(s))
		return;
	/* Streams of messages (reflection, watch) are answered message by
	 * message. */
	while ((s->kind == KIND_REFLECTION || s->kind == KIND_HEALTH_WATCH) && !s->answered &&
	       s->in_len >= GRPC_PREFIX) {
		size_t len = (size_t)s->in[1] << 24 | (size_t)s->in[2] << 16 |
			     (size_t)s->in[3] << 8 | s->in[4];

		if (s->in_len - GRPC_PREFIX < len)
			break;
		stream_message(s, s->in + GRPC_PREFIX, len);
		if (s->answered)
			break;
		memmove(s->in, s->in + GRPC_PREFIX + len, s->in_len - GRPC_PREFIX - len);
		s->in_len -= GRPC_PREFIX + len;
		if (!prefix_ok(s))
			break;
	}
}

/* A stream for a new request: a spare one, cleared up to its header
 * copies and caller (see struct stream), or a new one; NULL when out of
 * memory. */
static struct stream *stream_get(struct grpc_server *srv)
{
	struct stream *s = srv->spare;

	if (!s)
		return calloc(1, sizeof(*s));
	ASAN_UNPOISON_MEMORY_REGION(s, sizeof(*s));
	srv->spare = s->next;
	srv->n_spare--;
	memset(s, 0, offsetof(struct stream, path));
	s->path[0] = s->timeout[0] = s->encoding[0] = '\0';
	return s;
}

/* s is done with: kept as a spare (a few), or freed. */
static void stream_put(struct grpc_server *srv, struct stream *s)
{
	if (srv->n_spare >= SPARE_STREAMS) {
		free(s);
		return;
	}
	s->next = srv->spare;
	srv->spare = s;
	srv->n_spare++;
	/* A spare is nobody's: a use of it is as wrong as of freed memory. */
	ASAN_POISON_MEMORY_REGION(s, sizeof(*s));
}

static void spares_free(struct grpc_server *srv)
{
	while (srv->spare) {
		struct stream *s = srv->spare;

		ASAN_UNPOISON_MEMORY_REGION(s, sizeof(*s));
		srv->spare = s->next;
		free(s);
	}
	srv->n_spare = 0;
}

static void stream_free(struct stream *s)
{
	struct conn *c = s->conn;

	deadline_clear(s);
	job_detach(s);
	in_release(s);
	if (s->kind == KIND_WATCH)
		c->srv->n_watches--;
	svc_watch_free(s->watch);
	c->out_bytes -= s->out_len - s->out_off;
	free(s->out);
	free(s->msg);
	free(s->details_bin);
	if (c->hdr.stream == s)
		c->hdr.stream = NULL;
	if (s->prev)
		s->prev->next = s->next;
	else
		c->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	stream_put(c->srv, s);
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct conn *c = ud;
	struct stream *s;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	s = stream_get(c->srv);
	if (!s)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	s->id = frame->hd.stream_id;
	s->conn = c;
	c->hdr.stream = s;
	c->hdr.method[0] = c->hdr.ctype[0] = c->hdr.auth[0] = '\0';
	c->hdr.too_long = c->hdr.auth_seen = false;
	s->next = c->streams;
	if (c->streams)
		c->streams->prev = s;
	c->streams = s;
	nghttp2_session_set_stream_user_data(session, s->id, s);
	return 0;
}

static void copy_header(struct conn *c, char *dst, size_t n, const uint8_t *v, size_t len)
{
	if (len >= n) {
		c->hdr.too_long = true;
		return;
	}
	memcpy(dst, v, len);
	dst[len] = '\0';
}

/* Where request header `name` is kept, with its room in *size; NULL: it
 * is not one we read. Every header of every request passes here. */
static char *header_slot(struct conn *c, struct stream *s, const uint8_t *name, size_t len,
			 size_t *size)
{
#define IS(lit) (len == sizeof(lit) - 1 && memcmp(name, lit, len) == 0)
#define SLOT(f) (*size = sizeof(f), (f))
	switch (len) {
	case 5:
		if (IS(":path"))
			return SLOT(s->path);
		break;
	case 7:
		if (IS(":method"))
			return SLOT(c->hdr.method);
		break;
	case 12:
		if (IS("content-type"))
			return SLOT(c->hdr.ctype);
		if (IS("grpc-timeout"))
			return SLOT(s->timeout);
		break;
	case 13:
		if (IS("authorization"))
			return SLOT(c->hdr.auth);
		if (IS("grpc-encoding"))
			return SLOT(s->encoding);
		break;
	}
	return NULL;
#undef IS
#undef SLOT
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame,
		     const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen,
		     uint8_t flags, void *ud)
{
	struct conn *c = ud;
	struct stream *s = c->hdr.stream;
	size_t size;
	char *dst;

	(void)flags;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	/* The stream whose block this is: the one that began last. */
	if (!s || s->id != frame->hd.stream_id)
		s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (!s || !(dst = header_slot(c, s, name, namelen, &size)))
		return 0;
	if (dst == c->hdr.auth) {
		/* Two credentials: neither is the caller's (auth.h). */
		if (c->hdr.auth_seen) {
			strcpy(c->hdr.auth, " ");
			return 0;
		}
		c->hdr.auth_seen = true;
	}
	copy_header(c, dst, size, value, valuelen);
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct conn *c = ud;
	struct stream *s;

	c->seen_frame = true;
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (!s)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
		stream_begin(s);
	if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
		stream_input_done(s);
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id,
			 const uint8_t *data, size_t len, void *ud)
{
	struct stream *s = nghttp2_session_get_stream_user_data(session, id);

	(void)flags, (void)ud;
	if (s)
		stream_data(s, data, len);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *ud)
{
	struct stream *s = nghttp2_session_get_stream_user_data(session, id);

	(void)ud;
	if (s) {
		/* A reset before the answer: the client gave up (cancelled). */
		if (!s->answered && error_code != NGHTTP2_NO_ERROR)
			log_debug("msg=\"grpc call cancelled\" path=\"%s\" code=%u", s->path, error_code);
		stream_free(s);
	}
	return 0;
}

static nghttp2_session_callbacks *callbacks;

static int callbacks_init(void)
{
	if (nghttp2_session_callbacks_new(&callbacks) != 0)
		return -1;
	nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
	nghttp2_session_callbacks_set_send_data_callback(callbacks, send_out);
	return 0;
}

/* ---------------------------------------------------------------- connections */

static void conn_kill(struct conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	c->dead_next = c->srv->dead;
	c->srv->dead = c;
}

static void conn_free(struct conn *c)
{
	struct grpc_server *srv = c->srv;

	/* nghttp2_session_del() calls no stream-close callback. */
	while (c->streams)
		stream_free(c->streams);
	nghttp2_session_del(c->session);
	grpc_tls_free(c->tls);
	svc_caller_cache_clear(&c->callers);
	/* Out of the epoll set before the close: a descriptor another
	 * process shares (a child forked meanwhile) keeps its registration
	 * past close(), and an event would name a freed connection. */
	epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->n_conns--;
	free(c->pend);
	free(c);
}

static void conn_arm(struct conn *c, bool want_out)
{
	struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c };

	if (c->want_out == want_out)
		return;
	c->want_out = want_out;
	epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* A TLS connection completes its handshake before any HTTP/2 byte moves
 * (grpc_tls.h): false while it is under way, or when it failed and the
 * connection is dead. */
static bool conn_ready(struct conn *c)
{
	int rc;

	if (!c->tls || c->tls_done)
		return !c->dead;
	rc = grpc_tls_handshake(c->tls);
	if (rc < 0) {
		conn_kill(c);
		return false;
	}
	if (rc == 0) {
		conn_arm(c, grpc_tls_wants_write(c->tls));
		return false;
	}
	c->tls_done = true;
	return true;
}

static ssize_t conn_recv(struct conn *c, void *buf, size_t n)
{
	return c->tls ? grpc_tls_read(c->tls, buf, n) : read(c->fd, buf, n);
}

/* MSG_NOSIGNAL: a peer gone is EPIPE here, not a signal to whatever
 * process runs the server (the agent ignores SIGPIPE; a test or a fuzzer
 * may not). */
static ssize_t conn_send(struct conn *c, const void *buf, size_t n)
{
	return c->tls ? grpc_tls_write(c->tls, buf, n) : send(c->fd, buf, n, MSG_NOSIGNAL);
}

static void conn_linger(struct conn *c)
{
	if (c->lingering)
		return;
	c->lingering = true;
	c->linger_until = now_ms() + LINGER_MS;
	if (shutdown(c->fd, SHUT_WR) < 0)
		conn_kill(c);
}

/* Bytes nghttp2 gave to c->pend, which only grows past FLUSH_BYTES by
 * the last piece. */
static int pend_append(struct conn *c, const uint8_t *data, size_t n)
{
	if (c->pend_off) {
		memmove(c->pend, c->pend + c->pend_off, c->pend_len - c->pend_off);
		c->pend_len -= c->pend_off;
		c->pend_off = 0;
	}
	if (c->pend_len + n > c->pend_cap) {
		size_t cap = c->pend_len + n > 2 * c->pend_cap ? c->pend_len + n : 2 * c->pend_cap;
		uint8_t *grown = realloc(c->pend, cap);

		if (!grown)
			return -1;
		c->pend = grown;
		c->pend_cap = cap;
	}
	memcpy(c->pend + c->pend_len, data, n);
	c->pend_len += n;
	return 0;
}

/* Write what nghttp2 has to send until the socket is full. nghttp2 hands
 * over one frame at a time; they are gathered (up to FLUSH_BYTES) so that
 * an answer's HEADERS, DATA and trailers, and the answers of many
 * streams, go in one write. */
static void conn_flush(struct conn *c)
{
	if (c->dead || c->lingering || !conn_ready(c))
		return;
	for (;;) {
		ssize_t w;

		while (c->pend_len - c->pend_off < FLUSH_BYTES) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(c->session, &data);

			if (n < 0 || (n > 0 && pend_append(c, data, (size_t)n) < 0)) {
				conn_kill(c);
				return;
			}
			if (n == 0)
				break;
		}
		if (c->pend_off == c->pend_len)
			break;
		w = conn_send(c, c->pend + c->pend_off, c->pend_len - c->pend_off);
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			conn_arm(c, true);
			return;
		}
		if (w < 0) {
			conn_kill(c);
			return;
		}
		c->pend_off += (size_t)w;
		if (c->pend_off == c->pend_len)
			c->pend_len = c->pend_off = 0;
	}
	conn_arm(c, false);
	if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session))
		conn_linger(c);
}

static void conn_read(struct conn *c)
{
	uint8_t buf[16384];

	if (!conn_ready(c))
		return;
	while (!c->dead) {
		ssize_t n = conn_recv(c, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			conn_kill(c);
			return;
		}
		if (c->lingering)
			continue;
		if (nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0) {
			/* Not HTTP/2 (no preface), or a protocol error: nghttp2
			 * has queued a GOAWAY where it could; send it, close. */
			log_debug("msg=\"grpc connection refused\" reason=\"not HTTP/2 or a protocol error\"");
			conn_flush(c);
			conn_kill(c);
			return;
		}
	}
}

/* How many connections come from the address of `peer` (TCP only). */
static unsigned conns_from(const struct grpc_server *srv, const struct sockaddr_storage *peer)
{
	unsigned n = 0;

	for (const struct conn *c = srv->conns; c; c = c->next) {
		if (c->peer.ss_family != peer->ss_family)
			continue;
		if (peer->ss_family == AF_INET &&
		    ((const struct sockaddr_in *)&c->peer)->sin_addr.s_addr ==
		    ((const struct sockaddr_in *)peer)->sin_addr.s_addr)
			n++;
		else if (peer->ss_family == AF_INET6 &&
			 memcmp(&((const struct sockaddr_in6 *)&c->peer)->sin6_addr,
				&((const struct sockaddr_in6 *)peer)->sin6_addr, 16) == 0)
			n++;
	}
	return n;
}

static void conn_accept(struct grpc_server *srv, const struct listener *l)
{
	for (;;) {
		nghttp2_settings_entry settings[] = {
			{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS },
			{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW },
			{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384 },
		};
		struct epoll_event ev = { .events = EPOLLIN };
		struct sockaddr_storage peer = { 0 };
		socklen_t peer_len = sizeof(peer);
		struct conn *c;
		int fd = accept4(l->fd, (struct sockaddr *)&peer, &peer_len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return;
		if (srv->n_conns >= MAX_CONNS || srv->draining) {
			log_debug("msg=\"grpc connection refused\" reason=\"%d connections open\"",
				 srv->n_conns);
			if (!srv->draining)
				refusal_count(REFUSAL_GRPC_TOTAL);
			close(fd);
			continue;
		}
		if (peer.ss_family != AF_UNIX && conns_from(srv, &peer) >= CONNECTIONS_PER_ADDRESS) {
			log_debug("msg=\"grpc connection refused\" reason=\"%d connections from its address\"",
				  CONNECTIONS_PER_ADDRESS);
			refusal_count(REFUSAL_GRPC_PER_ADDRESS);
			close(fd);
			continue;
		}
		if (!(c = calloc(1, sizeof(*c)))) {
			close(fd);
			continue;
		}
		c->peer = peer;
		c->peer_len = peer_len;
		listen_peer_text((const struct sockaddr *)&peer, c->address, sizeof(c->address));
		/* nghttp2 hands over frames one write at a time (HEADERS, DATA,
		 * trailers): without this, Nagle holds each answer's tail until
		 * the client's delayed ACK, 40 ms. Fails harmlessly on the unix
		 * socket. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
		c->kind = ITEM_CONN;
		c->fd = fd;
		c->srv = srv;
		c->idle_since = now_ms();
		if ((l->tls && !(c->tls = grpc_tls_new(srv->agent->tls, fd))) ||
		    nghttp2_session_server_new(&c->session, callbacks, c) != 0 ||
		    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 3) != 0 ||
		    nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
							  CONN_WINDOW) != 0) {
			if (c->session)
				nghttp2_session_del(c->session);
			grpc_tls_free(c->tls);
			close(fd);
			free(c);
			continue;
		}
		ev.data.ptr = c;
		epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev);
		c->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = c;
		srv->conns = c;
		srv->n_conns++;
		conn_flush(c);
	}
}

/* ---------------------------------------------------------------- workers */

static void *worker_main(void *arg)
{
	struct grpc_server *srv = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&srv->lock);
	for (;;) {
		struct job *j;
		bool cancelled;

		while (!srv->queue && !srv->workers_stop)
			pthread_cond_wait(&srv->cond, &srv->lock);
		if (!srv->queue)
			break;
		j = srv->queue;
		srv->queue = j->next;
		if (!srv->queue)
			srv->queue_tail = &srv->queue;
		else
			pthread_cond_signal(&srv->cond);
		cancelled = j->cancelled;
		pthread_mutex_unlock(&srv->lock);
		/* A call nobody waits for any more is not started. */
		if (!cancelled && j->watch_step)
			j->emitted = grpc_watch_step(&j->caller, j->m, j->in, j->in_len, &j->watch,
						     &j->reply);
		else if (!cancelled)
			grpc_call_run(&j->caller, j->m, j->in, j->in_len, &j->reply);
		pthread_mutex_lock(&srv->lock);
		j->next = srv->done;
		srv->done = j;
		/* A done list that was not empty has its wake-up on the way. */
		if (!j->next && write(srv->wake.fd, &one, sizeof(one)) < 0)
			log_error("msg=\"grpc: cannot wake the loop\" error=\"%s\"", strerror(errno));
	}
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

static void job_free(struct job *j)
{
	if (!j)
		return;
	svc_watch_free(j->watch);
	grpc_reply_clear(&j->reply);
	free(j->identity);
	free(j->in);
	free(j);
}

/* ---------------------------------------------------------------- watches */

/* A step's messages go out; the watch is the stream's again until the
 * next step. */
static void watch_stepped(struct stream *s, struct job *j)
{
	s->watch = j->watch;
	j->watch = NULL;
	s->watch_more = j->emitted > 0;
	if (j->reply.len && stream_out(s, j->reply.data, j->reply.len) < 0) {
		stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "out of memory for the stream");
		return;
	}
	/* The response starts with the first step, messages or not, so the
	 * client knows the watch is on. */
	stream_kick(s);
}

/* The next step of a watch, once what it sent has gone out and there
 * may be more: so one step's messages at most wait per stream, and a
 * client that does not read only stops its own watch. */
static void watch_step(struct stream *s)
{
	struct grpc_server *srv = s->conn->srv;
	struct job *j;

	if (s->answered || s->job || !s->watch || s->out_len ||
	    s->conn->out_bytes > srv->conn_out_max / 2 ||
	    (!s->watch_more && !svc_watch_changed(s->watch)))
		return;
	j = job_new(s);
	if (!j) {
		stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "out of memory for the stream");
		return;
	}
	j->watch_step = true;
	j->watch = s->watch;
	s->watch = NULL;
	s->job = j;
	job_queue(srv, j);
}

static void watches_step(struct grpc_server *srv)
{
	if (!srv->n_watches || srv->draining)
		return;
	for (struct conn *c = srv->conns; c; c = c->next)
		for (struct stream *s = c->streams; s; s = s->next)
			if (s->kind == KIND_WATCH && !c->dead)
				watch_step(s);
}

/* Answer the streams whose jobs are done. */
static void jobs_collect(struct grpc_server *srv)
{
	struct job *j;

	pthread_mutex_lock(&srv->lock);
	j = srv->done;
	srv->done = NULL;
	pthread_mutex_unlock(&srv->lock);
	while (j) {
		struct job *next = j->next;
		struct stream *s = j->stream;

		if (s) {
			struct conn *c = s->conn;

			s->job = NULL;
			j->stream = NULL;
			if (j->watch_step && j->emitted >= 0)
				watch_stepped(s, j);
			else
				stream_finish(s, &j->reply);
			conn_flush(c);
		}
		job_free(j);
		j = next;
	}
}

/* ---------------------------------------------------------------- the loop */

static void deadlines_expire(struct grpc_server *srv, int64_t now, int *timeout)
{
	if (!srv->n_deadlines)
		return;
	for (struct conn *c = srv->conns; c; c = c->next) {
		bool hit = false;

		for (struct stream *s = c->streams; s; s = s->next) {
			if (!s->deadline_ms || s->answered)
				continue;
			if (s->deadline_ms <= now) {
				stream_fail(s, GRPC_DEADLINE_EXCEEDED,
					    "the deadline (grpc-timeout %s) passed", s->timeout);
				hit = true;
			} else if (*timeout < 0 || s->deadline_ms - now < *timeout) {
				*timeout = (int)(s->deadline_ms - now);
			}
		}
		if (hit)
			conn_flush(c);
	}
}

/* Close connections that never spoke HTTP/2 in time, or that have had no
 * stream for long: each holds one of the few connection slots. */
static void idle_expire(struct grpc_server *srv, int64_t now, int *timeout)
{
	if (!srv->conns)
		return;
	for (struct conn *c = srv->conns; c; c = c->next) {
		if (c->dead)
			continue;
		if (c->lingering) {
			if (now >= c->linger_until)
				conn_kill(c);
			continue;
		}
		if (c->streams) {
			c->idle_since = now;
		} else if ((!c->seen_frame && now - c->idle_since >= PREFACE_MS) ||
			   now - c->idle_since >= IDLE_MS) {
			log_debug("msg=\"grpc connection closed\" reason=\"%s\"",
				  c->seen_frame ? "idle" : "no HTTP/2 preface");
			nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
			conn_flush(c);
			conn_kill(c);
		}
	}
	if (*timeout < 0 || *timeout > 1000)
		*timeout = 1000;
}

static void drain_start(struct grpc_server *srv)
{
	srv->draining = true;
	srv->drain_until = now_ms() + DRAIN_MS;
	if (srv->tcp.fd >= 0) {
		close(srv->tcp.fd);
		srv->tcp.fd = -1;
	}
	if (srv->unix_sock.fd >= 0) {
		close(srv->unix_sock.fd);
		srv->unix_sock.fd = -1;
		unlink(srv->agent->cfg.grpc_socket_path);
	}
	for (struct conn *c = srv->conns; c; c = c->next) {
		/* What a client sent before the stop is still served: read it
		 * now, so the GOAWAY counts its streams in. */
		if (!c->dead)
			conn_read(c);
		if (c->dead)
			continue;
		/* Health watchers hear NOT_SERVING, and their stream ends. */
		for (struct stream *s = c->streams; s; s = s->next) {
			struct grpc_reply r = { 0 };
			bool known;

			if (s->kind == KIND_WATCH && !s->answered) {
				stream_fail(s, GRPC_UNAVAILABLE,
					    "the agent is shutting down: resume the watch after the last id");
				continue;
			}
			if (s->kind != KIND_HEALTH_WATCH || s->answered)
				continue;
			if (s->watching)
				grpc_health_check(false, true, (const uint8_t *)"", 0, &known, &r);
			grpc_reply_status(&r, GRPC_UNAVAILABLE, "the agent is shutting down");
			stream_finish(s, &r);
		}
		nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
				      nghttp2_session_get_last_proc_stream_id(c->session),
				      NGHTTP2_NO_ERROR, NULL, 0);
		conn_flush(c);
	}
}

static void *loop_main(void *arg)
{
	struct grpc_server *srv = arg;
	struct epoll_event evs[64];

	for (;;) {
		int64_t now = now_ms();
		int timeout = -1, n;
		bool stop;

		deadlines_expire(srv, now, &timeout);
		idle_expire(srv, now, &timeout);
		if (srv->draining) {
			if (!srv->conns || now >= srv->drain_until)
				break;
			if (timeout < 0 || timeout > 100)
				timeout = 100;
		}
		watches_step(srv);
		while (srv->dead) {
			struct conn *c = srv->dead;

			srv->dead = c->dead_next;
			conn_free(c);
		}
		jobs_hand_over(srv);
		n = epoll_wait(srv->epfd, evs, 64, timeout);
		for (int i = 0; i < n; i++) {
			enum item_kind *kind = evs[i].data.ptr;

			if (*kind == ITEM_LISTENER) {
				conn_accept(srv, (struct listener *)kind);
			} else if (*kind == ITEM_WAKE) {
				uint64_t v;

				if (read(srv->wake.fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					log_error("msg=\"grpc: eventfd\" error=\"%s\"", strerror(errno));
				jobs_collect(srv);
			} else {
				struct conn *c = (struct conn *)kind;

				if (c->dead)
					continue;
				if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					conn_read(c);
				conn_flush(c);
				/* A handshake that ended in a write may have left
				 * records read and decrypted already. */
				if (c->tls && !c->dead && grpc_tls_pending(c->tls)) {
					conn_read(c);
					conn_flush(c);
				}
			}
		}
		pthread_mutex_lock(&srv->lock);
		stop = srv->stop;
		pthread_mutex_unlock(&srv->lock);
		if (stop && !srv->draining)
			drain_start(srv);
	}
	while (srv->dead) {
		struct conn *c = srv->dead;

		srv->dead = c->dead_next;
		conn_free(c);
	}
	while (srv->conns)
		conn_free(srv->conns);
	spares_free(srv);
	/* Detached now: the workers skip them and grpc_stop() frees them. */
	jobs_hand_over(srv);
	return NULL;
}

/* ---------------------------------------------------------------- start, stop */

static int watch(struct grpc_server *srv, struct listener *l, enum item_kind kind)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = l };

	l->kind = kind;
	/* accept4() in the loop must not block once the queue is empty. */
	if (fcntl(l->fd, F_SETFL, fcntl(l->fd, F_GETFL) | O_NONBLOCK) < 0)
		return -1;
	return epoll_ctl(srv->epfd, EPOLL_CTL_ADD, l->fd, &ev);
}

int grpc_start(struct agent *agent, struct grpc_server **out, struct gerr *err)
{
	const struct config *cfg = &agent->cfg;
	struct grpc_server *srv;

	*out = NULL;
	if (!cfg->grpc_host[0] && !cfg->grpc_socket_path[0])
		return 0;
	if (!callbacks && callbacks_init() < 0)
		return gerr_set(err, 500, "out of memory");
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return gerr_set(err, 500, "out of memory");
	srv->agent = agent;
	srv->epfd = srv->tcp.fd = srv->unix_sock.fd = srv->wake.fd = -1;
	srv->queue_tail = &srv->queue;
	srv->ready_tail = &srv->ready;
	/* Every stream's request bytes together: a couple of the largest
	 * uploads, and the small messages of many streams. */
	srv->in_max = 2 * cfg->max_object_size + 64u * GRPC_MAX_MESSAGE;
	/* One connection: an upload and a few streams' messages in; a few
	 * of the largest answers (object content) out. */
	srv->conn_in_max = cfg->max_object_size + 8u * GRPC_MAX_MESSAGE;
	srv->conn_out_max = 2 * cfg->max_object_size + 8u * GRPC_MAX_MESSAGE;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	srv->epfd = epoll_create1(EPOLL_CLOEXEC);
	srv->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (srv->epfd < 0 || srv->wake.fd < 0 || watch(srv, &srv->wake, ITEM_WAKE) < 0) {
		gerr_set(err, 500, "grpc: %s", strerror(errno));
		goto fail;
	}
	if (cfg->grpc_host[0]) {
		srv->tcp.fd = listen_tcp(cfg->grpc_host, cfg->grpc_port, agent->grpc_tcp,
					 sizeof(agent->grpc_tcp), err);
		srv->tcp.tls = agent->tls != NULL;      /* the unix socket stays plain */
		if (srv->tcp.fd < 0)
			goto fail;
	}
	if (cfg->grpc_socket_path[0]) {
		srv->unix_sock.fd = listen_unix(cfg->grpc_socket_path, "--grpc-socket", err);
		if (srv->unix_sock.fd < 0)
			goto fail;
	}
	if ((srv->tcp.fd >= 0 && watch(srv, &srv->tcp, ITEM_LISTENER) < 0) ||
	    (srv->unix_sock.fd >= 0 && watch(srv, &srv->unix_sock, ITEM_LISTENER) < 0)) {
		gerr_set(err, 500, "grpc: %s", strerror(errno));
		goto fail;
	}
	for (; srv->n_workers < WORKERS; srv->n_workers++)
		if (pthread_create(&srv->workers[srv->n_workers], NULL, worker_main, srv) != 0) {
			gerr_set(err, 500, "grpc: cannot start a worker thread");
			goto fail;
		}
	if (svc_watch_subscribe(agent, srv->wake.fd) < 0) {
		gerr_set(err, 500, "grpc: out of memory");
		goto fail;
	}
	srv->subscribed = true;
	if (pthread_create(&srv->loop, NULL, loop_main, srv) != 0) {
		gerr_set(err, 500, "grpc: cannot start the loop thread");
		goto fail;
	}
	srv->loop_started = true;
	*out = srv;
	return 0;
fail:
	grpc_stop(srv);
	return -1;
}

void grpc_stop(struct grpc_server *srv)
{
	uint64_t one = 1;

	if (!srv)
		return;
	if (srv->subscribed)
		svc_watch_unsubscribe(srv->agent, srv->wake.fd);
	pthread_mutex_lock(&srv->lock);
	srv->stop = true;
	pthread_mutex_unlock(&srv->lock);
	if (srv->loop_started) {
		if (write(srv->wake.fd, &one, sizeof(one)) < 0)
			log_error("msg=\"grpc: cannot wake the loop\" error=\"%s\"", strerror(errno));
		pthread_join(srv->loop, NULL);
	} else if (srv->unix_sock.fd >= 0) {
		unlink(srv->agent->cfg.grpc_socket_path);
	}
	pthread_mutex_lock(&srv->lock);
	srv->workers_stop = true;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	for (unsigned i = 0; i < srv->n_workers; i++)
		pthread_join(srv->workers[i], NULL);
	/* Every stream is gone: what is queued or done is only freed. */
	while (srv->queue) {
		struct job *j = srv->queue;

		srv->queue = j->next;
		job_free(j);
	}
	while (srv->done) {
		struct job *j = srv->done;

		srv->done = j->next;
		job_free(j);
	}
	if (srv->tcp.fd >= 0)
		close(srv->tcp.fd);
	if (srv->unix_sock.fd >= 0)
		close(srv->unix_sock.fd);
	if (srv->wake.fd >= 0)
		close(srv->wake.fd);
	if (srv->epfd >= 0)
		close(srv->epfd);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->cond);
	free(srv);
}
