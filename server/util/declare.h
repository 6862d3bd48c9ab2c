/* declare: the documents of Probes and Sinks that `grainctl plan` and
 * `apply` and the agent's --config-dir read, and how they compare with
 * what an agent has.
 *
 * A document is a JSON object {"kind": "Probe"|"Sink"|"ObjectSource",
 * "name": NAME, "spec": {...}}: a Probe's spec is a graind.ProbeSpec, a
 * Sink's a graind.Sink without its name, an ObjectSource's a
 * graind.FetchObjectRequest without its name ({url or image, sha256}:
 * where the host fetches the object, and the digest it must have, which
 * tells whether the host has it already), all in proto3
 * JSON. A Probe names its object by digest (spec.objectSha256, the
 * digest an ObjectSource pins), or by file instead, "objectFile":
 * "hooks.bpf.o" (relative to the document), which apply pushes before the
 * probe and refers to by digest. Objects are brought (pushed or fetched)
 * before any probe is put, and never removed by a document's absence.
 * A file holds one document or an array of them; a YAML file (*.yaml,
 * *.yml, through yamldoc.h) is the same in YAML, one document or a stream
 * of them; a directory is every such file in it, in name order. Specs are checked against the schema
 * when loaded, and kept as their canonical proto3 JSON (defaults omitted),
 * which is what the agent answers, so equal specs compare equal. */
#ifndef GRAIND_UTIL_DECLARE_H
#define GRAIND_UTIL_DECLARE_H

#include <stddef.h>
#include <jansson.h>

#include "server/util/gerr.h"
#include "server/util/sha256.h"

enum declare_kind { DECLARE_PROBE, DECLARE_SINK, DECLARE_OBJECT_SOURCE };

struct declare_doc {
	enum declare_kind kind;
	char *name;
	char *source;              /* "dir/web.json" or "dir/all.json[2]" */
	json_t *spec;              /* canonical proto3 JSON, normalised */
	void *body;                /* the spec as protobuf, for the PUT (the fetch: */
	size_t body_len;           /* an ObjectSource's, with its name) */
	char *object_file;         /* NULL unless "objectFile" */
	char object_sha[SHA256_HEX_LEN + 1];    /* objectFile's or ObjectSource's digest */
};

struct declare_set {
	struct declare_doc *docs;
	size_t n;
};

/* Load every document of the *.json, *.yaml and *.yml files in `dir` (or of the file `dir`).
 * 400 naming the file and field when one does not parse, and when a kind's
 * name comes twice. */
int declare_load(const char *dir, struct declare_set *set, struct gerr *err);
void declare_set_free(struct declare_set *set);

/* The document files of directory `dir` (*.json, *.yaml, *.yml, not
 * hidden) in name order, as malloc'd "dir/name" paths; 400 when `dir`
 * cannot be read. */
int declare_files(const char *dir, char ***paths, size_t *n, struct gerr *err);
void declare_files_free(char **paths, size_t n);

/* Append the documents of the file `path` (its objectFile names relative
 * to its directory) to `set`: all of them, or none with a 400 naming the
 * file and field, also when a kind's name is already in `set`. */
int declare_load_file(const char *path, struct declare_set *set, struct gerr *err);

/* What an agent answers, made comparable with a document's spec: a
 * ProbeSpec without the default desired state, nor the objectSha256 the
 * agent set for its image; a Sink without its name, generation,
 * health or owner, and with a masked secret taken as equal to the desired one. */
void declare_normalise_probe(json_t *spec);
void declare_normalise_sink(json_t *sink, const json_t *desired);

/* Append to `out` one {"path", "from", "to"} per leaf that differs
 * between `from` and `to` (a missing side is left out). */
void declare_diff(const json_t *from, const json_t *to, const char *path, json_t *out);

#endif
