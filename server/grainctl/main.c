/* grainctl: the command-line client of graind, for one host or many.
 *
 * Parses the global options and the command, finds the hosts and the
 * token, and hands over to the command's run function (the tables of
 * commands are in the cmd_*.c files). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server/grainctl/ctl.h"

#define DEFAULT_HOST "http://127.0.0.1:9730"

enum {
	G_HOST, G_HOSTS_FILE, G_TOKEN_FILE, G_OUTPUT, G_TIMEOUT, G_PARALLEL, G_CACERT, G_CERT,
	G_KEY, G_HELP, G_VERSION, G_COUNT
};

static const struct ctl_opt global_opts[G_COUNT] = {
	[G_HOST] = { "host", 0, true, "an agent: http://HOST:PORT, https://... or unix:/PATH (repeatable)" },
	[G_HOSTS_FILE] = { "hosts-file", 0, true, "agents, one URL a line (# comments)" },
	[G_TOKEN_FILE] = { "token-file", 0, true, "the bearer token's file" },
	[G_OUTPUT] = { "output", 'o', true, "table (default), json or jsonl" },
	[G_TIMEOUT] = { "timeout", 0, true, "seconds each host may take (default 10)" },
	[G_PARALLEL] = { "parallel", 0, true, "hosts asked at once (default 16)" },
	[G_CACERT] = { "cacert", 0, true, "https: the CA certificates (PEM) that sign the agents'" },
	[G_CERT] = { "cert", 0, true, "https: a client certificate (PEM), for agents with --client-ca" },
	[G_KEY] = { "key", 0, true, "https: the client certificate's key (PEM)" },
	[G_HELP] = { "help", 'h', false, "this help" },
	[G_VERSION] = { "version", 0, false, "print the version" },
};

static const struct ctl_cmd *const families[] = {
	ctl_data_cmds, ctl_object_cmds, ctl_probe_cmds, ctl_sink_cmds, ctl_apply_cmds,
	ctl_prom_cmds,
};
#define NFAMILIES (sizeof(families) / sizeof(families[0]))

/* "  LEFT  help", the help on a line of its own when LEFT is too wide. */
static void print_entry(FILE *f, const char *left, const char *help, int width)
{
	if ((int)strlen(left) > width)
		fprintf(f, "  %s\n  %-*s %s\n", left, width, "", help);
	else
		fprintf(f, "  %-*s %s\n", width, left, help);
}

static void print_opts(FILE *f, const struct ctl_opt *opts, int n)
{
	for (int i = 0; i < n && opts[i].name; i++) {
		char left[64];

		snprintf(left, sizeof(left), "%c%c%c --%s%s", opts[i].short_name ? '-' : ' ',
			 opts[i].short_name ? opts[i].short_name : ' ',
			 opts[i].short_name ? ',' : ' ', opts[i].name,
			 opts[i].has_arg ? " VALUE" : "");
		print_entry(f, left, opts[i].help, 24);
	}
}

static void print_cmd_line(FILE *f, const struct ctl_cmd *c)
{
	char left[128];

	snprintf(left, sizeof(left), "%s%s%s %s", c->family, c->verb ? " " : "",
		 c->verb ? c->verb : "", c->synopsis ? c->synopsis : "");
	print_entry(f, left, c->help, 34);
}

static void usage_main(FILE *f)
{
	fprintf(f,
		"usage: grainctl [OPTIONS] COMMAND [ARGS]\n"
		"\n"
		"Manage graind agents: one request per host, hosts in parallel.\n"
		"\n"
		"commands:\n");
	for (size_t i = 0; i < NFAMILIES; i++)
		for (const struct ctl_cmd *c = families[i]; c->family; c++)
			print_cmd_line(f, c);
	fprintf(f, "\noptions (anywhere on the line):\n");
	print_opts(f, global_opts, G_COUNT);
	fprintf(f,
		"\n"
		"hosts: --host (repeatable), else GRAIND_HOST (comma-separated), else\n"
		"--hosts-file; with none of them " DEFAULT_HOST ".\n"
		"token: --token-file, else GRAIND_TOKEN_FILE, else ~/.config/graind/token.\n"
		"colours: only on a terminal, never when NO_COLOR is set.\n"
		"\n"
		"exit status:\n"
		"  0  every host answered with success (apply: every host converged)\n"
		"  1  a host failed: no answer, an error answer, or a program the verifier refused\n"
		"  2  usage: a bad command line or an input file that does not parse\n"
		"\n"
		"grainctl COMMAND --help tells more about a command.\n");
}

