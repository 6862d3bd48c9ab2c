/* arena: see arena.h. */
#include "server/util/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>

struct arena_chunk {
	struct arena_chunk *next;
	size_t size, used;
	alignas(max_align_t) unsigned char data[];
};

#define ALIGN(n) (((n) + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1))

static void *pb_alloc(void *data, size_t size)
{
	return arena_alloc(data, size);
}

static void pb_free(void *data, void *p)
{
	(void)data;
	(void)p;        /* given back at arena_reset() */
}

void arena_init(struct arena *a)
{
	a->chunks = NULL;
	a->allocator = (ProtobufCAllocator){ .alloc = pb_alloc, .free = pb_free, .allocator_data = a };
}

void *arena_alloc(struct arena *a, size_t size)
{
	struct arena_chunk *c = a->chunks;
	size_t need = ALIGN(size ? size : 1);

	if (need < size)
		return NULL;
	if (!c || c->size - c->used < need) {
		size_t cap = need > ARENA_CHUNK ? need : ARENA_CHUNK;

		if (cap > SIZE_MAX - sizeof(*c))
			return NULL;
		c = malloc(sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->size = cap;
		c->used = 0;
		c->next = a->chunks;
		a->chunks = c;
	}
	c->used += need;
	return c->data + c->used - need;
}

/* Free every chunk after `keep` (NULL: all). */
static void free_after(struct arena_chunk *c, struct arena_chunk *keep)
{
	while (c) {
		struct arena_chunk *next = c->next;

		if (c != keep)
			free(c);
		c = next;
	}
}

void arena_reset(struct arena *a)
{
	struct arena_chunk *first = a->chunks, *oldest = NULL;

	if (!first)
		return;
	/* The oldest chunk is the first one made: keep it, if ordinary. */
	for (struct arena_chunk *c = first; c; c = c->next)
		if (c->size == ARENA_CHUNK)
			oldest = c;
	free_after(first, oldest);
	a->chunks = oldest;
	if (oldest) {
		oldest->next = NULL;
		oldest->used = 0;
	}
}

struct arena_mark arena_mark(const struct arena *a)
{
	return (struct arena_mark){ a->chunks, a->chunks ? a->chunks->used : 0 };
}

void arena_release(struct arena *a, struct arena_mark m)
{
	while (a->chunks && a->chunks != m.chunk) {
		struct arena_chunk *next = a->chunks->next;

		free(a->chunks);
		a->chunks = next;
	}
	if (a->chunks)
		a->chunks->used = m.used;
}

void arena_free(struct arena *a)
{
	free_after(a->chunks, NULL);
	a->chunks = NULL;
}
