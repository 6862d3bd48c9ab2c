/* block: see block.h. */
#include "store/block.h"

#include "server/util/pbwire.h"

/* The first byte of a frame of shared fields. */
#define FRAME_SHARED 0x00

struct block_walk block_walk(const uint8_t *payload, size_t len)
{
	return (struct block_walk){ .p = payload, .end = payload + len };
}

/* The frame at w->p (its bytes after the length); false at the end or
 * when broken. */
static bool next_frame(struct block_walk *w, const uint8_t **frame, size_t *len)
{
	uint64_t n = 0;
	unsigned shift = 0;

	if (w->p >= w->end)
		return false;
	for (;;) {
		if (w->p >= w->end || shift > 63)
			goto broken;
		n |= (uint64_t)(*w->p & 0x7f) << shift;
		shift += 7;
		if (!(*w->p++ & 0x80))
			break;
	}
	if (n > (uint64_t)(w->end - w->p))
		goto broken;
	*frame = w->p;
	*len = (size_t)n;
	w->p += n;
	return true;
broken:
	w->broken = true;
	return false;
}

static bool frame_is_shared(const uint8_t *frame, size_t len)
{
	return len && frame[0] == FRAME_SHARED;
}

bool block_next(struct block_walk *w, const uint8_t **own, size_t *own_len)
{
	const uint8_t *start;

	for (;;) {
		start = w->p;
		if (!next_frame(w, own, own_len))
			return false;
		if (!frame_is_shared(*own, *own_len))
			return true;
		w->shared_frame = start;
		w->shared_frame_len = (size_t)(w->p - start);
		w->shared = *own + 1;
		w->shared_len = *own_len - 1;
	}
}

/* Whether the frame at w->p, if any, is a shared one. */
static bool next_is_shared(const struct block_walk *w)
{
	struct block_walk peek = *w;
	const uint8_t *frame;
	size_t len;

	return next_frame(&peek, &frame, &len) && frame_is_shared(frame, len);
}

/* graind.Sample's repeated `fields` (graind.Field). */
#define SAMPLE_FIELDS_NUMBER 10

/* One field of a packed message: its number, and its bytes whole (tag
 * included) and, when length-delimited, after the length. */
struct wire_item {
	uint32_t number;
	bool delimited;
	const uint8_t *start, *body;
	size_t len, body_len;
};

static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	unsigned shift = 0;

	*v = 0;
	while (*p < end && shift <= 63) {
		*v |= (uint64_t)(**p & 0x7f) << shift;
		shift += 7;
		if (!(*(*p)++ & 0x80))
			return true;
	}
	return false;
}

/* The next field of the message at *p; false at its end or when broken
 * (then *p is set past end). */
static bool wire_next(const uint8_t **p, const uint8_t *end, struct wire_item *it)
{
	uint64_t tag, n;

	if (*p >= end)
		return false;
	it->start = *p;
	if (!wire_varint(p, end, &tag))
		goto broken;
	it->number = (uint32_t)(tag >> 3);
	it->delimited = (tag & 7) == PBWIRE_LEN;
	switch (tag & 7) {
	case PBWIRE_VARINT:
		if (!wire_varint(p, end, &n))
			goto broken;
		break;
	case PBWIRE_FIXED64:
	case 5:                 /* fixed32 */
		n = (tag & 7) == 5 ? 4 : 8;
		if (n > (uint64_t)(end - *p))
			goto broken;
		*p += n;
		break;
	case PBWIRE_LEN:
		if (!wire_varint(p, end, &n) || n > (uint64_t)(end - *p))
			goto broken;
		it->body = *p;
		it->body_len = (size_t)n;
		*p += n;
		break;
	default:
		goto broken;
	}
	it->len = (size_t)(*p - it->start);
	return true;
broken:
	*p = end + 1;
	return false;
}

/* The next `fields` entry of the shared fields, the name of the sample's
 * entry at the same place. */
static bool next_shared_field(const uint8_t **p, const uint8_t *end, struct wire_item *it)
{
	while (wire_next(p, end, it))
		if (it->number == SAMPLE_FIELDS_NUMBER && it->delimited)
			return true;
	return false;
}

const uint8_t *block_sample(const struct block_walk *w, const uint8_t *own, size_t own_len,
			    struct pbwire *buf, size_t *len)
{
	const uint8_t *sp = w->shared, *send, *op = own, *oend = own + own_len;
	struct wire_item it, name;
	bool named = true;

	/* Nothing shared: w->shared is NULL, and NULL + 0 is undefined. */
	if (!w->shared) {
		*len = own_len;
		return own;
	}
	send = w->shared + w->shared_len;
	buf->len = 0;
	while (wire_next(&sp, send, &it))
		if (it.number != SAMPLE_FIELDS_NUMBER)
			pbwire_raw(buf, it.start, it.len);
	if (sp > send)
		return NULL;
	sp = w->shared;
	while (wire_next(&op, oend, &it)) {
		if (it.number != SAMPLE_FIELDS_NUMBER || !it.delimited ||
		    !(named = named && next_shared_field(&sp, send, &name))) {
			pbwire_raw(buf, it.start, it.len);
			continue;
		}
		pbwire_tag(buf, SAMPLE_FIELDS_NUMBER, PBWIRE_LEN);
		pbwire_varint(buf, name.body_len + it.body_len);
		pbwire_raw(buf, name.body, name.body_len);
		pbwire_raw(buf, it.body, it.body_len);
	}
	if (op > oend || sp > send || buf->failed)
		return NULL;
	*len = buf->len;
	/* An empty sample is no error: a buffer never grown has no data. */
	return buf->len ? buf->data : own;
}

void block_share(struct pbwire *w, const void *fields, size_t len)
{
	pbwire_varint(w, len + 1);
	if (pbwire_reserve(w, len + 1)) {
		w->data[w->len++] = FRAME_SHARED;
		pbwire_raw(w, fields, len);
	}
}

/* ---------------------------------------------------------------- cuts */

size_t block_cut_bytes(const struct block_cut *cut)
{
	return cut->offset - cut->shared_len;
}

int block_plan_cut(const uint8_t *payload, size_t len, uint64_t rows, uint64_t bytes,
		   struct block_cut *cut)
{
	struct block_walk w = block_walk(payload, len), rest;
	const uint8_t *sample;
	size_t sample_len;

	*cut = (struct block_cut){ 0 };
	while ((cut->samples < rows || block_cut_bytes(cut) < bytes) &&
	       block_next(&w, &sample, &sample_len)) {
		cut->samples++;
		cut->offset = (size_t)(w.p - payload);
		/* The kept samples still need the fields they share. */
		if (w.shared_frame && !next_is_shared(&w)) {
			cut->shared = w.shared_frame;
			cut->shared_len = w.shared_frame_len;
		} else {
			cut->shared = NULL;
			cut->shared_len = 0;
		}
	}
	rest = w;
	cut->all = !block_next(&rest, &sample, &sample_len);
	return w.broken || rest.broken ? -1 : 0;
}
