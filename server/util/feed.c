/* feed: see feed.h. A circular array of events under one mutex. */
#include "server/util/feed.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct held {
	uint64_t seq;
	uint8_t *data;
	size_t len;
};

struct feed {
	pthread_mutex_t lock;
	struct held *ring;
	size_t max_events, max_bytes;
	size_t head, n, bytes;          /* oldest at ring[head] */
	uint64_t seq;                   /* the latest change */
	uint64_t dropped;               /* seq of the newest event dropped, 0: none */
	int *fds;
	size_t n_fds;
};

struct feed *feed_new(size_t max_events, size_t max_bytes, uint64_t first_seq)
{
	struct feed *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	if (max_events && !(f->ring = calloc(max_events, sizeof(*f->ring)))) {
		free(f);
		return NULL;
	}
	pthread_mutex_init(&f->lock, NULL);
	f->max_events = max_events;
	f->max_bytes = max_bytes;
	f->seq = first_seq ? first_seq - 1 : 0;
	return f;
}

void feed_free(struct feed *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n; i++)
		free(f->ring[(f->head + i) % f->max_events].data);
	free(f->ring);
	free(f->fds);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static void wake_locked(struct feed *f)
{
	uint64_t one = 1;

	for (size_t i = 0; i < f->n_fds; i++)
		if (write(f->fds[i], &one, sizeof(one)) < 0) {
			/* A full eventfd counter wakes its reader all the same. */
		}
}

static void drop_oldest_locked(struct feed *f)
{
	struct held *h = &f->ring[f->head];

	f->dropped = h->seq;
	f->bytes -= h->len;
	free(h->data);
	h->data = NULL;
	f->head = (f->head + 1) % f->max_events;
	f->n--;
}

uint64_t feed_publish(struct feed *f, const void *data, size_t len)
{
	uint8_t *copy = f->max_events && len <= f->max_bytes ? malloc(len ? len : 1) : NULL;
	uint64_t seq = 0;

	pthread_mutex_lock(&f->lock);
	f->seq++;
	if (copy) {
		memcpy(copy, data, len);
		while (f->n && (f->n == f->max_events || f->bytes + len > f->max_bytes))
			drop_oldest_locked(f);
		f->ring[(f->head + f->n) % f->max_events] = (struct held){ f->seq, copy, len };
		f->n++;
		f->bytes += len;
		seq = f->seq;
	} else {
		/* Nothing held for this one: whoever reads past it lost it. */
		f->dropped = f->seq;
	}
	wake_locked(f);
	pthread_mutex_unlock(&f->lock);
	return seq;
}

void feed_ring(struct feed *f)
{
	pthread_mutex_lock(&f->lock);
	f->seq++;
	wake_locked(f);
	pthread_mutex_unlock(&f->lock);
}

uint64_t feed_seq(struct feed *f)
{
	uint64_t seq;

	pthread_mutex_lock(&f->lock);
	seq = f->seq;
	pthread_mutex_unlock(&f->lock);
	return seq;
}

int feed_read(struct feed *f, uint64_t after, size_t max,
	      int (*fn)(const struct feed_event *ev, void *ctx), void *ctx, bool *lost)
{
	int count = 0;

	pthread_mutex_lock(&f->lock);
	*lost = after < f->dropped;
	for (size_t i = 0; i < f->n && (size_t)count < max; i++) {
		const struct held *h = &f->ring[(f->head + i) % f->max_events];
		struct feed_event ev = { h->seq, h->data, h->len };

		if (h->seq <= after)
			continue;
		if (fn(&ev, ctx) < 0) {
			count = -1;
			break;
		}
		count++;
	}
	pthread_mutex_unlock(&f->lock);
	return count;
}

int feed_subscribe(struct feed *f, int fd)
{
	int *grown;
	int ret = -1;

	pthread_mutex_lock(&f->lock);
	grown = realloc(f->fds, (f->n_fds + 1) * sizeof(*grown));
	if (grown) {
		f->fds = grown;
		f->fds[f->n_fds++] = fd;
		ret = 0;
	}
	pthread_mutex_unlock(&f->lock);
	return ret;
}

void feed_unsubscribe(struct feed *f, int fd)
{
	pthread_mutex_lock(&f->lock);
	for (size_t i = 0; i < f->n_fds; i++)
		if (f->fds[i] == fd) {
			f->fds[i] = f->fds[--f->n_fds];
			break;
		}
	pthread_mutex_unlock(&f->lock);
}
