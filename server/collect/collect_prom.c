/* GET /metrics: the Prometheus text exposition (format 0.0.4) of the
 * agent's own counters and of every metric map of the attached probes,
 * read live from the pinned maps at scrape time. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/util/pbmsg.h"
#include "server/agent.h"
#include "server/budget.h"
#include "server/confstat.h"
#include "server/authlog.h"
#include "server/refusals.h"
#include "server/collect/collect.h"
#include "server/util/keylimit.h"
#include "server/collect/collect_int.h"
#include "server/collect/decode.h"
#include "server/probe/probe.h"
#include "server/sink/sink.h"
#include "store/store.h"

#define LABEL_TEXT_MAX 256

/* One line of a probe map family, kept until every map is read so that
 * the lines of a family (which maps of several probes share) are printed
 * together under one HELP and TYPE. */
struct series {
	char *family;
	char *labels;           /* without braces */
	double value;
	bool gauge;
	size_t order;
};

struct scrape {
	struct series *series;
	size_t n, cap;
	bool oom;
};

/* ---------------------------------------------------------------- text */

/* A metric or label name: [a-zA-Z_:][a-zA-Z0-9_:]* (no ':' in labels). */
static void sanitize(char *s, bool label)
{
	for (char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && (label || *p != ':'))
			*p = '_';
}

/* A label value: backslash, double quote and newline escaped. */
static void put_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n') {
			fputs("\\n", f);
			continue;
		}
		fputc(*s, f);
	}
}

static void family_head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The shortest of %.15g and %.17g that reads back as the same number. */
static void format_value(char *buf, size_t n, double v)
{
	snprintf(buf, n, "%.15g", v);
	if (strtod(buf, NULL) != v)
		snprintf(buf, n, "%.17g", v);
}

static void put_value(FILE *f, double v)
{
	char buf[32];

	format_value(buf, sizeof(buf), v);
	fprintf(f, " %s\n", buf);
}

/* One sample line with one label: name{label="value"} v. */
static void put_sample(FILE *f, const char *name, const char *label, const char *value,
		       double v)
{
	fprintf(f, "%s{%s=\"", name, label);
	put_escaped(f, value);
	fputs("\"}", f);
	put_value(f, v);
}

/* ---------------------------------------------------------------- agent */

static void self_metric(FILE *f, const char *name, const char *type, const char *help,
			double value)
{
	family_head(f, name, type, help);
	fputs(name, f);
	put_value(f, value);
}

static void agent_metrics(FILE *f, struct agent *agent)
{
	struct collect_stats st;
	struct store_summary sum;

	collect_get_stats(agent->collector, &st);
	store_summary_get(agent->store, &sum);
	self_metric(f, "graind_samples_collected_total", "counter",
		    "Samples made from kernel data.", (double)st.collected);
	self_metric(f, "graind_samples_stored_total", "counter",
		    "Samples committed to the store.", (double)st.stored);
	self_metric(f, "graind_samples_dropped_total", "counter",
		    "Samples lost to full queues or failed writes.", (double)st.queue_dropped);
	self_metric(f, "graind_samples_queue_depth", "gauge",
		    "Samples waiting to be stored.", (double)st.queue_depth);
	self_metric(f, "graind_samples_queue_bytes", "gauge",
		    "Bytes of the samples waiting to be stored, every probe's together.",
		    (double)st.queue_bytes);
	self_metric(f, "graind_samples_queue_limit_bytes", "gauge",
		    "The bound of graind_samples_queue_bytes (--queue-bytes).",
		    (double)st.queue_max_bytes);
	self_metric(f, "graind_samples_queue_overflow_total", "counter",
		    "Samples dropped because every probe's queue together was at --queue-bytes.",
		    (double)st.queue_overflow);
	self_metric(f, "graind_events_lost_total", "counter",
		    "Perf buffer records the kernel could not hand over.", (double)st.events_lost);
	self_metric(f, "graind_decode_errors_total", "counter",
		    "Records or entries that could not be decoded.", (double)st.decode_errors);
	self_metric(f, "graind_sample_batches_total", "counter",
		    "Batches of samples committed.", (double)st.batches);
	self_metric(f, "graind_sample_batch_commit_seconds_total", "counter",
		    "Time spent committing batches of samples.", (double)st.batch_commit_us / 1e6);
	self_metric(f, "graind_database_bytes", "gauge",
		    "Size of the SQLite database and its WAL.", (double)sum.db_bytes);
	self_metric(f, "graind_sample_buffer_rows", "gauge",
		    "Samples held in the store.", (double)sum.samples);
	self_metric(f, "graind_sample_buffer_bytes", "gauge",
		    "Payload bytes of the samples held in the store (--buffer-bytes bounds it).",
		    (double)sum.sample_bytes);
}

