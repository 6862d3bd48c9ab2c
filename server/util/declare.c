/* Declarative documents: loading, checking, normalising, comparing. */
#define _GNU_SOURCE
#include "server/util/declare.h"

#include <ctype.h>
#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "build/proto/graind.pb-c.h"
#include "server/util/yamldoc.h"
#include "server/util/codec.h"
#include "server/util/file.h"
#include "server/util/pbmsg.h"

#define MASKED_SECRET "********"

static void doc_free(struct declare_doc *d)
{
	free(d->name);
	free(d->source);
	json_decref(d->spec);
	free(d->body);
	free(d->object_file);
}

void declare_set_free(struct declare_set *set)
{
	for (size_t i = 0; i < set->n; i++)
		doc_free(&set->docs[i]);
	free(set->docs);
	set->docs = NULL;
	set->n = 0;
}

void declare_normalise_probe(json_t *spec)
{
	json_t *st = json_object_get(spec, "desiredState");

	/* Unset means attached. */
	if (st && json_is_string(st) && strcmp(json_string_value(st), "ATTACHED") == 0)
		json_object_del(spec, "desiredState");
	/* With an image, the object's digest is the agent's to set. */
	if (json_object_get(spec, "image"))
		json_object_del(spec, "objectSha256");
}

void declare_normalise_sink(json_t *sink, const json_t *desired)
{
	json_t *s3 = json_object_get(sink, "s3");
	json_t *want = json_object_get(json_object_get(desired, "s3"), "secretAccessKey");
	json_t *have = json_object_get(s3, "secretAccessKey");

	json_object_del(sink, "name");
	json_object_del(sink, "health");
	json_object_del(sink, "managedBy");
	json_object_del(sink, "generation");
	/* The agent never shows a secret: the masked one cannot differ. */
	if (have && want && json_is_string(have) &&
	    strcmp(json_string_value(have), MASKED_SECRET) == 0)
		json_object_set(s3, "secretAccessKey", want);
}

static void diff_add(json_t *out, const char *path, const json_t *from, const json_t *to)
{
	json_t *d = json_object();

	json_object_set_new(d, "path", json_string(path));
	if (from)
		json_object_set(d, "from", (json_t *)from);
	if (to)
		json_object_set(d, "to", (json_t *)to);
	json_array_append_new(out, d);
}

void declare_diff(const json_t *from, const json_t *to, const char *path, json_t *out)
{
	char *sub;

	if (from && to && json_is_object(from) && json_is_object(to)) {
		const char *key;
		json_t *v;

		json_object_foreach((json_t *)from, key, v) {
			if (asprintf(&sub, "%s%s%s", path, *path ? "." : "", key) < 0)
				return;
			declare_diff(v, json_object_get(to, key), sub, out);
			free(sub);
		}
		json_object_foreach((json_t *)to, key, v) {
			if (json_object_get(from, key))
				continue;
			if (asprintf(&sub, "%s%s%s", path, *path ? "." : "", key) < 0)
				return;
			declare_diff(NULL, v, sub, out);
			free(sub);
		}
		return;
	}
	if (from && to && json_is_array(from) && json_is_array(to)) {
		size_t nf = json_array_size(from), nt = json_array_size(to);

		for (size_t i = 0; i < nf || i < nt; i++) {
			if (asprintf(&sub, "%s[%zu]", path, i) < 0)
				return;
			declare_diff(i < nf ? json_array_get(from, i) : NULL,
				     i < nt ? json_array_get(to, i) : NULL, sub, out);
			free(sub);
		}
		return;
	}
	if (from && to && json_equal((json_t *)from, (json_t *)to))
		return;
	if (from || to)
		diff_add(out, path, from, to);
}

/* The spec of one document checked against the schema: its protobuf body
 * and canonical JSON. */
static const ProtobufCMessageDescriptor *const spec_desc[] = {
	[DECLARE_PROBE] = &graind__probe_spec__descriptor,
	[DECLARE_SINK] = &graind__sink__descriptor,
	[DECLARE_OBJECT_SOURCE] = &graind__fetch_object_request__descriptor,
};

/* An ObjectSource's spec: a URL and a digest of 64 hex digits, into
 * d->object_sha lowercased; its name is the document's. The canonical
 * JSON is made before the name goes in, so that it is the spec alone. */
static int object_source(struct declare_doc *d, Graind__FetchObjectRequest *m,
			 struct gerr *err)
{
	size_t n = strlen(m->sha256);

