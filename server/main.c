/* graind: the eBPF probe-management agent. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/agent.h"
#include "server/auditor.h"
#include "server/auth.h"
#include "server/budget.h"
#include "server/builtin.h"
#include "server/caps.h"
#include "server/collect/collect.h"
#include "server/config.h"
#include "server/elf/elfchk.h"
#include "server/features.h"
#include "server/grpc/grpc.h"
#include "server/confdir.h"
#include "server/confstat.h"
#include "server/http.h"
#include "server/orphans.h"
#include "server/refusals.h"
#include "server/scanner.h"
#include "server/signing.h"
#include "server/probe/probe.h"
#include "server/svc/svc.h"
#include "server/check_cmd.h"
#include "server/token_cmd.h"
#include "server/util/feed.h"
#include "server/sink/sink.h"
#include "server/tls/tls.h"
#include "server/util/keylimit.h"
#include "server/util/clock.h"
#include "server/util/log.h"
#include "server/util/notify.h"
#include "server/util/ticker.h"
#include "store/store.h"

/* What WatchProbes can replay: the last changes, bounded by count and size. */
#define PROBE_EVENTS_HELD 1024
#define PROBE_EVENT_BYTES_HELD (4u << 20)

static int make_state_dir(const char *dir, struct gerr *err)
{
	struct stat sb;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return gerr_set(err, 500, "cannot create state directory %s: %s", dir,
				strerror(errno));
	if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode))
		return gerr_set(err, 500, "state directory %s is not a directory", dir);
	return 0;
}

static void print_banner(const struct agent *ag)
{
	const char *scheme = ag->tls ? "https" : "http";

	printf("graind %s ready\n", GRAIND_VERSION);
	if (ag->listen_tcp[0])
		printf("  listening on   %s://%s\n", scheme, ag->listen_tcp);
	if (ag->cfg.socket_path[0])
		printf("  listening on   unix:%s\n", ag->cfg.socket_path);
	if (ag->grpc_tcp[0])
		printf("  gRPC on        %s\n", ag->grpc_tcp);
	if (ag->cfg.grpc_socket_path[0])
		printf("  gRPC on        unix:%s\n", ag->cfg.grpc_socket_path);
	if (ag->tls)
		printf("  TLS            %s%s%s%s (TCP only; SIGHUP reloads)\n", ag->cfg.tls_cert,
		       ag->cfg.client_ca[0] ? ", client certificates " : "",
		       ag->cfg.client_ca[0] ? (ag->cfg.client_cert_optional ? "optional, CA " :
					       "required, CA ") : "",
		       ag->cfg.client_ca);
	printf("  admin token    %s\n", auth_token_path(ag->auth, AUTH_ADMIN));
	printf("  reader token   %s\n", auth_token_path(ag->auth, AUTH_READER));
	printf("  database       %s/graind.db\n", ag->cfg.state_dir);
	if (ag->cfg.trusted_keys[0])
		printf("  trusted keys   %s%s\n", ag->cfg.trusted_keys,
		       ag->cfg.require_signed ? " (the kernel runs only signed objects)" : "");
	printf("  try: curl -H \"Authorization: Bearer $(cat %s)\" %s://%s/v1/status\n",
	       auth_token_path(ag->auth, AUTH_READER), scheme,
	       ag->listen_tcp[0] ? ag->listen_tcp : "localhost");
	fflush(stdout);
}

/* --config-dir: applied once before any transport serves a write. */
static int start_config_dir(struct agent *ag, struct confdir **out, struct gerr *err)
{
	if (!ag->cfg.config_dir[0])
		return 0;
	if (!(ag->confstat = confstat_new(ag->cfg.config_dir)))
		return gerr_set(err, 500, "out of memory");
	return confdir_start(ag, ag->cfg.config_dir, out, err);
}

/* SIGHUP: read the token files, the credentials file, the trusted keys
 * and the TLS files again. Listeners stay open; connections keep the TLS
 * credentials they began with; a failure keeps what is in use. */
