/* oci pull: a bytecode image from a registry, over the OCI distribution
 * API (server/fetch.h for every GET).
 *
 * The manifest is asked for with the OCI and Docker v2 media types (an
 * index or manifest list leads to the manifest of this host's
 * architecture), then the config and the one layer; every blob and every
 * manifest pinned by digest is checked against its digest, so nothing of
 * the wrong bytes is kept. Registries are spoken to over https, or plain
 * http when listed as insecure. A registry that answers 401 is asked
 * again with what its challenge wants: Basic credentials, or a Bearer
 * token from its realm (anonymously, or with the Basic credentials); the
 * credentials come from an auth file in the format of containers-auth.json
 * ({"auths": {"host:port": {"auth": base64("user:password")}}}), read at
 * each pull so that it can change without a restart. */
#ifndef GRAIND_OCI_PULL_H
#define GRAIND_OCI_PULL_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/graind.pb-c.h"
#include "server/fetch.h"
#include "server/util/gerr.h"

#define OCI_INSECURE_MAX 8

struct oci_pull_opts {
	struct fetch_opts fetch;        /* CAs, size limit; allow_http is set per registry */
	const char *auth_file;          /* NULL or "": no credentials */
	const char *const *insecure;    /* registries reached over http, NULL-terminated */
};

struct oci_pulled {
	void *object;                   /* malloc'd, the object file's bytes */
	size_t len;
	char filename[256];             /* its name in the layer */
	Graind__ObjectOrigin *origin;   /* image, manifest digest, labels; pbmsg_free() */
};

void oci_pulled_clear(struct oci_pulled *p);

/* Pull `image`. 400 a reference that does not parse; 422 an image that
 * is not a bytecode image or bytes that do not match their digest; 413
 * too large; 502 the registry refused or failed (its status and, for 401,
 * what it asked for); the errors of fetch_get. */
int oci_pull(const struct oci_pull_opts *o, const char *image, struct oci_pulled *out,
	     struct gerr *err);

#endif
