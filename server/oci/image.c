/* oci image: manifests, configs and layers of bytecode images (see
 * image.h). */
#include "server/oci/image.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "server/util/pbmsg.h"
#include "server/util/sha256.h"

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"

#define LABELS_MAX 256          /* programs or maps a label may name */
#define TAR_BLOCK 512

bool oci_digest_matches(const char *digest, const void *bytes, size_t len)
{
	char hex[SHA256_HEX_LEN + 1];

	if (!oci_digest_valid(digest))
		return false;
	sha256_hex(bytes, len, hex);
	return strcmp(hex, digest + 7) == 0;
}

const char *oci_host_arch(void)
{
#if defined(__x86_64__)
	return "amd64";
#elif defined(__aarch64__)
	return "arm64";
#elif defined(__arm__)
	return "arm";
#else
	return "unknown";
#endif
}

/* ---------------------------------------------------------------- manifests */

static int descriptor(json_t *j, const char *what, struct oci_descriptor *d, struct gerr *err)
{
	const char *mt = json_string_value(json_object_get(j, "mediaType"));
	const char *digest = json_string_value(json_object_get(j, "digest"));
	json_t *size = json_object_get(j, "size");

	if (!json_is_object(j) || !mt || !digest || !json_is_integer(size) ||
	    json_integer_value(size) < 0)
		return gerr_set(err, 422, "the manifest's %s needs mediaType, digest and size", what);
	if (!oci_digest_valid(digest))
		return gerr_set(err, 422, "the manifest's %s digest \"%.80s\" is not sha256: and 64 "
				"lowercase hex digits", what, digest);
	snprintf(d->media_type, sizeof(d->media_type), "%s", mt);
	snprintf(d->digest, sizeof(d->digest), "%s", digest);
	d->size = (uint64_t)json_integer_value(size);
	return 0;
}

/* From an index, the manifest for linux on `arch`. */
static int pick_platform(json_t *manifests, const char *arch, struct oci_manifest *m,
			 struct gerr *err)
{
	size_t i;
	json_t *v;

	if (!json_is_array(manifests))
		return gerr_set(err, 422, "the index has no manifests array");
	json_array_foreach(manifests, i, v) {
		json_t *platform = json_object_get(v, "platform");
		const char *os = json_string_value(json_object_get(platform, "os"));
		const char *a = json_string_value(json_object_get(platform, "architecture"));

		if (os && a && strcmp(os, "linux") == 0 && strcmp(a, arch) == 0)
			return descriptor(v, "platform manifest", &m->next, err);
	}
	return gerr_set(err, 422, "the index has no manifest for linux/%s", arch);
}

static bool layer_type_known(const char *mt)
{
	return strcmp(mt, "application/vnd.oci.image.layer.v1.tar+gzip") == 0 ||
	       strcmp(mt, "application/vnd.oci.image.layer.v1.tar") == 0 ||
	       strcmp(mt, "application/vnd.docker.image.rootfs.diff.tar.gzip") == 0;
}

int oci_manifest_parse(const void *body, size_t len, const char *content_type,
		       const char *arch, struct oci_manifest *m, struct gerr *err)
{
	json_error_t jerr;
	json_t *j, *layers;
	const char *mt;
	int ret = -1;

	memset(m, 0, sizeof(*m));
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		return gerr_set(err, 422, "the manifest is not JSON: %s", jerr.text);
	if (!json_is_object(j)) {
		gerr_set(err, 422, "the manifest is not a JSON object");
		goto out;
	}
	mt = json_string_value(json_object_get(j, "mediaType"));
	if (!mt)
		mt = content_type ? content_type : "";
	if (json_integer_value(json_object_get(j, "schemaVersion")) != 2) {
		gerr_set(err, 422, "the manifest's schemaVersion is not 2");
		goto out;
	}
	if (strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0) {
		m->index = true;
		ret = pick_platform(json_object_get(j, "manifests"), arch, m, err);
		goto out;
	}
	if (strcmp(mt, MT_OCI_MANIFEST) != 0 && strcmp(mt, MT_DOCKER_MANIFEST) != 0) {
		gerr_set(err, 422, "the manifest's media type \"%.100s\" is not an image manifest "
			 "(OCI or Docker v2)", mt);
		goto out;
	}
	if (descriptor(json_object_get(j, "config"), "config", &m->config, err) < 0)
		goto out;
	layers = json_object_get(j, "layers");
	if (json_array_size(layers) != 1) {
		gerr_set(err, 422, "a bytecode image has exactly one layer, this one %zu",
			 json_array_size(layers));
		goto out;
	}
	if (descriptor(json_array_get(layers, 0), "layer", &m->layer, err) < 0)
		goto out;
	if (!layer_type_known(m->layer.media_type)) {
		gerr_set(err, 422, "the layer's media type \"%s\" is not a tar layer",
			 m->layer.media_type);
		goto out;
	}
	ret = 0;
out:
	json_decref(j);
	return ret;
}