	if (!m->url[0] == !m->image[0])
		return gerr_set(err, 400, "%s: spec.url or spec.image: where to fetch the object "
				"from is needed, one of them", d->source);
	if (n != SHA256_HEX_LEN || strspn(m->sha256, "0123456789abcdefABCDEF") != n)
		return gerr_set(err, 400, "%s: spec.sha256: the object's digest, 64 hex digits, "
				"is needed", d->source);
	for (size_t i = 0; i <= n; i++)
		d->object_sha[i] = (char)tolower((unsigned char)m->sha256[i]);
	return pbmsg_set_string(&m->name, d->name) < 0
		? gerr_set(err, 500, "out of memory") : 0;
}

static int doc_spec(struct declare_doc *d, json_t *spec, struct gerr *err)
{
	const ProtobufCMessageDescriptor *desc = spec_desc[d->kind];
	ProtobufCMessage *m = NULL;
	char *text = NULL, *canon = NULL;
	size_t len;
	int ret = -1;

	if (d->kind != DECLARE_PROBE && json_object_get(spec, "name"))
		return gerr_set(err, 400, "%s: spec.name: the document's name names the %s",
				d->source, d->kind == DECLARE_SINK ? "sink" : "object");
	if (!(text = json_dumps(spec, JSON_COMPACT)))
		return gerr_set(err, 500, "out of memory");
	if (codec_decode(CODEC_JSON, desc, text, strlen(text), &m, err) < 0) {
		gerr_prefix(err, "%s: spec (a %s)", d->source, desc->name);
		goto out;
	}
	if (codec_encode(CODEC_JSON, m, &canon, &len, err) < 0 ||
	    (d->kind == DECLARE_OBJECT_SOURCE &&
	     object_source(d, (Graind__FetchObjectRequest *)m, err) < 0) ||
	    codec_encode(CODEC_PROTOBUF, m, (char **)&d->body, &d->body_len, err) < 0)
		goto out;
	if (!(d->spec = json_loadb(canon, len, 0, NULL))) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	if (d->kind == DECLARE_PROBE)
		declare_normalise_probe(d->spec);
	ret = 0;
out:
	free(canon);
	free(text);
	pbmsg_free(m);
	return ret;
}

/* "objectFile": read it (relative to the document's directory), take its
 * digest, and put that into the spec before it is checked. */
static int doc_object(struct declare_doc *d, const char *dir, const char *file, json_t *spec,
		      struct gerr *err)
{
	char *buf;
	size_t len;

	if (json_object_get(spec, "objectSha256") || json_object_get(spec, "object_sha256") ||
	    json_object_get(spec, "builtin"))
		return gerr_set(err, 400, "%s: objectFile and spec.%s: one object only", d->source,
				json_object_get(spec, "builtin") ? "builtin" : "objectSha256");
	if (file[0] == '/')
		d->object_file = strdup(file);
	else if (asprintf(&d->object_file, "%s/%s", dir, file) < 0)
		d->object_file = NULL;
	if (!d->object_file)
		return gerr_set(err, 500, "out of memory");
	if (file_read(d->object_file, &buf, &len) < 0)
		return gerr_set(err, 400, "%s: objectFile %s: %s", d->source, d->object_file,
				strerror(errno));
	sha256_hex(buf, len, d->object_sha);
	free(buf);
	json_object_set_new(spec, "objectSha256", json_string(d->object_sha));
	return 0;
}

static int load_doc(struct declare_set *set, const char *dir, const char *source, json_t *j,
		    struct gerr *err)
{
	struct declare_doc *docs, *d;
	const char *key, *kind, *name;
	json_t *v, *spec = NULL;
	int ret = -1;

	if (!json_is_object(j))
		return gerr_set(err, 400, "%s: a document is an object {kind, name, spec}", source);
	json_object_foreach(j, key, v)
		if (strcmp(key, "kind") && strcmp(key, "name") && strcmp(key, "spec") &&
		    strcmp(key, "objectFile"))
			return gerr_set(err, 400, "%s: %s: unknown field (kind, name, spec, objectFile)",
					source, key);
	kind = json_string_value(json_object_get(j, "kind"));
	name = json_string_value(json_object_get(j, "name"));
	if (!kind || (strcmp(kind, "Probe") && strcmp(kind, "Sink") &&
		      strcmp(kind, "ObjectSource")))
		return gerr_set(err, 400, "%s: kind: Probe, Sink or ObjectSource", source);
	if (!name || !*name)
		return gerr_set(err, 400, "%s: name: a string is needed", source);
	if (!json_is_object(json_object_get(j, "spec")))
		return gerr_set(err, 400, "%s: spec: an object is needed", source);
	if (json_object_get(j, "objectFile") &&
	    (strcmp(kind, "Probe") || !json_is_string(json_object_get(j, "objectFile"))))
		return gerr_set(err, 400, "%s: objectFile: a file name, for a Probe", source);
	if (!(docs = realloc(set->docs, (set->n + 1) * sizeof(*docs))))
		return gerr_set(err, 500, "out of memory");
	set->docs = docs;
	d = &docs[set->n++];
	memset(d, 0, sizeof(*d));
	d->kind = strcmp(kind, "Probe") == 0 ? DECLARE_PROBE
		  : strcmp(kind, "Sink") == 0 ? DECLARE_SINK : DECLARE_OBJECT_SOURCE;
	d->name = strdup(name);
	d->source = strdup(source);
	if (!(spec = json_deep_copy(json_object_get(j, "spec"))) || !d->name || !d->source) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	for (size_t i = 0; i + 1 < set->n; i++)
		if (docs[i].kind == d->kind && strcmp(docs[i].name, name) == 0) {
			gerr_set(err, 400, "%s: %s %s is already in %s", source, kind, name,
				 docs[i].source);
			goto out;
		}
	if (json_object_get(j, "objectFile") &&
	    doc_object(d, dir, json_string_value(json_object_get(j, "objectFile")), spec, err) < 0)
		goto out;
	ret = doc_spec(d, spec, err);
out:
	json_decref(spec);
	return ret;
}