static void usage_family(FILE *f, const char *family)
{
	fprintf(f, "usage: grainctl %s VERB [ARGS]\n\n", family);
	for (size_t i = 0; i < NFAMILIES; i++)
		for (const struct ctl_cmd *c = families[i]; c->family; c++)
			if (strcmp(c->family, family) == 0)
				print_cmd_line(f, c);
	fprintf(f, "\ngrainctl %s VERB --help tells more; grainctl --help lists the options.\n",
		family);
}

static void usage_cmd(FILE *f, const struct ctl_cmd *c)
{
	fprintf(f, "usage: grainctl %s%s%s %s\n\n%s\n", c->family, c->verb ? " " : "",
		c->verb ? c->verb : "", c->synopsis ? c->synopsis : "", c->help);
	if (c->opts[0].name) {
		fprintf(f, "\noptions:\n");
		print_opts(f, c->opts, CTL_MAX_OPTS);
	}
	fprintf(f, "\ngrainctl --help lists the global options and exit codes.\n");
}

static bool family_known(const char *name)
{
	for (size_t i = 0; i < NFAMILIES; i++)
		for (const struct ctl_cmd *c = families[i]; c->family; c++)
			if (strcmp(c->family, name) == 0)
				return true;
	return false;
}

static const struct ctl_cmd *find_cmd(const char *family, const char *verb, bool *has_verbs)
{
	*has_verbs = false;
	for (size_t i = 0; i < NFAMILIES; i++)
		for (const struct ctl_cmd *c = families[i]; c->family; c++) {
			if (strcmp(c->family, family) != 0)
				continue;
			if (!c->verb)
				return c;
			*has_verbs = true;
			if (verb && strcmp(c->verb, verb) == 0)
				return c;
		}
	return NULL;
}

/* Match argv[*i] against `opts`: the option's index + 1 when it is one of
 * them (its value taken), 0 when not, -1 on a missing or unwanted value. */
static int match_opt(const struct ctl_opt *opts, int n, int argc, char **argv, int *i,
		     const char **values)
{
	const char *a = argv[*i], *eq = NULL;
	size_t len;

	for (int k = 0; k < n && opts[k].name; k++) {
		bool hit = false;

		if (a[1] == '-') {
			eq = strchr(a + 2, '=');
			len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
			hit = strlen(opts[k].name) == len && strncmp(a + 2, opts[k].name, len) == 0;
		} else if (opts[k].short_name && a[1] == opts[k].short_name) {
			hit = true;
			eq = a[2] ? a + 1 : NULL;  /* "-ojson": the value follows at once */
		}
		if (!hit)
			continue;
		if (!opts[k].has_arg) {
			if (eq) {
				fprintf(stderr, "grainctl: %s takes no value\n", a);
				return -1;
			}
			values[k] = "1";
			return k + 1;
		}
		if (eq) {
			values[k] = eq + 1;
		} else if (*i + 1 < argc) {
			values[k] = argv[++*i];
		} else {
			fprintf(stderr, "grainctl: %s needs a value\n", a);
			return -1;
		}
		return k + 1;
	}
	return 0;
}

static int add_host(struct ctl *ctl, const char *h, size_t len)
{
	const char **hosts;
	char *copy;

	while (len && (*h == ' ' || *h == '\t'))
		h++, len--;
	while (len && (h[len - 1] == ' ' || h[len - 1] == '\t' || h[len - 1] == '\r'))
		len--;
	if (!len)
		return 0;
	if (!(copy = strndup(h, len)) ||
	    !(hosts = realloc(ctl->hosts, (ctl->nhosts + 1) * sizeof(*hosts)))) {
		free(copy);
		fprintf(stderr, "grainctl: out of memory\n");
		return -1;
	}
	ctl->hosts = hosts;
	if (client_host_valid(copy) < 0) {
		fprintf(stderr, "grainctl: %s: a host is http://HOST:PORT, https://HOST:PORT "
			"or unix:/PATH\n", copy);
		free(copy);
		return -1;
	}
	hosts[ctl->nhosts++] = copy;
	return 0;
}

