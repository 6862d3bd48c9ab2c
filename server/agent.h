/* agent: the state every part of the running agent shares. */
#ifndef GRAIND_AGENT_H
#define GRAIND_AGENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/config.h"

struct store;
struct auth;
struct probe_mgr;
struct collector;
struct sinks;
struct confstat;
struct tls;
struct feed;
struct keylimit;
struct budgets;

struct agent {
	struct config cfg;
	struct store *store;
	struct auth *auth;
	struct probe_mgr *probes;
	struct collector *collector;
	struct sinks *sinks;            /* forwarders to StatsD and S3 */
	struct confstat *confstat;      /* --config-dir's last pass; NULL without */
	struct tls *tls;                /* TLS credentials of the TCP listeners, or NULL */
	struct signing *signing;        /* trusted keys and --require-signed */
	struct budgets *budgets;        /* what probes cost (server/budget.h) */
	/* What watches follow (server/util/feed.h): rung by the collector
	 * after each commit of samples; each probe change as a ProbeEvent. */
	struct feed *sample_feed;
	struct feed *probe_feed;
	/* Changes by API callers, a bucket per principal (--write-rate;
	 * server/util/keylimit.h); NULL: no limit. */
	struct keylimit *write_limit;
	/* Unauthenticated requests per client address (refusals.h). */
	struct keylimit *auth_failures;
	/* Serialises probe changes, so the store and the kernel change
	 * together and concurrent requests cannot interleave them. */
	pthread_mutex_t probe_lock;
	int64_t started_ms;             /* unix ms */
	bool store_was_new;             /* no database before this start */
	char listen_tcp[128];           /* "127.0.0.1:9730" as bound */
	char grpc_tcp[128];             /* the gRPC address as bound, or "" */
};

#endif
