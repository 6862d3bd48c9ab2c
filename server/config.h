/* config: the command line. */
#ifndef GRAIND_CONFIG_H
#define GRAIND_CONFIG_H

#include <limits.h>
#include <stddef.h>

#include "server/budget.h"
#include "server/util/gerr.h"

#define CONFIG_DEFAULT_LISTEN "127.0.0.1:9730"
#define CONFIG_DEFAULT_GRPC_LISTEN "127.0.0.1:9731"
#define CONFIG_DEFAULT_STATE_DIR "/var/lib/graind"
#define CONFIG_DEFAULT_MAX_OBJECT_SIZE (64u * 1024 * 1024)
#define CONFIG_DEFAULT_THREADS 4
#define CONFIG_DEFAULT_PIN_ROOT "/sys/fs/bpf/graind"
#define CONFIG_DEFAULT_BUFFER_ROWS 1000000ull
#define CONFIG_DEFAULT_BUFFER_BYTES (256ull * 1024 * 1024)
#define CONFIG_DEFAULT_SINK_RETENTION_S 3600
#define CONFIG_DEFAULT_QUEUE_BYTES (64ull * 1024 * 1024)
#define CONFIG_DEFAULT_AUDIT_MAX_ROWS 100000ull
#define CONFIG_DEFAULT_AUDIT_MAX_AGE_S (30ull * 86400)
#define CONFIG_DEFAULT_SCAN_INTERVAL_S 3600ull

struct config {
	char listen_host[64];           /* "" when TCP is disabled */
	unsigned listen_port;           /* 0: any free port */
	char state_dir[PATH_MAX];
	char socket_path[108];          /* "" when disabled */
	char grpc_host[64];             /* gRPC: "" when TCP is disabled */
	unsigned grpc_port;
	char grpc_socket_path[108];     /* "" when disabled */
	char pin_root[PATH_MAX];        /* bpffs directory of the probes' pins */
	char config_dir[PATH_MAX];      /* Probe and Sink documents; "" when none */
	unsigned long long buffer_rows; /* sample buffer bounds */
	unsigned long long buffer_bytes;
	unsigned long long sink_retention_s; /* delivered samples kept this long */
	unsigned long long queue_bytes; /* samples waiting for the store, every probe */
	unsigned long long audit_max_rows;   /* audit records kept at most */
	unsigned long long audit_max_age_s;  /* and for this long; 0: any age */
	unsigned long long scan_interval_s;  /* integrity scans this often; 0: never */
	/* TLS on both TCP listeners: "" when off (the unix sockets stay plain). */
	char tls_cert[PATH_MAX];        /* PEM certificate chain, leaf first */
	char tls_key[PATH_MAX];         /* PEM private key */
	char client_ca[PATH_MAX];       /* PEM CA(s) of client certificates: "" no mTLS */
	int client_cert_optional;       /* --client-cert optional */
	/* A missing or empty database beside tokens or pins (server/orphans.h). */
	int reset;                      /* --reset: remove the pins the store does not know */
	int adopt_orphans;              /* --adopt-orphans: leave them running */
	unsigned write_rate;            /* changes a second per credential; 0: no limit */
	/* The budget of a probe whose spec has none (server/budget.h). */
	int has_default_budget;
	struct budget_limits default_budget;
	/* Signed objects (server/signing.h). */
	char trusted_keys[PATH_MAX];    /* directory of minisign *.pub keys, "" none */
	char auth_file[PATH_MAX];       /* --auth-file, "" none */
	int require_signed;             /* only signed objects reach the kernel */
	/* POST /v1/objects:fetch (server/fetch.h). */
	char fetch_ca[PATH_MAX];        /* PEM CAs of https fetches, "" the system's */
	int fetch_allow_http;           /* plain http:// URLs too */
	/* Bytecode images (server/oci/pull.h). */
	char insecure_registries[8][256];       /* reached over plain http */
	unsigned n_insecure_registries;
	char registry_auth[PATH_MAX];   /* containers-auth.json credentials, "" none */
	size_t max_object_size;
	unsigned threads;
	int verbose;
};

enum config_result {
	CONFIG_RUN,
	CONFIG_EXIT_OK,                 /* --help, --version printed */
	CONFIG_EXIT_USAGE,              /* bad flags, message printed */
};

/* Parse argv into cfg (defaults first). Prints help, version and usage
 * errors itself. */
enum config_result config_parse(struct config *cfg, int argc, char **argv);

#endif
