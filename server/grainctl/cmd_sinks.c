/* grainctl sinks: ls, get, apply, rm. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "server/grainctl/ctl.h"

static const char *const sink_cols[] = { "NAME", "KIND", "TARGET", "CURSOR", "LAG ROWS",
					 "LAST SUCCESS", "LAST ERROR" };

static void sink_row(struct ctl_rows *r, const Graind__Sink *s)
{
	char target[512] = "-", cursor[32] = "", lag[32] = "";
	const char *kind = "-";
	const Graind__SinkHealth *h = s->health;

	if (s->kind_case == GRAIND__SINK__KIND_STATSD) {
		kind = "statsd";
		snprintf(target, sizeof(target), "%s:%u", s->statsd->host, s->statsd->port);
	} else if (s->kind_case == GRAIND__SINK__KIND_S3) {
		kind = "s3";
		snprintf(target, sizeof(target), "%s/%s", s->s3->endpoint, s->s3->bucket);
	}
	if (h) {
		snprintf(cursor, sizeof(cursor), "%" PRIu64, h->cursor);
		snprintf(lag, sizeof(lag), "%" PRIu64, h->lag_rows);
	}
	ctl_row(r, (const char *[]){ s->name, kind, target, cursor, lag,
				     h ? h->last_success : NULL, h ? h->last_error : NULL });
}

static void sinks_rows(struct ctl_rows *r, const ProtobufCMessage *m)
{
	const Graind__ListSinksResponse *l = (const void *)m;

	for (size_t i = 0; i < l->n_sinks; i++)
		sink_row(r, l->sinks[i]);
}

static void one_sink_rows(struct ctl_rows *r, const ProtobufCMessage *m)
{
	sink_row(r, (const void *)m);
}

static const struct ctl_view sink_view = {
	&graind__sink__descriptor, 7, sink_cols, one_sink_rows,
};

static int on_sink(struct ctl *ctl, struct client_request *req, const char *name,
		   const struct ctl_view *view)
{
	char *e = client_escape(name), *path = NULL;
	int ret;

	if (!e || asprintf(&path, "/v1/sinks/%s", e) < 0) {
		free(e);
		fprintf(stderr, "grainctl: out of memory\n");
		return CTL_EXIT_HOST;
	}
	free(e);
	req->path = path;
	ret = ctl_execute(ctl, req, view);
	free(path);
	return ret;
}

static int sinks_ls(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = {
		&graind__list_sinks_response__descriptor, 7, sink_cols, sinks_rows,
	};
	struct client_request req = { "GET", "/v1/sinks" };

	(void)a;
	return ctl_execute(ctl, &req, &view);
}

static int sinks_get(struct ctl *ctl, const struct ctl_args *a)
{
	struct client_request req = { "GET" };

	return on_sink(ctl, &req, a->pos[0], &sink_view);
}

static int sinks_rm(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = { NULL, .done = "deleted" };
	struct client_request req = { "DELETE" };

	return on_sink(ctl, &req, a->pos[0], &view);
}

static int sinks_apply(struct ctl *ctl, const struct ctl_args *a)
{
	struct client_request req = { "PUT" };
	void *body = NULL;
	size_t len = 0;
	int ret;

	if (!a->opt[0]) {
		fprintf(stderr, "grainctl: sinks apply: -f SINK.json is needed\n");
		return CTL_EXIT_USAGE;
	}
	if (ctl_json_file_to_pb(a->opt[0], &graind__sink__descriptor, &body, &len) < 0)
		return CTL_EXIT_USAGE;
	req.body = body ? body : "";
	req.body_len = len;
	req.content_type = "application/x-protobuf";
	ret = on_sink(ctl, &req, a->pos[0], &sink_view);
	free(body);
	return ret;
}

const struct ctl_cmd ctl_sink_cmds[] = {
	{ "sinks", "ls", "", "list the sinks with their delivery health", 0, 0, { { 0 } },
	  sinks_ls },
	{ "sinks", "get", "NAME", "one sink", 1, 1, { { 0 } }, sinks_get },
	{ "sinks", "apply", "NAME -f SINK.json",
	  "create or replace a sink from a graind.Sink in proto3 JSON", 1, 1,
	  { { "file", 'f', true, "the Sink (JSON)" } }, sinks_apply },
	{ "sinks", "rm", "NAME", "delete a sink", 1, 1, { { 0 } }, sinks_rm },
	{ 0 }
};
