/* pbwire: protobuf wire format written by hand into a growable buffer.
 *
 * For the hot paths that would otherwise build a protobuf-c message only
 * to pack it and free it at once: the collector writes every event's
 * graind.Sample straight into its batch with these. The bytes are the
 * same as protobuf-c's for the same message, field by field, so either
 * side may read what the other wrote.
 *
 * Writers never fail one by one: out of memory sets `failed` and later
 * writes do nothing, so a caller checks once at the end. */
#ifndef GRAIND_PBWIRE_H
#define GRAIND_PBWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct pbwire {
	uint8_t *data;          /* malloc'd; freed by pbwire_free() */
	size_t len, cap;
	bool failed;            /* out of memory: the content is incomplete */
};

enum pbwire_type {
	PBWIRE_VARINT = 0,
	PBWIRE_FIXED64 = 1,
	PBWIRE_LEN = 2,
};

/* Make room for `more` bytes; false (and failed) when out of memory. */
bool pbwire_reserve(struct pbwire *w, size_t more);
void pbwire_free(struct pbwire *w);

/* Bytes a varint of v takes (1 to 10). */
static inline size_t pbwire_varint_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Write v as a varint at p (room for 10 bytes); the bytes written. */
static inline size_t pbwire_varint_at(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

static inline void pbwire_varint(struct pbwire *w, uint64_t v)
{
	if (pbwire_reserve(w, 10))
		w->len += pbwire_varint_at(w->data + w->len, v);
}

static inline void pbwire_tag(struct pbwire *w, uint32_t field, enum pbwire_type type)
{
	pbwire_varint(w, (uint64_t)field << 3 | type);
}

static inline void pbwire_raw(struct pbwire *w, const void *p, size_t n)
{
	if (n && pbwire_reserve(w, n)) {
		memcpy(w->data + w->len, p, n);
		w->len += n;
	}
}

/* Field writers. int64 and enums are varints of their two's complement,
 * as protobuf-c writes them. */
static inline void pbwire_uint(struct pbwire *w, uint32_t field, uint64_t v)
{
	pbwire_tag(w, field, PBWIRE_VARINT);
	pbwire_varint(w, v);
}

static inline void pbwire_int(struct pbwire *w, uint32_t field, int64_t v)
{
	pbwire_uint(w, field, (uint64_t)v);
}

static inline void pbwire_bool(struct pbwire *w, uint32_t field, bool v)
{
	pbwire_uint(w, field, v);
}

static inline void pbwire_double(struct pbwire *w, uint32_t field, double v)
{
	pbwire_tag(w, field, PBWIRE_FIXED64);
	pbwire_raw(w, &v, sizeof(v));   /* little-endian hosts only, as protobuf-c */
}

static inline void pbwire_bytes(struct pbwire *w, uint32_t field, const void *p, size_t n)
{
	pbwire_tag(w, field, PBWIRE_LEN);
	pbwire_varint(w, n);
	pbwire_raw(w, p, n);
}

static inline void pbwire_string(struct pbwire *w, uint32_t field, const char *s)
{
	pbwire_bytes(w, field, s, strlen(s));
}

/* Length-delimited bytes of unknown length: begin, write them, close.
 * Their length is written in front of them when closed (they move when
 * the length takes more than one byte). Returns where they begin. */
static inline size_t pbwire_begin(struct pbwire *w)
{
	if (pbwire_reserve(w, 1))
		w->data[w->len++] = 0;  /* the length, one byte for now */
	return w->len;
}

void pbwire_close(struct pbwire *w, size_t begun);

/* The same for a frame the project reads itself (the samples of a store
 * block): room for a 2-byte length, so that bytes of up to 16383 never
 * move. A shorter length takes 2 bytes all the same (a varint with a
 * redundant continuation byte, which varint readers accept). */
static inline size_t pbwire_begin_frame(struct pbwire *w)
{
	if (pbwire_reserve(w, 2))
		w->len += 2;
	return w->len;
}

void pbwire_close_frame(struct pbwire *w, size_t begun);

/* A nested message as field `field`: open, write its fields, close. */
static inline size_t pbwire_open(struct pbwire *w, uint32_t field)
{
	pbwire_tag(w, field, PBWIRE_LEN);
	return pbwire_begin(w);
}

#endif
