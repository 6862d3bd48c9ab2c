/* authfile: the credentials file (--auth-file), one principal a line.
 *
 *   # comments and empty lines are ignored
 *   NAME ROLE CREDENTIAL [scope=GLOB[,GLOB...]] [expires=TIME]
 *   ci-deploy  operator  token-sha256:9f86d081...  scope=team-a-*  expires=2027-01-01T00:00:00Z
 *   ops-1      admin     cert:CN=ops-1
 *   "web team" reader    cert:"CN=Web Team"
 *
 * NAME: 1 to 63 of [A-Za-z0-9._-] ("admin" and "reader" are the token
 * files' principals); ROLE: admin, operator or reader; CREDENTIAL: the
 * SHA-256 of a bearer token (64 hex digits: the token itself is never
 * stored) or a client certificate name as server/util/peerid.h writes it
 * ("CN=…", "DNS:…", "IP:…", "email:…", "URI:…"). A field may be quoted
 * ("…", with \" and \\) to hold spaces. scope: probe-name patterns
 * (fnmatch), at most AUTH_SCOPES_MAX; none: every probe. expires: RFC 3339
 * UTC ("2027-01-01T00:00:00Z") or a day ("2027-01-01", its start, UTC).
 *
 * The file is untrusted input to the parser: every mistake is an error
 * naming the file, the line and what is wrong. */
#ifndef GRAIND_AUTHFILE_H
#define GRAIND_AUTHFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "server/util/gerr.h"

#define AUTH_NAME_MAX 64
#define AUTH_SCOPES_MAX 8
#define AUTH_SCOPE_MAX 64
#define AUTH_CERT_MAX 256
#define AUTHFILE_MAX_PRINCIPALS 4096
#define AUTHFILE_MAX_BYTES (4 << 20)

enum auth_role {
	AUTH_NONE,      /* no or unknown credential */
	AUTH_READER,    /* may read */
	AUTH_OPERATOR,  /* and change probes and sinks */
	AUTH_ADMIN,     /* and everything else */
};

enum auth_credential_kind {
	AUTH_CRED_TOKEN,        /* a bearer token, by its SHA-256 */
	AUTH_CRED_CERT,         /* a client certificate name */
};

struct auth_principal {
	char name[AUTH_NAME_MAX];
	enum auth_role role;
	unsigned n_scopes;                      /* 0: every probe */
	char scopes[AUTH_SCOPES_MAX][AUTH_SCOPE_MAX];
	int64_t expires_ms;                     /* unix ms; 0: never */
	enum auth_credential_kind kind;
	uint8_t digest[32];                     /* AUTH_CRED_TOKEN */
	char cert[AUTH_CERT_MAX];               /* AUTH_CRED_CERT */
};

struct authfile {
	struct auth_principal *p;
	size_t n;
};

/* Parse text[len] (named `path` in messages). 400 with the line at fault. */
int authfile_parse(const char *path, const char *text, size_t len, struct authfile *out,
		   struct gerr *err);
/* Read and parse `path`, which must be a regular file with no access for
 * group or others (400 otherwise, saying how to fix it). */
int authfile_read(const char *path, struct authfile *out, struct gerr *err);
void authfile_clear(struct authfile *af);

/* Write one principal as a line of the file (with its newline). */
void authfile_write_line(FILE *f, const struct auth_principal *p);
/* Replace `path` with af's principals, atomically (a file beside it,
 * mode 0600, synced, renamed over). */
int authfile_save(const char *path, const struct authfile *af, struct gerr *err);

/* "admin", "operator", "reader"; AUTH_NONE for anything else. */
const char *auth_role_name(enum auth_role role);
enum auth_role auth_role_parse(const char *name);

/* Whether `name` is a valid principal name. */
bool authfile_name_ok(const char *name);
/* TIME as the file writes it ("2027-01-01T00:00:00Z" or "2027-01-01") into
 * unix ms; false when it is neither. */
bool authfile_parse_time(const char *text, int64_t *ms);

#endif