/* The storage's health (store_health): failing or not, since when and
 * why, as an info series that exists only while it fails. */
static void storage_metrics(FILE *f, struct agent *agent)
{
	struct store_health h;
	struct collect_stats st;

	store_health_get(agent->store, &h);
	collect_get_stats(agent->collector, &st);
	self_metric(f, "graind_storage_failing", "gauge",
		    "1 while SQLite cannot write (disk full, I/O error, read-only), else 0.",
		    h.failing ? 1 : 0);
	self_metric(f, "graind_storage_failing_since_seconds", "gauge",
		    "Unix time the storage started failing, 0 when it is not.",
		    (double)h.since_ms / 1000);
	family_head(f, "graind_storage_error_info", "gauge",
		    "The storage error while the storage fails (one series, value 1).");
	if (h.failing)
		put_sample(f, "graind_storage_error_info", "error", h.error, 1);
	self_metric(f, "graind_storage_write_failures_total", "counter",
		    "Store calls the storage failed.", (double)h.failed_writes);
	self_metric(f, "graind_storage_faults_total", "counter",
		    "Times the storage went from writable to failing.", (double)h.faults);
	self_metric(f, "graind_write_rate_limited_total", "counter",
		    "Changes refused with 429 because their principal made too many (--write-rate).",
		    (double)keylimit_refused(agent->write_limit));
	self_metric(f, "graind_storage_corrupt_reads_total", "counter",
		    "Objects read back whose bytes no longer hash to their id (not served).",
		    (double)h.corrupt_reads);
	self_metric(f, "graind_storage_damaged_objects", "gauge",
		    "Objects found damaged in the database since the start (by readers or the scan).",
		    (double)h.damaged_objects);
	self_metric(f, "graind_storage_damaged_sample_blocks", "gauge",
		    "Sample blocks found damaged since the start; readers skip them.",
		    (double)h.damaged_blocks);
	self_metric(f, "graind_storage_damaged_samples", "gauge",
		    "Samples in the damaged sample blocks, skipped by readers and sinks.",
		    (double)h.damaged_samples);
	self_metric(f, "graind_integrity_scans_total", "counter",
		    "Integrity scans of the database completed (--scan-interval).",
		    (double)h.scans);
	self_metric(f, "graind_integrity_last_scan_seconds", "gauge",
		    "Unix time the last integrity scan completed, 0 never.",
		    (double)h.scan_ms / 1000);
	self_metric(f, "graind_integrity_last_scan_damage", "gauge",
		    "Damage the last completed integrity scan found.", (double)h.scan_damage);
	self_metric(f, "graind_storage_reserve_bytes", "gauge",
		    "The reserve file kept for checkpoints after a full disk (0: released).",
		    (double)h.reserve_bytes);
	self_metric(f, "graind_storage_checkpoint_bytes", "gauge",
		    "The WAL size at which it is checkpointed now (smaller when space runs low).",
		    (double)h.checkpoint_bytes);
	self_metric(f, "graind_sample_write_retries_total", "counter",
		    "Batches of samples the storage refused, kept in memory and written again.",
		    (double)st.write_retries);
}

/* What the transports refused to clients that hog or probe them: the
 * series of one family come together, after its head. */
