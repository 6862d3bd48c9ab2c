/* statsd: samples as StatsD lines over UDP.
 *
 * Counters as deltas ("name:3|c"), gauges ("name:7|g"), histogram
 * aggregates as timers ("name:12|ms"). Names and tags are sanitised;
 * tags follow the sink's dialect: none (folded into the name:
 * "prefix.map.field.tag_value"), dogstatsd ("|#k:v,k2:v2"), influx
 * ("name,k=v,k2=v2:1|c"), graphite ("name;k=v;k2=v2:1|c"). Many lines per
 * datagram, never above max_datagram bytes (default 1432). */
#ifndef GRAIND_STATSD_H
#define GRAIND_STATSD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

struct statsd;

/* Resolve host:port and open the UDP socket. An address needs no lookup;
 * a name is looked up without waiting past `cancel` (may be NULL)
 * becoming true: then 503 "statsd: looking up <host>: cancelled". */
int statsd_open(const Graind__StatsdSink *cfg, const atomic_bool *cancel,
		struct statsd **out, struct gerr *err);
void statsd_close(struct statsd *sd);

/* Send the samples: metric samples as lines (counters as the change since
 * the previous value of the same series, kept per series in memory and
 * restored by statsd_recall), event samples as a counter "<map>.events"
 * by 1. *bytes gets the bytes sent. Fails (502 with the socket error)
 * when sending fails. */
int statsd_send(struct statsd *sd, Graind__Sample *const *samples, size_t n,
		size_t *bytes, struct gerr *err);

/* Take samples that were sent before, by an earlier run of the sink
 * (before a restart, or before its settings changed): their values become
 * the previous values of their counter series, so that the first change
 * after them goes out instead of being taken as a first value. Sends
 * nothing. */
void statsd_recall(struct statsd *sd, Graind__Sample *const *samples, size_t n);

#endif