static void reload(struct agent *ag)
{
	struct gerr err = { 0 };

	if (auth_reload(ag->auth, &err) < 0)
		log_error("msg=\"credentials not reloaded; the principals in use are kept\" "
			  "error=\"%s\"", err.msg);
	err = (struct gerr){ 0 };
	if (ag->cfg.trusted_keys[0] && signing_reload(ag->signing, &err) < 0)
		log_error("msg=\"trusted keys not reloaded; the keys in use are kept\" error=\"%s\"",
			  err.msg);
	if (!ag->tls)
		return;
	err = (struct gerr){ 0 };
	if (tls_reload(ag->tls, &err) < 0)
		log_error("msg=\"TLS reload failed; the credentials in use are kept\" error=\"%s\"",
			  err.msg);
	else
		log_info("msg=\"TLS credentials reloaded\" cert=\"%s\" key=\"%s\" client_ca=\"%s\"",
			 ag->cfg.tls_cert, ag->cfg.tls_key, ag->cfg.client_ca);
}

/* Block until SIGTERM or SIGINT, reloading on each SIGHUP and telling a
 * service manager's watchdog that the agent lives, twice per interval. */
static int wait_for_signal(struct agent *ag, const sigset_t *set)
{
	uint64_t watchdog = notify_watchdog_usec() / 2;
	struct timespec tick = { (time_t)(watchdog / 1000000),
				 (long)(watchdog % 1000000) * 1000 };
	char reloading[64];
	int sig;

	for (;;) {
		sig = watchdog ? sigtimedwait(set, NULL, &tick) : sigwaitinfo(set, NULL);
		if (sig < 0) {
			if (errno == EAGAIN)
				notify_send("WATCHDOG=1");
			continue;
		}
		if (sig != SIGHUP)
			return sig;
		snprintf(reloading, sizeof(reloading), "RELOADING=1\nMONOTONIC_USEC=%llu",
			 (unsigned long long)clock_mono_us());
		notify_send(reloading);
		reload(ag);
		notify_send("READY=1");
	}
}

static void check_budgets(void *agent)
{
	svc_check_budgets(agent);
}