/* ---------------------------------------------------------------- config */

/* One label: a JSON object of name → type, as ImageLabel entries. */
static int label_pairs(json_t *labels, const char *key, bool needed, Graind__ImageLabel ***out,
		       size_t *n, struct gerr *err)
{
	const char *text = json_string_value(json_object_get(labels, key)), *name;
	json_error_t jerr;
	json_t *map, *type;
	int ret = -1;

	if (!text) {
		if (!needed)
			return 0;
		return gerr_set(err, 422, "the image is not a bytecode image: its config has no "
				"label %s (bpfman's format: a JSON object of program name → type)",
				key);
	}
	map = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(map) || json_object_size(map) > LABELS_MAX) {
		gerr_set(err, 422, "the image's label %s is not a JSON object of at most %d names",
			 key, LABELS_MAX);
		goto out;
	}
	*out = calloc(json_object_size(map) + 1, sizeof(**out));
	if (!*out) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	json_object_foreach(map, name, type) {
		Graind__ImageLabel *l;

		if (!json_is_string(type) || strlen(name) > 256 || json_string_length(type) > 64) {
			gerr_set(err, 422, "the image's label %s: \"%.64s\" needs a type of at most "
				 "64 characters", key, name);
			goto out;
		}
		l = (Graind__ImageLabel *)pbmsg_new(&graind__image_label__descriptor);
		if (!l || pbmsg_set_string(&l->name, name) < 0 ||
		    pbmsg_set_string(&l->type, json_string_value(type)) < 0) {
			pbmsg_free(l ? &l->base : NULL);
			gerr_set(err, 500, "out of memory");
			goto out;
		}
		(*out)[(*n)++] = l;
	}
	ret = 0;
out:
	json_decref(map);
	return ret;
}

int oci_config_labels(const void *body, size_t len, Graind__ObjectOrigin *origin,
		      struct gerr *err)
{
	json_error_t jerr;
	json_t *j, *labels;
	int ret = -1;

	j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(j)) {
		json_decref(j);
		return gerr_set(err, 422, "the image's config is not a JSON object");
	}
	labels = json_object_get(json_object_get(j, "config"), "Labels");
	if (label_pairs(labels, "io.ebpf.programs", true, &origin->programs, &origin->n_programs,
			err) == 0 &&
	    label_pairs(labels, "io.ebpf.maps", false, &origin->maps, &origin->n_maps, err) == 0)
		ret = 0;
	json_decref(j);
	return ret;
}

/* ---------------------------------------------------------------- layers */

/* The gzip stream inflated, at most `max` bytes. */
static int gunzip(const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *out_len,
		  struct gerr *err)
{
	z_stream z = { 0 };
	size_t cap = 65536;
	uint8_t *buf = malloc(cap), *grown;
	int rc = Z_OK;

	*out = NULL;
	if (!buf)
		return gerr_set(err, 500, "out of memory");
	if (inflateInit2(&z, 15 + 16) != Z_OK) {
		free(buf);
		return gerr_set(err, 500, "zlib: cannot start inflating");
	}
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	while (rc != Z_STREAM_END) {
		if (z.total_out == cap) {
			if (cap >= max + TAR_BLOCK * 4) {
				inflateEnd(&z);
				free(buf);
				return gerr_set(err, 413, "the layer unpacks to more than the %zu-byte "
						"limit (--max-object-size)", max);
			}
			cap *= 2;
			if (!(grown = realloc(buf, cap))) {
				inflateEnd(&z);
				free(buf);
				return gerr_set(err, 500, "out of memory");
			}
			buf = grown;
		}
		z.next_out = buf + z.total_out;
		z.avail_out = (uInt)(cap - z.total_out);
		rc = inflate(&z, Z_NO_FLUSH);
		if (rc != Z_OK && rc != Z_STREAM_END) {
			inflateEnd(&z);
			free(buf);
			return gerr_set(err, 422, "the layer is not a gzip stream (%s)",
					rc == Z_BUF_ERROR ? "cut short" : z.msg ? z.msg : "damaged");
		}
	}
	*out = buf;
	*out_len = z.total_out;
	inflateEnd(&z);
	return 0;
}

/* A tar header's octal number; -1 when it is not one. */
static long long tar_number(const uint8_t *field, size_t n)
{
	long long v = 0;
	size_t i = 0;

	while (i < n && field[i] == ' ')
		i++;
	if (i == n || field[i] < '0' || field[i] > '7')
		return -1;
	for (; i < n && field[i] >= '0' && field[i] <= '7'; i++) {
		if (v > (1LL << 40))
			return -1;
		v = v * 8 + (field[i] - '0');
	}
	return v;
}

struct tar_file {
	char name[260];
	const uint8_t *data;
	size_t len;
};

/* "./a.o" and "a.o" are the same file; a name in a directory is not at
 * the root. */
