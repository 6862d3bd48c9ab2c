#include "server/auth.h"

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/util/clock.h"
#include "server/util/log.h"
#include "server/util/peerid.h"
#include "server/util/sha256.h"

#define TOKEN_BYTES 32          /* 256 bits */
#define TOKEN_MIN_CHARS 16      /* refuse files holding something shorter */

struct role_token {
	char path[PATH_MAX];
	uint8_t digest[32];     /* sha256 of the token: compared, never the token */
};

struct auth {
	char state_dir[PATH_MAX];
	char file[PATH_MAX];            /* --auth-file, or STATE_DIR/credentials */
	bool file_given;                /* --auth-file: it must be there */
	pthread_rwlock_t lock;          /* over what a reload replaces: every call reads it */
	struct role_token admin, reader;
	struct authfile principals;
	uint64_t generation;            /* +1 at every reload (atomic) */
};

static int write_new_token(const char *path, struct gerr *err)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t raw[TOKEN_BYTES];
	char text[2 * TOKEN_BYTES + 2];
	ssize_t n;
	int fd;

	if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
		return gerr_set(err, 500, "getrandom: %s", strerror(errno));
	for (int i = 0; i < TOKEN_BYTES; i++) {
		text[2 * i] = hex[raw[i] >> 4];
		text[2 * i + 1] = hex[raw[i] & 15];
	}
	text[2 * TOKEN_BYTES] = '\n';
	text[2 * TOKEN_BYTES + 1] = '\0';
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return gerr_set(err, 500, "cannot create %s: %s", path, strerror(errno));
	n = write(fd, text, strlen(text));
	if (n != (ssize_t)strlen(text) || fsync(fd) < 0) {
		close(fd);
		unlink(path);
		return gerr_set(err, 500, "cannot write %s: %s", path, strerror(errno));
	}
	close(fd);
	log_info("msg=\"created token\" file=%s", path);
	return 0;
}

static int read_token(struct role_token *rt, struct gerr *err)
{
	char buf[512];
	struct stat sb;
	size_t len;
	FILE *f;

	f = fopen(rt->path, "re");
	if (!f)
		return gerr_set(err, 500, "cannot read %s: %s", rt->path, strerror(errno));
	if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & 077))
		log_warn("msg=\"token file is readable by others; chmod 600 it\" file=%s",
			 rt->path);
	len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = '\0';
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
		       buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		buf[--len] = '\0';
	if (len < TOKEN_MIN_CHARS || strpbrk(buf, " \t\r\n"))
		return gerr_set(err, 500,
				"%s must hold one token of at least %d characters",
				rt->path, TOKEN_MIN_CHARS);
	sha256(buf, len, rt->digest);
	memset(buf, 0, sizeof(buf));
	return 0;
}

static int load_role(const char *dir, const char *file, struct role_token *rt,
		     struct gerr *err)
{
	if (snprintf(rt->path, sizeof(rt->path), "%s/%s", dir, file) >=
	    (int)sizeof(rt->path))
		return gerr_set(err, 500, "state directory path too long");
	if (access(rt->path, F_OK) != 0 && write_new_token(rt->path, err) < 0)
		return -1;
	return read_token(rt, err);
}

/* The token files and the credentials file, read into fresh copies. */
static int read_all(struct auth *auth, struct role_token *admin, struct role_token *reader,
		    struct authfile *principals, struct gerr *err)
{
	*principals = (struct authfile){ 0 };
	if (load_role(auth->state_dir, "admin.token", admin, err) < 0 ||
	    load_role(auth->state_dir, "reader.token", reader, err) < 0)
		return -1;
	if (memcmp(admin->digest, reader->digest, 32) == 0)
		log_warn("msg=\"admin and reader tokens are equal; readers can write\"");
	if (!auth->file_given && access(auth->file, F_OK) != 0 && errno == ENOENT)
		return 0;
	return authfile_read(auth->file, principals, err);
}

int auth_load(const char *state_dir, const char *auth_file, struct auth **out,
	      struct gerr *err)
{
	struct auth *auth = calloc(1, sizeof(*auth));

	*out = NULL;
	if (!auth)
		return gerr_set(err, 500, "out of memory");
	snprintf(auth->state_dir, sizeof(auth->state_dir), "%s", state_dir);
	auth->file_given = auth_file && auth_file[0];
	if (auth->file_given)
		snprintf(auth->file, sizeof(auth->file), "%s", auth_file);
	else
		snprintf(auth->file, sizeof(auth->file), "%s/%s", state_dir, AUTH_DEFAULT_FILE);
	if (read_all(auth, &auth->admin, &auth->reader, &auth->principals, err) < 0) {
		free(auth);
		return -1;
	}
	pthread_rwlock_init(&auth->lock, NULL);
	if (auth->principals.n)
		log_info("msg=\"credentials read\" file=\"%s\" principals=%zu", auth->file,
			 auth->principals.n);
	*out = auth;
	return 0;
}

int auth_reload(struct auth *auth, struct gerr *err)
{
	struct role_token admin, reader;
	struct authfile fresh, old;

	if (read_all(auth, &admin, &reader, &fresh, err) < 0)
		return -1;
	pthread_rwlock_wrlock(&auth->lock);
	auth->admin = admin;
	auth->reader = reader;
	old = auth->principals;
	auth->principals = fresh;
	__atomic_add_fetch(&auth->generation, 1, __ATOMIC_RELEASE);
	pthread_rwlock_unlock(&auth->lock);
	authfile_clear(&old);
	log_info("msg=\"credentials read\" file=\"%s\" principals=%zu", auth->file, fresh.n);
	return 0;
}

