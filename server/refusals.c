/* refusals: see refusals.h. */
#include "server/refusals.h"

#include <stddef.h>

static uint64_t counts[REFUSAL__KINDS];         /* atomic */

static const struct refusal_series series[REFUSAL__KINDS] = {
	[REFUSAL_REST_PER_ADDRESS] = { "graind_connections_refused_total",
				       "transport=\"rest\",reason=\"per_address\"" },
	[REFUSAL_GRPC_PER_ADDRESS] = { "graind_connections_refused_total",
				       "transport=\"grpc\",reason=\"per_address\"" },
	[REFUSAL_GRPC_TOTAL] = { "graind_connections_refused_total",
				 "transport=\"grpc\",reason=\"total\"" },
	[REFUSAL_REST_HEADER_DEADLINE] = { "graind_connections_closed_total",
					   "transport=\"rest\",reason=\"header_deadline\"" },
	[REFUSAL_REST_BODY_DEADLINE] = { "graind_connections_closed_total",
					 "transport=\"rest\",reason=\"body_deadline\"" },
	[REFUSAL_AUTH_FAILURES] = { "graind_auth_failures_limited_total", "" },
};

void refusal_count(enum refusal kind)
{
	if ((unsigned)kind < REFUSAL__KINDS)
		__atomic_add_fetch(&counts[kind], 1, __ATOMIC_RELAXED);
}

uint64_t refusal_total(enum refusal kind)
{
	return (unsigned)kind < REFUSAL__KINDS ?
	       __atomic_load_n(&counts[kind], __ATOMIC_RELAXED) : 0;
}

const struct refusal_series *refusal_series_of(enum refusal kind)
{
	return (unsigned)kind < REFUSAL__KINDS ? &series[kind] : NULL;
}
