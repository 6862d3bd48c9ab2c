/* auth: bearer tokens with two roles.
 *
 * At first start two random 256-bit tokens are written to
 * STATE_DIR/admin.token and STATE_DIR/reader.token (mode 0600); later starts
 * read them back, so operators may also replace a file's content and
 * restart. An admin may do everything; a reader may only read. */
#ifndef GRAIND_AUTH_H
#define GRAIND_AUTH_H

#include "server/util/gerr.h"

enum auth_role {
	AUTH_NONE,      /* no or unknown token */
	AUTH_READER,
	AUTH_ADMIN,
};

struct auth;

/* Load the tokens from state_dir, creating missing ones. *out is the
 * caller's, to free with auth_free(). */
int auth_load(const char *state_dir, struct auth **out, struct gerr *err);
void auth_free(struct auth *auth);

/* The role an "Authorization: Bearer <token>" header value grants:
 * "Bearer" in any case, one or more spaces, the token (RFC 6750's
 * characters), whitespace around ignored; anything else grants nothing.
 * Compares in constant time whatever the header holds. Transports pass
 * " " for a request that carries the header twice. */
enum auth_role auth_role_of(const struct auth *auth, const char *header);

const char *auth_role_name(enum auth_role role);

/* Path of the token file for a role (AUTH_ADMIN or AUTH_READER). */
const char *auth_token_path(const struct auth *auth, enum auth_role role);

#endif
