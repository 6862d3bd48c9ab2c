/* oci image: what a registry sends, read as a bytecode image in bpfman's
 * format, without touching the network (so that it can be fuzzed).
 *
 * A bytecode image is one manifest (OCI or Docker v2; from an index or
 * manifest list, the one of this host's architecture) with a config whose
 * labels io.ebpf.programs and io.ebpf.maps are JSON objects of name →
 * type (io.ebpf.maps may be absent: no maps), and exactly one layer, a tar
 * (gzip'd or not) holding the object file at its root. Everything here is
 * untrusted input: every size is bounded, every failure a 422 naming what
 * is wrong in terms of the image format. */
#ifndef GRAIND_OCI_IMAGE_H
#define GRAIND_OCI_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/graind.pb-c.h"
#include "server/oci/ref.h"
#include "server/util/gerr.h"

/* What a manifest request accepts, best first. */
#define OCI_MANIFEST_ACCEPT                                              \
	"application/vnd.oci.image.manifest.v1+json, "                   \
	"application/vnd.docker.distribution.manifest.v2+json, "         \
	"application/vnd.oci.image.index.v1+json, "                      \
	"application/vnd.docker.distribution.manifest.list.v2+json"

#define OCI_MANIFEST_MAX (4u << 20)
#define OCI_CONFIG_MAX (1u << 20)

struct oci_descriptor {
	char media_type[128];
	char digest[OCI_DIGEST_MAX];
	uint64_t size;
};

struct oci_manifest {
	bool index;                     /* an index: `next` is the manifest to ask for */
	struct oci_descriptor next;
	struct oci_descriptor config, layer;
};

/* Whether `bytes` hash to `digest` ("sha256:<hex>"). */
bool oci_digest_matches(const char *digest, const void *bytes, size_t len);

/* The manifest (or index) in `body`; `content_type` is the answer's, used
 * when the body names no mediaType. `arch` is the GOARCH of this host
 * ("amd64", "arm64"), chosen from an index with os "linux". */
int oci_manifest_parse(const void *body, size_t len, const char *content_type,
		       const char *arch, struct oci_manifest *m, struct gerr *err);

/* The labels of an image config into origin->programs and origin->maps. */
int oci_config_labels(const void *body, size_t len, Graind__ObjectOrigin *origin,
		      struct gerr *err);

/* The object file of a layer blob: its bytes (*object malloc'd, at most
 * max_bytes, else 413) and its file name. */
int oci_layer_object(const void *blob, size_t len, const char *media_type, size_t max_bytes,
		     void **object, size_t *object_len, char *name, size_t name_size,
		     struct gerr *err);

/* This host's architecture as OCI names it. */
const char *oci_host_arch(void);

#endif
