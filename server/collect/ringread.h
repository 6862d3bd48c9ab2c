/* ringread: a BPF ring buffer read without consuming it.
 *
 * libbpf's ring_buffer__consume() moves the kernel's consumer position
 * past each record as soon as its callback returns, so records the agent
 * has read but not yet committed to the store die with the process. This
 * reader maps the ring's pages itself (as libbpf's ringbuf.c does) and
 * keeps its own read position: reading never frees room in the ring. The
 * consumer position moves only through ringread_done(), which the
 * collector's writer calls once the samples made from the records up to
 * a position are committed (or counted as lost). A ring survives the
 * agent when its map is pinned, so a restarted agent reads again from
 * the consumer position the kernel kept: every record the kernel
 * accepted reaches the store once, or is counted.
 *
 * The records read are handed on in spans, each ending where a chunk of
 * samples ends (ringread_hold) or where records made nothing to commit
 * (ringread_idle). Spans are done in any order (a chunk dropped from a
 * full queue is done before older ones are committed), but the consumer
 * position only moves past a span once every span before it is done.
 * Reading, hold and idle are the collector thread's; done and unref may
 * come from any thread. */
#ifndef GRAIND_RINGREAD_H
#define GRAIND_RINGREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ringread;

/* Map the ring of BPF_MAP_TYPE_RINGBUF map_fd (the fd stays the
 * caller's). 0 or -errno. */
int ringread_open(int map_fd, struct ringread **out);

/* The records up to `pos` are in the store already (store_ring_cursor):
 * an agent killed after its commit and before it moved the consumer
 * position. When pos lies past the consumer position and not past the
 * producer's, read and release from there; true when it did. */
bool ringread_resume(struct ringread *r, uint64_t pos);

/* Each record after the read position, in order, to fn(ctx, data, len),
 * until the ring is caught up, a record is still being written, or fn
 * returns non-zero (the record fn was given is read all the same). The
 * read position is past a record when fn is called for it. Returns the
 * records read. */
size_t ringread_consume(struct ringread *r, int (*fn)(void *ctx, void *data, size_t len),
			void *ctx);

/* The read position: what has been read, committed or not. */
uint64_t ringread_position(const struct ringread *r);

/* A chunk now holds the records from the end of the last span up to
 * `end`: nothing after the span's start is released before its
 * ringread_done(r, end). 0, or -ENOMEM (then treat the span as done). */
int ringread_hold(struct ringread *r, uint64_t end);
/* The chunk of the span ending at `end` is committed or counted lost. */
void ringread_done(struct ringread *r, uint64_t end);
/* The records up to `end` made nothing to wait for: released once the
 * spans before are done. */
void ringread_idle(struct ringread *r, uint64_t end);

/* Bytes between the consumer position and the read position: read, not
 * yet released; and the ring's size, which they must leave room in. */
uint64_t ringread_unreleased(const struct ringread *r);
size_t ringread_size(const struct ringread *r);

struct ringread *ringread_ref(struct ringread *r);
void ringread_unref(struct ringread *r);

#endif
