/* oci ref: an image reference, as a registry is asked for it.
 *
 * "registry[:port]/repository[:tag][@sha256:<64 hex digits>]", the
 * registry always named (a host with a '.' or a ':', or "localhost"): an
 * agent pulls only from where it is told, never from a default registry.
 * Neither tag nor digest means the tag "latest". Untrusted input. */
#ifndef GRAIND_OCI_REF_H
#define GRAIND_OCI_REF_H

#include <stddef.h>

#include "server/util/gerr.h"

#define OCI_DIGEST_MAX 72       /* "sha256:" and 64 hex digits, and more */

struct oci_ref {
	char registry[256];     /* "127.0.0.1:5000", "registry.example" */
	char repository[256];   /* "bpf/xdp-pass" */
	char tag[129];          /* "" when pinned by digest alone */
	char digest[OCI_DIGEST_MAX];    /* "sha256:...", "" when by tag */
};

/* 400 naming what is wrong, with the form expected. */
int oci_ref_parse(const char *text, struct oci_ref *ref, struct gerr *err);

/* "registry/repository:tag@digest" again, as given (normalised). */
void oci_ref_format(const struct oci_ref *ref, char *out, size_t size);

/* Whether `digest` is "sha256:" and 64 lowercase hex digits. */
int oci_digest_valid(const char *digest);

#endif
