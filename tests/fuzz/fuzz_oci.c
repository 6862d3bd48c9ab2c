/* Fuzz what a registry sends (server/oci): the first input byte picks the
 * parser, the rest is its input. 0: an image reference; 1: a manifest or
 * index (the content type from the byte after); 2: an image config's
 * labels; 3 and 4: a layer, gzip'd and plain. Each either fails with an
 * error a person can read, or gives what its contract promises: a
 * reference that formats back to one that parses the same; a manifest
 * with valid digests and one known layer; labels with names and types;
 * an object no larger than the limit, with a file name. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/graind.pb-c.h"
#include "server/oci/image.h"
#include "server/oci/ref.h"
#include "server/util/pbmsg.h"
#include "tests/fuzz/fuzz.h"

#define LAYER_MAX 65536

static const char *const content_types[] = {
	"", "application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
};

static void check_error(int rc, const struct gerr *err)
{
	fuzz_check(rc == 0 || (err->status >= 400 && err->msg[0]), "a failure without a message");
}

static void reference(const uint8_t *data, size_t size)
{
	char *text = strndup((const char *)data, size), again[1024];
	struct oci_ref ref, back;
	struct gerr err = { 0 };
	int rc;

	fuzz_check(text, "out of memory");
	rc = oci_ref_parse(text, &ref, &err);
	check_error(rc, &err);
	if (rc == 0) {
		oci_ref_format(&ref, again, sizeof(again));
		fuzz_check(oci_ref_parse(again, &back, &err) == 0, "%s formats to %s: %s", text,
			   again, err.msg);
		fuzz_check(!memcmp(&ref, &back, sizeof(ref)), "%s and %s differ", text, again);
		fuzz_check(ref.tag[0] || ref.digest[0], "neither tag nor digest");
	}
	free(text);
}

static void manifest(const uint8_t *data, size_t size)
{
	struct oci_manifest m;
	struct gerr err = { 0 };
	int rc;

	if (!size)
		return;
	rc = oci_manifest_parse(data + 1, size - 1, content_types[data[0] % 4], "amd64", &m, &err);
	check_error(rc, &err);
	if (rc == 0 && m.index)
		fuzz_check(oci_digest_valid(m.next.digest), "index entry %s", m.next.digest);
	if (rc == 0 && !m.index)
		fuzz_check(oci_digest_valid(m.config.digest) && oci_digest_valid(m.layer.digest) &&
			   strstr(m.layer.media_type, "tar"), "manifest %s %s %s",
			   m.config.digest, m.layer.digest, m.layer.media_type);
}

static void labels(const uint8_t *data, size_t size)
{
	Graind__ObjectOrigin *o = (Graind__ObjectOrigin *)pbmsg_new(
		&graind__object_origin__descriptor);
	struct gerr err = { 0 };
	int rc;

	fuzz_check(o, "out of memory");
	rc = oci_config_labels(data, size, o, &err);
	check_error(rc, &err);
	for (size_t i = 0; rc == 0 && i < o->n_programs; i++)
		fuzz_check(o->programs[i]->name && o->programs[i]->type, "a label without both");
	fuzz_check(rc < 0 || o->n_programs <= 256, "%zu programs", o->n_programs);
	pbmsg_free(&o->base);
}

static void layer(const uint8_t *data, size_t size, bool gzip)
{
	struct gerr err = { 0 };
	char name[256];
	void *obj;
	size_t len;
	int rc;

	rc = oci_layer_object(data, size, gzip ? "application/vnd.oci.image.layer.v1.tar+gzip"
				     : "application/vnd.oci.image.layer.v1.tar",
			      LAYER_MAX, &obj, &len, name, sizeof(name), &err);
	check_error(rc, &err);
	if (rc == 0) {
		fuzz_check(len <= LAYER_MAX, "an object of %zu bytes", len);
		fuzz_check(name[0] && !strchr(name, '/'), "name \"%s\"", name);
		free(obj);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	switch (data[0] % 5) {
	case 0:
		reference(data + 1, size - 1);
		break;
	case 1:
		manifest(data + 1, size - 1);
		break;
	case 2:
		labels(data + 1, size - 1);
		break;
	default:
		layer(data + 1, size - 1, data[0] % 5 == 3);
		break;
	}
	return 0;
}