static void refusal_metrics(FILE *f)
{
	static const struct { const char *family, *help; } heads[] = {
		{ "graind_connections_refused_total",
		  "Connections closed at accept: too many from one address, or in all." },
		{ "graind_connections_closed_total",
		  "REST connections closed because a request's headers or body did not arrive in time." },
		{ "graind_auth_failures_limited_total",
		  "Unauthenticated requests answered 429: their address failed to authenticate too often." },
	};

	for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
		family_head(f, heads[h].family, "counter", heads[h].help);
		for (int k = 0; k < REFUSAL__KINDS; k++) {
			const struct refusal_series *s = refusal_series_of(k);

			if (strcmp(s->family, heads[h].family) != 0)
				continue;
			fprintf(f, s->labels[0] ? "%s{%s}" : "%s", s->family, s->labels);
			put_value(f, (double)refusal_total(k));
		}
	}
}

/* Requests refused for want of a token are counted, never stored. */
static void auth_metrics(FILE *f, struct agent *agent)
{
	static const char refused[] = "graind_http_unauthenticated_requests_total";

	family_head(f, refused, "counter",
		    "Requests refused with 401: no token (missing), not one of the agent's (invalid), or one past its expiry (expired).");
	for (int r = 0; r < AUTHLOG__REASONS; r++)
		put_sample(f, refused, "reason", authlog_reason_name(r),
			   (double)authlog_count(r));
	self_metric(f, "graind_audit_pruned_total", "counter",
		    "Audit records dropped by --audit-max-rows and --audit-max-age.",
		    (double)store_audit_pruned(agent->store));
}

static void queue_metrics(FILE *f, struct agent *agent)
{
	struct collect_queue_stat *qs = NULL;
	size_t n = 0;

	if (collect_queue_stats(agent->collector, &qs, &n) < 0 || !n)
		goto out;
	family_head(f, "graind_queue_depth", "gauge", "Samples of the probe waiting.");
	for (size_t i = 0; i < n; i++) {
		put_sample(f, "graind_queue_depth", "probe", qs[i].probe, (double)qs[i].depth);
	}
	family_head(f, "graind_queue_dropped_total", "counter",
		    "Samples of the probe lost to a full queue or a failed write.");
	for (size_t i = 0; i < n; i++) {
		put_sample(f, "graind_queue_dropped_total", "probe", qs[i].probe,
			   (double)qs[i].dropped);
	}
	family_head(f, "graind_queue_overflow_total", "counter",
		    "Samples of the probe dropped because every probe's queue together was full "
		    "(counted in graind_queue_dropped_total too).");
	for (size_t i = 0; i < n; i++) {
		put_sample(f, "graind_queue_overflow_total", "probe", qs[i].probe,
			   (double)qs[i].overflow);
	}
	family_head(f, "graind_perf_events_lost_total", "counter",
		    "Perf buffer records of the probe the kernel could not hand over.");
	for (size_t i = 0; i < n; i++) {
		put_sample(f, "graind_perf_events_lost_total", "probe", qs[i].probe,
			   (double)qs[i].lost);
	}
out:
	free(qs);
}

static int put_drop(const char *probe, uint64_t dropped, void *ctx)
{
	FILE *f = ctx;

	put_sample(f, "graind_sample_buffer_dropped_total", "probe", probe, (double)dropped);
	return 0;
}

/* ---------------------------------------------------------------- sinks */

struct sink_stat {
	char name[64];
	uint64_t cursor, bytes_sent, samples_sent, errors, lag_rows;
	int64_t last_success_ms;
	double lag_seconds;
};

struct sink_stats {
	struct agent *agent;
	struct sink_stat *v;
	size_t n;
};

