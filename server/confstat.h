/* confstat: what the last pass over --config-dir found, for the status
 * and /metrics.
 *
 * The config-dir driver (server/confdir.c) publishes a report after each
 * pass; the service layer and the metrics writer read it. It keeps copies,
 * under its own lock, so either side may run on any thread. */
#ifndef GRAIND_CONFSTAT_H
#define GRAIND_CONFSTAT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

struct confstat;

/* One file that did not parse or could not be applied. */
struct confstat_error {
	const char *file;
	const char *message;
};

/* NULL when out of memory. */
struct confstat *confstat_new(const char *dir);
void confstat_free(struct confstat *cs);

/* The report of a pass that read `files` document files, after which the
 * files own `managed` probes and sinks. */
int confstat_publish(struct confstat *cs, size_t files, size_t managed,
		     const struct confstat_error *errors, size_t n_errors);

/* The last report as a message, the caller's to free (pbmsg_free). */
int confstat_status(struct confstat *cs, Graind__ConfigDirStatus **out, struct gerr *err);

/* Changes with every report confstat_status() would answer differently. */
uint64_t confstat_generation(struct confstat *cs);

/* Its families in the Prometheus text format: graind_config_dir_files,
 * _managed, _errors (gauges) and _passes_total. */
void confstat_metrics(struct confstat *cs, FILE *f);

#endif