uint64_t auth_generation(struct auth *auth)
{
	return __atomic_load_n(&auth->generation, __ATOMIC_ACQUIRE);
}

void auth_free(struct auth *auth)
{
	if (!auth)
		return;
	authfile_clear(&auth->principals);
	pthread_rwlock_destroy(&auth->lock);
	free(auth);
}

/* Equal digests, in time independent of where they differ. */
static bool digest_equal(const uint8_t *a, const uint8_t *b)
{
	volatile uint8_t diff = 0;

	for (int i = 0; i < 32; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* RFC 6750's b64token: what a bearer token may be made of. */
static bool token_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       strchr("-._~+/=", c) != NULL;
}

/* The SHA-256 of the header's bearer token; false when it holds none. */
static bool bearer_digest(const char *header, uint8_t digest[32])
{
	static const char scheme[] = "Bearer";
	size_t len = 0;

	/* Whitespace around the value is no part of it (RFC 9110 5.5); the
	 * scheme is case-insensitive; one or more spaces follow it. */
	header += strspn(header, " \t");
	if (strncasecmp(header, scheme, sizeof(scheme) - 1) != 0)
		return false;
	header += sizeof(scheme) - 1;
	if (*header != ' ' && *header != '\t')
		return false;
	header += strspn(header, " \t");
	while (header[len] && token_char((unsigned char)header[len]))
		len++;
	/* Anything but trailing whitespace after the token: not a token. */
	if (!len || header[len + strspn(header + len, " \t")] != '\0')
		return false;
	/* Hashing first makes the comparison independent of token length. */
	sha256(header, len, digest);
	return true;
}

static void token_file_principal(const char *name, enum auth_role role,
				 struct auth_principal *who)
{
	memset(who, 0, sizeof(*who));
	snprintf(who->name, sizeof(who->name), "%s", name);
	who->role = role;
}

/* With the lock held: the principal of a token digest, or NULL. Every
 * digest is compared, so the time does not tell which one matched. */
static const struct auth_principal *by_digest(struct auth *auth, const uint8_t digest[32],
					      enum auth_role *file_role)
{
	const struct auth_principal *found = NULL;

	*file_role = AUTH_NONE;
	if (digest_equal(digest, auth->admin.digest))
		*file_role = AUTH_ADMIN;
	if (digest_equal(digest, auth->reader.digest) && *file_role == AUTH_NONE)
		*file_role = AUTH_READER;
	for (size_t i = 0; i < auth->principals.n; i++) {
		const struct auth_principal *p = &auth->principals.p[i];

		if (p->kind == AUTH_CRED_TOKEN && digest_equal(digest, p->digest) && !found)
			found = p;
	}
	return found;
}

enum auth_verdict auth_identify(struct auth *auth, const char *header,
				const char *client_identity, struct auth_principal *who)
{
	const struct auth_principal *p = NULL;
	enum auth_role file_role = AUTH_NONE;
	enum auth_verdict v = AUTH_OK;
	uint8_t digest[32];

	memset(who, 0, sizeof(*who));
	if (header && !bearer_digest(header, digest))
		return AUTH_UNKNOWN;
	pthread_rwlock_rdlock(&auth->lock);
	if (header) {
		p = by_digest(auth, digest, &file_role);
	} else if (client_identity) {
		for (size_t i = 0; i < auth->principals.n && !p; i++)
			if (auth->principals.p[i].kind == AUTH_CRED_CERT &&
			    peerid_matches(client_identity, auth->principals.p[i].cert))
				p = &auth->principals.p[i];
	}
	if (file_role != AUTH_NONE)
		token_file_principal(file_role == AUTH_ADMIN ? "admin" : "reader", file_role, who);
	else if (p)
		*who = *p;
	else
		v = header ? AUTH_UNKNOWN : AUTH_NO_CREDENTIAL;
	pthread_rwlock_unlock(&auth->lock);
	if (v == AUTH_OK && who->expires_ms && clock_unix_ms() >= who->expires_ms) {
		who->role = AUTH_NONE;
		v = AUTH_EXPIRED;
	}
	if (v != AUTH_OK && v != AUTH_EXPIRED)
		who->role = AUTH_NONE;
	return v;
}

bool auth_in_scope(const struct auth_principal *who, const char *name)
{
	if (who->n_scopes == 0)
		return true;
	for (unsigned i = 0; i < who->n_scopes; i++)
		if (fnmatch(who->scopes[i], name ? name : "", 0) == 0)
			return true;
	return false;
}

const char *auth_scope_text(const struct auth_principal *who, char *buf, size_t n)
{
	size_t at = 0;

	if (n)
		buf[0] = '\0';
	for (unsigned i = 0; i < who->n_scopes && at < n; i++)
		at += (size_t)snprintf(buf + at, n - at, "%s%s", i ? "," : "", who->scopes[i]);
	return buf;
}

const char *auth_token_path(const struct auth *auth, enum auth_role role)
{
	return role == AUTH_ADMIN ? auth->admin.path : auth->reader.path;
}

const char *auth_file_path(const struct auth *auth)
{
	return auth->file;
}

size_t auth_file_principals(struct auth *auth)
{
	size_t n;

	pthread_rwlock_rdlock(&auth->lock);
	n = auth->principals.n;
	pthread_rwlock_unlock(&auth->lock);
	return n;
}
