/* svc budget: what attached probes cost, against their budgets.
 *
 * Every BUDGET_TICK_MS each attached probe with a budget (its spec's or
 * --default-budget; the collector knows which are attached) is measured: its
 * programs' run time and its maps' bytes from the pins (probe_cost), the
 * records its buffers carried and lost from the collector. server/budget.c
 * keeps the window and says when a limit is first exceeded; then the breach
 * is logged, audited (action "BudgetExceeded", principal "budget") and
 * published to WatchProbes, and a DETACH budget detaches the probe through
 * DetachProbe, as an operator would, so that it stays detached until one
 * attaches it again. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/agent.h"
#include "server/budget.h"
#include "server/collect/collect.h"
#include "server/probe/probe.h"
#include "server/svc/svc_int.h"
#include "server/util/clock.h"
#include "server/util/log.h"
#include "store/store.h"

#define BUDGET_PRINCIPAL "budget"

int svc_budget_check_spec(const Graind__Budget *b, struct gerr *err)
{
	if (!b)
		return 0;
	if (!isfinite(b->max_cpu_percent) || b->max_cpu_percent < 0)
		return gerr_set(err, 400, "spec.budget.maxCpuPercent must be a share of one CPU "
				"(0 to 100 and beyond for several), got %g", b->max_cpu_percent);
	if (!isfinite(b->max_events_per_second) || b->max_events_per_second < 0)
		return gerr_set(err, 400, "spec.budget.maxEventsPerSecond must be 0 or more, got %g",
				b->max_events_per_second);
	/* An action the schema does not have, the codec refused already. */
	if (b->window_seconds > BUDGET_MAX_WINDOW_S)
		return gerr_set(err, 400, "spec.budget.windowSeconds is at most %u, got %" PRIu32,
				BUDGET_MAX_WINDOW_S, b->window_seconds);
	return 0;
}

/* The limits of a spec: its budget, else the agent's default. */
static bool limits_of(const struct agent *ag, const Graind__ProbeSpec *spec,
		      struct budget_limits *lim)
{
	const Graind__Budget *b = spec->budget;

	if (!b) {
		*lim = ag->cfg.default_budget;
		return ag->cfg.has_default_budget;
	}
	*lim = (struct budget_limits){
		.max_cpu_percent = b->max_cpu_percent,
		.max_events_per_second = b->max_events_per_second,
		.max_map_bytes = b->max_map_bytes,
		.window_s = b->window_seconds,
		.detach = b->action == GRAIND__BUDGET_ACTION__BUDGET_DETACH,
	};
	return true;
}

static void breach_text(const char *name, const struct budget_breach *br,
			const struct budget_usage *u, char *buf, size_t n)
{
	const char *then = br->detach ? "detached" : "flagged";

	if (!strcmp(br->limit, "maxMapBytes"))
		snprintf(buf, n, "probe %s holds %.0f bytes in its maps, over its budget's "
			 "maxMapBytes %.0f: %s", name, br->figure, br->max, then);
	else if (!strcmp(br->limit, "maxCpuPercent"))
		snprintf(buf, n, "probe %s used %.2f%% of a CPU over %u s, over its budget's "
			 "maxCpuPercent %g: %s", name, br->figure, u->span_s, br->max, then);
	else
		snprintf(buf, n, "probe %s carried %.0f events a second over %u s, over its "
			 "budget's maxEventsPerSecond %g: %s", name, br->figure, u->span_s, br->max,
			 then);
}

int svc_budget_fill(struct agent *ag, Graind__Probe *probe, struct gerr *err)
{
	struct budget_usage u;
	struct budget_breach br;
	Graind__ProbeUsage *pu;
	Graind__BudgetExceeded *be;
	char text[GERR_MSG_MAX];
	bool exceeded;

	if (!ag->budgets)
		return 0;
	if (budgets_get(ag->budgets, probe->name, &u, &br, &exceeded)) {
		if (SVC_NEW(&probe->usage, &graind__probe_usage__descriptor, err) < 0)
			return -1;
		pu = probe->usage;
		pu->cpu_percent = u.cpu_percent;
		pu->events_per_second = u.events_per_second;
		pu->map_bytes = u.map_bytes;
		pu->window_seconds = u.span_s;
	}
	if (!exceeded)
		return 0;
	if (SVC_NEW(&probe->budget_exceeded, &graind__budget_exceeded__descriptor, err) < 0)
		return -1;
	be = probe->budget_exceeded;
	be->figure = br.figure;
	be->limit = br.max;
	be->action = br.detach ? GRAIND__BUDGET_ACTION__BUDGET_DETACH :
				 GRAIND__BUDGET_ACTION__BUDGET_ALERT;
	breach_text(probe->name, &br, &u, text, sizeof(text));
	if (pbmsg_set_string(&be->limit_name, br.limit) < 0 ||
	    pbmsg_set_time(&be->since, br.since_ms) < 0 ||
	    pbmsg_set_string(&be->message, text) < 0)
		return gerr_set(err, 500, "out of memory");
	return 0;
}

