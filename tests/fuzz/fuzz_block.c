/* Fuzz the sample block format (store/block.h): walk an arbitrary payload
 * sample by sample, rebuild each whole sample and unpack it as a
 * graind.Sample, then plan a cut (rows and bytes from the first two input
 * bytes). A cut must lie inside the payload, and the block it leaves,
 * (the shared frame put back) + the kept frames, must read as exactly the
 * samples that were not cut, byte for byte. The store's whole-block check
 * (store_block_intact) must agree with the walk: sound exactly when the
 * framing holds and every sample unpacks, and never under a wrong
 * checksum. */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/graind.pb-c.h"
#include "server/util/pbwire.h"
#include "store/block.h"
#include "store/store_int.h"
#include "tests/fuzz/fuzz.h"

/* Samples checked per input; the walk goes on past them. */
#define MAX_KEPT 1024

struct copy {
	uint8_t *bytes;         /* NULL: the sample's bytes are broken */
	size_t len;
};

/* Walk payload; the whole samples go to out (up to MAX_KEPT). The number
 * of samples before the end or where the framing breaks (*broken), and
 * whether each of them unpacks (*unpack, may be NULL). */
static long walk_all(const uint8_t *payload, size_t len, struct copy *out, bool *broken,
		     bool *unpack)
{
	struct block_walk w = block_walk(payload, len);
	struct pbwire buf = { 0 };
	const uint8_t *own, *whole;
	size_t own_len, whole_len;
	long n = 0;

	while (block_next(&w, &own, &own_len)) {
		whole = block_sample(&w, own, own_len, &buf, &whole_len);
		fuzz_check(!buf.failed, "out of memory");
		if (unpack) {
			Graind__Sample *s = whole ? graind__sample__unpack(NULL, whole_len, whole)
						  : NULL;

			*unpack = *unpack && s;
			graind__sample__free_unpacked(s, NULL);
		}
		if (out && n < MAX_KEPT) {
			out[n].bytes = NULL;
			if (whole) {
				out[n].bytes = malloc(whole_len + 1);
				fuzz_check(out[n].bytes, "out of memory");
				memcpy(out[n].bytes, whole, whole_len);
			}
			out[n].len = whole ? whole_len : 0;     /* unset when NULL */
		}
		n++;
	}
	pbwire_free(&buf);
	*broken = w.broken;
	return n;
}

static void check_cut(const uint8_t *payload, size_t len, long total,
		      const struct copy *orig, const struct block_cut *cut)
{
	struct copy *kept;
	uint8_t *rest;
	size_t rest_len;
	bool broken;
	long n;

	fuzz_check(cut->offset <= len && cut->shared_len <= cut->offset,
		   "cut at %zu (shared %zu) of %zu bytes", cut->offset, cut->shared_len, len);
	fuzz_check(cut->samples <= (uint64_t)total && cut->all == (cut->samples == (uint64_t)total),
		   "cut %" PRIu64 " of %ld samples, all %d", cut->samples, total, cut->all);
	fuzz_check(!cut->shared || (cut->shared >= payload &&
				    cut->shared + cut->shared_len <= payload + cut->offset),
		   "the shared frame is not in the cut part");
	if (cut->all)
		return;
	rest_len = cut->shared_len + (len - cut->offset);
	rest = malloc(rest_len + 1);
	kept = calloc(MAX_KEPT, sizeof(*kept));
	fuzz_check(rest && kept, "out of memory");
	if (cut->shared_len)
		memcpy(rest, cut->shared, cut->shared_len);
	memcpy(rest + cut->shared_len, payload + cut->offset, len - cut->offset);
	n = walk_all(rest, rest_len, kept, &broken, NULL);
	fuzz_check(!broken && n == total - (long)cut->samples,
		   "the kept part reads as %ld samples, not %ld - %" PRIu64,
		   n, total, cut->samples);
	for (long i = 0; i < n && i + (long)cut->samples < MAX_KEPT && i < MAX_KEPT; i++) {
		const struct copy *a = &orig[i + (long)cut->samples], *b = &kept[i];

		fuzz_check(!a->bytes == !b->bytes && a->len == b->len &&
			   (!a->bytes || !memcmp(a->bytes, b->bytes, a->len)),
			   "kept sample %ld differs", i);
	}
	for (long i = 0; i < n && i < MAX_KEPT; i++)
		free(kept[i].bytes);
	free(kept);
	free(rest);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct store_damage damage = { .what = "sound" };
	struct block_cut cut;
	struct copy *orig;
	uint64_t rows, bytes;
	bool broken, unpack = true;
	uint32_t crc;
	long total;

	if (size < 2)
		return 0;
	rows = data[0];
	bytes = (uint64_t)data[1] * 16;
	data += 2;
	size -= 2;
	orig = calloc(MAX_KEPT, sizeof(*orig));
	fuzz_check(orig, "out of memory");
	total = walk_all(data, size, orig, &broken, &unpack);
	crc = store_block_crc(1, (uint64_t)total, data, size);
	fuzz_check(store_block_intact(1, (uint64_t)total, "p", data, size, crc, &damage) ==
		   (!broken && unpack), "block check says %s; walk: broken %d, unpacks %d",
		   damage.what, broken, unpack);
	fuzz_check(!store_block_intact(1, (uint64_t)total, "p", data, size, crc ^ 1, &damage),
		   "a wrong checksum passes");
	if (block_plan_cut(data, size, rows, bytes, &cut) == 0 && !broken)
		check_cut(data, size, total, orig, &cut);
	for (long i = 0; i < total && i < MAX_KEPT; i++)
		free(orig[i].bytes);
	free(orig);
	return 0;
}
