/* builtin: the built-in probes shipped inside the binary.
 *
 * The build compiles bpf/<name>.bpf.c and embeds each object; at start
 * builtin_register() stores every one like an upload (same checks, same
 * metadata) flagged built-in, with its name and a one-line description.
 * A probe spec names one by {"builtin": "<name>"}; the object it runs is
 * the one this binary carries. Objects of older binaries stay in the store
 * under their own sha256 until deleted. */
#ifndef GRAIND_BUILTIN_H
#define GRAIND_BUILTIN_H

#include <stddef.h>

#include "server/util/gerr.h"
#include "server/util/sha256.h"

struct store;

/* Store each embedded object unless it is already stored. 500 with the
 * object's name when one does not pass elfchk_inspect (a build problem). */
int builtin_register(struct store *st, struct gerr *err);

/* The sha256 of the built-in object `name` of this binary (the bytes are
 * in the store once builtin_register() has run). 404 naming the
 * built-ins when there is none by that name. */
int builtin_object_sha256(const char *name, char sha256[SHA256_HEX_LEN + 1],
			  struct gerr *err);

/* The bytes of the object a probe spec runs: its objectSha256, or this
 * binary's built-in of that name. *bytes is malloc'd; the caller frees
 * it. 400 when the spec names no object, 404 when it does not exist. */
struct Graind__ProbeSpec;
int builtin_spec_object(struct store *st, const struct Graind__ProbeSpec *spec,
			void **bytes, size_t *len, struct gerr *err);

/* Number of built-ins, and the name of the i-th (NULL past the end). */
size_t builtin_count(void);
const char *builtin_name(size_t i);

#endif
