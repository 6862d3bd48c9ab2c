#include "server/config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/util/units.h"

static const char usage[] =
"Usage: graind [OPTION]...\n"
"Manage eBPF probes over a REST API (JSON or protobuf) and gRPC.\n"
"\n"
"  -l, --listen HOST:PORT      TCP address to listen on (default " CONFIG_DEFAULT_LISTEN ");\n"
"                              'none' disables TCP\n"
"      --grpc-listen HOST:PORT gRPC (h2c) address (default " CONFIG_DEFAULT_GRPC_LISTEN ");\n"
"                              'none' disables it\n"
"      --grpc-socket PATH      gRPC unix socket (default DIR/graind-grpc.sock;\n"
"                              'none' disables it)\n"
"  -d, --state-dir DIR         database and token files (default " CONFIG_DEFAULT_STATE_DIR ")\n"
"  -s, --socket PATH           unix socket to listen on too\n"
"                              (default DIR/graind.sock; 'none' disables it)\n"
"      --tls-cert FILE         serve TLS (1.2+) on both TCP addresses with this PEM\n"
"                              certificate chain; needs --tls-key\n"
"      --tls-key FILE          the certificate's PEM private key\n"
"      --client-ca FILE        mutual TLS: clients need a certificate signed by\n"
"                              a CA of this PEM file\n"
"      --client-cert MODE      'required' (default with --client-ca) or 'optional'\n"
"      --max-object-size BYTES largest object upload accepted (default 64M);\n"
"                              suffixes K, M, G\n"
"      --threads N             HTTP worker threads (default 4)\n"
"      --pin-root DIR          bpffs directory for probe pins\n"
"                              (default " CONFIG_DEFAULT_PIN_ROOT ")\n"
"      --buffer-rows N         samples kept in the buffer at most (default 1000000)\n"
"      --buffer-bytes BYTES    sample payload kept at most (default 256M)\n"
"      --sink-retention SECS   keep samples every sink has delivered this long\n"
"                              (default 3600)\n"
"      --queue-bytes BYTES     samples waiting for the store, every probe's\n"
"                              together, at most (default 64M)\n"
"      --audit-max-rows N      audit records kept at most, the newest\n"
"                              (default 100000)\n"
"      --audit-max-age AGE     audit records older than this are pruned:\n"
"                              seconds, or with a suffix s, m, h, d\n"
"                              (default 30d; 0 keeps them at any age)\n"
"      --scan-interval AGE     check every object and sample block of the\n"
"                              database this often, at most 8 MiB/s:\n"
"                              seconds, or with a suffix s, m, h, d\n"
"                              (default 1h; 0: never; graind check does it by hand)\n"
"      --config-dir DIR        apply the Probe and Sink documents of DIR\n"
"                              (*.json, *.yaml) at start and when they change;\n"
"                              what a file names, only that file changes\n"
"      --reset                 with a lost database (missing or empty, its\n"
"                              companion files still there): start afresh,\n"
"                              removing the pins the new one does not know\n"
"      --adopt-orphans         the same, but leave such pinned probes running\n"
"                              (a PUT of the same name takes one over)\n"
"      --auth-file FILE        principals: named tokens and client certificate\n"
"                              names with a role and a probe scope (mode 0600;\n"
"                              default DIR/credentials when it is there; see\n"
"                              graind token --help)\n"
"      --write-rate N          changes a second one principal may make, with\n"
"                              twice that in a burst; more answer 429 with\n"
"                              Retry-After (default 100; 0: no limit)\n"
"      --default-budget SPEC   the budget of every probe whose spec has none:\n"
"                              cpu=PERCENT,events=PER_SECOND,map-bytes=BYTES,\n"
"                              window=SECONDS,action=alert|detach (any of them;\n"
"                              default: no budget)\n"
"      --trusted-keys DIR      minisign public keys (DIR/*.pub) whose signatures\n"
"                              an object may carry (SIGHUP reads them again)\n"
"      --require-signed        load into the kernel only built-in objects and\n"
"                              objects signed by a trusted key; needs\n"
"                              --trusted-keys (verify stays allowed)\n"
"      --fetch-ca FILE         PEM CAs that https servers of objects:fetch must\n"
"                              chain to (default: the system's)\n"
"      --fetch-allow-http      let objects:fetch take plain http:// URLs\n"
"      --insecure-registry HOST[:PORT]\n"
"                              pull images from this registry over plain\n"
"                              http (repeatable, at most 8)\n"
"      --registry-auth FILE    registry credentials, in the format of\n"
"                              containers-auth.json (read at each pull)\n"
"  -v, --verbose               debug logging\n"
"  -h, --help                  print this help and exit\n"
"  -V, --version               print the version and exit\n"
"\n"
"Clients authenticate with 'Authorization: Bearer TOKEN'. The tokens are in\n"
"DIR/admin.token (may change anything) and DIR/reader.token (may read); more\n"
"principals, with roles and scopes, are in the credentials file (--auth-file,\n"
"default DIR/credentials), which `graind token add|list|revoke` edits.\n"
"SIGHUP reloads the token and credentials files, the trusted keys, and the\n"
"TLS certificate, key and client CA.\n";

