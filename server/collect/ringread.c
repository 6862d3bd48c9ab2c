/* ringread: see ringread.h. The record layout and the memory ordering are
 * the kernel's (kernel/bpf/ringbuf.c): an 8-byte header, a length with a
 * busy and a discard bit, records 8-byte aligned, the data pages mapped
 * twice so that a record never wraps. */
#include "server/collect/ringread.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef BPF_RINGBUF_BUSY_BIT
#define BPF_RINGBUF_BUSY_BIT (1U << 31)
#define BPF_RINGBUF_DISCARD_BIT (1U << 30)
#define BPF_RINGBUF_HDR_SZ 8
#endif

struct ringread {
	unsigned long *consumer;        /* the kernel's consumer position (rw page) */
	unsigned long *producer;        /* its producer position (ro, then the data) */
	uint8_t *data;
	size_t page, size;              /* the data's size: a power of two */
	uint64_t read_pos;              /* collector thread */
	int refs;                       /* atomic */

	pthread_mutex_t lock;           /* the spans below */
	struct span { uint64_t start, end; bool done; } *spans;  /* held, oldest first */
	size_t first, n, cap;           /* spans[first .. first+n) */
	uint64_t handed;                /* the end of the last span */
};

int ringread_open(int map_fd, struct ringread **out)
{
	struct bpf_map_info info = { 0 };
	uint32_t len = sizeof(info);
	struct ringread *r;
	void *cons, *prod;

	*out = NULL;
	if (bpf_obj_get_info_by_fd(map_fd, &info, &len) < 0)
		return -errno;
	if (info.type != BPF_MAP_TYPE_RINGBUF || !info.max_entries ||
	    (info.max_entries & (info.max_entries - 1)))
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->page = (size_t)sysconf(_SC_PAGESIZE);
	r->size = info.max_entries;
	cons = mmap(NULL, r->page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
	if (cons == MAP_FAILED) {
		free(r);
		return -errno;
	}
	prod = mmap(NULL, r->page + 2 * r->size, PROT_READ, MAP_SHARED, map_fd, (off_t)r->page);
	if (prod == MAP_FAILED) {
		int e = -errno;

		munmap(cons, r->page);
		free(r);
		return e;
	}
	r->consumer = cons;
	r->producer = prod;
	r->data = (uint8_t *)prod + r->page;
	r->read_pos = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
	r->handed = r->read_pos;
	r->refs = 1;
	pthread_mutex_init(&r->lock, NULL);
	*out = r;
	return 0;
}

bool ringread_resume(struct ringread *r, uint64_t pos)
{
	uint64_t cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
	uint64_t prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);

	if (pos <= cons || pos > prod || (pos & 7) || r->n)
		return false;
	pthread_mutex_lock(&r->lock);
	r->read_pos = r->handed = pos;
	__atomic_store_n(r->consumer, (unsigned long)pos, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&r->lock);
	return true;
}

static size_t record_span(uint32_t len)
{
	len &= ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
	return ((size_t)len + BPF_RINGBUF_HDR_SZ + 7) & ~(size_t)7;
}

size_t ringread_consume(struct ringread *r, int (*fn)(void *ctx, void *data, size_t len),
			void *ctx)
{
	size_t n = 0;

	for (;;) {
		uint64_t prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
		bool stop = false;

		if (r->read_pos >= prod)
			return n;
		while (r->read_pos < prod) {
			uint32_t *hdr = (uint32_t *)(r->data + (r->read_pos & (r->size - 1)));
			uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);

			if (len & BPF_RINGBUF_BUSY_BIT)
				return n;       /* being written: the next wake-up brings it */
			r->read_pos += record_span(len);
			if (len & BPF_RINGBUF_DISCARD_BIT)
				continue;
			n++;
			if (fn(ctx, (uint8_t *)hdr + BPF_RINGBUF_HDR_SZ, len) != 0) {
				stop = true;
				break;
			}
		}
		if (stop)
			return n;
	}
}

uint64_t ringread_position(const struct ringread *r)
{
	return r->read_pos;
}

/* Move the kernel's consumer position forward to the start of the oldest
 * span not done, or to the last span's end when all are (never back). */
static void release_locked(struct ringread *r)
{
	uint64_t pos;

	while (r->n && r->spans[r->first].done) {
		r->first++;
		r->n--;
	}
	if (!r->n)
		r->first = 0;
	pos = r->n ? r->spans[r->first].start : r->handed;
	if (pos > __atomic_load_n(r->consumer, __ATOMIC_RELAXED))
		__atomic_store_n(r->consumer, (unsigned long)pos, __ATOMIC_RELEASE);
}

int ringread_hold(struct ringread *r, uint64_t end)
{
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	if (r->first + r->n == r->cap) {
		if (r->first) {         /* slide the live spans to the front */
			for (size_t i = 0; i < r->n; i++)
				r->spans[i] = r->spans[r->first + i];
			r->first = 0;
		} else {
			size_t cap = r->cap ? 2 * r->cap : 16;
			struct span *grown = realloc(r->spans, cap * sizeof(*grown));

			if (!grown) {
				ret = -ENOMEM;
				goto out;
			}
			r->spans = grown;
			r->cap = cap;
		}
	}
	r->spans[r->first + r->n++] = (struct span){ r->handed, end, false };
	r->handed = end;
out:
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void ringread_done(struct ringread *r, uint64_t end)
{
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < r->n; i++)
		if (r->spans[r->first + i].end == end && !r->spans[r->first + i].done) {
			r->spans[r->first + i].done = true;
			break;
		}
	release_locked(r);
	pthread_mutex_unlock(&r->lock);
}

void ringread_idle(struct ringread *r, uint64_t end)
{
	pthread_mutex_lock(&r->lock);
	if (end > r->handed)
		r->handed = end;
	release_locked(r);
	pthread_mutex_unlock(&r->lock);
}

uint64_t ringread_unreleased(const struct ringread *r)
{
	return r->read_pos - __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
}

size_t ringread_size(const struct ringread *r)
{
	return r->size;
}

struct ringread *ringread_ref(struct ringread *r)
{
	__atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
	return r;
}

void ringread_unref(struct ringread *r)
{
	if (!r || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL))
		return;
	munmap(r->consumer, r->page);
	munmap(r->producer, r->page + 2 * r->size);
	pthread_mutex_destroy(&r->lock);
	free(r->spans);
	free(r);
}