/* A sink's row, with the lag and error count its forwarder knows. */
static int add_sink_stat(const struct store_sink *row, const char *owner, void *ctx)
{
	struct sink_stats *ss = ctx;
	struct sink_stat *grown = realloc(ss->v, (ss->n + 1) * sizeof(*grown)), *st;
	Graind__Sink sink = GRAIND__SINK__INIT;
	struct gerr err;

	(void)owner;
	if (!grown)
		return -1;
	ss->v = grown;
	st = &grown[ss->n++];
	*st = (struct sink_stat){
		.cursor = row->cursor,
		.bytes_sent = row->bytes_sent,
		.samples_sent = row->samples_sent,
		.last_success_ms = row->last_success_ms,
		.errors = sinks_errors(ss->agent->sinks, row->name),
	};
	snprintf(st->name, sizeof(st->name), "%s", row->name);
	sink.name = st->name;
	if (ss->agent->sinks && sinks_health(ss->agent->sinks, &sink, row, &err) == 0) {
		st->lag_rows = sink.health->lag_rows;
		st->lag_seconds = sink.health->lag_seconds;
	}
	if (sink.health)
		graind__sink_health__free_unpacked(sink.health, NULL);
	return 0;
}

static double sink_value(const struct sink_stat *st, int which)
{
	switch (which) {
	case 0: return (double)st->lag_rows;
	case 1: return st->lag_seconds;
	case 2: return (double)st->last_success_ms / 1000.0;
	case 3: return (double)st->bytes_sent;
	case 4: return (double)st->samples_sent;
	case 5: return (double)st->errors;
	default: return (double)st->cursor;
	}
}

static void sink_metrics(FILE *f, struct agent *agent)
{
	static const struct { const char *name, *type, *help; } families[] = {
		{ "graind_sink_lag_rows", "gauge", "Buffered samples the sink has not been sent yet." },
		{ "graind_sink_lag_seconds", "gauge", "Age of the oldest sample the sink has not been sent." },
		{ "graind_sink_last_success_timestamp_seconds", "gauge",
		  "When the sink last took a delivery (unix time; 0: never)." },
		{ "graind_sink_sent_bytes_total", "counter", "Bytes delivered to the sink." },
		{ "graind_sink_sent_samples_total", "counter", "Samples delivered to the sink." },
		{ "graind_sink_errors_total", "counter",
		  "Failed delivery attempts since the agent started." },
		{ "graind_sink_cursor", "gauge", "The last sample id delivered to the sink." },
	};
	struct sink_stats ss = { .agent = agent };

	if (store_sink_list(agent->store, add_sink_stat, &ss) != 0 || !ss.n)
		goto out;
	for (size_t k = 0; k < sizeof(families) / sizeof(families[0]); k++) {
		family_head(f, families[k].name, families[k].type, families[k].help);
		for (size_t i = 0; i < ss.n; i++) {
			put_sample(f, families[k].name, "sink", ss.v[i].name,
				   sink_value(&ss.v[i], (int)k));
		}
	}
out:
	free(ss.v);
}

/* The kernel's view of each program: run count and time, failures. */
static void program_metrics(FILE *f, struct agent *agent, struct collect_view **views,
			    size_t n_views)
{
	static const struct {
		const char *name, *type, *help;
	} families[] = {
		{ "graind_program_run_count_total", "counter",
		  "Runs of the program counted by the kernel (BPF stats)." },
		{ "graind_program_run_time_seconds_total", "counter",
		  "Time the program ran, counted by the kernel (BPF stats)." },
		{ "graind_program_attach_failed", "gauge",
		  "1 when the program failed its last attach." },
	};
	Graind__Probe **probes = calloc(n_views ? n_views : 1, sizeof(*probes));

	if (!probes || !agent->probes)
		goto out;
	for (size_t i = 0; i < n_views; i++) {
		Graind__Probe *p = (Graind__Probe *)pbmsg_new(&graind__probe__descriptor);

		if (!p || pbmsg_set_string(&p->name, views[i]->probe) < 0) {
			pbmsg_free(p ? &p->base : NULL);
			continue;
		}
		p->spec = views[i]->spec;       /* borrowed */
		if (probe_status(agent->probes, p, NULL) < 0) {
			p->spec = NULL;
			pbmsg_free(&p->base);
			continue;
		}
		probes[i] = p;
	}
	for (size_t fam = 0; fam < sizeof(families) / sizeof(families[0]); fam++) {
		family_head(f, families[fam].name, families[fam].type, families[fam].help);
		for (size_t i = 0; i < n_views; i++)
			for (size_t j = 0; probes[i] && j < probes[i]->n_programs; j++) {
				const Graind__ProgramStatus *ps = probes[i]->programs[j];
				double v = fam == 0 ? (double)ps->run_count :
					   fam == 1 ? (double)ps->run_time_ns / 1e9 :
					   ps->state == GRAIND__PROGRAM_STATE__PROGRAM_FAILED;

				fprintf(f, "%s{probe=\"", families[fam].name);
				put_escaped(f, probes[i]->name);
				fputs("\",program=\"", f);
				put_escaped(f, ps->program);
				fputs("\"}", f);
				put_value(f, v);
			}
	}
out:
	for (size_t i = 0; probes && i < n_views; i++)
		if (probes[i]) {
			probes[i]->spec = NULL;
			pbmsg_free(&probes[i]->base);
		}
	free(probes);
}