/* A size of 1 or more (suffixes K, M, G). */
static int parse_size(const char *s, size_t *out)
{
	uint64_t v;

	if (units_parse_bytes(s, &v) < 0 || v == 0)
		return -1;
	*out = (size_t)v;
	return 0;
}

static int parse_listen(char *host, size_t host_n, unsigned *port_out, const char *s)
{
	const char *colon = strrchr(s, ':');
	unsigned long port;
	size_t host_len;
	char *end;

	if (strcmp(s, "none") == 0) {
		host[0] = '\0';
		*port_out = 0;
		return 0;
	}
	if (!colon)
		return -1;
	host_len = (size_t)(colon - s);
	/* "[::1]:9730": the brackets only delimit an IPv6 address. */
	if (host_len >= 2 && s[0] == '[' && s[host_len - 1] == ']') {
		s++;
		host_len -= 2;
	}
	if (host_len == 0 || host_len >= host_n)
		return -1;
	port = strtoul(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port > 65535)
		return -1;
	memcpy(host, s, host_len);
	host[host_len] = '\0';
	*port_out = (unsigned)port;
	return 0;
}

static int copy_path(char *dst, size_t n, const char *src)
{
	if (!*src || strlen(src) >= n)
		return -1;
	strcpy(dst, src);
	return 0;
}

/* A unix socket path (of size 108): `arg` as given, "" for "none", or
 * DIR/name without one. */
static int socket_path(char *dst, const char *arg, const char *dir, const char *name,
		       const char *flag)
{
	if (arg && strcmp(arg, "none") == 0) {
		dst[0] = '\0';
	} else if (arg) {
		if (copy_path(dst, 108, arg) < 0) {
			fprintf(stderr, "graind: %s: empty or longer than 107 bytes\n", flag);
			return -1;
		}
	} else if (snprintf(dst, 108, "%s/%s", dir, name) >= 108) {
		fprintf(stderr, "graind: state directory too long for a unix socket path; use %s\n",
			flag);
		return -1;
	}
	return 0;
}

