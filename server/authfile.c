/* authfile: see authfile.h. */
#define _GNU_SOURCE
#include "server/authfile.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FIELDS_MAX 8
#define FIELD_MAX 512

static const char *const role_names[] = {
	[AUTH_NONE] = "anonymous",
	[AUTH_READER] = "reader",
	[AUTH_OPERATOR] = "operator",
	[AUTH_ADMIN] = "admin",
};

const char *auth_role_name(enum auth_role role)
{
	return (unsigned)role <= AUTH_ADMIN ? role_names[role] : role_names[AUTH_NONE];
}

enum auth_role auth_role_parse(const char *name)
{
	for (int r = AUTH_READER; r <= AUTH_ADMIN; r++)
		if (strcmp(name, role_names[r]) == 0)
			return (enum auth_role)r;
	return AUTH_NONE;
}

bool authfile_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n >= AUTH_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static bool digits(const char *s, int n, int *out)
{
	*out = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		*out = *out * 10 + (s[i] - '0');
	}
	return true;
}

bool authfile_parse_time(const char *text, int64_t *ms)
{
	struct tm tm = { 0 };
	int y, mo, d, h = 0, mi = 0, s = 0;
	size_t n = strlen(text);
	time_t t;

	if ((n != 10 && n != 20) || text[4] != '-' || text[7] != '-' ||
	    !digits(text, 4, &y) || !digits(text + 5, 2, &mo) || !digits(text + 8, 2, &d))
		return false;
	if (n == 20 && (text[10] != 'T' || text[13] != ':' || text[16] != ':' || text[19] != 'Z' ||
			!digits(text + 11, 2, &h) || !digits(text + 14, 2, &mi) ||
			!digits(text + 17, 2, &s)))
		return false;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59)
		return false;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	t = timegm(&tm);
	/* timegm() normalises 2027-02-31 to March: refuse what moved. */
	if (t == (time_t)-1 || tm.tm_mday != d || tm.tm_mon != mo - 1)
		return false;
	*ms = (int64_t)t * 1000;
	return true;
}

/* ---------------------------------------------------------------- parse */

/* Split a line into fields: whitespace apart, or "quoted" with \" and \\.
 * Returns the count, or -1 with the reason in *why. */
