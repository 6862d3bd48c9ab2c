/* grainctl samples tail: the samples of one agent as they come.
 *
 * Without -f: what the buffer holds after --after, page by page, then
 * exit. With -f: the agent's watch stream (GET /v1/samples:watch, Server-
 * Sent Events), followed until interrupted; after a disconnect (the
 * agent restarting, the network) it reconnects with the last id it
 * printed as Last-Event-ID, so nothing is missed or shown twice. */
#define _GNU_SOURCE             /* asprintf */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/grainctl/client.h"
#include "server/grainctl/ctl.h"
#include "server/util/codec.h"
#include "server/util/pbmsg.h"

#define RECONNECT_MS 1000
#define IDLE_MS 45000           /* three of the agent's keep-alives */
#define LINE_MAX_BYTES (4 << 20)

struct tail {
	struct ctl *ctl;
	uint64_t last_id;
	/* The SSE parser: the line being read, the event being built. */
	char *line;
	size_t line_len, line_cap;
	char event[32];
	char *data;
	uint64_t id;
	bool failed;                    /* an `event: error` ended the stream */
	int error_code;
};

static void print_sample(struct tail *t, const Graind__Sample *s, const char *json)
{
	char value[64] = "", tags[1024] = "", fields[1024] = "";
	size_t used = 0;

	if (t->ctl->fmt != OUTPUT_TABLE) {
		/* One proto3 JSON document per line, as the agent sent it. */
		printf("%s\n", json);
		return;
	}
	if (s->kind == GRAIND__SAMPLE_KIND__METRIC)
		snprintf(value, sizeof(value), "%.17g", s->value);
	for (size_t i = 0; i < s->n_tags && used + 1 < sizeof(tags); i++)
		used += snprintf(tags + used, sizeof(tags) - used, "%s%s=%s", used ? " " : "",
				 s->tags[i]->key, s->tags[i]->value);
	ctl_fields_text(s->fields, s->n_fields, fields, sizeof(fields));
	printf("%-8" PRIu64 " %-24s %-16s %-12s %-6s %-20s %s%s%s%s%s\n", s->id, s->time,
	       s->probe, s->map, s->kind == GRAIND__SAMPLE_KIND__EVENT ? "event" : "metric",
	       s->name, value, value[0] && (tags[0] || fields[0]) ? " " : "", tags,
	       tags[0] && fields[0] ? " " : "", fields);
}

/* One whole event of the stream. */
static bool event_done(struct tail *t)
{
	ProtobufCMessage *m = NULL;
	struct gerr err = { 0 };
	bool ok = true;

	if (!t->data)
		goto out;
	if (strcmp(t->event, "sample") == 0 && t->ctl->fmt != OUTPUT_TABLE && t->id) {
		/* JSON out as it came in: the stream's id is all there is to keep. */
		printf("%s\n", t->data);
		t->last_id = t->id;
	} else if (strcmp(t->event, "sample") == 0) {
		if (codec_decode(CODEC_JSON, &graind__sample__descriptor, t->data, strlen(t->data),
				 &m, &err) < 0) {
			fprintf(stderr, "grainctl: %s: a sample that does not decode: %s\n",
				t->ctl->hosts[0], err.msg);
			ok = false;
			goto out;
		}
		print_sample(t, (Graind__Sample *)m, t->data);
		t->last_id = t->id ? t->id : ((Graind__Sample *)m)->id;
	} else if (strcmp(t->event, "error") == 0) {
		if (codec_decode(CODEC_JSON, &graind__status__descriptor, t->data, strlen(t->data),
				 &m, &err) == 0) {
			ctl_print_error(t->ctl->hosts[0], (Graind__Status *)m);
			t->error_code = ((Graind__Status *)m)->code;
		}
		t->failed = true;
		ok = false;
	}
out:
	pbmsg_free(m);
	free(t->data);
	t->data = NULL;
	t->event[0] = '\0';
	t->id = 0;
	return ok;
}

static bool field(struct tail *t, const char *line)
{
	const char *colon = strchr(line, ':'), *value;
	size_t name_len;

	if (!line[0])
		return event_done(t);
	if (line[0] == ':')             /* a comment: the agent's keep-alive */
		return true;
	name_len = colon ? (size_t)(colon - line) : strlen(line);
	value = colon ? colon + 1 : "";
	if (*value == ' ')
		value++;
	if (name_len == 5 && strncmp(line, "event", 5) == 0) {
		snprintf(t->event, sizeof(t->event), "%s", value);
	} else if (name_len == 2 && strncmp(line, "id", 2) == 0) {
		t->id = strtoull(value, NULL, 10);
	} else if (name_len == 4 && strncmp(line, "data", 4) == 0) {
		free(t->data);
		t->data = strdup(value);
		if (!t->data)
			return false;
	}
	return true;
}

/* What came in, a chunk of the stream; what it completes is printed
 * before the next chunk is awaited (one flush a chunk, not one a line). */
static bool on_data(void *ctx, const char *data, size_t n)
{
	struct tail *t = ctx;
	bool ok = true;

	for (size_t i = 0; ok && i < n; i++) {
		if (data[i] == '\n') {
			t->line[t->line_len] = '\0';
			t->line_len = 0;
			ok = field(t, t->line);
			continue;
		}
		if (t->line_len + 2 > t->line_cap) {
			size_t cap = t->line_cap ? t->line_cap * 2 : 4096;
			char *grown = cap <= LINE_MAX_BYTES ? realloc(t->line, cap) : NULL;

			if (!grown)
				return false;
			t->line = grown;
			t->line_cap = cap;
		}
		t->line[t->line_len++] = data[i];
	}
	fflush(stdout);
	return ok;
}

