/* Warnings about probes that other parts of the agent find (the
 * collector: why a map's records are shown as hex), kept in memory for
 * probe_status() to show. A lock of their own: the manager's is held for
 * as long as the verifier runs, and the collector thread must not wait
 * for that. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "server/util/pbmsg.h"
#include "server/probe/internal.h"

struct warned {
	struct warned *next;
	char *probe;
	char **texts;
	size_t n;
};

struct probe_warnings {
	pthread_mutex_t lock;
	struct warned *head;
};

static void warned_free(struct warned *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->texts[i]);
	free(w->texts);
	free(w->probe);
	free(w);
}

struct probe_warnings *probe_warnings_new(void)
{
	struct probe_warnings *pw = calloc(1, sizeof(*pw));

	if (pw)
		pthread_mutex_init(&pw->lock, NULL);
	return pw;
}

void probe_warnings_free(struct probe_warnings *pw)
{
	if (!pw)
		return;
	while (pw->head) {
		struct warned *w = pw->head;

		pw->head = w->next;
		warned_free(w);
	}
	pthread_mutex_destroy(&pw->lock);
	free(pw);
}

/* A copy of texts for probe `name`, NULL when out of memory. */
static struct warned *warned_new(const char *name, const char *const *texts, size_t n)
{
	struct warned *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->probe = strdup(name);
	w->texts = calloc(n, sizeof(*w->texts));
	if (!w->probe || !w->texts)
		goto fail;
	for (; w->n < n; w->n++)
		if (!(w->texts[w->n] = strdup(texts[w->n])))
			goto fail;
	return w;
fail:
	warned_free(w);
	return NULL;
}

int probe_warnings_set(struct probe_warnings *pw, const char *name, const char *const *texts,
		       size_t n)
{
	struct warned *fresh = NULL, *old = NULL;

	if (n && !(fresh = warned_new(name, texts, n)))
		return -1;
	pthread_mutex_lock(&pw->lock);
	for (struct warned **pp = &pw->head; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->probe, name) == 0) {
			old = *pp;
			*pp = old->next;
			break;
		}
	if (fresh) {
		fresh->next = pw->head;
		pw->head = fresh;
	}
	pthread_mutex_unlock(&pw->lock);
	if (old)
		warned_free(old);
	return 0;
}

int probe_warnings_fill(struct probe_warnings *pw, Graind__Probe *probe)
{
	int ret = 0;

	for (size_t i = 0; i < probe->n_warnings; i++)
		if (probe->warnings[i] != protobuf_c_empty_string)
			free(probe->warnings[i]);
	free(probe->warnings);
	probe->warnings = NULL;
	probe->n_warnings = 0;
	pthread_mutex_lock(&pw->lock);
	for (const struct warned *w = pw->head; w; w = w->next) {
		if (strcmp(w->probe, probe->name) != 0)
			continue;
		probe->warnings = calloc(w->n, sizeof(*probe->warnings));
		for (size_t i = 0; probe->warnings && i < w->n; i++) {
			if (pbmsg_set_string(&probe->warnings[i], w->texts[i]) < 0)
				break;
			probe->n_warnings++;
		}
		ret = probe->n_warnings == w->n ? 0 : -1;
		break;
	}
	pthread_mutex_unlock(&pw->lock);
	return ret;
}