static int add_host_list(struct ctl *ctl, const char *list, char sep)
{
	const char *p = list, *e;

	while (*p) {
		e = strchr(p, sep);
		if (!e)
			e = p + strlen(p);
		if (sep == '\n') {
			const char *hash = memchr(p, '#', e - p);

			if (add_host(ctl, p, hash ? (size_t)(hash - p) : (size_t)(e - p)) < 0)
				return -1;
		} else if (add_host(ctl, p, e - p) < 0) {
			return -1;
		}
		p = *e ? e + 1 : e;
	}
	return 0;
}

/* The token of the first source that names one; a file named explicitly
 * must be readable, the default one may be missing. */
static int load_token(struct ctl *ctl, const char *flag)
{
	const char *path = flag ? flag : getenv("GRAIND_TOKEN_FILE");
	char def[4096], *buf;
	size_t len;
	bool required = path && *path;

	if (!required) {
		const char *home = getenv("HOME");

		if (!home || !*home)
			return 0;
		snprintf(def, sizeof(def), "%s/.config/graind/token", home);
		path = def;
	}
	if (file_read(path, &buf, &len) < 0) {
		if (!required && errno == ENOENT)
			return 0;
		fprintf(stderr, "grainctl: token file %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
		buf[--len] = 0;
	if (!len || strpbrk(buf, "\r\n")) {
		fprintf(stderr, "grainctl: token file %s: not one line\n", path);
		free(buf);
		return -1;
	}
	ctl->token = buf;
	return 0;
}

static int set_globals(struct ctl *ctl, const char **g, char **host_flags, int nhost_flags)
{
	const char *env;
	char *end, *buf;
	size_t len;

	ctl->fmt = OUTPUT_TABLE;
	if (g[G_OUTPUT]) {
		if (strcmp(g[G_OUTPUT], "table") == 0)
			ctl->fmt = OUTPUT_TABLE;
		else if (strcmp(g[G_OUTPUT], "json") == 0)
			ctl->fmt = OUTPUT_JSON;
		else if (strcmp(g[G_OUTPUT], "jsonl") == 0)
			ctl->fmt = OUTPUT_JSONL;
		else
			return fprintf(stderr, "grainctl: -o %s: table, json or jsonl\n", g[G_OUTPUT]), -1;
	}
	ctl->timeout_ms = 10000;
	if (g[G_TIMEOUT]) {
		double s = strtod(g[G_TIMEOUT], &end);

		if (end == g[G_TIMEOUT] || *end || !(s > 0) || s > 86400)
			return fprintf(stderr, "grainctl: --timeout %s: seconds, more than 0\n",
				       g[G_TIMEOUT]), -1;
		ctl->timeout_ms = (long)(s * 1000 + 0.5) ? (long)(s * 1000 + 0.5) : 1;
	}
	ctl->parallel = 16;
	if (g[G_PARALLEL]) {
		long n = strtol(g[G_PARALLEL], &end, 10);

		if (end == g[G_PARALLEL] || *end || n < 1 || n > 1024)
			return fprintf(stderr, "grainctl: --parallel %s: 1 to 1024\n",
				       g[G_PARALLEL]), -1;
		ctl->parallel = (int)n;
	}
	for (int i = 0; i < nhost_flags; i++)
		if (add_host(ctl, host_flags[i], strlen(host_flags[i])) < 0)
			return -1;
	if (!ctl->nhosts && (env = getenv("GRAIND_HOST")) && *env && add_host_list(ctl, env, ',') < 0)
		return -1;
	if (!ctl->nhosts && g[G_HOSTS_FILE]) {
		if (file_read(g[G_HOSTS_FILE], &buf, &len) < 0)
			return fprintf(stderr, "grainctl: %s: %s\n", g[G_HOSTS_FILE],
				       strerror(errno)), -1;
		int r = add_host_list(ctl, buf, '\n');
		free(buf);
		if (r < 0)
			return -1;
		if (!ctl->nhosts)
			return fprintf(stderr, "grainctl: %s names no host\n", g[G_HOSTS_FILE]), -1;
	}
	if (!ctl->nhosts && add_host(ctl, DEFAULT_HOST, strlen(DEFAULT_HOST)) < 0)
		return -1;
	if (!g[G_CERT] != !g[G_KEY])
		return fprintf(stderr, "grainctl: --cert and --key go together\n"), -1;
	client_set_tls(g[G_CACERT], g[G_CERT], g[G_KEY]);
	return load_token(ctl, g[G_TOKEN_FILE]);
}

int main(int argc, char **argv)
{
	const char *g[G_COUNT] = { 0 };
	const char *family = NULL, *verb = NULL;
	const struct ctl_cmd *cmd = NULL;
	struct ctl_args args = { 0 };
	struct ctl ctl = { 0 };
	char **host_flags = calloc(argc, sizeof(char *));
	bool has_verbs = false, opts_done = false;
	int nhost_flags = 0, ret = CTL_EXIT_USAGE;

	args.pos = calloc(argc, sizeof(char *));
	if (!host_flags || !args.pos)
		goto out;
	output_init();
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];

		if (!opts_done && strcmp(a, "--") == 0) {
			opts_done = true;
			continue;
		}
		if (!opts_done && a[0] == '-' && a[1]) {
			int m = match_opt(global_opts, G_COUNT, argc, argv, &i, g);

			if (m == G_HOST + 1)   /* repeatable: collected in order */
				host_flags[nhost_flags++] = (char *)g[G_HOST];
			if (m == 0 && cmd)
				m = match_opt(cmd->opts, CTL_MAX_OPTS, argc, argv, &i, args.opt);
			if (m < 0)
				goto out;
			if (m == 0) {
				fprintf(stderr, "grainctl: unknown option %s%s\n", a,
					cmd ? "" : " (before the command)");
				goto out;
			}
			continue;
		}
		if (!family) {
			family = a;
			if (!family_known(family)) {
				fprintf(stderr, "grainctl: unknown command %s; grainctl --help lists them\n", a);
				goto out;
			}
			cmd = find_cmd(family, NULL, &has_verbs);
			if (has_verbs)
				cmd = NULL;
		} else if (has_verbs && !verb) {
			verb = a;
			if (!(cmd = find_cmd(family, verb, &has_verbs))) {
				fprintf(stderr, "grainctl: %s has no verb %s\n", family, verb);
				usage_family(stderr, family);
				goto out;
			}
		} else {
			args.pos[args.npos++] = a;
		}
	}
	if (g[G_VERSION]) {
		printf("grainctl %s\n", GRAIND_VERSION);
		ret = CTL_EXIT_OK;
		goto out;
	}
	if (g[G_HELP]) {
		if (cmd)
			usage_cmd(stdout, cmd);
		else if (family)
			usage_family(stdout, family);
		else
			usage_main(stdout);
		ret = CTL_EXIT_OK;
		goto out;
	}
	if (!family) {
		usage_main(stderr);
		goto out;
	}
	if (!cmd) {
		fprintf(stderr, "grainctl: %s needs a verb\n", family);
		usage_family(stderr, family);
		goto out;
	}
	if (args.npos < cmd->min_pos || args.npos > cmd->max_pos) {
		fprintf(stderr, "grainctl: %s%s%s: %s arguments\n", cmd->family, cmd->verb ? " " : "",
			cmd->verb ? cmd->verb : "", args.npos < cmd->min_pos ? "missing" : "too many");
		usage_cmd(stderr, cmd);
		goto out;
	}
	if (set_globals(&ctl, g, host_flags, nhost_flags) < 0)
		goto out;
	ret = cmd->run(&ctl, &args);
out:
	for (size_t i = 0; i < ctl.nhosts; i++)
		free((char *)ctl.hosts[i]);
	free(ctl.hosts);
	free(ctl.token);
	free(host_flags);
	free(args.pos);
	return ret;
}
