/* refusals: what the transports refused to clients that hog or probe,
 * counted for /metrics. One set per process, like authlog; safe from any
 * thread.
 *
 *   connections refused: more than CONNECTIONS_PER_ADDRESS from one
 *     address (REST, gRPC), or gRPC's total reached;
 *   connections closed: a REST request whose headers, or whose body, did
 *     not arrive in time (server/http_guard.h);
 *   failed authentications: an address past its rate of 401s gets 429. */
#ifndef GRAIND_REFUSALS_H
#define GRAIND_REFUSALS_H

#include <stdint.h>

/* What one address may hold on each transport, so that one client (a
 * flood, a slowloris) leaves room for the others. */
#define CONNECTIONS_PER_ADDRESS 64

/* Unauthenticated requests one address may make: a second, and saved up. */
#define AUTH_FAILURES_PER_S 5
#define AUTH_FAILURES_BURST 20

enum refusal {
	REFUSAL_REST_PER_ADDRESS,
	REFUSAL_GRPC_PER_ADDRESS,
	REFUSAL_GRPC_TOTAL,
	REFUSAL_REST_HEADER_DEADLINE,
	REFUSAL_REST_BODY_DEADLINE,
	REFUSAL_AUTH_FAILURES,
	REFUSAL__KINDS,
};

void refusal_count(enum refusal kind);
uint64_t refusal_total(enum refusal kind);

/* /metrics: every family with its series. */
struct refusal_series {
	const char *family;
	const char *labels;             /* the series' labels, Prometheus text */
};
const struct refusal_series *refusal_series_of(enum refusal kind);

#endif
