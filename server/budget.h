/* budget: what each attached probe costs over a window, against limits.
 *
 * Its caller (svc_check_budgets, every BUDGET_TICK_MS) hands it a probe's
 * cumulative counters: the run time of its programs, the records its ring
 * and perf buffers carried (drops included), and the bytes its maps hold
 * now. budgets_observe() keeps the samples of the last window per probe,
 * turns them into rates and says when a limit is first exceeded. A breach
 * stays while the probe stays over it; one that detached the probe stays
 * until budgets_reset() (an operator attached it again); an ALERT one ends
 * after a whole window under the limits. Memory only:
 * after a restart a detached probe stays detached (the store says so) and
 * the audit log tells why. Thread-safe. */
#ifndef GRAIND_BUDGET_H
#define GRAIND_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BUDGET_TICK_MS 1000             /* how often probes are measured */
#define BUDGET_DEFAULT_WINDOW_S 10
#define BUDGET_MAX_WINDOW_S 3600

/* 0 for a limit: none. */
struct budget_limits {
	double max_cpu_percent;         /* of one CPU */
	double max_events_per_second;
	uint64_t max_map_bytes;
	unsigned window_s;              /* 0: BUDGET_DEFAULT_WINDOW_S */
	bool detach;                    /* else only flagged */
};

/* A probe's cumulative counters at one moment. */
struct budget_sample {
	int64_t at_ms;                  /* CLOCK_MONOTONIC */
	uint64_t run_time_ns;           /* every program's, together */
	uint64_t events;                /* records carried plus records dropped */
	uint64_t map_bytes;             /* now */
};

/* What it costs over the samples kept so far (span_s of them). */
struct budget_usage {
	double cpu_percent;
	double events_per_second;
	uint64_t map_bytes;
	unsigned span_s;
};

struct budget_breach {
	const char *limit;              /* "maxCpuPercent", "maxEventsPerSecond", "maxMapBytes" */
	double figure, max;
	bool detach;
	int64_t since_ms;               /* CLOCK_REALTIME, unix ms */
};

struct budgets;

struct budgets *budgets_new(void);
void budgets_free(struct budgets *b);

/* Record a sample of probe `name` under `lim` at unix time now_ms. *usage:
 * its cost now. Returns 1 when a limit is exceeded that was not before
 * (*breach says which), 0 when not, -1 when out of memory. A counter that
 * went down (the programs were replaced) starts the window again. Rates
 * are judged once the samples span the whole window, so a probe's first
 * burst is not its rate; the size of its maps, at every sample. An ALERT
 * breach ends after a whole window under every limit. */
int budgets_observe(struct budgets *b, const char *name, const struct budget_limits *lim,
		    const struct budget_sample *s, int64_t now_ms, struct budget_usage *usage,
		    struct budget_breach *breach);

/* The last usage and the breach in force of `name`: false when it is not
 * measured; *exceeded says whether a breach is in force. */
bool budgets_get(struct budgets *b, const char *name, struct budget_usage *usage,
		 struct budget_breach *breach, bool *exceeded);

/* A round of observations: what was not observed between begin and end
 * (no longer attached, no longer budgeted, its pins gone) is paused as by
 * budgets_pause(). */
void budgets_round_begin(struct budgets *b);
void budgets_round_end(struct budgets *b);

/* fn for every probe it knows, measured now or detached by a breach, with
 * budgets_get()'s answers; fn runs with its lock held: it must not call it. */
void budgets_each(struct budgets *b,
		  void (*fn)(const char *name, bool measured, const struct budget_usage *usage,
			     bool exceeded, const struct budget_breach *breach, void *ctx),
		  void *ctx);

/* Forget the samples of `name`, which is not attached any more, keeping a
 * breach that detached it. */
void budgets_pause(struct budgets *b, const char *name);

/* Forget everything about `name`: attached again by an operator, or gone. */
void budgets_reset(struct budgets *b, const char *name);

/* Parse "cpu=PERCENT,events=N,map-bytes=BYTES,window=SECONDS,action=alert|detach"
 * (any subset, in any order; BYTES may end in K, M or G) into *lim; -1 with
 * why[n] filled when it does not parse. */
int budget_parse(const char *text, struct budget_limits *lim, char *why, size_t n);

#endif
