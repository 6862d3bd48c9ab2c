/* api watch: the server-streaming rpcs as Server-Sent Events (api.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "server/util/codec.h"
#include "server/util/log.h"
#include "server/util/pbmsg.h"
#include "server/util/utf8.h"

/* Messages of one step: a few hundred KiB of text at most. */
#define STEP_MESSAGES 256

struct api_watch {
	struct svc_watch *w;
	const char *event;              /* "sample" or "probe" */
};

/* The text being built by a step. */
struct sse_text {
	char *buf;
	size_t len, cap;
	const char *event;
};

static int text_add(struct sse_text *t, const char *data, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 16384;
		char *grown;

		while (cap < t->len + n + 1)
			cap *= 2;
		grown = realloc(t->buf, cap);
		if (!grown)
			return -1;
		t->buf = grown;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, data, n);
	t->len += n;
	t->buf[t->len] = '\0';
	return 0;
}

static int add_event(struct sse_text *t, const char *event, uint64_t id, const char *json,
		     size_t json_len)
{
	char head[96];
	int n = id ? snprintf(head, sizeof(head), "id: %llu\nevent: %s\ndata: ",
			      (unsigned long long)id, event) :
		     snprintf(head, sizeof(head), "event: %s\ndata: ", event);

	return text_add(t, head, (size_t)n) < 0 || text_add(t, json, json_len) < 0 ||
	       text_add(t, "\n\n", 2) < 0 ? -1 : 0;
}

static int emit_event(void *ctx, const ProtobufCMessage *msg, uint64_t id)
{
	struct sse_text *t = ctx;
	struct gerr err;
	char *json = NULL;
	size_t len = 0;
	int ret;

	if (codec_encode(CODEC_JSON, msg, &json, &len, &err) < 0) {
		log_error("msg=\"cannot encode a watch event\" error=\"%s\"", err.msg);
		return -1;
	}
	ret = add_event(t, t->event, id, json, len);
	free(json);
	return ret;
}

/* The stream's last event: why it ended, as a graind.Status. */
static void add_error(struct sse_text *t, const struct gerr *err)
{
	Graind__Status status = GRAIND__STATUS__INIT;
	char msg[GERR_MSG_MAX], *json = NULL;
	struct gerr eerr;
	size_t len = 0;

	snprintf(msg, sizeof(msg), "%s", err->msg[0] ? err->msg : "the watch failed");
	utf8_scrub(msg);
	status.code = err->status ? err->status : 500;
	status.message = msg;
	if (codec_encode(CODEC_JSON, &status.base, &json, &len, &eerr) == 0)
		add_event(t, "error", 0, json, len);
	free(json);
}

int api_watch_open(struct svc_call *call, const struct svc_method *m, ProtobufCMessage *req,
		   const char *last_event_id, struct api_watch **out, struct gerr *err)
{
	struct api_watch *aw;

	*out = NULL;
	if (last_event_id && last_event_id[0] &&
	    codec_set_text(req, "after", last_event_id, err) < 0)
		return gerr_set(err, 400, "Last-Event-ID must be the id of an event: %.64s",
				last_event_id);
	aw = calloc(1, sizeof(*aw));
	if (!aw)
		return gerr_set(err, 500, "out of memory");
	if (svc_watch_open(call, m, req, &aw->w, err) < 0) {
		free(aw);
		return -1;
	}
	aw->event = strcmp(svc_rpc(m)->name, "WatchSamples") == 0 ? "sample" : "probe";
	*out = aw;
	return 0;
}

int api_watch_next(struct api_watch *aw, char **text, size_t *len)
{
	struct sse_text t = { .event = aw->event };
	struct gerr err = { 0 };
	int n = svc_watch_step(aw->w, STEP_MESSAGES, emit_event, &t, &err);

	if (n < 0)
		add_error(&t, err.status ? &err : &(struct gerr){ 500, "out of memory" });
	*text = t.buf;
	*len = t.len;
	return n < 0 ? -1 : n > 0;
}

bool api_watch_changed(struct api_watch *aw)
{
	return svc_watch_changed(aw->w);
}

void api_watch_free(struct api_watch *aw)
{
	if (!aw)
		return;
	svc_watch_free(aw->w);
	free(aw);
}
