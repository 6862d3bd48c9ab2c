/* confstat: what the last pass over --config-dir found. */
#define _GNU_SOURCE
#include "server/confstat.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "server/util/clock.h"
#include "server/util/pbmsg.h"

struct confstat {
	pthread_mutex_t lock;
	char *dir;
	size_t files, managed;
	char **error_files, **error_messages;
	size_t n_errors;
	unsigned long long passes;
	int64_t last_ms;                /* 0: no pass yet */
};

struct confstat *confstat_new(const char *dir)
{
	struct confstat *cs = calloc(1, sizeof(*cs));

	if (!cs || !(cs->dir = strdup(dir))) {
		free(cs);
		return NULL;
	}
	pthread_mutex_init(&cs->lock, NULL);
	return cs;
}

static void clear_errors(struct confstat *cs)
{
	for (size_t i = 0; i < cs->n_errors; i++) {
		free(cs->error_files[i]);
		free(cs->error_messages[i]);
	}
	free(cs->error_files);
	free(cs->error_messages);
	cs->error_files = cs->error_messages = NULL;
	cs->n_errors = 0;
}

void confstat_free(struct confstat *cs)
{
	if (!cs)
		return;
	clear_errors(cs);
	pthread_mutex_destroy(&cs->lock);
	free(cs->dir);
	free(cs);
}

int confstat_publish(struct confstat *cs, size_t files, size_t managed,
		     const struct confstat_error *errors, size_t n_errors)
{
	char **ef = calloc(n_errors ? n_errors : 1, sizeof(*ef));
	char **em = calloc(n_errors ? n_errors : 1, sizeof(*em));
	int ret = 0;

	for (size_t i = 0; ef && em && i < n_errors; i++)
		if (!(ef[i] = strdup(errors[i].file)) || !(em[i] = strdup(errors[i].message)))
			ret = -1;
	if (!ef || !em)
		ret = -1;
	pthread_mutex_lock(&cs->lock);
	clear_errors(cs);
	if (ret == 0) {
		cs->error_files = ef;
		cs->error_messages = em;
		cs->n_errors = n_errors;
	}
	cs->files = files;
	cs->managed = managed;
	cs->passes++;
	cs->last_ms = clock_unix_ms();
	pthread_mutex_unlock(&cs->lock);
	if (ret < 0) {
		for (size_t i = 0; ef && em && i < n_errors; i++) {
			free(ef[i]);
			free(em[i]);
		}
		free(ef);
		free(em);
	}
	return ret;
}

int confstat_status(struct confstat *cs, Graind__ConfigDirStatus **out, struct gerr *err)
{
	Graind__ConfigDirStatus *st = (void *)pbmsg_new(&graind__config_dir_status__descriptor);
	int ret = -1;

	*out = st;
	if (!st)
		return gerr_set(err, 500, "out of memory");
	pthread_mutex_lock(&cs->lock);
	st->files = cs->files;
	st->managed = cs->managed;
	if (pbmsg_set_string(&st->dir, cs->dir) < 0 ||
	    (cs->last_ms && pbmsg_set_time(&st->last_applied, cs->last_ms) < 0) ||
	    !(st->errors = calloc(cs->n_errors ? cs->n_errors : 1, sizeof(*st->errors))))
		goto out;
	for (size_t i = 0; i < cs->n_errors; i++) {
		Graind__ConfigFileError *e = (void *)pbmsg_new(&graind__config_file_error__descriptor);

		if (!e)
			goto out;
		st->errors[st->n_errors++] = e;
		if (pbmsg_set_string(&e->file, cs->error_files[i]) < 0 ||
		    pbmsg_set_string(&e->message, cs->error_messages[i]) < 0)
			goto out;
	}
	ret = 0;
out:
	pthread_mutex_unlock(&cs->lock);
	return ret < 0 ? gerr_set(err, 500, "out of memory") : 0;
}

uint64_t confstat_generation(struct confstat *cs)
{
	uint64_t passes;

	pthread_mutex_lock(&cs->lock);
	passes = cs->passes;
	pthread_mutex_unlock(&cs->lock);
	return passes;
}

void confstat_metrics(struct confstat *cs, FILE *f)
{
	pthread_mutex_lock(&cs->lock);
	fprintf(f, "# HELP graind_config_dir_files Document files of --config-dir read by the last pass.\n"
		   "# TYPE graind_config_dir_files gauge\ngraind_config_dir_files %zu\n"
		   "# HELP graind_config_dir_managed Probes and sinks the files of --config-dir own.\n"
		   "# TYPE graind_config_dir_managed gauge\ngraind_config_dir_managed %zu\n"
		   "# HELP graind_config_dir_errors Files of --config-dir that do not parse or could not be applied.\n"
		   "# TYPE graind_config_dir_errors gauge\ngraind_config_dir_errors %zu\n"
		   "# HELP graind_config_dir_passes_total Passes over the files of --config-dir.\n"
		   "# TYPE graind_config_dir_passes_total counter\ngraind_config_dir_passes_total %llu\n",
		cs->files, cs->managed, cs->n_errors, cs->passes);
	pthread_mutex_unlock(&cs->lock);
}