int main(int argc, char **argv)
{
	struct agent ag = { 0 };
	struct http_server *http = NULL;
	struct grpc_server *grpc = NULL;
	struct auditor *auditor = NULL;
	struct scanner *scanner = NULL;
	struct ticker *budgeter = NULL;
	struct confdir *confdir = NULL;
	struct gerr err = { 0 };
	char db_path[PATH_MAX + 16];
	sigset_t blocked;
	int status = 1;

	if (argc > 1 && strcmp(argv[1], "token") == 0)
		return token_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "check") == 0)
		return check_main(argc - 1, argv + 1);
	switch (config_parse(&ag.cfg, argc, argv)) {
	case CONFIG_EXIT_OK:
		return 0;
	case CONFIG_EXIT_USAGE:
		return 2;
	case CONFIG_RUN:
		break;
	}
	if (ag.cfg.verbose)
		log_set_level(LOG_DEBUG);
	/* Worker threads inherit this mask, so only sigwait sees the signals. */
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGTERM);
	sigaddset(&blocked, SIGINT);
	sigaddset(&blocked, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &blocked, NULL);
	signal(SIGPIPE, SIG_IGN);
	setrlimit(RLIMIT_MEMLOCK, &(struct rlimit){ RLIM_INFINITY, RLIM_INFINITY });
	/* An arena per thread (about ten) costs resident memory for little:
	 * the threads allocate little once running. */
	mallopt(M_ARENA_MAX, 2);

	ag.started_ms = clock_unix_ms();
	elfchk_init();
	snprintf(db_path, sizeof(db_path), "%s/graind.db", ag.cfg.state_dir);
	/* Capabilities and TLS files first: either fails before anything is
	 * touched. */
	if (caps_check(&err) < 0 ||
	    tls_load(&ag.cfg, &ag.tls, &err) < 0 ||
	    signing_open(ag.cfg.trusted_keys, ag.cfg.require_signed, &ag.signing, &err) < 0 ||
	    make_state_dir(ag.cfg.state_dir, &err) < 0 ||
	    features_mount(&err) < 0 ||
	    orphans_check(&ag.cfg, db_path, &ag.store_was_new, &err) < 0 ||
	    store_open(db_path, &ag.store, &err) < 0 ||
	    builtin_register(ag.store, &err) < 0 ||
	    auth_load(ag.cfg.state_dir, ag.cfg.auth_file, &ag.auth, &err) < 0 ||
	    probe_mgr_new(ag.cfg.pin_root, &ag.probes, &err) < 0) {
		fprintf(stderr, "graind: %s\n", err.msg);
		goto out;
	}
	pthread_mutex_init(&ag.probe_lock, NULL);
	store_samples_set_bounds(ag.store, ag.cfg.buffer_rows, ag.cfg.buffer_bytes);
	/* Numbered from the clock in µs, so a watcher's seq from before a
	 * restart is older than every event after it. */
	ag.sample_feed = feed_new(0, 0, (uint64_t)ag.started_ms * 1000);
	ag.probe_feed = feed_new(PROBE_EVENTS_HELD, PROBE_EVENT_BYTES_HELD,
				 (uint64_t)ag.started_ms * 1000);
	ag.auth_failures = keylimit_new(AUTH_FAILURES_PER_S, AUTH_FAILURES_BURST);
	ag.budgets = budgets_new();
	if (!ag.sample_feed || !ag.probe_feed || !ag.auth_failures || !ag.budgets) {
		fprintf(stderr, "graind: out of memory\n");
		goto out;
	}
	if (ag.cfg.write_rate &&
	    !(ag.write_limit = keylimit_new(ag.cfg.write_rate, 2.0 * ag.cfg.write_rate))) {
		fprintf(stderr, "graind: out of memory\n");
		goto out;
	}
	svc_reconcile(&ag);
	if (auditor_start(ag.store, ag.cfg.audit_max_rows, ag.cfg.audit_max_age_s,
			  &auditor, &err) < 0 ||
	    scanner_start(ag.store, ag.cfg.scan_interval_s, &scanner, &err) < 0 ||
	    collect_start(&ag, &ag.collector, &err) < 0 ||
	    sinks_start(&ag, &ag.sinks, &err) < 0 ||
	    ticker_start("graind-budget", BUDGET_TICK_MS, check_budgets, &ag, &budgeter, &err) < 0 ||
	    start_config_dir(&ag, &confdir, &err) < 0 ||
	    http_start(&ag, &http, &err) < 0 ||
	    grpc_start(&ag, &grpc, &err) < 0) {
		fprintf(stderr, "graind: %s\n", err.msg);
		goto out;
	}
	print_banner(&ag);
	/* What the start read and built is not needed to idle: the page cache
	 * of the reconcile, and the heap it leaves free. */
	store_release_memory(ag.store);
	malloc_trim(0);
	log_info("msg=\"started\" version=%s pid=%d", GRAIND_VERSION, (int)getpid());
	notify_send("READY=1\nSTATUS=serving");

	log_info("msg=\"shutting down\" signal=%s", strsignal(wait_for_signal(&ag, &blocked)));
	notify_send("STOPPING=1");
	status = 0;
out:
	confdir_stop(confdir);      /* no pass runs any more */
	grpc_stop(grpc);            /* GOAWAY; in-flight calls finish */
	http_stop(http);
	ticker_stop(budgeter);      /* no breach is audited any more */
	auditor_stop(auditor);      /* no request appends any more: write the rest */
	scanner_stop(scanner);
	sinks_stop(ag.sinks);       /* a batch in flight is sent again next start */
	collect_stop(ag.collector);  /* flushes what is queued */
	probe_mgr_free(ag.probes);  /* pinned probes keep running */
	tls_free(ag.tls);           /* after both transports: no session holds it */
	signing_free(ag.signing);
	auth_free(ag.auth);
	confstat_free(ag.confstat);
	store_close(ag.store);
	feed_free(ag.sample_feed);
	feed_free(ag.probe_feed);
	keylimit_free(ag.auth_failures);
	keylimit_free(ag.write_limit);
	budgets_free(ag.budgets);
	return status;
}
