/* Unit tests for server/oci/ref.c and image.c: image references, good
 * and bad; manifests, indexes and the platform chosen; configs' labels;
 * layers as tar and tar.gz, with long names, several files, and one that
 * unpacks past the limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "proto/graind.pb-c.h"
#include "server/oci/image.h"
#include "server/oci/ref.h"
#include "server/util/pbmsg.h"

#define DIGEST_A "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DIGEST_B "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* ---------------------------------------------------------------- refs */

static void test_refs(void **state)
{
	struct oci_ref r;
	struct gerr err = { 0 };
	char back[700];

	(void)state;
	assert_int_equal(oci_ref_parse("127.0.0.1:5000/bpf/xdp-pass:v1", &r, &err), 0);
	assert_string_equal(r.registry, "127.0.0.1:5000");
	assert_string_equal(r.repository, "bpf/xdp-pass");
	assert_string_equal(r.tag, "v1");
	assert_string_equal(r.digest, "");
	assert_int_equal(oci_ref_parse("localhost/a", &r, &err), 0);
	assert_string_equal(r.tag, "latest");
	assert_int_equal(oci_ref_parse("registry.example/a/b@" DIGEST_A, &r, &err), 0);
	assert_string_equal(r.tag, "");
	assert_string_equal(r.digest, DIGEST_A);
	oci_ref_format(&r, back, sizeof(back));
	assert_string_equal(back, "registry.example/a/b@" DIGEST_A);
	assert_int_equal(oci_ref_parse("r.example:443/a_b.c-d/e:1.0-rc@" DIGEST_B, &r, &err), 0);
	oci_ref_format(&r, back, sizeof(back));
	assert_string_equal(back, "r.example:443/a_b.c-d/e:1.0-rc@" DIGEST_B);
}

