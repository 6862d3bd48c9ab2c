/* objects: how an eBPF object enters the store, whoever brings it (an
 * upload or the built-ins): content-addressed by sha256, checked by
 * elfchk_inspect, stored once with its description (a packed
 * graind.Object) beside the bytes. */
#ifndef GRAIND_OBJECTS_H
#define GRAIND_OBJECTS_H

#include <stdbool.h>
#include <stddef.h>

#include "server/util/gerr.h"
#include "server/util/sha256.h"

struct store;

struct Graind__ObjectOrigin;

/* Store `bytes` under `sha256` (the caller's sha256_hex of them) unless
 * an object with that sha256 is stored already (*created false, nothing
 * checked again). New bytes that fail the checks are not stored; err
 * says why (400/422). `description` and `origin` (where a fetched object
 * came from, kept in its description) may be NULL. */
int objects_add(struct store *st, const char *sha256, const char *name,
		const void *bytes, size_t len, bool builtin, const char *description,
		const struct Graind__ObjectOrigin *origin, bool *created, struct gerr *err);

#endif
