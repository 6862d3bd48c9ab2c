/* grainctl status, maps dump, samples ls: what the agents know and count. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "server/grainctl/ctl.h"

/* ---------------------------------------------------------------- status */

static const char *const status_cols[] = { "VERSION", "KERNEL", "UPTIME", "OBJECTS", "PROBES",
					   "SAMPLES", "DATABASE", "SINKS", "MISSING" };

static void status_rows(struct ctl_rows *r, const ProtobufCMessage *m)
{
	const Graind__AgentStatus *s = (const void *)m;
	const Graind__Features *f = s->features;
	char up[32], objs[32], probes[32], samples[32], db[32], sinks[16], missing[256] = "";
	const ProtobufCMessageDescriptor *d = &graind__features__descriptor;

	/* Every FeatureState field of Features, by its proto name: a feature
	 * added to the schema is listed without an edit here. */
	for (unsigned i = 0; f && i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *fd = &d->fields[i];

		if (fd->type == PROTOBUF_C_TYPE_ENUM &&
		    fd->descriptor == &graind__feature_state__descriptor &&
		    *(const int *)((const char *)f + fd->offset) ==
			    GRAIND__FEATURE_STATE__FEATURE_MISSING)
			snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing),
				 "%s%s", missing[0] ? "," : "", fd->name);
	}
	snprintf(up, sizeof(up), "%" PRIu64 "s", s->uptime_seconds);
	snprintf(objs, sizeof(objs), "%" PRIu64, s->object_count);
	snprintf(probes, sizeof(probes), "%" PRIu64, s->probe_count);
	snprintf(samples, sizeof(samples), "%" PRIu64, s->sample_count);
	snprintf(db, sizeof(db), "%" PRIu64, s->database_bytes);
	snprintf(sinks, sizeof(sinks), "%zu", s->n_sinks);
	ctl_row(r, (const char *[]){ s->version, s->kernel_release, up, objs, probes, samples,
				     db, sinks, missing });
}

static int status(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = {
		&graind__agent_status__descriptor, 9, status_cols, status_rows,
	};
	struct client_request req = { "GET", "/v1/status" };

	(void)a;
	return ctl_execute(ctl, &req, &view);
}

/* ---------------------------------------------------------------- maps */

static const char *const dump_cols[] = { "KEY", "VALUE" };

static void hex(const ProtobufCBinaryData *b, char *buf, size_t n)
{
	size_t used = 0;

	buf[0] = 0;
	for (size_t i = 0; i < b->len && used + 3 <= n; i++)
		used += snprintf(buf + used, n - used, "%02x", b->data[i]);
}

static void dump_rows(struct ctl_rows *r, const ProtobufCMessage *m)
{
	const Graind__MapDump *d = (const void *)m;

	for (size_t i = 0; i < d->n_entries; i++) {
		const Graind__MapEntry *e = d->entries[i];
		char key[1024], value[2048];

		if (d->decoded && (e->n_key || e->n_value)) {
			ctl_fields_text(e->key, e->n_key, key, sizeof(key));
			ctl_fields_text(e->value, e->n_value, value, sizeof(value));
		} else {
			hex(&e->raw_key, key, sizeof(key));
			hex(&e->raw_value, value, sizeof(value));
		}
		ctl_row(r, (const char *[]){ key, value });
	}
	if (d->warning[0])
		fprintf(stderr, "%s%s%s/%s: %s\n", r->host ? r->host : "", r->host ? ": " : "",
			d->probe, d->map, d->warning);
}

static int maps_dump(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = {
		&graind__map_dump__descriptor, 2, dump_cols, dump_rows,
	};
	char *p = client_escape(a->pos[0]), *m = client_escape(a->pos[1]), *path = NULL;
	struct client_request req = { "GET" };
	int ret = CTL_EXIT_HOST;

	if (!p || !m || asprintf(&path, "/v1/probes/%s/maps/%s", p, m) < 0) {
		path = NULL;
		fprintf(stderr, "grainctl: out of memory\n");
		goto out;
	}
	req.path = path;
	ret = ctl_execute(ctl, &req, &view);
out:
	free(path);
	free(p);
	free(m);
	return ret;
}

/* ---------------------------------------------------------------- samples */

static const char *const sample_cols[] = { "ID", "TIME", "PROBE", "MAP", "KIND", "NAME",
					   "VALUE", "LABELS" };

