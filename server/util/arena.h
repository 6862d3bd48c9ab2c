/* arena: memory handed out in order and given back all at once.
 *
 * For protobuf-c messages unpacked by the thousand and dropped together
 * (a sink's batch of samples): arena_allocator() is a ProtobufCAllocator
 * whose free does nothing, so that a message unpacked with it lives until
 * arena_reset(), and costs a pointer bump instead of a malloc per field.
 * Memory comes in chunks of ARENA_CHUNK bytes (larger requests get one of
 * their own); a reset keeps the first chunk and gives the others back,
 * and arena_release() gives back what came after a mark.
 * Not thread-safe: one arena per thread. */
#ifndef GRAIND_UTIL_ARENA_H
#define GRAIND_UTIL_ARENA_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#define ARENA_CHUNK (256 * 1024)

struct arena_chunk;

struct arena {
	struct arena_chunk *chunks;     /* the newest first */
	ProtobufCAllocator allocator;
};

/* An empty arena: no memory until the first allocation. */
void arena_init(struct arena *a);

/* `size` bytes aligned for any type; NULL when out of memory. */
void *arena_alloc(struct arena *a, size_t size);

/* Everything handed out is gone; the first chunk stays for reuse. */
void arena_reset(struct arena *a);

/* Where the arena is, to give back what comes after. */
struct arena_mark {
	struct arena_chunk *chunk;
	size_t used;
};

struct arena_mark arena_mark(const struct arena *a);

/* Give back everything handed out since mark m was taken. */
void arena_release(struct arena *a, struct arena_mark m);

/* Everything goes, the first chunk too. */
void arena_free(struct arena *a);

#endif
