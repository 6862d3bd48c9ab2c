/* http_guard: see http_guard.h. */
#include "server/http_guard.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/refusals.h"
#include "server/util/clock.h"
#include "server/util/log.h"

/* Data that came this long after a request ended starts the next one;
 * what came before belongs to the request that ended (the kernel stamps
 * arrivals in jiffies). */
#define NEXT_REQUEST_SLACK_MS 50

enum phase {
	PHASE_RESERVED,         /* admitted, not set up yet: counts, no socket */
	PHASE_HEADERS,          /* waiting for a request's headers */
	PHASE_BODY,             /* waiting for its body */
	PHASE_ANSWERING,        /* no deadline */
	PHASE_BETWEEN,          /* no deadline until the next request's first byte */
};

struct http_guard_conn {
	struct http_guard_conn *prev, *next;
	int fd;
	struct sockaddr_storage peer;
	enum phase phase;
	uint64_t deadline_ms;   /* monotonic; in PHASE_HEADERS and PHASE_BODY */
	uint64_t since_ms;      /* PHASE_BETWEEN: when the last request ended */
	bool shut;              /* shut down by the guard, waiting to be closed */
};

/* libmicrohttpd admits a connection and then sets it up on the same
 * thread; the place the admission reserved waits here in between, so
 * that threads accepting at once cannot together pass the limit. */
static __thread struct http_guard_conn *reserved;

struct http_guard {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	bool stopping;
	struct http_guard_conn *conns;
};

static uint64_t now_ms(void)
{
	return clock_mono_us() / 1000;
}