static void samples_rows(struct ctl_rows *r, const ProtobufCMessage *m)
{
	const Graind__ListSamplesResponse *l = (const void *)m;

	for (size_t i = 0; i < l->n_samples; i++) {
		const Graind__Sample *s = l->samples[i];
		char id[32], value[64] = "", tags[1024] = "", fields[1024] = "", labels[2100];
		size_t used = 0;

		snprintf(id, sizeof(id), "%" PRIu64, s->id);
		if (s->kind == GRAIND__SAMPLE_KIND__METRIC)
			snprintf(value, sizeof(value), "%.17g", s->value);
		for (size_t t = 0; t < s->n_tags && used + 1 < sizeof(tags); t++)
			used += snprintf(tags + used, sizeof(tags) - used, "%s%s=%s",
					 used ? " " : "", s->tags[t]->key, s->tags[t]->value);
		ctl_fields_text(s->fields, s->n_fields, fields, sizeof(fields));
		snprintf(labels, sizeof(labels), "%s%s%s", tags, tags[0] && fields[0] ? " " : "",
			 fields);
		ctl_row(r, (const char *[]){ id, s->time, s->probe, s->map,
					     s->kind == GRAIND__SAMPLE_KIND__EVENT ? "event" : "metric",
					     s->name, value, labels });
	}
	if (l->n_samples && l->next_page_token[0])
		fprintf(stderr, "%s%snext page: --after %s\n", r->host ? r->host : "",
			r->host ? ": " : "", l->next_page_token);
}

static int append_query(char **q, const char *key, const char *value)
{
	char *e, *n;

	if (!value)
		return 0;
	if (!(e = client_escape(value)))
		return -1;
	if (asprintf(&n, "%s%c%s=%s", *q, strchr(*q, '?') ? '&' : '?', key, e) < 0) {
		free(e);
		return -1;
	}
	free(e);
	free(*q);
	*q = n;
	return 0;
}

static bool is_number(const char *s)
{
	return s && *s && strspn(s, "0123456789") == strlen(s) && strlen(s) < 20;
}

static int samples_ls(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = {
		&graind__list_samples_response__descriptor, 8, sample_cols, samples_rows,
	};
	struct client_request req = { "GET" };
	char *path = strdup("/v1/samples");
	int ret;

	for (int i = 2; i <= 3; i++)
		if (a->opt[i] && !is_number(a->opt[i])) {
			fprintf(stderr, "grainctl: --%s %s: a number\n", i == 2 ? "after" : "limit",
				a->opt[i]);
			free(path);
			return CTL_EXIT_USAGE;
		}
	if (!path || append_query(&path, "probe", a->opt[0]) < 0 ||
	    append_query(&path, "map", a->opt[1]) < 0 ||
	    append_query(&path, "after", a->opt[2]) < 0 ||
	    append_query(&path, "limit", a->opt[3]) < 0) {
		free(path);
		fprintf(stderr, "grainctl: out of memory\n");
		return CTL_EXIT_HOST;
	}
	req.path = path;
	ret = ctl_execute(ctl, &req, &view);
	free(path);
	return ret;
}

const struct ctl_cmd ctl_data_cmds[] = {
	{ "status", NULL, "", "each agent's version, kernel, counts and missing kernel features",
	  0, 0, { { 0 } }, status },
	{ "maps", "dump", "PROBE MAP", "a probe's map, read live and decoded from BTF", 2, 2,
	  { { 0 } }, maps_dump },
	{ "samples", "ls", "[--probe P] [--map M] [--after ID] [--limit N]",
	  "stored samples, oldest first; the next page starts --after the last id", 0, 0,
	  { { "probe", 0, true, "only this probe's samples" },
	    { "map", 0, true, "only this map's samples" },
	    { "after", 0, true, "samples with a greater id" },
	    { "limit", 0, true, "at most this many (agent default 100, at most 10000)" } },
	  samples_ls },
	{ "samples", "tail", "[-f] [--probe P] [--map M] [--after ID]",
	  "one agent's samples after --after (default: all buffered); with -f, then each new one as it "
	  "is stored, until interrupted, resuming after a disconnect without gaps or repeats", 0, 0,
	  { { "probe", 0, true, "only this probe's samples" },
	    { "map", 0, true, "only this map's samples" },
	    { "after", 0, true, "samples with a greater id" },
	    { "follow", 'f', false, "keep following the agent's watch stream" } },
	  ctl_samples_tail },
	{ 0 }
};
