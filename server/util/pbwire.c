/* pbwire: see pbwire.h. */
#include "server/util/pbwire.h"

#include <stdlib.h>

bool pbwire_reserve(struct pbwire *w, size_t more)
{
	size_t cap;
	uint8_t *grown;

	if (w->failed)
		return false;
	if (w->cap - w->len >= more)
		return true;
	cap = w->cap ? w->cap : 256;
	while (cap - w->len < more)
		cap *= 2;
	grown = realloc(w->data, cap);
	if (!grown) {
		w->failed = true;
		return false;
	}
	w->data = grown;
	w->cap = cap;
	return true;
}

void pbwire_free(struct pbwire *w)
{
	free(w->data);
	*w = (struct pbwire){ 0 };
}

void pbwire_close(struct pbwire *w, size_t begun)
{
	size_t body, extra;

	if (w->failed)
		return;
	body = w->len - begun;
	extra = pbwire_varint_size(body) - 1;
	if (extra) {
		if (!pbwire_reserve(w, extra))
			return;
		memmove(w->data + begun + extra, w->data + begun, body);
		w->len += extra;
	}
	pbwire_varint_at(w->data + begun - 1, body);
}

void pbwire_close_frame(struct pbwire *w, size_t begun)
{
	size_t body, extra;
	uint8_t *len_at;

	if (w->failed)
		return;
	body = w->len - begun;
	if (body < (1u << 14)) {
		len_at = w->data + begun - 2;
		len_at[0] = (uint8_t)(body | 0x80);
		len_at[1] = (uint8_t)(body >> 7);
		return;
	}
	extra = pbwire_varint_size(body) - 2;
	if (!pbwire_reserve(w, extra))
		return;
	memmove(w->data + begun + extra, w->data + begun, body);
	w->len += extra;
	pbwire_varint_at(w->data + begun - 2, body);
}
