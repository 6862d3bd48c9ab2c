/* sse: see sse.h. */
#include "server/sse.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "server/svc/svc.h"
#include "server/util/clock.h"
#include "server/util/log.h"

#define HEARTBEAT_MS 15000
#define BLOCK_SIZE (64 * 1024)

struct sse_stream {
	struct sse_hub *hub;
	struct MHD_Connection *conn;
	struct api_watch *watch;
	char *text;                     /* what waits to be written */
	size_t len, off;
	bool ended;                     /* the watch failed: end after text */
	bool suspended;                 /* under hub->lock */
	int64_t last_write_ms;
	struct sse_stream *prev, *next;
};

struct sse_hub {
	struct agent *agent;
	int wake_fd;                    /* the feeds' eventfd */
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	struct sse_stream *streams;
	unsigned n_streams;
	bool ending;
};

static int64_t now_ms(void)
{
	return (int64_t)(clock_mono_us() / 1000);
}

/* Resume the suspended streams that have something to write. */
static void resume_ready(struct sse_hub *hub, bool all)
{
	int64_t now = now_ms();

	pthread_mutex_lock(&hub->lock);
	for (struct sse_stream *s = hub->streams; s; s = s->next) {
		if (!s->suspended)
			continue;
		if (all || api_watch_changed(s->watch) || now - s->last_write_ms >= HEARTBEAT_MS) {
			s->suspended = false;
			MHD_resume_connection(s->conn);
		}
	}
	pthread_mutex_unlock(&hub->lock);
}