static int split(const char *line, size_t len, char fields[FIELDS_MAX][FIELD_MAX],
		 const char **why)
{
	size_t i = 0;
	int n = 0;

	for (;;) {
		size_t out = 0;
		bool quoted = false;

		while (i < len && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == len || line[i] == '#')
			return n;
		if (n == FIELDS_MAX) {
			*why = "too many fields";
			return -1;
		}
		while (i < len && (quoted || (line[i] != ' ' && line[i] != '\t'))) {
			char c = line[i++];

			if (c == '"') {
				quoted = !quoted;
				continue;
			}
			if (quoted && c == '\\') {
				if (i == len || (line[i] != '"' && line[i] != '\\')) {
					*why = "a backslash in quotes escapes only \" and \\";
					return -1;
				}
				c = line[i++];
			}
			if ((unsigned char)c < 0x20 || c == 0x7f) {
				*why = "a control character";
				return -1;
			}
			if (out == FIELD_MAX - 1) {
				*why = "a field over 511 bytes";
				return -1;
			}
			fields[n][out++] = c;
		}
		if (quoted) {
			*why = "a quote that does not close";
			return -1;
		}
		fields[n++][out] = '\0';
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool parse_digest(const char *hex, uint8_t out[32])
{
	if (strlen(hex) != 64)
		return false;
	for (int i = 0; i < 32; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

/* A certificate name as peerid.h writes it: a known prefix and a value. */
static bool cert_name_ok(const char *name)
{
	static const char *const prefixes[] = { "CN=", "DNS:", "IP:", "email:", "URI:" };

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
			return name[strlen(prefixes[i])] != '\0' && strlen(name) < AUTH_CERT_MAX;
	return false;
}

static bool scope_ok(const char *glob)
{
	size_t n = strlen(glob);

	if (n == 0 || n >= AUTH_SCOPE_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = glob[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("._-:*?[]!", c)))
			return false;
	}
	/* fnmatch() must take it: an unclosed [ matches literally, which
	 * is not what the writer meant. */
	return strchr(glob, '[') == NULL || strchr(glob, ']') != NULL;
}

static int parse_scopes(const char *list, struct auth_principal *p, const char **why)
{
	const char *s = list;

	while (*s) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);

		if (p->n_scopes == AUTH_SCOPES_MAX) {
			*why = "more than 8 scope patterns";
			return -1;
		}
		if (n == 0 || n >= AUTH_SCOPE_MAX) {
			*why = "an empty scope pattern, or one over 63 bytes";
			return -1;
		}
		memcpy(p->scopes[p->n_scopes], s, n);
		p->scopes[p->n_scopes][n] = '\0';
		if (!scope_ok(p->scopes[p->n_scopes])) {
			*why = "a scope pattern of other than probe-name characters and * ? [ ] !";
			return -1;
		}
		p->n_scopes++;
		s += n + (comma != NULL);
		if (comma && !*s) {
			*why = "a scope list that ends with a comma";
			return -1;
		}
	}
	if (p->n_scopes == 0) {
		*why = "scope= with no pattern";
		return -1;
	}
	return 0;
}

/* One line's fields into *p; -1 with the reason in *why. */
static int parse_principal(char fields[FIELDS_MAX][FIELD_MAX], int n, struct auth_principal *p,
			   const char **why)
{
	memset(p, 0, sizeof(*p));
	if (n < 3) {
		*why = "a principal is NAME ROLE CREDENTIAL [scope=…] [expires=…]";
		return -1;
	}
	if (!authfile_name_ok(fields[0])) {
		*why = "the name must be 1 to 63 of A-Z a-z 0-9 . _ -";
		return -1;
	}
	if (strcmp(fields[0], "admin") == 0 || strcmp(fields[0], "reader") == 0) {
		*why = "\"admin\" and \"reader\" are the principals of admin.token and reader.token";
		return -1;
	}
	memcpy(p->name, fields[0], strlen(fields[0]) + 1);     /* under AUTH_NAME_MAX */
	if ((p->role = auth_role_parse(fields[1])) == AUTH_NONE) {
		*why = "the role must be admin, operator or reader";
		return -1;
	}
	if (strncmp(fields[2], "token-sha256:", 13) == 0) {
		p->kind = AUTH_CRED_TOKEN;
		if (!parse_digest(fields[2] + 13, p->digest)) {
			*why = "token-sha256: wants the 64 hex digits of the token's SHA-256";
			return -1;
		}
	} else if (strncmp(fields[2], "cert:", 5) == 0) {
		p->kind = AUTH_CRED_CERT;
		if (!cert_name_ok(fields[2] + 5)) {
			*why = "cert: wants a certificate name: CN=…, DNS:…, IP:…, email:… or URI:…";
			return -1;
		}
		memcpy(p->cert, fields[2] + 5, strlen(fields[2] + 5) + 1);  /* under AUTH_CERT_MAX */
	} else {
		*why = "the credential must be token-sha256:HEX or cert:NAME";
		return -1;
	}
	for (int i = 3; i < n; i++) {
		if (strncmp(fields[i], "scope=", 6) == 0 && p->n_scopes == 0) {
			if (parse_scopes(fields[i] + 6, p, why) < 0)
				return -1;
		} else if (strncmp(fields[i], "expires=", 8) == 0 && p->expires_ms == 0) {
			if (!authfile_parse_time(fields[i] + 8, &p->expires_ms)) {
				*why = "expires= wants 2027-01-01T00:00:00Z or 2027-01-01 (UTC)";
				return -1;
			}
		} else {
			*why = "after the credential come scope=GLOB[,GLOB…] and expires=TIME, "
			       "each once";
			return -1;
		}
	}
	return 0;
}

static bool same_credential(const struct auth_principal *a, const struct auth_principal *b)
{
	if (a->kind != b->kind)
		return false;
	return a->kind == AUTH_CRED_TOKEN ? memcmp(a->digest, b->digest, 32) == 0 :
					    strcmp(a->cert, b->cert) == 0;
}

int authfile_parse(const char *path, const char *text, size_t len, struct authfile *out,
		   struct gerr *err)
{
	char fields[FIELDS_MAX][FIELD_MAX];
	struct authfile af = { 0 };
	size_t at = 0, cap = 0;
	unsigned line_no = 0;
	const char *why = NULL;

	*out = af;
	if (len > AUTHFILE_MAX_BYTES)
		return gerr_set(err, 400, "%s: %zu bytes, over the %d-byte limit", path, len,
				AUTHFILE_MAX_BYTES);
	if (memchr(text, '\0', len))
		return gerr_set(err, 400, "%s: holds a NUL byte: not a credentials file", path);
	while (at < len) {
		const char *line = text + at, *nl = memchr(line, '\n', len - at);
		size_t n = nl ? (size_t)(nl - line) : len - at;
		int nf;

		at += n + (nl != NULL);
		line_no++;
		if (n && line[n - 1] == '\r')
			n--;
		if ((nf = split(line, n, fields, &why)) < 0)
			goto bad;
		if (nf == 0)
			continue;
		if (af.n == AUTHFILE_MAX_PRINCIPALS) {
			why = "more than 4096 principals";
			goto bad;
		}
		if (af.n == cap) {
			struct auth_principal *grown;

			cap = cap ? cap * 2 : 16;
			if (!(grown = realloc(af.p, cap * sizeof(*grown)))) {
				authfile_clear(&af);
				return gerr_set(err, 500, "out of memory");
			}
			af.p = grown;
		}
		if (parse_principal(fields, nf, &af.p[af.n], &why) < 0)
			goto bad;
		for (size_t i = 0; i < af.n; i++) {
			if (strcmp(af.p[i].name, af.p[af.n].name) == 0) {
				why = "a name given twice";
				goto bad;
			}
			if (same_credential(&af.p[i], &af.p[af.n])) {
				why = "a credential that an earlier line already names";
				goto bad;
			}
		}
		af.n++;
	}
	*out = af;
	return 0;
bad:
	authfile_clear(&af);
	return gerr_set(err, 400, "%s:%u: %s", path, line_no, why);
}

int authfile_read(const char *path, struct authfile *out, struct gerr *err)
{
	struct stat sb;
	char *text;
	ssize_t got;
	int fd, ret;

	*out = (struct authfile){ 0 };
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return gerr_set(err, 400, "--auth-file %s: %s", path, strerror(errno));
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return gerr_set(err, 400, "--auth-file %s: not a regular file", path);
	}
	if (sb.st_mode & 077) {
		close(fd);
		return gerr_set(err, 400, "--auth-file %s: mode %04o lets others read or change "
				"the credentials: chmod 600 it", path, (unsigned)(sb.st_mode & 07777));
	}
	if (sb.st_size > AUTHFILE_MAX_BYTES) {
		close(fd);
		return gerr_set(err, 400, "--auth-file %s: over the %d-byte limit", path,
				AUTHFILE_MAX_BYTES);
	}
	if (!(text = malloc((size_t)sb.st_size + 1))) {
		close(fd);
		return gerr_set(err, 500, "out of memory");
	}
	got = read(fd, text, (size_t)sb.st_size);
	close(fd);
	if (got != sb.st_size) {
		free(text);
		return gerr_set(err, 400, "--auth-file %s: cannot read it whole", path);
	}
	ret = authfile_parse(path, text, (size_t)got, out, err);
	free(text);
	return ret;
}