/* ---------------------------------------------------------------- budgets */

/* What each measured probe costs (server/budget.h), and the limit it is
 * over, as 1 for as long as it is (a probe a breach detached included). */
struct budget_scrape {
	FILE *f;
	int family;                     /* 0-2: usage; 3: exceeded */
};

static const struct { const char *name, *help; } budget_families[] = {
	{ "graind_budget_cpu_percent", "Run time of the probe's programs as a share of one CPU, over its budget's window." },
	{ "graind_budget_events_per_second", "Records the probe's ring and perf buffers carried a second, drops included, over its budget's window." },
	{ "graind_budget_map_bytes", "Memory the probe's maps hold, as the kernel charges it." },
	{ "graind_budget_exceeded", "1 while the probe is over a limit of its budget, or detached for it." },
};

static void put_budget(const char *name, bool measured, const struct budget_usage *u,
		       bool exceeded, const struct budget_breach *br, void *ctx)
{
	struct budget_scrape *bs = ctx;
	const char *family = budget_families[bs->family].name;

	if (bs->family == 3 && exceeded) {
		fprintf(bs->f, "%s{probe=\"", family);
		put_escaped(bs->f, name);
		fprintf(bs->f, "\",limit=\"%s\"}", br->limit);
		put_value(bs->f, 1);
	} else if (bs->family < 3 && measured) {
		put_sample(bs->f, family, "probe", name,
			   bs->family == 0 ? u->cpu_percent : bs->family == 1 ? u->events_per_second :
			   (double)u->map_bytes);
	}
}

static void budget_metrics(FILE *f, struct agent *agent)
{
	struct budget_scrape bs = { .f = f };

	if (!agent->budgets)
		return;
	for (; bs.family < 4; bs.family++) {
		family_head(f, budget_families[bs.family].name, "gauge",
			    budget_families[bs.family].help);
		budgets_each(agent->budgets, put_budget, &bs);
	}
}

/* ---------------------------------------------------------------- maps */

struct map_scrape {
	struct scrape *sc;
	const struct collect_view *view;
	const struct collect_map *m;
	size_t series;          /* of this map */
	size_t dropped;
	size_t per_entry;       /* series the last entry gave */
};

static int add_series(struct scrape *sc, char *family, char *labels, double value,
		      bool gauge)
{
	if (sc->n == sc->cap) {
		size_t cap = sc->cap ? sc->cap * 2 : 256;
		struct series *grown = realloc(sc->series, cap * sizeof(*grown));

		if (!grown)
			goto oom;
		sc->series = grown;
		sc->cap = cap;
	}
	if (!family || !labels)
		goto oom;
	sc->series[sc->n] = (struct series){ family, labels, value, gauge, sc->n };
	sc->n++;
	return 0;
oom:
	free(family);
	free(labels);
	sc->oom = true;
	return -1;
}