static void *hub_main(void *arg)
{
	struct sse_hub *hub = arg;
	struct pollfd p = { .fd = hub->wake_fd, .events = POLLIN };

	for (;;) {
		uint64_t v;
		bool ending;

		if (poll(&p, 1, HEARTBEAT_MS / 3) < 0 && errno != EINTR)
			break;
		if ((p.revents & POLLIN) && read(hub->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			break;
		pthread_mutex_lock(&hub->lock);
		ending = hub->ending;
		pthread_mutex_unlock(&hub->lock);
		if (ending)
			break;
		resume_ready(hub, false);
	}
	return NULL;
}

int sse_hub_start(struct agent *agent, struct sse_hub **out, struct gerr *err)
{
	struct sse_hub *hub = calloc(1, sizeof(*hub));

	*out = NULL;
	if (!hub)
		return gerr_set(err, 500, "out of memory");
	hub->agent = agent;
	pthread_mutex_init(&hub->lock, NULL);
	hub->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (hub->wake_fd < 0 || svc_watch_subscribe(agent, hub->wake_fd) < 0) {
		gerr_set(err, 500, "cannot set up the event streams: %s", strerror(errno));
		goto fail;
	}
	if (pthread_create(&hub->thread, NULL, hub_main, hub) != 0) {
		gerr_set(err, 500, "cannot start the event streams' thread");
		goto fail;
	}
	hub->thread_started = true;
	*out = hub;
	return 0;
fail:
	sse_hub_free(hub);
	return -1;
}

/* MHD asks for more of the body. Nothing new: suspend until the hub
 * resumes the connection (0 then means "call again later"). */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct sse_stream *s = cls;
	struct sse_hub *hub = s->hub;
	size_t n;

	(void)pos;
	while (s->off == s->len) {
		free(s->text);
		s->text = NULL;
		s->len = s->off = 0;
		if (s->ended)
			return MHD_CONTENT_READER_END_OF_STREAM;
		pthread_mutex_lock(&hub->lock);
		if (hub->ending) {
			pthread_mutex_unlock(&hub->lock);
			return MHD_CONTENT_READER_END_OF_STREAM;
		}
		pthread_mutex_unlock(&hub->lock);
		if (api_watch_next(s->watch, &s->text, &s->len) < 0)
			s->ended = true;
		if (s->len)
			break;
		free(s->text);
		s->text = NULL;
		if (s->ended)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (now_ms() - s->last_write_ms >= HEARTBEAT_MS) {
			s->text = strdup(": keep-alive\n\n");
			if (!s->text)
				return MHD_CONTENT_READER_END_WITH_ERROR;
			s->len = strlen(s->text);
			break;
		}
		/* Decided under the lock the hub resumes under: a change after
		 * this check finds the stream suspended and resumes it. */
		pthread_mutex_lock(&hub->lock);
		if (!hub->ending && !api_watch_changed(s->watch)) {
			s->suspended = true;
			MHD_suspend_connection(s->conn);
			pthread_mutex_unlock(&hub->lock);
			return 0;
		}
		pthread_mutex_unlock(&hub->lock);
	}
	n = s->len - s->off < max ? s->len - s->off : max;
	memcpy(buf, s->text + s->off, n);
	s->off += n;
	s->last_write_ms = now_ms();
	return (ssize_t)n;
}

static void stream_free(void *cls)
{
	struct sse_stream *s = cls;
	struct sse_hub *hub = s->hub;

	pthread_mutex_lock(&hub->lock);
	if (s->prev)
		s->prev->next = s->next;
	else
		hub->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	hub->n_streams--;
	pthread_mutex_unlock(&hub->lock);
	api_watch_free(s->watch);
	free(s->text);
	free(s);
}

static enum MHD_Result refuse(struct MHD_Connection *conn, const char *accept, int status,
			      const char *msg)
{
	struct api_response r;
	struct MHD_Response *resp;
	enum MHD_Result ret;

	api_refuse(accept, status, msg, &r);
	resp = MHD_create_response_from_buffer(r.body_len, r.body ? r.body : (void *)"",
					       r.body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		api_response_clear(&r);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type);
	ret = MHD_queue_response(conn, (unsigned)r.status, resp);
	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result sse_respond(struct sse_hub *hub, struct MHD_Connection *conn,
			    struct api_watch *watch, const char *accept)
{
	struct sse_stream *s = NULL;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char msg[96];

	pthread_mutex_lock(&hub->lock);
	if (hub->ending || hub->n_streams >= SSE_MAX) {
		snprintf(msg, sizeof(msg), hub->ending ? "the agent is shutting down" :
			 "%u event streams are open already; close one or try later", hub->n_streams);
		pthread_mutex_unlock(&hub->lock);
		api_watch_free(watch);
		return refuse(conn, accept, 503, msg);
	}
	s = calloc(1, sizeof(*s));
	if (s) {
		s->hub = hub;
		s->conn = conn;
		s->watch = watch;
		s->last_write_ms = now_ms();
		s->next = hub->streams;
		if (hub->streams)
			hub->streams->prev = s;
		hub->streams = s;
		hub->n_streams++;
	}
	pthread_mutex_unlock(&hub->lock);
	if (!s) {
		api_watch_free(watch);
		return refuse(conn, accept, 500, "out of memory");
	}
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, BLOCK_SIZE, stream_read, s,
						 stream_free);
	if (!resp) {
		stream_free(s);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

void sse_hub_end(struct sse_hub *hub)
{
	if (!hub)
		return;
	pthread_mutex_lock(&hub->lock);
	hub->ending = true;
	pthread_mutex_unlock(&hub->lock);
	resume_ready(hub, true);
}

void sse_hub_free(struct sse_hub *hub)
{
	uint64_t one = 1;

	if (!hub)
		return;
	if (hub->thread_started) {
		pthread_mutex_lock(&hub->lock);
		hub->ending = true;
		pthread_mutex_unlock(&hub->lock);
		if (write(hub->wake_fd, &one, sizeof(one)) < 0)
			log_error("msg=\"cannot wake the event streams' thread\" error=\"%s\"",
				  strerror(errno));
		pthread_join(hub->thread, NULL);
	}
	if (hub->wake_fd >= 0) {
		svc_watch_unsubscribe(hub->agent, hub->wake_fd);
		close(hub->wake_fd);
	}
	pthread_mutex_destroy(&hub->lock);
	free(hub);
}
