/* token_cmd: `graind token …`, the credentials file's editor (see
 * token_cmd.h). */
#include "server/token_cmd.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/authfile.h"
#include "server/config.h"
#include "server/util/clock.h"
#include "server/util/sha256.h"

#define TOKEN_BYTES 32

static const char usage[] =
"usage: graind token add NAME --role ROLE [--scope GLOB]... [--expires TIME]\n"
"       graind token add NAME --role ROLE --cert CERT-NAME [--scope GLOB]... [--expires TIME]\n"
"       graind token list\n"
"       graind token revoke NAME\n"
"\n"
"Edit the credentials file of graind (README \"Credentials\"). The agent\n"
"reads it at start and on SIGHUP (systemctl reload graind).\n"
"\n"
"  add       a principal: with no --cert, a new random bearer token, printed\n"
"            once (the file keeps only its SHA-256); with --cert, a client\n"
"            certificate name (\"CN=ops-1\", \"DNS:ops-1.example\", ...)\n"
"  list      the principals: name, role, credential kind, scope, expiry\n"
"  revoke    remove a principal\n"
"\n"
"options:\n"
"  -r, --role ROLE         admin, operator (probes and sinks) or reader\n"
"  -s, --scope GLOB        probe names it may see and change (repeatable)\n"
"  -e, --expires TIME      2027-01-01T00:00:00Z, 2027-01-01, or from now: 90d, 12h\n"
"  -c, --cert NAME         a client certificate name instead of a token\n"
"  -f, --auth-file FILE    the credentials file (default STATE_DIR/credentials)\n"
"  -d, --state-dir DIR     default " CONFIG_DEFAULT_STATE_DIR "\n"
"  -h, --help              print this help\n";

struct token_args {
	const char *verb, *name;
	char file[PATH_MAX];
	struct auth_principal p;
	bool cert, role_given;
};

/* TIME as the file takes it, or a span from now ("90d", "12h"). */
static bool parse_expiry(const char *text, int64_t *ms)
{
	char *end;
	unsigned long long n;

	if (authfile_parse_time(text, ms))
		return true;
	errno = 0;
	n = strtoull(text, &end, 10);
	if (errno || end == text || n == 0 || n > 100000 || (strcmp(end, "d") && strcmp(end, "h")))
		return false;
	*ms = clock_unix_ms() + (int64_t)n * (*end == 'd' ? 86400000 : 3600000);
	return true;
}

static int add_scope(struct auth_principal *p, const char *glob)
{
	if (p->n_scopes == AUTH_SCOPES_MAX || strlen(glob) == 0 || strlen(glob) >= AUTH_SCOPE_MAX ||
	    strchr(glob, ',') || strpbrk(glob, " \t")) {
		fprintf(stderr, "graind token: --scope '%s': at most %d patterns of 1 to %d "
			"characters, no commas or spaces\n", glob, AUTH_SCOPES_MAX,
			AUTH_SCOPE_MAX - 1);
		return -1;
	}
	snprintf(p->scopes[p->n_scopes++], AUTH_SCOPE_MAX, "%s", glob);
	return 0;
}

