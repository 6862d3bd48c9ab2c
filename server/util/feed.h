/* feed: a numbered, bounded, in-memory log of events, and the wake-ups
 * of those who follow it.
 *
 * Writers publish an event (an opaque payload, copied) or only ring the
 * feed (something changed elsewhere, say new rows in the store); either
 * moves the feed's sequence number on by one. Readers remember the
 * number they last saw and read what came after it; a reader that fell
 * further behind than the feed holds is told so and resynchronises
 * however it can. Followers that cannot block on a condition variable
 * (event loops) subscribe an eventfd, written on every change.
 *
 * Numbers start at the value given to feed_new() (the agent uses the
 * wall clock in microseconds, so a number from before a restart is
 * older than every later one) and only grow. Thread-safe. */
#ifndef GRAIND_FEED_H
#define GRAIND_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct feed;

struct feed_event {
	uint64_t seq;
	const uint8_t *data;            /* lent for the callback */
	size_t len;
};

/* A feed holding at most max_events events and max_bytes of payload
 * (0 and 0: a bell that holds nothing); its first change is first_seq. */
struct feed *feed_new(size_t max_events, size_t max_bytes, uint64_t first_seq);
void feed_free(struct feed *f);

/* Append a copy of data as the next event (the oldest go beyond the
 * bounds) and wake the followers; its seq, 0 when out of memory (then
 * the feed only rings). */
uint64_t feed_publish(struct feed *f, const void *data, size_t len);
/* Move the number on and wake the followers, recording nothing. */
void feed_ring(struct feed *f);

/* The number of the latest change (first_seq - 1 before any). */
uint64_t feed_seq(struct feed *f);

/* Call fn for up to max events with seq > after, oldest first; the
 * count, or -1 when fn failed. *lost: events after `after` were dropped
 * already (it is older than the feed holds), so what follows is not all
 * of them. An `after` from before first_seq is older than anything when
 * the feed dropped nothing since it began, so it loses nothing then. */
int feed_read(struct feed *f, uint64_t after, size_t max,
	      int (*fn)(const struct feed_event *ev, void *ctx), void *ctx, bool *lost);

/* Write 1 to eventfd fd at every change, until unsubscribed. -1 when out
 * of memory. */
int feed_subscribe(struct feed *f, int fd);
void feed_unsubscribe(struct feed *f, int fd);

#endif