static void test_bad_refs(void **state)
{
	static const struct { const char *ref, *says; } bad[] = {
		{ "", "empty" },
		{ "bpf/xdp:v1", "name the registry first" },
		{ "xdp", "name the registry first" },
		{ "reg.example/", "repository" },
		{ "reg.example/Upper", "lowercase" },
		{ "reg.example/a//b", "repository" },
		{ "reg.example/-a", "repository" },
		{ "reg.example/a-", "repository" },
		{ "reg.example/a:", "tag" },
		{ "reg.example/a:-x", "tag" },
		{ "reg.example/a@sha256:abc", "64 lowercase hex" },
		{ "reg.example/a@md5:" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "sha256" },
		{ "reg_example:x/a", "not a host" },
		{ "reg.example:123456/a", "not a host" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct oci_ref r;
		struct gerr err = { 0 };

		assert_int_equal(oci_ref_parse(bad[i].ref, &r, &err), -1);
		assert_int_equal(err.status, 400);
		if (!strstr(err.msg, bad[i].says))
			fail_msg("%s: \"%s\" does not say %s", bad[i].ref, err.msg, bad[i].says);
	}
}

/* ---------------------------------------------------------------- manifests */

static int parse(const char *json, const char *ctype, struct oci_manifest *m, struct gerr *err)
{
	memset(err, 0, sizeof(*err));
	return oci_manifest_parse(json, strlen(json), ctype, "amd64", m, err);
}

static void test_manifests(void **state)
{
	struct oci_manifest m;
	struct gerr err;

	(void)state;
	assert_int_equal(parse("{\"schemaVersion\":2,"
		"\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		"\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
		"\"digest\":\"" DIGEST_A "\",\"size\":10},"
		"\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
		"\"digest\":\"" DIGEST_B "\",\"size\":20}]}", NULL, &m, &err), 0);
	assert_false(m.index);
	assert_string_equal(m.config.digest, DIGEST_A);
	assert_int_equal(m.layer.size, 20);
	/* Docker's, its type from the answer's Content-Type. */
	assert_int_equal(parse("{\"schemaVersion\":2,"
		"\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\","
		"\"digest\":\"" DIGEST_A "\",\"size\":10},"
		"\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\","
		"\"digest\":\"" DIGEST_B "\",\"size\":20}]}",
		"application/vnd.docker.distribution.manifest.v2+json", &m, &err), 0);
	/* An index: the linux/amd64 entry. */
	assert_int_equal(parse("{\"schemaVersion\":2,"
		"\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":["
		"{\"mediaType\":\"m\",\"digest\":\"" DIGEST_A "\",\"size\":1,"
		"\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}},"
		"{\"mediaType\":\"m\",\"digest\":\"" DIGEST_B "\",\"size\":1,"
		"\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}", NULL, &m, &err), 0);
	assert_true(m.index);
	assert_string_equal(m.next.digest, DIGEST_B);
}

static void test_bad_manifests(void **state)
{
	static const struct { const char *json, *says; } bad[] = {
		{ "[]", "not a JSON object" },
		{ "{", "not JSON" },
		{ "{\"schemaVersion\":1}", "schemaVersion" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"text/plain\"}", "not an image manifest" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		  "\"config\":{\"mediaType\":\"c\",\"digest\":\"sha256:xyz\",\"size\":1}}", "digest" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		  "\"config\":{\"mediaType\":\"c\",\"digest\":\"" DIGEST_A "\",\"size\":1},"
		  "\"layers\":[]}", "exactly one layer, this one 0" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		  "\"config\":{\"mediaType\":\"c\",\"digest\":\"" DIGEST_A "\",\"size\":1},"
		  "\"layers\":[{\"mediaType\":\"application/x-zip\",\"digest\":\"" DIGEST_B "\","
		  "\"size\":1}]}", "not a tar layer" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
		  "\"manifests\":[{\"mediaType\":\"m\",\"digest\":\"" DIGEST_A "\",\"size\":1,"
		  "\"platform\":{\"os\":\"windows\",\"architecture\":\"amd64\"}}]}",
		  "no manifest for linux/amd64" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct oci_manifest m;
		struct gerr err;

		assert_int_equal(parse(bad[i].json, NULL, &m, &err), -1);
		assert_int_equal(err.status, 422);
		if (!strstr(err.msg, bad[i].says))
			fail_msg("%zu: \"%s\" does not say %s", i, err.msg, bad[i].says);
	}
}

/* ---------------------------------------------------------------- labels */

static void test_labels(void **state)
{
	const char *config = "{\"config\":{\"Labels\":{"
		"\"io.ebpf.programs\":\"{\\\"xdp_pass\\\":\\\"xdp\\\",\\\"tc_in\\\":\\\"tc\\\"}\","
		"\"io.ebpf.maps\":\"{\\\"counts\\\":\\\"array\\\"}\"}}}";
	Graind__ObjectOrigin *o = (Graind__ObjectOrigin *)pbmsg_new(
		&graind__object_origin__descriptor);
	struct gerr err = { 0 };

	(void)state;
	assert_int_equal(oci_config_labels(config, strlen(config), o, &err), 0);
	assert_int_equal(o->n_programs, 2);
	assert_string_equal(o->programs[0]->name, "xdp_pass");
	assert_string_equal(o->programs[0]->type, "xdp");
	assert_int_equal(o->n_maps, 1);
	pbmsg_free(&o->base);

	o = (Graind__ObjectOrigin *)pbmsg_new(&graind__object_origin__descriptor);
	config = "{\"config\":{\"Labels\":{\"io.ebpf.maps\":\"{}\"}}}";
	assert_int_equal(oci_config_labels(config, strlen(config), o, &err), -1);
	assert_int_equal(err.status, 422);
	assert_non_null(strstr(err.msg, "no label io.ebpf.programs"));
	config = "{\"config\":{\"Labels\":{\"io.ebpf.programs\":\"[1]\"}}}";
	assert_int_equal(oci_config_labels(config, strlen(config), o, &err), -1);
	assert_non_null(strstr(err.msg, "not a JSON object"));
	pbmsg_free(&o->base);
}

/* ---------------------------------------------------------------- layers */

/* A ustar header for `name` of `size` bytes, type `type`. */
static void tar_header(uint8_t *h, const char *name, size_t size, char type)
{
	unsigned sum = 0;

	memset(h, 0, 512);
	snprintf((char *)h, 100, "%s", name);
	snprintf((char *)h + 100, 8, "0000644");
	snprintf((char *)h + 124, 12, "%011zo", size);
	h[156] = (uint8_t)type;
	memcpy(h + 257, "ustar", 6);
	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
}

/* Append a file to a tar in buf at *len. */
static void tar_add(uint8_t *buf, size_t *len, const char *name, const void *data, size_t n,
		    char type)
{
	tar_header(buf + *len, name, n, type);
	*len += 512;
	memcpy(buf + *len, data, n);
	*len += (n + 511) / 512 * 512;
}

static int layer(const uint8_t *tar, size_t len, bool gzip, size_t max, char *name,
		 size_t *obj_len, struct gerr *err)
{
	uint8_t *packed = NULL;
	uLongf packed_len = compressBound(len) + 64;
	void *obj = NULL;
	int rc;

	memset(err, 0, sizeof(*err));
	if (gzip) {
		z_stream z = { 0 };

		packed = malloc(packed_len);
		assert_non_null(packed);
		assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
		z.next_in = (Bytef *)tar;
		z.avail_in = (uInt)len;
		z.next_out = packed;
		z.avail_out = (uInt)packed_len;
		assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
		packed_len = z.total_out;
		deflateEnd(&z);
	}
	rc = oci_layer_object(gzip ? packed : tar, gzip ? packed_len : len,
			      gzip ? "application/vnd.oci.image.layer.v1.tar+gzip"
				   : "application/vnd.oci.image.layer.v1.tar",
			      max, &obj, obj_len, name, 256, err);
	if (rc == 0)
		assert_memory_equal(obj, "\x7f" "ELF", 4);
	free(obj);
	free(packed);
	return rc;
}

static void test_layers(void **state)
{
	static uint8_t tar[64 * 1024];
	static const uint8_t elf[600] = "\x7f" "ELF";
	char name[256], pax[128];
	struct gerr err;
	size_t len = 0, n;

	(void)state;
	tar_add(tar, &len, "./", "", 0, '5');
	tar_add(tar, &len, "./prog.bpf.o", elf, sizeof(elf), '0');
	tar_add(tar, &len, "README", "hi", 2, '0');
	len += 1024;
	for (int gz = 0; gz < 2; gz++) {
		assert_int_equal(layer(tar, len, gz, 4096, name, &n, &err), 0);
		assert_string_equal(name, "prog.bpf.o");
		assert_int_equal(n, sizeof(elf));
	}
	/* Over the limit: the object, and a gzip that unpacks past it. */
	assert_int_equal(layer(tar, len, false, 100, name, &n, &err), -1);
	assert_int_equal(err.status, 413);
	assert_int_equal(layer(tar, len, true, 100, name, &n, &err), -1);
	assert_int_equal(err.status, 413);

	/* A pax header names the next file; a file in a directory is not at the root. */
	memset(tar, 0, sizeof(tar));
	len = 0;
	snprintf(pax, sizeof(pax), "30 path=a-very-long-name.bpf.o\n");
	tar_add(tar, &len, "PaxHeader", pax, strlen(pax), 'x');
	tar_add(tar, &len, "short", elf, sizeof(elf), '0');
	tar_add(tar, &len, "dir/other.o", elf, sizeof(elf), '0');
	len += 1024;
	assert_int_equal(layer(tar, len, false, 4096, name, &n, &err), 0);
	assert_string_equal(name, "a-very-long-name.bpf.o");

	/* Two objects at the root: which one is meant? */
	memset(tar, 0, sizeof(tar));
	len = 0;
	tar_add(tar, &len, "a.o", elf, sizeof(elf), '0');
	tar_add(tar, &len, "b.o", elf, sizeof(elf), '0');
	len += 1024;
	assert_int_equal(layer(tar, len, false, 4096, name, &n, &err), -1);
	assert_int_equal(err.status, 422);
	assert_non_null(strstr(err.msg, "2 object files"));

	/* Cut short, and no tar at all. */
	assert_int_equal(layer(tar, 700, false, 4096, name, &n, &err), -1);
	assert_non_null(strstr(err.msg, "cut short"));
	assert_int_equal(oci_layer_object("not gzip", 8, "application/vnd.oci.image.layer.v1.tar+gzip",
					  4096, (void **)&(void *){ NULL }, &n, name, 256, &err), -1);
	assert_non_null(strstr(err.msg, "not a gzip stream"));
}

static void test_digests(void **state)
{
	(void)state;
	/* sha256("") */
	assert_true(oci_digest_matches(
		"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "", 0));
	assert_false(oci_digest_matches(
		"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "x", 1));
	assert_false(oci_digest_matches("sha512:00", "", 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refs),
		cmocka_unit_test(test_bad_refs),
		cmocka_unit_test(test_manifests),
		cmocka_unit_test(test_bad_manifests),
		cmocka_unit_test(test_labels),
		cmocka_unit_test(test_layers),
		cmocka_unit_test(test_digests),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