static int parse_args(int argc, char **argv, struct token_args *a)
{
	static const struct option opts[] = {
		{ "role", required_argument, NULL, 'r' },
		{ "scope", required_argument, NULL, 's' },
		{ "expires", required_argument, NULL, 'e' },
		{ "cert", required_argument, NULL, 'c' },
		{ "auth-file", required_argument, NULL, 'f' },
		{ "state-dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *state_dir = CONFIG_DEFAULT_STATE_DIR, *file = NULL;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "r:s:e:c:f:d:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			if ((a->p.role = auth_role_parse(optarg)) == AUTH_NONE) {
				fprintf(stderr, "graind token: --role wants admin, operator or reader, "
					"got '%s'\n", optarg);
				return 2;
			}
			a->role_given = true;
			break;
		case 's':
			if (add_scope(&a->p, optarg) < 0)
				return 2;
			break;
		case 'e':
			if (!parse_expiry(optarg, &a->p.expires_ms)) {
				fprintf(stderr, "graind token: --expires wants 2027-01-01T00:00:00Z, "
					"2027-01-01 or a span like 90d or 12h, got '%s'\n", optarg);
				return 2;
			}
			break;
		case 'c':
			a->cert = true;
			a->p.kind = AUTH_CRED_CERT;
			snprintf(a->p.cert, sizeof(a->p.cert), "%s", optarg);
			break;
		case 'f':
			file = optarg;
			break;
		case 'd':
			state_dir = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fputs(usage, stderr);
		return 2;
	}
	a->verb = argv[optind++];
	a->name = optind < argc ? argv[optind++] : NULL;
	if (optind < argc) {
		fprintf(stderr, "graind token: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (file)
		snprintf(a->file, sizeof(a->file), "%s", file);
	else
		snprintf(a->file, sizeof(a->file), "%s/%s", state_dir, AUTH_DEFAULT_FILE);
	return -1;
}

/* The file's principals; a file that is not there yet holds none. */
static int load(const char *path, struct authfile *af)
{
	struct gerr err = { 0 };

	if (access(path, F_OK) != 0 && errno == ENOENT) {
		*af = (struct authfile){ 0 };
		return 0;
	}
	if (authfile_read(path, af, &err) < 0) {
		fprintf(stderr, "graind token: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int save(const char *path, const struct authfile *af)
{
	struct gerr err = { 0 };

	if (authfile_save(path, af, &err) < 0) {
		fprintf(stderr, "graind token: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static void hex(const uint8_t *raw, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[raw[i] >> 4];
		out[2 * i + 1] = digits[raw[i] & 15];
	}
	out[2 * n] = '\0';
}

static int cmd_add(struct token_args *a)
{
	struct authfile af;
	struct auth_principal *grown;
	uint8_t raw[TOKEN_BYTES];
	char token[2 * TOKEN_BYTES + 1];
	struct gerr err = { 0 };
	char line[4096];
	FILE *mem;
	int ret = 1;

	if (!a->name || !a->role_given) {
		fprintf(stderr, "graind token add: wants NAME and --role\n");
		return 2;
	}
	if (!authfile_name_ok(a->name) || !strcmp(a->name, "admin") || !strcmp(a->name, "reader")) {
		fprintf(stderr, "graind token add: the name must be 1 to %d of A-Z a-z 0-9 . _ -, "
			"and not admin or reader (the token files' principals)\n", AUTH_NAME_MAX - 1);
		return 2;
	}
	snprintf(a->p.name, sizeof(a->p.name), "%s", a->name);
	if (!a->cert) {
		if (getrandom(raw, sizeof(raw), 0) != sizeof(raw)) {
			fprintf(stderr, "graind token add: getrandom: %s\n", strerror(errno));
			return 1;
		}
		hex(raw, sizeof(raw), token);
		explicit_bzero(raw, sizeof(raw));
		a->p.kind = AUTH_CRED_TOKEN;
		sha256(token, strlen(token), a->p.digest);
	}
	if (load(a->file, &af) < 0)
		return 1;
	/* The new line must read back as it is written: the parser judges it
	 * with the rest of the file. */
	if (!(mem = fmemopen(line, sizeof(line), "w"))) {
		authfile_clear(&af);
		return 1;
	}
	authfile_write_line(mem, &a->p);
	fclose(mem);
	for (size_t i = 0; i < af.n; i++) {
		if (!strcmp(af.p[i].name, a->name)) {
			fprintf(stderr, "graind token add: %s has principal %s already: revoke it "
				"first\n", a->file, a->name);
			goto out;
		}
		if (a->cert && af.p[i].kind == AUTH_CRED_CERT && !strcmp(af.p[i].cert, a->p.cert)) {
			fprintf(stderr, "graind token add: principal %s has certificate name %s "
				"already\n", af.p[i].name, a->p.cert);
			goto out;
		}
	}
	{
		struct authfile one;

		if (authfile_parse("the new principal", line, strlen(line), &one, &err) < 0) {
			fprintf(stderr, "graind token add: %s\n", err.msg);
			goto out;
		}
		authfile_clear(&one);
	}
	if (!(grown = realloc(af.p, (af.n + 1) * sizeof(*grown))))
		goto out;
	af.p = grown;
	af.p[af.n++] = a->p;
	if (save(a->file, &af) < 0)
		goto out;
	if (a->cert) {
		printf("principal %s (%s): client certificate %s\n", a->name,
		       auth_role_name(a->p.role), a->p.cert);
	} else {
		printf("%s\n", token);
		fprintf(stderr, "the token of principal %s (%s), shown once; %s keeps its SHA-256\n",
			a->name, auth_role_name(a->p.role), a->file);
	}
	fprintf(stderr, "graind reads %s on its next SIGHUP (systemctl reload graind)\n", a->file);
	ret = 0;
out:
	explicit_bzero(token, sizeof(token));
	authfile_clear(&af);
	return ret;
}

static int cmd_list(struct token_args *a)
{
	struct authfile af;
	int64_t now = clock_unix_ms();

	if (a->name) {
		fprintf(stderr, "graind token list: takes no NAME\n");
		return 2;
	}
	if (load(a->file, &af) < 0)
		return 1;
	printf("%-24s %-9s %-32s %-24s %s\n", "NAME", "ROLE", "CREDENTIAL", "SCOPE", "EXPIRES");
	for (size_t i = 0; i < af.n; i++) {
		const struct auth_principal *p = &af.p[i];
		char scope[AUTH_SCOPES_MAX * AUTH_SCOPE_MAX], cred[AUTH_CERT_MAX + 8];
		char when[CLOCK_TEXT_MAX + 12] = "never";

		snprintf(cred, sizeof(cred), "%s%s", p->kind == AUTH_CRED_TOKEN ? "token" : "cert:",
			 p->kind == AUTH_CRED_TOKEN ? "" : p->cert);
		auth_scope_text(p, scope, sizeof(scope));
		if (p->expires_ms) {
			clock_format(p->expires_ms, when);
			if (p->expires_ms <= now)
				strcat(when, " (expired)");
		}
		printf("%-24s %-9s %-32s %-24s %s\n", p->name, auth_role_name(p->role), cred,
		       scope[0] ? scope : "*", when);
	}
	authfile_clear(&af);
	return 0;
}

static int cmd_revoke(struct token_args *a)
{
	struct authfile af;
	size_t i;
	int ret = 1;

	if (!a->name) {
		fprintf(stderr, "graind token revoke: wants NAME\n");
		return 2;
	}
	if (load(a->file, &af) < 0)
		return 1;
	for (i = 0; i < af.n && strcmp(af.p[i].name, a->name); i++)
		;
	if (i == af.n) {
		fprintf(stderr, "graind token revoke: %s has no principal %s\n", a->file, a->name);
		goto out;
	}
	memmove(&af.p[i], &af.p[i + 1], (af.n - i - 1) * sizeof(*af.p));
	af.n--;
	if (save(a->file, &af) < 0)
		goto out;
	fprintf(stderr, "principal %s removed; graind refuses it from its next SIGHUP\n",
		a->name);
	ret = 0;
out:
	authfile_clear(&af);
	return ret;
}

int token_main(int argc, char **argv)
{
	struct token_args a = { 0 };
	int ret = parse_args(argc, argv, &a);

	if (ret >= 0)
		return ret;
	if (!strcmp(a.verb, "add"))
		return cmd_add(&a);
	if (!strcmp(a.verb, "list"))
		return cmd_list(&a);
	if (!strcmp(a.verb, "revoke"))
		return cmd_revoke(&a);
	fprintf(stderr, "graind token: no command '%s' (add, list, revoke)\n", a.verb);
	return 2;
}