/* A DETACH budget detaches the probe as DetachProbe does, on behalf of
 * whoever owns it (a --config-dir file keeps its say: its next pass
 * attaches it again). */
static void detach(struct agent *ag, const char *name)
{
	char owner[SVC_OWNER_MAX] = "";
	struct svc_call call = {
		.agent = ag, .who = { .name = BUDGET_PRINCIPAL, .role = AUTH_ADMIN },
		.method = "BUDGET", .path = name,
	};
	Graind__DetachProbeRequest req = GRAIND__DETACH_PROBE_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	struct gerr err = { 0 };

	if (store_managed_get(ag->store, STORE_MANAGED_PROBE, name, owner, sizeof(owner), &err) == 0 &&
	    owner[0])
		call.manager = owner;
	req.name = (char *)name;
	if (svc_run(&call, svc_method_find("DetachProbe"), &req.base, &resp, &err) < 0)
		log_error("msg=\"budget cannot detach probe\" probe=%s error=\"%s\"", name, err.msg);
	pbmsg_free(resp);
}

static void breached(struct agent *ag, const char *name, const struct budget_breach *br,
		     const struct budget_usage *u)
{
	char text[GERR_MSG_MAX];
	Graind__Probe *probe = NULL;
	struct store_probe row = { 0 };
	struct gerr err = { 0 };

	breach_text(name, br, u, text, sizeof(text));
	log_warn("msg=\"%s\" probe=%s limit=%s figure=%g max=%g", text, name, br->limit,
		 br->figure, br->max);
	if (store_audit_append(ag->store, "admin", BUDGET_PRINCIPAL, "BudgetExceeded", name, 200,
			       text, &err) < 0 && err.status != 503)
		log_error("msg=\"cannot write audit record\" error=\"%s\"", err.msg);
	pthread_mutex_lock(&ag->probe_lock);
	if (store_probe_get(ag->store, name, &row, &err) == 0 &&
	    svc_probe_from_row(ag, &row, &probe, &err) < 0) {
		pbmsg_free(probe ? &probe->base : NULL);
		probe = NULL;
	}
	svc_probe_event(ag, GRAIND__PROBE_EVENT_KIND__PROBE_BUDGET_EXCEEDED, probe, name, text);
	pthread_mutex_unlock(&ag->probe_lock);
	pbmsg_free(probe ? &probe->base : NULL);
	store_probe_clear(&row);
}

static void measure(const char *name, const Graind__ProbeSpec *spec, void *ctx)
{
	struct agent *ag = ctx;
	struct budget_sample s = { .at_ms = (int64_t)(clock_mono_us() / 1000) };
	struct budget_limits lim;
	struct budget_usage u;
	struct budget_breach br;
	uint64_t records, lost;
	bool exceeded;

	/* What nobody set a limit for costs nothing to watch. */
	if (!limits_of(ag, spec, &lim))
		return;
	if (probe_cost(name, &s.run_time_ns, &s.map_bytes) < 0)
		return;         /* not in the kernel (yet): nothing to measure */
	collect_probe_events(ag->collector, name, &records, &lost);
	s.events = records + lost;
	if (budgets_observe(ag->budgets, name, &lim, &s, clock_unix_ms(), &u, &br) == 1)
		breached(ag, name, &br, &u);
	/* Still attached while a DETACH breach is in force: the first
	 * detach failed (storage, kernel), so every tick tries again. */
	if (budgets_get(ag->budgets, name, &u, &br, &exceeded) && exceeded && br.detach)
		detach(ag, name);
}

void svc_check_budgets(struct agent *ag)
{
	if (!ag->budgets)
		return;
	budgets_round_begin(ag->budgets);
	collect_each_attached(ag->collector, measure, ag);
	budgets_round_end(ag->budgets);
}
