#include "server/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/util/log.h"
#include "server/util/sha256.h"

#define TOKEN_BYTES 32          /* 256 bits */
#define TOKEN_MIN_CHARS 16      /* refuse files holding something shorter */

struct role_token {
	char path[PATH_MAX];
	uint8_t digest[32];     /* sha256 of the token: compared, never the token */
};

struct auth {
	struct role_token admin, reader;
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

int auth_load(const char *state_dir, struct auth **out, struct gerr *err)
{
	struct auth *auth = calloc(1, sizeof(*auth));

	*out = NULL;
	if (!auth)
		return gerr_set(err, 500, "out of memory");
	if (load_role(state_dir, "admin.token", &auth->admin, err) < 0 ||
	    load_role(state_dir, "reader.token", &auth->reader, err) < 0) {
		free(auth);
		return -1;
	}
	if (memcmp(auth->admin.digest, auth->reader.digest, 32) == 0)
		log_warn("msg=\"admin and reader tokens are equal; readers can write\"");
	*out = auth;
	return 0;
}

void auth_free(struct auth *auth)
{
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

enum auth_role auth_role_of(const struct auth *auth, const char *header)
{
	static const char scheme[] = "Bearer";
	uint8_t digest[32];
	bool admin, reader;
	size_t len = 0;

	if (!header)
		return AUTH_NONE;
	/* Whitespace around the value is no part of it (RFC 9110 5.5); the
	 * scheme is case-insensitive; one or more spaces follow it. */
	header += strspn(header, " \t");
	if (strncasecmp(header, scheme, sizeof(scheme) - 1) != 0)
		return AUTH_NONE;
	header += sizeof(scheme) - 1;
	if (*header != ' ' && *header != '\t')
		return AUTH_NONE;
	header += strspn(header, " \t");
	while (header[len] && token_char((unsigned char)header[len]))
		len++;
	/* Anything but trailing whitespace after the token: not a token. */
	if (!len || header[len + strspn(header + len, " \t")] != '\0')
		return AUTH_NONE;
	/* Hashing first makes the comparison independent of token length. */
	sha256(header, len, digest);
	admin = digest_equal(digest, auth->admin.digest);
	reader = digest_equal(digest, auth->reader.digest);
	return admin ? AUTH_ADMIN : reader ? AUTH_READER : AUTH_NONE;
}

const char *auth_role_name(enum auth_role role)
{
	switch (role) {
	case AUTH_ADMIN:
		return "admin";
	case AUTH_READER:
		return "reader";
	default:
		return "anonymous";
	}
}

const char *auth_token_path(const struct auth *auth, enum auth_role role)
{
	return role == AUTH_ADMIN ? auth->admin.path : auth->reader.path;
}
