/* yamldoc: YAML files read as the JSON they stand for (libyaml).
 *
 * Mappings become objects (keys must be scalars; a key twice is refused),
 * sequences arrays; a quoted scalar is a string, a plain one null (null,
 * ~, empty), a boolean (true, false), a number (JSON's syntax) or else a
 * string. Anchors and aliases are refused, tags ignored. So a YAML
 * document is exactly the JSON one with the same structure. */
#ifndef GRAIND_UTIL_YAMLDOC_H
#define GRAIND_UTIL_YAMLDOC_H

#include <stddef.h>
#include <jansson.h>

#include "server/util/gerr.h"

/* Every document of the YAML stream in `path`, as an array; 400 naming
 * the line when it does not parse. */
int yamldoc_load(const char *path, json_t **docs, struct gerr *err);
/* The same from len bytes in memory; `name` is what messages call it. */
int yamldoc_parse(const char *name, const void *text, size_t len, json_t **docs,
		  struct gerr *err);

#endif