static const char *root_name(const char *name)
{
	while (name[0] == '.' && name[1] == '/')
		name += 2;
	return strchr(name, '/') || !name[0] ? NULL : name;
}

/* The regular files at the root of a tar, up to `max` of them (*n may be
 * more: they are counted). GNU long names and pax path records name the
 * file after them. */
static int tar_root_files(const uint8_t *tar, size_t len, struct tar_file *files, size_t max,
			  size_t *n, struct gerr *err)
{
	char long_name[256] = "";
	size_t at = 0;

	*n = 0;
	while (at + TAR_BLOCK <= len) {
		const uint8_t *h = tar + at;
		char name[260];
		long long size;
		size_t padded;

		if (h[0] == 0)
			return 0;               /* the end: a zero block */
		size = tar_number(h + 124, 12);
		if (size < 0)
			return gerr_set(err, 422, "the layer is not a tar: a header has no size");
		padded = ((size_t)size + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
		if (padded > len - at - TAR_BLOCK)
			return gerr_set(err, 422, "the layer's tar is cut short");
		if (long_name[0])
			snprintf(name, sizeof(name), "%s", long_name);
		else if (memcmp(h + 257, "ustar", 6) == 0 && h[345])  /* POSIX, not GNU's "ustar " */
			snprintf(name, sizeof(name), "%.155s/%.100s", (const char *)h + 345,
				 (const char *)h);
		else
			snprintf(name, sizeof(name), "%.100s", (const char *)h);
		switch (h[156]) {
		case 'L':                       /* GNU: the next file's name */
			snprintf(long_name, sizeof(long_name), "%.*s",
				 (int)(size < 255 ? size : 255), (const char *)h + TAR_BLOCK);
			break;
		case 'x': {                     /* pax: "<len> path=<name>\n" records */
			const char *rec = (const char *)h + TAR_BLOCK;
			const char *end = rec + size, *p = rec;

			while (p < end) {
				const char *eq = memchr(p, '=', (size_t)(end - p));
				const char *nl = memchr(p, '\n', (size_t)(end - p));
				const char *sp = memchr(p, ' ', (size_t)(end - p));

				if (!eq || !nl || !sp || sp > eq || eq > nl)
					break;
				if (eq - sp == 5 && strncmp(sp + 1, "path", 4) == 0)
					snprintf(long_name, sizeof(long_name), "%.*s",
						 (int)(nl - eq - 1 < 255 ? nl - eq - 1 : 255), eq + 1);
				p = nl + 1;
			}
			break;
		}
		case '0':
		case '\0':
			if (root_name(name) && (*n)++ < max) {
				struct tar_file *f = &files[*n - 1];

				snprintf(f->name, sizeof(f->name), "%s", root_name(name));
				f->data = h + TAR_BLOCK;
				f->len = (size_t)size;
			}
			/* fall through */
		default:
			long_name[0] = '\0';
			break;
		}
		at += TAR_BLOCK + padded;
	}
	return gerr_set(err, 422, "the layer's tar has no end");
}

static bool ends_with_o(const char *name)
{
	size_t n = strlen(name);

	return n > 2 && strcmp(name + n - 2, ".o") == 0;
}

int oci_layer_object(const void *blob, size_t len, const char *media_type, size_t max_bytes,
		     void **object, size_t *object_len, char *name, size_t name_size,
		     struct gerr *err)
{
	struct tar_file files[8];
	const struct tar_file *pick = NULL;
	uint8_t *tar = NULL;
	size_t tar_len = 0, n, objects = 0;
	int ret = -1;

	*object = NULL;
	*object_len = 0;
	if (strstr(media_type, "gzip")) {
		if (gunzip(blob, len, max_bytes, &tar, &tar_len, err) < 0)
			return -1;
	} else {
		tar = (uint8_t *)blob;
		tar_len = len;
	}
	if (tar_root_files(tar, tar_len, files, 8, &n, err) < 0)
		goto out;
	if (n > 8) {
		gerr_set(err, 422, "the layer holds %zu files at its root; a bytecode image holds "
			 "its object file", n);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (ends_with_o(files[i].name) && objects++ == 0)
			pick = &files[i];
	if (!pick && n == 1)
		pick = &files[0];
	if (!pick || objects > 1) {
		gerr_set(err, 422, "the layer holds %zu object files at its root (%zu files); a "
			 "bytecode image holds one", objects, n);
		goto out;
	}
	if (pick->len > max_bytes) {
		gerr_set(err, 413, "the image's object %s is over the %zu-byte limit "
			 "(--max-object-size)", pick->name, max_bytes);
		goto out;
	}
	*object = malloc(pick->len ? pick->len : 1);
	if (!*object) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	memcpy(*object, pick->data, pick->len);
	*object_len = pick->len;
	snprintf(name, name_size, "%s", pick->name);
	ret = 0;
out:
	if (tar != blob)
		free(tar);
	return ret;
}