/* probe="..." and one label per key field. */
static char *entry_labels(const char *probe, Graind__Field **key, size_t n_key)
{
	char text[LABEL_TEXT_MAX], name[128];
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	fputs("probe=\"", f);
	put_escaped(f, probe);
	fputc('"', f);
	for (size_t i = 0; i < n_key; i++) {
		const char *field = collect_field_name(key[i], "key");

		snprintf(name, sizeof(name), "%s%s",
			 isdigit((unsigned char)field[0]) || strcmp(field, "probe") == 0 ?
			 "key_" : "", field);
		sanitize(name, true);
		decode_field_text(key[i], text, sizeof(text));
		fprintf(f, ",%s=\"", name);
		put_escaped(f, text);
		fputc('"', f);
	}
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A counter family ends in _total, as Prometheus names counters. */
static const char *counter_suffix(const struct collect_map *m, const char *field)
{
	if (m->gauge || ends_with(*field ? field : m->shown, "_total"))
		return "";
	return "_total";
}

static int scrape_entry(const void *key, const void *value, void *ctx)
{
	struct map_scrape *ms = ctx;
	const struct collect_map *m = ms->m;
	Graind__Field **key_fields = NULL, **fields = NULL;
	size_t n_key = 0, n = 0, given = 0;
	char *labels = NULL;

	if (decode_fields(m->key_dec, key, m->key_size, "", &key_fields, &n_key) < 0 ||
	    collect_decode_value(m, value, &fields, &n) < 0 ||
	    !(labels = entry_labels(ms->view->probe, key_fields, n_key))) {
		ms->sc->oom = true;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const char *field = collect_field_name(fields[i], "");
		char *family = NULL;
		double v;

		if (!collect_field_selected(m, *field ? field : m->shown) ||
		    !decode_field_number(fields[i], &v))
			continue;
		given++;
		if (ms->series >= COLLECT_MAX_SERIES) {
			ms->dropped++;
			continue;
		}
		if (asprintf(&family, *field ? "graind_probe_%s_%s%s" : "graind_probe_%s%s%s",
			     m->shown, field, counter_suffix(m, field)) < 0)
			family = NULL;
		else
			sanitize(family, false);
		if (add_series(ms->sc, family, strdup(labels), v, m->gauge) < 0)
			goto out;
		ms->series++;
	}
	ms->per_entry = given;
out:
	free(labels);
	collect_fields_free(key_fields, n_key);
	collect_fields_free(fields, n);
	return ms->sc->oom ? -1 : 0;
}

/* A log2 histogram map: slot k of its integer key counts values in
 * [2^k, 2^(k+1)). Shown as one Prometheus histogram: cumulative buckets
 * with le = 2^(k+1), and a sum estimated from each slot's midpoint. */
#define LOG2_SLOTS 64

struct log2_scrape {
	const struct collect_map *m;
	double count[LOG2_SLOTS];
};

static int scrape_slot(const void *key, const void *value, void *ctx)
{
	struct log2_scrape *ls = ctx;
	Graind__Field **key_fields = NULL, **fields = NULL;
	size_t n_key = 0, n = 0;
	double slot, v;

	if (decode_fields(ls->m->key_dec, key, ls->m->key_size, "", &key_fields, &n_key) < 0 ||
	    collect_decode_value(ls->m, value, &fields, &n) < 0) {
		collect_fields_free(key_fields, n_key);
		return -1;
	}
	if (n_key == 1 && n >= 1 && decode_field_number(key_fields[0], &slot) &&
	    decode_field_number(fields[0], &v) && slot >= 0 && slot < LOG2_SLOTS)
		ls->count[(int)slot] += v;
	collect_fields_free(key_fields, n_key);
	collect_fields_free(fields, n);
	return 0;
}

/* A histogram of a map named for a unit of time ("latency_us") counts in
 * that unit; Prometheus wants seconds: the family is named "_seconds" in
 * its place and its bounds and sum are scaled to match. *scale is 1 for
 * any other map. */
static void log2_family(const struct collect_map *m, char *family, size_t n, double *scale)
{
	static const struct { const char *suffix; double scale; } units[] = {
		{ "_ns", 1e-9 }, { "_us", 1e-6 }, { "_ms", 1e-3 },
		{ "_nsecs", 1e-9 }, { "_usecs", 1e-6 }, { "_msecs", 1e-3 },
	};
	size_t len = strlen(m->shown);

	*scale = 1;
	snprintf(family, n, "graind_probe_%s", m->shown);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (ends_with(m->shown, units[i].suffix)) {
			*scale = units[i].scale;
			snprintf(family, n, "graind_probe_%.*s_seconds",
				 (int)(len - strlen(units[i].suffix)), m->shown);
			break;
		}
	sanitize(family, false);
}

/* The lines of one probe's histogram (its family's head comes first). */
static void log2_histogram(FILE *f, const struct collect_view *view, const struct collect_map *m)
{
	struct log2_scrape ls = { .m = m };
	char family[160], name[176], le[32];
	double cumulative = 0, sum = 0, scale;
	size_t total = 0;
	bool cut = false;
	int fd = collect_map_open(view->probe, m), top = 0;

	if (fd < 0)
		return;
	collect_walk(fd, m, LOG2_SLOTS, scrape_slot, &ls, &total, &cut);
	close(fd);
	log2_family(m, family, sizeof(family), &scale);
	for (int k = 0; k < LOG2_SLOTS; k++)
		if (ls.count[k])
			top = k;
	for (int k = 0; k <= top; k++) {
		cumulative += ls.count[k];
		sum += ls.count[k] * 1.5 * (double)(1ull << k) * scale;
		format_value(le, sizeof(le), (double)(1ull << (k + 1)) * scale);
		fprintf(f, "%s_bucket{probe=\"", family);
		put_escaped(f, view->probe);
		fprintf(f, "\",le=\"%s\"}", le);
		put_value(f, cumulative);
	}
	fprintf(f, "%s_bucket{probe=\"", family);
	put_escaped(f, view->probe);
	fputs("\",le=\"+Inf\"}", f);
	put_value(f, cumulative);
	snprintf(name, sizeof(name), "%s_sum", family);
	put_sample(f, name, "probe", view->probe, sum);
	snprintf(name, sizeof(name), "%s_count", family);
	put_sample(f, name, "probe", view->probe, cumulative);
}

struct map_drop {
	const char *probe, *map;
	size_t dropped;
};

static void scrape_map(struct scrape *sc, const struct collect_view *view,
		       const struct collect_map *m, struct map_drop *drop)
{
	struct map_scrape ms = { .sc = sc, .view = view, .m = m };
	size_t total = 0;
	bool cut = false;
	int fd = collect_map_open(view->probe, m);

	if (fd < 0)
		return;
	collect_walk(fd, m, COLLECT_MAX_SERIES, scrape_entry, &ms, &total, &cut);
	close(fd);
	if (cut)        /* entries not even read: as many series as the last */
		ms.dropped += (total - COLLECT_MAX_SERIES) * (ms.per_entry ? ms.per_entry : 1);
	*drop = (struct map_drop){ view->probe, m->shown, ms.dropped };
}

static int cmp_series(const void *a, const void *b)
{
	const struct series *x = a, *y = b;
	int c = strcmp(x->family, y->family);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static void print_series(FILE *f, struct scrape *sc)
{
	if (sc->n)		/* qsort must not get NULL, even for no series */
		qsort(sc->series, sc->n, sizeof(*sc->series), cmp_series);
	for (size_t i = 0; i < sc->n; i++) {
		const struct series *s = &sc->series[i];

		/* The first map of a family gives its type. */
		if (i == 0 || strcmp(s->family, sc->series[i - 1].family) != 0)
			family_head(f, s->family, s->gauge ? "gauge" : "counter",
				    "A value field of a probe map.");
		fprintf(f, "%s{%s}", s->family, s->labels);
		put_value(f, s->value);
	}
}

static bool is_log2(const struct collect_map *m)
{
	return m->out == COLLECT_OUT_METRIC && m->log2_histogram;
}

/* Every histogram map, grouped by family: one head, then every probe's
 * lines, as the text format wants a family's samples together. */
static void log2_histograms(FILE *f, struct collect_view **views, size_t n_views)
{
	char family[160], other[160];
	double scale;

	for (size_t i = 0; i < n_views; i++) {
		for (size_t j = 0; j < views[i]->n_maps; j++) {
			const struct collect_map *m = &views[i]->maps[j];
			bool seen = false;

			if (!is_log2(m))
				continue;
			log2_family(m, family, sizeof(family), &scale);
			/* Printed already with an earlier probe's map of this name? */
			for (size_t i2 = 0; i2 < i && !seen; i2++)
				for (size_t j2 = 0; j2 < views[i2]->n_maps && !seen; j2++) {
					log2_family(&views[i2]->maps[j2], other, sizeof(other),
						    &scale);
					seen = is_log2(&views[i2]->maps[j2]) && !strcmp(family, other);
				}
			if (seen)
				continue;
			family_head(f, family, "histogram", "A log2 histogram map of a probe.");
			for (size_t i2 = i; i2 < n_views; i2++)
				for (size_t j2 = 0; j2 < views[i2]->n_maps; j2++) {
					log2_family(&views[i2]->maps[j2], other, sizeof(other),
						    &scale);
					if (is_log2(&views[i2]->maps[j2]) && !strcmp(family, other))
						log2_histogram(f, views[i2], &views[i2]->maps[j2]);
				}
		}
	}
}

static void map_metrics(FILE *f, struct collect_view **views, size_t n_views, bool *oom)
{
	struct scrape sc = { 0 };
	struct map_drop *drops = NULL;
	size_t n_drops = 0, n_maps = 0;
	char help[96];

	for (size_t i = 0; i < n_views; i++)
		n_maps += views[i]->n_maps;
	drops = calloc(n_maps ? n_maps : 1, sizeof(*drops));
	if (!drops) {
		*oom = true;
		return;
	}
	for (size_t i = 0; i < n_views && !sc.oom; i++)
		for (size_t j = 0; j < views[i]->n_maps; j++)
			if (views[i]->maps[j].out == COLLECT_OUT_METRIC && !is_log2(&views[i]->maps[j]))
				scrape_map(&sc, views[i], &views[i]->maps[j], &drops[n_drops++]);
	print_series(f, &sc);
	log2_histograms(f, views, n_views);
	snprintf(help, sizeof(help), "Series of the map left out of this scrape (over the cap of %d).",
		 COLLECT_MAX_SERIES);
	family_head(f, "graind_metric_series_dropped", "gauge", help);
	for (size_t i = 0; i < n_drops; i++) {
		if (!drops[i].probe)
			continue;
		fputs("graind_metric_series_dropped{probe=\"", f);
		put_escaped(f, drops[i].probe);
		fputs("\",map=\"", f);
		put_escaped(f, drops[i].map);
		fputs("\"}", f);
		put_value(f, (double)drops[i].dropped);
	}
	*oom = sc.oom;
	for (size_t i = 0; i < sc.n; i++) {
		free(sc.series[i].family);
		free(sc.series[i].labels);
	}
	free(sc.series);
	free(drops);
}

char *collect_metrics_text(struct agent *agent, size_t *len)
{
	struct collect_view **views = NULL;
	size_t n_views = 0;
	bool oom = false;
	char *buf = NULL;
	FILE *f;

	*len = 0;
	f = open_memstream(&buf, len);
	if (!f)
		return NULL;
	if (collect_views(agent, &views, &n_views) < 0)
		oom = true;
	agent_metrics(f, agent);
	storage_metrics(f, agent);
	auth_metrics(f, agent);
	refusal_metrics(f);
	queue_metrics(f, agent);
	family_head(f, "graind_sample_buffer_dropped_total", "counter",
		    "Samples of the probe dropped at the bound of the store.");
	store_sample_drops(agent->store, put_drop, f);
	sink_metrics(f, agent);
	if (agent->confstat)
		confstat_metrics(agent->confstat, f);
	program_metrics(f, agent, views, n_views);
	budget_metrics(f, agent);
	if (!oom)
		map_metrics(f, views, n_views, &oom);
	collect_views_free(views, n_views);
	if (fclose(f) != 0 || oom) {
		free(buf);
		*len = 0;
		return NULL;
	}
	return buf;
}
