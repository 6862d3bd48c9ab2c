/* block: the payload of a sample block, frame by frame.
 *
 * A payload is a run of frames, each after its length as a varint. A
 * frame is one sample (graind.Sample without its id, packed), or, when
 * its first byte is 0 (no protobuf field is numbered 0), fields that the
 * samples after it share, up to the next such frame. A sample reads as
 * the shared fields in effect followed by its own, except that the i-th
 * shared `fields` entry (a graind.Field holding a name, say) is merged
 * into the sample's i-th entry (its value), as protobuf merges messages:
 * its bytes go in front of the entry's.
 *
 * Internal to store/: samples.c reads, cuts and counts blocks with it. */
#ifndef GRAIND_STORE_BLOCK_H
#define GRAIND_STORE_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pbwire;

/* Walks a payload sample by sample. */
struct block_walk {
	const uint8_t *p, *end;
	/* The shared frame in effect: whole, length included (to put in
	 * front of a block's kept part when it is cut), and its fields. */
	const uint8_t *shared_frame, *shared;
	size_t shared_frame_len, shared_len;
	bool broken;            /* the framing is broken */
};

struct block_walk block_walk(const uint8_t *payload, size_t len);

/* The next sample's own bytes; false at the end, or when the framing is
 * broken (w->broken). The shared fields in effect stay in w. */
bool block_next(struct block_walk *w, const uint8_t **own, size_t *own_len);

/* The sample block_next() just gave, whole: the bytes graind.Sample
 * unpacks from. Points into the payload when nothing is shared, else
 * into buf (reused from sample to sample, freed by the caller); NULL when
 * its bytes are broken, or out of memory (buf->failed). */
const uint8_t *block_sample(const struct block_walk *w, const uint8_t *own, size_t own_len,
			    struct pbwire *buf, size_t *len);

/* Append a frame of shared fields to w. */
void block_share(struct pbwire *w, const void *fields, size_t len);

/* Where to cut a block so that its first samples go. */
struct block_cut {
	uint64_t samples;       /* samples that go */
	size_t offset;          /* where the kept frames begin */
	/* The shared frame the kept samples need put back in front of
	 * them (NULL: none, or the kept part starts with its own). */
	const uint8_t *shared;
	size_t shared_len;
	bool all;               /* no sample is left: the block goes */
};

/* Plan the cut that takes at least `rows` samples and `bytes` bytes, or
 * every sample. -1 when the framing is broken. */
int block_plan_cut(const uint8_t *payload, size_t len, uint64_t rows, uint64_t bytes,
		   struct block_cut *cut);

/* The bytes a cut takes from the block (not counting a block that goes
 * whole: its length). */
size_t block_cut_bytes(const struct block_cut *cut);

#endif