enum config_result config_parse(struct config *cfg, int argc, char **argv)
{
	enum { OPT_MAX_OBJECT = 256, OPT_THREADS, OPT_PIN_ROOT, OPT_BUFFER_ROWS,
	       OPT_BUFFER_BYTES, OPT_SINK_RETENTION, OPT_QUEUE_BYTES, OPT_AUDIT_MAX_ROWS,
	       OPT_AUDIT_MAX_AGE, OPT_GRPC_LISTEN, OPT_GRPC_SOCKET, OPT_CONFIG_DIR, OPT_TLS_CERT,
	       OPT_TLS_KEY, OPT_CLIENT_CA, OPT_CLIENT_CERT, OPT_RESET, OPT_ADOPT_ORPHANS,
	       OPT_WRITE_RATE, OPT_TRUSTED_KEYS, OPT_REQUIRE_SIGNED, OPT_AUTH_FILE, OPT_SCAN_INTERVAL, OPT_FETCH_CA, OPT_FETCH_ALLOW_HTTP, OPT_INSECURE_REGISTRY, OPT_REGISTRY_AUTH, OPT_DEFAULT_BUDGET };
	static const struct option options[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "state-dir", required_argument, NULL, 'd' },
		{ "socket", required_argument, NULL, 's' },
		{ "max-object-size", required_argument, NULL, OPT_MAX_OBJECT },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "pin-root", required_argument, NULL, OPT_PIN_ROOT },
		{ "buffer-rows", required_argument, NULL, OPT_BUFFER_ROWS },
		{ "buffer-bytes", required_argument, NULL, OPT_BUFFER_BYTES },
		{ "sink-retention", required_argument, NULL, OPT_SINK_RETENTION },
		{ "queue-bytes", required_argument, NULL, OPT_QUEUE_BYTES },
		{ "audit-max-rows", required_argument, NULL, OPT_AUDIT_MAX_ROWS },
		{ "audit-max-age", required_argument, NULL, OPT_AUDIT_MAX_AGE },
		{ "scan-interval", required_argument, NULL, OPT_SCAN_INTERVAL },
		{ "fetch-ca", required_argument, NULL, OPT_FETCH_CA },
		{ "fetch-allow-http", no_argument, NULL, OPT_FETCH_ALLOW_HTTP },
		{ "insecure-registry", required_argument, NULL, OPT_INSECURE_REGISTRY },
		{ "registry-auth", required_argument, NULL, OPT_REGISTRY_AUTH },
		{ "grpc-listen", required_argument, NULL, OPT_GRPC_LISTEN },
		{ "grpc-socket", required_argument, NULL, OPT_GRPC_SOCKET },
		{ "config-dir", required_argument, NULL, OPT_CONFIG_DIR },
		{ "tls-cert", required_argument, NULL, OPT_TLS_CERT },
		{ "tls-key", required_argument, NULL, OPT_TLS_KEY },
		{ "client-ca", required_argument, NULL, OPT_CLIENT_CA },
		{ "client-cert", required_argument, NULL, OPT_CLIENT_CERT },
		{ "reset", no_argument, NULL, OPT_RESET },
		{ "write-rate", required_argument, NULL, OPT_WRITE_RATE },
		{ "default-budget", required_argument, NULL, OPT_DEFAULT_BUDGET },
		{ "adopt-orphans", no_argument, NULL, OPT_ADOPT_ORPHANS },
		{ "trusted-keys", required_argument, NULL, OPT_TRUSTED_KEYS },
		{ "auth-file", required_argument, NULL, OPT_AUTH_FILE },
		{ "require-signed", no_argument, NULL, OPT_REQUIRE_SIGNED },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *socket_arg = NULL, *grpc_socket_arg = NULL, *client_cert_arg = NULL;
	size_t threads, size;
	int c;

	memset(cfg, 0, sizeof(*cfg));
	parse_listen(cfg->listen_host, sizeof(cfg->listen_host), &cfg->listen_port,
		     CONFIG_DEFAULT_LISTEN);
	parse_listen(cfg->grpc_host, sizeof(cfg->grpc_host), &cfg->grpc_port,
		     CONFIG_DEFAULT_GRPC_LISTEN);
	strcpy(cfg->state_dir, CONFIG_DEFAULT_STATE_DIR);
	cfg->max_object_size = CONFIG_DEFAULT_MAX_OBJECT_SIZE;
	cfg->threads = CONFIG_DEFAULT_THREADS;
	cfg->write_rate = 100;
	strcpy(cfg->pin_root, CONFIG_DEFAULT_PIN_ROOT);
	cfg->buffer_rows = CONFIG_DEFAULT_BUFFER_ROWS;
	cfg->buffer_bytes = CONFIG_DEFAULT_BUFFER_BYTES;
	cfg->sink_retention_s = CONFIG_DEFAULT_SINK_RETENTION_S;
	cfg->queue_bytes = CONFIG_DEFAULT_QUEUE_BYTES;
	cfg->audit_max_rows = CONFIG_DEFAULT_AUDIT_MAX_ROWS;
	cfg->audit_max_age_s = CONFIG_DEFAULT_AUDIT_MAX_AGE_S;
	cfg->scan_interval_s = CONFIG_DEFAULT_SCAN_INTERVAL_S;
	optind = 1;

	while ((c = getopt_long(argc, argv, "l:d:s:vhV", options, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (parse_listen(cfg->listen_host, sizeof(cfg->listen_host),
					 &cfg->listen_port, optarg) < 0) {
				fprintf(stderr, "graind: --listen wants HOST:PORT (e.g. 127.0.0.1:9730), got '%s'\n", optarg);
				return CONFIG_EXIT_USAGE;
			}
			break;
		case 'd':
			if (copy_path(cfg->state_dir, sizeof(cfg->state_dir), optarg) < 0) {
				fprintf(stderr, "graind: --state-dir: empty or too long\n");
				return CONFIG_EXIT_USAGE;
			}
			break;
		case 's':
			socket_arg = optarg;
			break;
		case OPT_MAX_OBJECT:
			if (parse_size(optarg, &cfg->max_object_size) < 0) {
				fprintf(stderr, "graind: --max-object-size wants a positive size such as 4096, 512K or 64M, got '%s'\n", optarg);
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_THREADS:
			if (parse_size(optarg, &threads) < 0 || threads > 256) {
				fprintf(stderr, "graind: --threads wants 1 to 256, got '%s'\n", optarg);
				return CONFIG_EXIT_USAGE;
			}
			cfg->threads = (unsigned)threads;
			break;
		case OPT_PIN_ROOT:
			if (optarg[0] != '/' || copy_path(cfg->pin_root, sizeof(cfg->pin_root) - 80,
							  optarg) < 0) {
				fprintf(stderr, "graind: --pin-root wants an absolute directory on bpffs, got '%s'\n", optarg);
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_BUFFER_ROWS:
		case OPT_BUFFER_BYTES:
		case OPT_QUEUE_BYTES:
			if (parse_size(optarg, &size) < 0) {
				fprintf(stderr, "graind: --%s wants a positive number such as 100000 or 64M, got '%s'\n",
					c == OPT_BUFFER_ROWS ? "buffer-rows" :
					c == OPT_BUFFER_BYTES ? "buffer-bytes" : "queue-bytes", optarg);
				return CONFIG_EXIT_USAGE;
			}
			if (c == OPT_BUFFER_ROWS)
				cfg->buffer_rows = size;
			else if (c == OPT_BUFFER_BYTES)
				cfg->buffer_bytes = size;
			else
				cfg->queue_bytes = size;
			break;
		case OPT_SINK_RETENTION:
			if (units_parse_seconds(optarg, 31536000, &cfg->sink_retention_s) < 0) {
				fprintf(stderr, "graind: --sink-retention wants seconds (0 to 31536000), got '%s'\n", optarg);
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_AUDIT_MAX_ROWS:
			if (parse_size(optarg, &size) < 0) {
				fprintf(stderr, "graind: --audit-max-rows wants a positive number such as 100000 or 10K, got '%s'\n", optarg);
				return CONFIG_EXIT_USAGE;
			}
			cfg->audit_max_rows = size;
			break;
		case OPT_AUDIT_MAX_AGE:
			if (units_parse_seconds(optarg, 10 * 31536000ull, &cfg->audit_max_age_s) < 0) {
				fprintf(stderr, "graind: --audit-max-age wants an age such as 3600, 12h or 30d (at most 3650d; 0 for any age), got '%s'\n", optarg);
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_SCAN_INTERVAL:
			if (units_parse_seconds(optarg, 365 * 86400ull, &cfg->scan_interval_s) < 0) {
				fprintf(stderr, "graind: --scan-interval wants an interval such as 3600, 1h or 1d (at most 365d; 0: never), got '%s'\n", optarg);
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_GRPC_LISTEN:
			if (parse_listen(cfg->grpc_host, sizeof(cfg->grpc_host), &cfg->grpc_port,
					 optarg) < 0) {
				fprintf(stderr, "graind: --grpc-listen wants HOST:PORT (e.g. 127.0.0.1:9731) or none, got '%s'\n", optarg);
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_GRPC_SOCKET:
			grpc_socket_arg = optarg;
			break;
		case OPT_CONFIG_DIR:
			/* An absolute path: it names each file's resources. */
			if (!realpath(optarg, cfg->config_dir)) {
				fprintf(stderr, "graind: --config-dir %s: %s\n", optarg,
					strerror(errno));
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_TLS_CERT:
		case OPT_TLS_KEY:
		case OPT_CLIENT_CA:
			if (copy_path(c == OPT_TLS_CERT ? cfg->tls_cert : c == OPT_TLS_KEY ? cfg->tls_key :
				      cfg->client_ca, PATH_MAX, optarg) < 0) {
				fprintf(stderr, "graind: --%s: empty or too long\n",
					c == OPT_TLS_CERT ? "tls-cert" : c == OPT_TLS_KEY ? "tls-key" :
					"client-ca");
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_RESET:
			cfg->reset = 1;
			break;
		case OPT_WRITE_RATE: {
			char *end;
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || v > 1000000 || optarg[0] == '-') {
				fprintf(stderr, "graind: --write-rate wants changes a second (0 to 1000000), got '%s'\n",
					optarg);
				return CONFIG_EXIT_USAGE;
			}
			cfg->write_rate = (unsigned)v;
			break;
		}
		case OPT_ADOPT_ORPHANS:
			cfg->adopt_orphans = 1;
			break;
		case OPT_DEFAULT_BUDGET: {
			char why[160];

			if (budget_parse(optarg, &cfg->default_budget, why, sizeof(why)) < 0) {
				fprintf(stderr, "graind: --default-budget: %s, in '%s'\n", why, optarg);
				return CONFIG_EXIT_USAGE;
			}
			cfg->has_default_budget = 1;
			break;
		}
		case OPT_TRUSTED_KEYS:
			if (copy_path(cfg->trusted_keys, PATH_MAX, optarg) < 0) {
				fprintf(stderr, "graind: --trusted-keys: empty or too long\n");
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_REQUIRE_SIGNED:
			cfg->require_signed = 1;
			break;
		case OPT_FETCH_CA:
			if (copy_path(cfg->fetch_ca, PATH_MAX, optarg) < 0) {
				fprintf(stderr, "graind: --fetch-ca: empty or too long\n");
				return CONFIG_EXIT_USAGE;
			}
			if (access(cfg->fetch_ca, R_OK) < 0) {
				fprintf(stderr, "graind: --fetch-ca %s: %s\n", cfg->fetch_ca,
					strerror(errno));
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_FETCH_ALLOW_HTTP:
			cfg->fetch_allow_http = 1;
			break;
		case OPT_INSECURE_REGISTRY:
			if (cfg->n_insecure_registries == 8 || !optarg[0] ||
			    strlen(optarg) >= sizeof(cfg->insecure_registries[0]) ||
			    strchr(optarg, '/')) {
				fprintf(stderr, "graind: --insecure-registry wants a HOST[:PORT], at most 8 times, got '%s'\n", optarg);
				return CONFIG_EXIT_USAGE;
			}
			strcpy(cfg->insecure_registries[cfg->n_insecure_registries++], optarg);
			break;
		case OPT_REGISTRY_AUTH:
			if (copy_path(cfg->registry_auth, PATH_MAX, optarg) < 0) {
				fprintf(stderr, "graind: --registry-auth: empty or too long\n");
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_AUTH_FILE:
			if (copy_path(cfg->auth_file, PATH_MAX, optarg) < 0) {
				fprintf(stderr, "graind: --auth-file: empty or too long\n");
				return CONFIG_EXIT_USAGE;
			}
			break;
		case OPT_CLIENT_CERT:
			client_cert_arg = optarg;
			if (strcmp(optarg, "required") != 0 && strcmp(optarg, "optional") != 0) {
				fprintf(stderr, "graind: --client-cert wants 'required' or 'optional', got '%s'\n",
					optarg);
				return CONFIG_EXIT_USAGE;
			}
			cfg->client_cert_optional = strcmp(optarg, "optional") == 0;
			break;
		case 'v':
			cfg->verbose = 1;
			break;
		case 'h':
			fputs(usage, stdout);
			return CONFIG_EXIT_OK;
		case 'V':
			printf("graind %s\n", GRAIND_VERSION);
			return CONFIG_EXIT_OK;
		default:
			fprintf(stderr, "Try 'graind --help' for more information.\n");
			return CONFIG_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "graind: unexpected argument '%s'\nTry 'graind --help' for more information.\n",
			argv[optind]);
		return CONFIG_EXIT_USAGE;
	}
	if (socket_path(cfg->socket_path, socket_arg, cfg->state_dir, "graind.sock",
			"--socket") < 0 ||
	    socket_path(cfg->grpc_socket_path, grpc_socket_arg, cfg->state_dir,
			"graind-grpc.sock", "--grpc-socket") < 0)
		return CONFIG_EXIT_USAGE;
	if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
		fprintf(stderr, "graind: --tls-cert and --tls-key go together: give both or neither\n");
		return CONFIG_EXIT_USAGE;
	}
	if (cfg->client_ca[0] && !cfg->tls_cert[0]) {
		fprintf(stderr, "graind: --client-ca needs TLS: give --tls-cert and --tls-key too\n");
		return CONFIG_EXIT_USAGE;
	}
	if (cfg->reset && cfg->adopt_orphans) {
		fprintf(stderr, "graind: --reset and --adopt-orphans exclude each other: remove the pins, or keep them\n");
		return CONFIG_EXIT_USAGE;
	}
	if (client_cert_arg && !cfg->client_ca[0]) {
		fprintf(stderr, "graind: --client-cert needs --client-ca, the CA that signs client certificates\n");
		return CONFIG_EXIT_USAGE;
	}
	if (cfg->require_signed && !cfg->trusted_keys[0]) {
		fprintf(stderr, "graind: --require-signed needs --trusted-keys DIR, the minisign public keys to trust\n");
		return CONFIG_EXIT_USAGE;
	}
	if (!cfg->listen_host[0] && !cfg->socket_path[0]) {
		fprintf(stderr, "graind: nothing to listen on (--listen none and --socket none)\n");
		return CONFIG_EXIT_USAGE;
	}
	return CONFIG_RUN;
}