static bool has_suffix(const char *name, const char *suffix)
{
	size_t n = strlen(name), k = strlen(suffix);

	return n > k && strcmp(name + n - k, suffix) == 0;
}

static bool is_yaml(const char *name)
{
	return has_suffix(name, ".yaml") || has_suffix(name, ".yml");
}

static int load_file(struct declare_set *set, const char *dir, const char *path,
		     struct gerr *err)
{
	json_error_t jerr;
	json_t *j = NULL;
	char source[4096];
	int ret = 0;

	/* A YAML stream is an array of its documents. */
	if (is_yaml(path)) {
		if (yamldoc_load(path, &j, err) < 0)
			return -1;
		if (json_array_size(j) == 1) {
			json_t *one = json_incref(json_array_get(j, 0));

			json_decref(j);
			j = one;
		}
	} else if (!(j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr))) {
		return gerr_set(err, 400, "%s:%d: %s", path, jerr.line, jerr.text);
	}
	if (json_is_array(j)) {
		for (size_t i = 0; ret == 0 && i < json_array_size(j); i++) {
			snprintf(source, sizeof(source), "%s[%zu]", path, i);
			ret = load_doc(set, dir, source, json_array_get(j, i), err);
		}
	} else {
		ret = load_doc(set, dir, path, j, err);
	}
	json_decref(j);
	return ret;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int is_document(const struct dirent *e)
{
	return e->d_name[0] != '.' && (has_suffix(e->d_name, ".json") || is_yaml(e->d_name));
}

void declare_files_free(char **paths, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
}

int declare_files(const char *dir, char ***paths, size_t *n, struct gerr *err)
{
	struct dirent **names = NULL;
	int count, ret = 0;

	*paths = NULL;
	*n = 0;
	if ((count = scandir(dir, &names, is_document, by_name)) < 0)
		return gerr_set(err, 400, "%s: %s", dir, strerror(errno));
	if (count && !(*paths = calloc(count, sizeof(**paths))))
		ret = gerr_set(err, 500, "out of memory");
	for (int i = 0; i < count; i++) {
		if (ret == 0 && asprintf(&(*paths)[(*n)++], "%s/%s", dir, names[i]->d_name) < 0) {
			(*paths)[--(*n)] = NULL;
			ret = gerr_set(err, 500, "out of memory");
		}
		free(names[i]);
	}
	free(names);
	if (ret < 0) {
		declare_files_free(*paths, *n);
		*paths = NULL;
		*n = 0;
	}
	return ret;
}

int declare_load_file(const char *path, struct declare_set *set, struct gerr *err)
{
	size_t before = set->n;
	char *dir = strdup(path), *slash;
	int ret;

	if (!dir)
		return gerr_set(err, 500, "out of memory");
	slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	ret = load_file(set, slash ? (*dir ? dir : "/") : ".", path, err);
	free(dir);
	/* All of the file or none of it. */
	while (ret < 0 && set->n > before)
		doc_free(&set->docs[--set->n]);
	return ret;
}

int declare_load(const char *dir, struct declare_set *set, struct gerr *err)
{
	struct stat st;
	char **paths;
	size_t n;
	int ret = 0;

	memset(set, 0, sizeof(*set));
	if (stat(dir, &st) < 0)
		return gerr_set(err, 400, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return declare_load_file(dir, set, err);
	if (declare_files(dir, &paths, &n, err) < 0)
		return -1;
	for (size_t i = 0; ret == 0 && i < n; i++)
		ret = declare_load_file(paths[i], set, err);
	declare_files_free(paths, n);
	if (ret == 0 && set->n == 0)
		ret = gerr_set(err, 400, "%s holds no *.json, *.yaml or *.yml document", dir);
	return ret;
}