static bool same_address(const struct sockaddr_storage *a, const struct sockaddr *b)
{
	if (a->ss_family != b->sa_family)
		return false;
	if (b->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (b->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
	return false;
}

static bool is_ip(const struct sockaddr *peer)
{
	return peer && (peer->sa_family == AF_INET || peer->sa_family == AF_INET6);
}

/* With the lock held. */
static void unlink_conn(struct http_guard *g, struct http_guard_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		g->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
}

bool http_guard_admit(struct http_guard *g, const struct sockaddr *peer)
{
	struct http_guard_conn *c;
	unsigned n = 0;

	if (!g || !is_ip(peer))
		return true;
	pthread_mutex_lock(&g->lock);
	/* A reservation left by an admission whose set-up failed. */
	if (reserved) {
		unlink_conn(g, reserved);
		free(reserved);
		reserved = NULL;
	}
	for (c = g->conns; c; c = c->next)
		n += same_address(&c->peer, peer);
	if (n >= CONNECTIONS_PER_ADDRESS) {
		pthread_mutex_unlock(&g->lock);
		refusal_count(REFUSAL_REST_PER_ADDRESS);
		log_debug("msg=\"http connection refused\" reason=\"%d connections from its "
			  "address\"", CONNECTIONS_PER_ADDRESS);
		return false;
	}
	/* Out of memory: admitted without a place; it is set up unguarded. */
	if ((c = calloc(1, sizeof(*c))) != NULL) {
		c->fd = -1;
		c->phase = PHASE_RESERVED;
		memcpy(&c->peer, peer, peer->sa_family == AF_INET ? sizeof(struct sockaddr_in) :
							       sizeof(struct sockaddr_in6));
		c->next = g->conns;
		if (g->conns)
			g->conns->prev = c;
		g->conns = c;
		reserved = c;
	}
	pthread_mutex_unlock(&g->lock);
	return true;
}

struct http_guard_conn *http_guard_open(struct http_guard *g, int fd,
					const struct sockaddr *peer)
{
	struct http_guard_conn *c;

	if (!g || !is_ip(peer))
		return NULL;
	pthread_mutex_lock(&g->lock);
	c = reserved;
	reserved = NULL;
	if (c) {
		c->fd = fd;
		c->phase = PHASE_HEADERS;
		c->deadline_ms = now_ms() + HTTP_HEADER_DEADLINE_S * 1000;
	}
	pthread_mutex_unlock(&g->lock);
	return c;
}

void http_guard_close(struct http_guard *g, struct http_guard_conn *c)
{
	if (!g || !c)
		return;
	pthread_mutex_lock(&g->lock);
	unlink_conn(g, c);
	pthread_mutex_unlock(&g->lock);
	free(c);
}

static void set_phase(struct http_guard *g, struct http_guard_conn *c, enum phase phase,
		      uint64_t deadline_ms)
{
	if (!g || !c)
		return;
	pthread_mutex_lock(&g->lock);
	c->phase = phase;
	c->deadline_ms = deadline_ms;
	c->since_ms = now_ms();
	pthread_mutex_unlock(&g->lock);
}

void http_guard_headers_in(struct http_guard *g, struct http_guard_conn *c,
			   uint64_t body_bytes)
{
	set_phase(g, c, PHASE_BODY, now_ms() + HTTP_BODY_DEADLINE_S * 1000 +
		  body_bytes / HTTP_BODY_BYTES_PER_S * 1000);
}

void http_guard_answering(struct http_guard *g, struct http_guard_conn *c)
{
	set_phase(g, c, PHASE_ANSWERING, 0);
}

void http_guard_request_done(struct http_guard *g, struct http_guard_conn *c)
{
	set_phase(g, c, PHASE_BETWEEN, 0);
}

/* Between requests: whether bytes of the next one have come, by the
 * kernel's time of the last arrival on the socket. */
static bool next_request_began(const struct http_guard_conn *c, uint64_t now)
{
	struct tcp_info info;
	socklen_t len = sizeof(info);

	if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
		return false;
	return now - info.tcpi_last_data_recv > c->since_ms + NEXT_REQUEST_SLACK_MS;
}

/* With the lock held: shut down the connections past their deadline
 * (libmicrohttpd then sees the end of the stream and closes them). */
static void check(struct http_guard *g, uint64_t now)
{
	for (struct http_guard_conn *c = g->conns; c; c = c->next) {
		if (c->shut)
			continue;
		if (c->phase == PHASE_BETWEEN && next_request_began(c, now)) {
			c->phase = PHASE_HEADERS;
			c->deadline_ms = now + HTTP_HEADER_DEADLINE_S * 1000;
		}
		if ((c->phase != PHASE_HEADERS && c->phase != PHASE_BODY) || now < c->deadline_ms)
			continue;
		refusal_count(c->phase == PHASE_HEADERS ? REFUSAL_REST_HEADER_DEADLINE :
							  REFUSAL_REST_BODY_DEADLINE);
		log_debug("msg=\"http connection closed\" reason=\"its request's %s did not "
			  "arrive in time\"", c->phase == PHASE_HEADERS ? "headers" : "body");
		shutdown(c->fd, SHUT_RDWR);
		c->shut = true;
	}
}

static void *guard_thread(void *arg)
{
	struct http_guard *g = arg;

	pthread_mutex_lock(&g->lock);
	while (!g->stopping) {
		struct timespec until;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += HTTP_GUARD_TICK_MS * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&g->wake, &g->lock, &until);
		if (!g->stopping)
			check(g, now_ms());
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int http_guard_start(struct http_guard **out, struct gerr *err)
{
	struct http_guard *g = calloc(1, sizeof(*g));
	pthread_condattr_t attr;
	int rc;

	*out = NULL;
	if (!g)
		return gerr_set(err, 500, "out of memory");
	pthread_mutex_init(&g->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&g->wake, &attr);
	pthread_condattr_destroy(&attr);
	if ((rc = pthread_create(&g->thread, NULL, guard_thread, g)) != 0) {
		pthread_cond_destroy(&g->wake);
		pthread_mutex_destroy(&g->lock);
		free(g);
		return gerr_set(err, 500, "cannot start the connection guard: %s", strerror(rc));
	}
	*out = g;
	return 0;
}

/* After the daemons have stopped: every connection is closed. */
void http_guard_stop(struct http_guard *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->stopping = true;
	pthread_cond_signal(&g->wake);
	pthread_mutex_unlock(&g->lock);
	pthread_join(g->thread, NULL);
	while (g->conns) {
		struct http_guard_conn *c = g->conns;

		unlink_conn(g, c);
		free(c);
	}
	pthread_cond_destroy(&g->wake);
	pthread_mutex_destroy(&g->lock);
	free(g);
}
