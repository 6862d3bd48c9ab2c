/* signing: the signature policy (README "Signed objects").
 *
 * The trusted keys are the minisign public keys of --trusted-keys DIR,
 * every "*.pub" file in it, read at start and again by signing_reload()
 * (SIGHUP). An object uploaded with its minisign signature is checked
 * then: a signature by a trusted key that does not verify is refused; one
 * by an unknown key is kept, untrusted. With --require-signed, what goes
 * to the kernel passes signing_kernel_object(): a built-in object, or one
 * whose signature verifies now against a trusted key, checked again on
 * the bytes about to be loaded. Verify-only dry runs are not gated.
 * Thread-safe. A NULL struct signing trusts no key and requires nothing. */
#ifndef GRAIND_SIGNING_H
#define GRAIND_SIGNING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/util/gerr.h"

struct signing;
struct store;
struct store_object;
struct Graind__ProbeSpec;
struct Graind__Signer;
struct Graind__SignaturePolicy;

/* dir "" trusts no key (and require_signed then admits only built-ins).
 * Fails naming the file when the directory, or a key in it, cannot be
 * read or parsed, or when it holds no key. */
int signing_open(const char *dir, bool require_signed, struct signing **out,
		 struct gerr *err);
void signing_free(struct signing *sg);

/* Read the keys again; on failure the keys in use are kept. */
int signing_reload(struct signing *sg, struct gerr *err);

/* The signature sent with an upload of bytes[len]: 400 when it is not a
 * minisign signature, 422 when a trusted key has its id and it does not
 * verify. 0 otherwise, with the hex public key it verified against in
 * verified_key ("" when no trusted key has its id): what the store keeps
 * beside the signature. */
int signing_check_upload(struct signing *sg, const char *signature, const void *bytes,
			 size_t len, char verified_key[65], struct gerr *err);

/* The Signer of a stored object (NULL when it is unsigned), trusted when
 * the key that verified it at upload is still trusted. -1 out of memory. */
int signing_describe(struct signing *sg, const struct store_object *row,
		     struct Graind__Signer **out);

/* The bytes of the object `spec` runs, read as builtin_spec_object()
 * reads them, once the policy admits them: 422 naming the object, the
 * key id and the reason when --require-signed refuses. */
int signing_kernel_object(struct signing *sg, struct store *st,
			  const struct Graind__ProbeSpec *spec, void **bytes, size_t *len,
			  struct gerr *err);

/* The policy, for the agent's status. -1 out of memory. */
int signing_policy(struct signing *sg, struct Graind__SignaturePolicy **out);

/* Changes whenever signing_policy() may answer differently (a reload). */
uint64_t signing_generation(struct signing *sg);

#endif
