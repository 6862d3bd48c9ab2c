/* auth: who a request is, and what that principal may do.
 *
 * Principals come from two places. The token files: at first start two
 * random 256-bit tokens are written to STATE_DIR/admin.token (principal
 * "admin", role admin) and STATE_DIR/reader.token ("reader", role
 * reader), mode 0600; later starts read them back. And the credentials
 * file, --auth-file or else STATE_DIR/credentials when it is there
 * (authfile.h; `graind token` writes it): named principals with a role, a scope
 * of probe-name patterns and an expiry, known by the SHA-256 of their
 * bearer token or by a client certificate name. SIGHUP reads both again
 * (auth_reload); a reload that fails keeps the principals in use.
 *
 * Roles are ordered: a role may do what the ones below it may. Safe from
 * any thread. */
#ifndef GRAIND_AUTH_H
#define GRAIND_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "server/authfile.h"
#include "server/util/gerr.h"

enum auth_verdict {
	AUTH_OK,
	AUTH_NO_CREDENTIAL,     /* no Authorization header, no known certificate */
	AUTH_UNKNOWN,           /* a header that holds no principal's token */
	AUTH_EXPIRED,           /* a principal's, past its expiry */
};

struct auth;

#define AUTH_DEFAULT_FILE "credentials"

/* Load the token files from state_dir (creating missing ones) and the
 * credentials file: auth_file, which must be there, or when it is "",
 * state_dir/credentials if it is. */
int auth_load(const char *state_dir, const char *auth_file, struct auth **out,
	      struct gerr *err);
int auth_reload(struct auth *auth, struct gerr *err);

/* Changes with every reload: who a credential names may have changed. */
uint64_t auth_generation(struct auth *auth);
void auth_free(struct auth *auth);

/* Who sends the Authorization header value `header` (NULL: none) over a
 * connection whose verified client certificate names are
 * `client_identity` (peerid.h; NULL: none). A header decides when there
 * is one: "Bearer" in any case, spaces, the token (RFC 6750's
 * characters), whitespace around ignored; anything else is no token.
 * Without a header, a certificate name a principal lists decides. Tokens
 * are compared as digests in constant time. *who gets the principal
 * (role AUTH_NONE unless AUTH_OK); transports pass " " for a request that
 * carries the header twice. */
enum auth_verdict auth_identify(struct auth *auth, const char *header,
				const char *client_identity, struct auth_principal *who);

/* Whether the principal may see and change probe `name`. */
bool auth_in_scope(const struct auth_principal *who, const char *name);
/* Its scope as "team-a-*,team-b-?" into buf; "" when unscoped. */
const char *auth_scope_text(const struct auth_principal *who, char *buf, size_t n);

/* Path of the token file of "admin" or "reader". */
const char *auth_token_path(const struct auth *auth, enum auth_role role);
/* The credentials file and how many principals it holds. */
const char *auth_file_path(const struct auth *auth);
size_t auth_file_principals(struct auth *auth);

#endif
