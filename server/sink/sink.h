/* sink: forwards buffered samples to StatsD and S3, at least once.
 *
 * One forwarder thread per configured sink reads samples after the sink's
 * cursor (store_samples_list), filters them by the sink's selector, hands
 * a batch to the sink's driver (statsd.h, s3.h), and on success moves the
 * cursor in the same transaction that records the delivery
 * (store_sink_delivered). On failure it records the error and retries
 * with exponential backoff and jitter (100 ms doubling to 60 s). A sample
 * is therefore delivered at least once; S3 keys are derived from the id
 * range, and an S3 batch's range is stored before its first PUT
 * (store_sink_pending), so a retry, also after a crash, rewrites the same
 * objects.
 *
 * Samples are read 1000 at a time, so a forwarder holds the store lock
 * for one page at most, and never while it encodes or sends. Nothing here
 * waits for the network: a forwarder told to stop cancels its send (S3:
 * within about a second; a StatsD host name's lookup: within 50 ms).
 *
 * Samples delivered to every sink are pruned after the retention
 * (--sink-retention, default 1 h), checked every 10 s.
 *
 * Batches: StatsD reads up to 1000 samples at a time and sends them at
 * once, looking for more every flush_interval_ms (default 1 s). S3 sends
 * a batch when it holds batch_max_rows (default 10000) or
 * batch_max_bytes (default 16 MiB, packed) or its first sample is
 * batch_max_age_ms old (default 60 s); one object per probe, and the
 * cursor moves only once every object of the batch is written. A failed
 * batch is retried as it was, so a retry writes the same keys. */
#ifndef GRAIND_SINK_H
#define GRAIND_SINK_H

#include <stdint.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

struct store_sink;

struct agent;
struct sinks;

/* Start a forwarder for every stored sink. */
int sinks_start(struct agent *agent, struct sinks **out, struct gerr *err);

/* Stop every forwarder (a batch in flight is cancelled without moving the
 * cursor, and sent again at the next start), free everything. Returns
 * within about a second whatever the sinks' peers do. */
void sinks_stop(struct sinks *s);

/* A sink was created, changed or deleted: (re)start or stop its
 * forwarder. Returns at once: the forwarder replaced is told to stop (a
 * send in flight is cancelled), and its successor waits for it in its
 * own thread before it reads the cursor, so the two never overlap. */
void sinks_changed(struct sinks *s, const char *name);

/* Fill sink->health (lag in rows and seconds, last success, last error,
 * counters, cursor) of a Graind__Sink whose name is set, from its stored
 * row and what its forwarder knows; it reads no SQLite. */
int sinks_health(struct sinks *s, Graind__Sink *sink, const struct store_sink *row,
		 struct gerr *err);

/* Failed delivery attempts of sink `name` since its forwarder started
 * (0 for an unknown sink), for /metrics. */
uint64_t sinks_errors(struct sinks *s, const char *name);

/* Validate a sink configuration before it is stored (400 naming the
 * field: missing host/port/bucket/endpoint, max_datagram below 64 or
 * above 65507, unreadable secret_file, ...). */
int sinks_check_config(const Graind__Sink *sink, struct gerr *err);

#endif