void authfile_clear(struct authfile *af)
{
	if (!af)
		return;
	/* Digests only, but no copy of a credential outlives its use. */
	if (af->p)
		explicit_bzero(af->p, af->n * sizeof(*af->p));
	free(af->p);
	*af = (struct authfile){ 0 };
}

/* ---------------------------------------------------------------- write */

static void put_field(FILE *f, const char *prefix, const char *value)
{
	bool quote = strpbrk(value, " \t\"\\#") != NULL;

	fputs(prefix, f);
	if (!quote) {
		fputs(value, f);
		return;
	}
	fputc('"', f);
	for (const char *c = value; *c; c++) {
		if (*c == '"' || *c == '\\')
			fputc('\\', f);
		fputc(*c, f);
	}
	fputc('"', f);
}

void authfile_write_line(FILE *f, const struct auth_principal *p)
{
	fprintf(f, "%s %s ", p->name, auth_role_name(p->role));
	if (p->kind == AUTH_CRED_TOKEN) {
		fputs("token-sha256:", f);
		for (int i = 0; i < 32; i++)
			fprintf(f, "%02x", p->digest[i]);
	} else {
		put_field(f, "cert:", p->cert);
	}
	for (unsigned i = 0; i < p->n_scopes; i++)
		fprintf(f, "%s%s", i ? "," : " scope=", p->scopes[i]);
	if (p->expires_ms) {
		time_t t = (time_t)(p->expires_ms / 1000);
		struct tm tm;
		char when[32];

		gmtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		fprintf(f, " expires=%s", when);
	}
	fputc('\n', f);
}

int authfile_save(const char *path, const struct authfile *af, struct gerr *err)
{
	char tmp[4096];
	FILE *f;
	int fd;

	if (snprintf(tmp, sizeof(tmp), "%s.new", path) >= (int)sizeof(tmp))
		return gerr_set(err, 400, "%s: path too long", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return gerr_set(err, 500, "cannot create %s: %s", tmp, strerror(errno));
	if (fchmod(fd, 0600) < 0 || !(f = fdopen(fd, "w"))) {
		close(fd);
		unlink(tmp);
		return gerr_set(err, 500, "cannot write %s: %s", tmp, strerror(errno));
	}
	fputs("# graind credentials (README \"Credentials\"): one principal a line,\n"
	      "# NAME ROLE CREDENTIAL [scope=GLOB[,GLOB...]] [expires=TIME]\n", f);
	for (size_t i = 0; i < af->n; i++)
		authfile_write_line(f, &af->p[i]);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0 || ferror(f)) {
		fclose(f);
		unlink(tmp);
		return gerr_set(err, 500, "cannot write %s: %s", tmp, strerror(errno));
	}
	fclose(f);
	if (rename(tmp, path) < 0) {
		unlink(tmp);
		return gerr_set(err, 500, "cannot replace %s: %s", path, strerror(errno));
	}
	return 0;
}