static int query(char **path, const char *base, const struct ctl_args *a, uint64_t after,
		 unsigned limit)
{
	char *probe = a->opt[0] ? client_escape(a->opt[0]) : NULL;
	char *map = a->opt[1] ? client_escape(a->opt[1]) : NULL;
	char lim[32] = "";
	int ret;

	if (limit)
		snprintf(lim, sizeof(lim), "&limit=%u", limit);
	ret = asprintf(path, "%s?after=%" PRIu64 "%s%s%s%s%s", base, after,
		       probe ? "&probe=" : "", probe ? probe : "", map ? "&map=" : "",
		       map ? map : "", lim);
	free(probe);
	free(map);
	return ret < 0 ? -1 : 0;
}

/* Without -f: every page of what is buffered now. */
static int tail_pages(struct tail *t, const struct ctl_args *a)
{
	for (;;) {
		struct client_request req = { "GET", .token = t->ctl->token };
		struct client_reply r;
		ProtobufCMessage *m = NULL;
		Graind__Status *st = NULL;
		const Graind__ListSamplesResponse *page;
		char *path, *json = NULL;
		size_t n = 0;
		struct gerr err;

		if (query(&path, "/v1/samples", a, t->last_id, 1000) < 0)
			return CTL_EXIT_HOST;
		req.path = path;
		client_run((const char *const *)t->ctl->hosts, 1, &req, 1, t->ctl->timeout_ms, &r);
		free(path);
		if (ctl_reply_decode(&r, &graind__list_samples_response__descriptor, &m, &st) < 0) {
			ctl_print_error(t->ctl->hosts[0], st);
			pbmsg_free(&st->base);
			client_reply_clear(&r);
			return CTL_EXIT_HOST;
		}
		client_reply_clear(&r);
		page = (const void *)m;
		for (size_t i = 0; i < page->n_samples; i++) {
			if (t->ctl->fmt != OUTPUT_TABLE &&
			    codec_encode(CODEC_JSON, &page->samples[i]->base, &json, &n, &err) < 0)
				break;
			print_sample(t, page->samples[i], json);
			free(json);
			json = NULL;
			t->last_id = page->samples[i]->id;
		}
		n = page->n_samples;
		pbmsg_free(m);
		if (!n)
			return CTL_EXIT_OK;
	}
}

static int tail_follow(struct tail *t, const struct ctl_args *a)
{
	for (;;) {
		struct client_request req = { "GET", .token = t->ctl->token,
					      .accept = "text/event-stream" };
		struct client_reply r;
		char *path, last[24];

		/* The first connect asks for --after; a reconnect says where it was. */
		if (query(&path, "/v1/samples:watch", a, t->last_id, 0) < 0)
			return CTL_EXIT_HOST;
		snprintf(last, sizeof(last), "%" PRIu64, t->last_id);
		req.path = path;
		req.last_event_id = t->last_id ? last : NULL;
		t->line_len = 0;
		client_stream(t->ctl->hosts[0], &req, t->ctl->timeout_ms, IDLE_MS, on_data, t, &r);
		free(path);
		if (r.status && r.status != 200) {
			Graind__Status *st = NULL;
			ProtobufCMessage *m = NULL;

			ctl_reply_decode(&r, NULL, &m, &st);
			ctl_print_error(t->ctl->hosts[0], st);
			pbmsg_free(st ? &st->base : NULL);
			client_reply_clear(&r);
			/* Only an agent that is busy or stopping is worth waiting for. */
			if (r.status != 503)
				return r.status == 400 || r.status == 404 ? CTL_EXIT_USAGE : CTL_EXIT_HOST;
		} else if (t->failed && t->error_code != 503) {
			client_reply_clear(&r);
			return CTL_EXIT_HOST;
		} else {
			fprintf(stderr, "grainctl: %s: %s; reconnecting after id %" PRIu64 "\n",
				t->ctl->hosts[0], r.status ? "the agent ended the stream" :
				r.transport_error, t->last_id);
		}
		client_reply_clear(&r);
		t->failed = false;
		usleep(RECONNECT_MS * 1000);
	}
}

int ctl_samples_tail(struct ctl *ctl, const struct ctl_args *a)
{
	struct tail t = { .ctl = ctl };
	int ret;

	if (a->opt[2]) {
		char *end;

		t.last_id = strtoull(a->opt[2], &end, 10);
		if (!a->opt[2][0] || *end) {
			fprintf(stderr, "grainctl: --after %s: a number\n", a->opt[2]);
			return CTL_EXIT_USAGE;
		}
	}
	if (ctl->nhosts != 1) {
		fprintf(stderr, "grainctl: samples tail follows one agent: give one --host\n");
		return CTL_EXIT_USAGE;
	}
	if (ctl->fmt == OUTPUT_TABLE)
		printf("%-8s %-24s %-16s %-12s %-6s %-20s %s\n", "ID", "TIME", "PROBE", "MAP", "KIND",
		       "NAME", "VALUE LABELS");
	ret = a->opt[3] ? tail_follow(&t, a) : tail_pages(&t, a);
	free(t.line);
	free(t.data);
	return ret;
}
