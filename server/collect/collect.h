/* collect: turns what attached probes count or emit into samples.
 *
 * One collector thread runs an epoll loop over the ring buffers and perf
 * buffers of every attached probe, plus a timer that polls metric maps at
 * their intervals. Records are decoded with the object's BTF (decode.h)
 * into graind.Sample messages, queued per probe in fixed-size queues
 * (overflow counted, never unbounded memory), and written to the store in
 * batches: one transaction per batch, bounded by rows and milliseconds.
 * API threads never block on it.
 *
 * Which maps feed samples follows the probe's outputs (ProbeSpec.outputs);
 * by default BTF-typed hash/array/LRU maps (per-CPU too) are polled as
 * metrics every second, ringbuf and perf event array maps are drained as
 * events, and internal maps (.rodata/.data/.bss/.kconfig) and program
 * arrays give nothing; an object may change a map's default with a BTF
 * decl tag on it, "graind.output=none" or "graind.output=log2_histogram"
 * (bpf/output.h). A map the outputs do not name keeps its default
 * (`none` silences one).
 *
 * Metric samples: one per map entry and numeric value field, named
 * "<map>.<field>" (or "<map>" for a plain number), with the key's decoded
 * fields as tags ("key" for a plain number); per-CPU values summed.
 * Counters with `delta` give the increase since the previous poll, per
 * series (the entry's key bytes and the value field): the first poll only
 * records, and a counter that did not move gives nothing.
 *
 * Event samples: one per record, value 1, with its decoded fields. A ring
 * buffer or perf event array has no value type, so its record type is the
 * one the spec names (events.recordType), else the BTF struct named after
 * the map ("events"), in the singular ("event"), or with "_event"/"_record"
 * added, else the only struct the object defines (one a global variable
 * or a map's value is, not a kernel type) whose size fits the records,
 * decided at the first record of each size (a perf record is padded, so
 * up to 7 bytes more fit). It must be in the object's BTF (e.g. a global
 * `struct event *unused_event;`). Otherwise records are decoded raw, and
 * the probe's status (Probe.warnings, through probe_set_warnings()) says
 * why and names the candidates.
 * With count_by or histogram_field the records are aggregated in the
 * agent instead and flushed every second as counter samples:
 * "<map>.count" tagged with the count_by fields, and with a histogram
 * "<map>.<field>_sum" and cumulative "<map>.<field>_bucket" tagged
 * le=1,2,4,...; groups are bounded (the overflow counts as "_other"). */
#ifndef GRAIND_COLLECT_H
#define GRAIND_COLLECT_H

#include <stdint.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

struct agent;
struct collector;
struct store;

/* Samples waiting for the store, per probe, at most (and 32 MiB); all the
 * probes' queues together hold at most agent->cfg.queue_bytes bytes
 * (--queue-bytes). A source whose probe has half as many waiting, or
 * whose agent has half that many bytes waiting, stops reading its ring or
 * perf buffer until they are down to an eighth: its records wait in the
 * kernel, which drops (and counts) what does not fit there. A chunk that
 * does not fit is dropped and counted against its probe. */
#define COLLECT_QUEUE_MAX 262144

struct collect_stats {
	uint64_t collected;        /* samples made from kernel data */
	uint64_t stored;           /* samples committed to the store */
	uint64_t queue_dropped;    /* samples lost to full queues or failed writes */
	uint64_t queue_overflow;   /* of those: every queue together was full */
	uint64_t queue_depth;      /* samples waiting now */
	uint64_t queue_bytes;      /* their bytes */
	uint64_t queue_max_bytes;  /* the bound of queue_bytes */
	uint64_t events_lost;      /* perf buffer records the kernel lost */
	uint64_t batches;          /* committed batches */
	uint64_t batch_commit_us;  /* time spent committing, total */
	uint64_t decode_errors;
	uint64_t write_retries;    /* batches the storage refused, kept and tried again */
};

/* Start the collector thread; it follows the probes the store says are
 * attached. *out is stopped with collect_stop(). */
int collect_start(struct agent *agent, struct collector **out, struct gerr *err);

/* Flush what is queued to the store, stop the thread, free everything. */
void collect_stop(struct collector *c);

/* A probe was attached, updated, detached or deleted: the collector
 * re-reads its spec and pinned maps. Returns once the collector has done
 * so, so that what the probe writes after the API answered is read; or,
 * when the collector is busy or stuck, after COLLECT_CHANGE_WAIT_MS on the
 * monotonic clock (a wall-clock jump changes nothing), whichever is
 * first. It never waits longer than that and takes no lock the collector
 * holds for long, so a caller may hold agent->probe_lock. A change it
 * gave up waiting for is still applied, in order, once the collector gets
 * to it. */
#define COLLECT_CHANGE_WAIT_MS 2000
void collect_probe_changed(struct collector *c, const char *probe);

void collect_get_stats(struct collector *c, struct collect_stats *out);

/* fn for every attached probe the collector follows, with its spec, from
 * the collector's memory (no store read); fn runs without its locks. */
void collect_each_attached(struct collector *c,
			   void (*fn)(const char *probe, const Graind__ProbeSpec *spec, void *ctx),
			   void *ctx);

/* The records the ring and perf buffers of probe `name` carried to the
 * collector, and those the kernel could not hand over (perf buffer lost
 * counts), since the collector started reading it; 0 and 0 when it does
 * not read it. For budgets. */
void collect_probe_events(struct collector *c, const char *name, uint64_t *records,
			  uint64_t *lost);

/* Refuse a spec that cannot decode as it says: 400 when an events output
 * names a record type (events.recordType) that is no struct or typedef of
 * the object's BTF (obj, len bytes; a built-in's or a stored object's),
 * the message listing the structs the object defines (cut to fit). 0 when
 * no output names one; an object libbpf cannot open is left for the
 * attach to refuse. Called before a probe is stored. */
int collect_check_spec(const Graind__ProbeSpec *spec, const void *obj, size_t len,
		       struct gerr *err);

/* collect_check_spec() with the object the spec names, read from `st`
 * only when an output names a record type (then its errors are
 * builtin_spec_object()'s: 400 no object named, 404 none stored). */
int collect_check_stored_spec(struct store *st, const Graind__ProbeSpec *spec,
			      struct gerr *err);

/* Live decoded dump of a probe's pinned map (GET /v1/probes/{p}/maps/{m}).
 * *out is a Graind__MapDump the caller frees with pbmsg_free(). 404 when
 * the probe or map does not exist or is not pinned. */
int collect_dump_map(struct agent *agent, const char *probe, const char *map,
		     Graind__MapDump **out, struct gerr *err);

/* The Prometheus text exposition for GET /metrics, malloc'd (*len bytes):
 * agent self-metrics (samples collected/stored/dropped, queue depth,
 * batch commit time, SQLite size, buffer drops per probe, per-program
 * kernel run count and run time, attach failures) and every metric-kind
 * probe map as a family "graind_probe_<map>_<field>" ("_total" added to
 * counters) with labels probe= and the decoded key fields (label names
 * sanitised; a log2 histogram of a map named "<x>_ns", "_us" or "_ms" as
 * "graind_probe_<x>_seconds", its bounds and sum in seconds; at most
 * COLLECT_MAX_SERIES series per map, the rest counted in the gauge
 * graind_metric_series_dropped{probe,map} of each scrape). NULL when out
 * of memory. */
#define COLLECT_MAX_SERIES 10000
char *collect_metrics_text(struct agent *agent, size_t *len);

#endif
