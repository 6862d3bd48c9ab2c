/* svc watch: WatchSamples and WatchProbes, step by step (svc.h).
 *
 * A samples watch is a cursor over the buffer: each step lists the
 * samples after the last id it emitted, which the store hands out in id
 * order, and ids are given in commit order, so following the buffer
 * misses nothing that stays in it. The collector rings the agent's
 * sample feed after each commit; that is what svc_watch_changed() sees.
 *
 * A probes watch reads the agent's probe feed: the probe handlers publish
 * each change as a packed ProbeEvent (svc_probe_event). A watch that
 * starts at 0, or after an event the feed no longer holds, first emits
 * one CURRENT event per stored probe, numbered with the feed's seq from
 * before the listing began, so that nothing published meanwhile is
 * skipped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/agent.h"
#include "server/svc/svc_int.h"
#include "server/util/clock.h"
#include "server/util/feed.h"
#include "server/util/log.h"

#define PROBE_PAGE 100

enum watch_kind { WATCH_SAMPLES, WATCH_PROBES };

struct svc_watch {
	struct svc_call call;           /* the opener's role, for the reads */
	enum watch_kind kind;
	struct feed *feed;
	uint64_t seen;                  /* the feed's seq when the last step began */
	char probe[64], map[64];        /* filters; "" for any */
	uint64_t position;              /* last sample id, or last event seq */
	/* Probes: the CURRENT events under way. */
	bool snapshot;
	uint64_t snapshot_seq;
	char snapshot_after[64];        /* the last name emitted */
};

static bool is_watch(const struct svc_method *m, const char *name)
{
	return strcmp(svc_rpc(m)->name, name) == 0;
}

int svc_watch_open(struct svc_call *call, const struct svc_method *m, const ProtobufCMessage *req,
		   struct svc_watch **out, struct gerr *err)
{
	struct svc_watch *w;
	const char *probe = "", *map = "";
	uint64_t after;

	*out = NULL;
	if (svc_authorize(call, m, NULL, err) < 0)
		return -1;
	if (!m->streams || req->descriptor != svc_rpc(m)->input)
		return gerr_set(err, 500, "%s is not a watch", svc_rpc(m)->name);
	if (is_watch(m, "WatchSamples")) {
		const Graind__WatchSamplesRequest *r = (const void *)req;

		probe = r->probe;
		map = r->map;
		after = r->after;
	} else {
		const Graind__WatchProbesRequest *r = (const void *)req;

		probe = r->name;
		after = r->after;
	}
	if (probe[0] && svc_check_name("probe", probe, err) < 0)
		return -1;
	if (probe[0] && !auth_in_scope(&call->who, probe))
		return svc_out_of_scope(call, probe, err);
	if (strlen(map) >= sizeof(w->map))
		return gerr_set(err, 400, "map name is longer than %zu bytes", sizeof(w->map) - 1);
	w = calloc(1, sizeof(*w));
	if (!w)
		return gerr_set(err, 500, "out of memory");
	w->call = *call;
	w->call.method = w->call.path = NULL;
	w->kind = is_watch(m, "WatchSamples") ? WATCH_SAMPLES : WATCH_PROBES;
	w->feed = w->kind == WATCH_SAMPLES ? call->agent->sample_feed : call->agent->probe_feed;
	snprintf(w->probe, sizeof(w->probe), "%s", probe);
	snprintf(w->map, sizeof(w->map), "%s", map);
	w->position = after;
	w->snapshot = w->kind == WATCH_PROBES && after == 0;
	w->snapshot_seq = feed_seq(w->feed);
	/* Nothing was seen yet: the first step always reads. */
	w->seen = w->snapshot_seq - 1;
	*out = w;
	return 0;
}

void svc_watch_free(struct svc_watch *w)
{
	free(w);
}

bool svc_watch_changed(struct svc_watch *w)
{
	return feed_seq(w->feed) != w->seen;
}

uint64_t svc_watch_position(const struct svc_watch *w)
{
	return w->position;
}

int svc_watch_subscribe(struct agent *agent, int fd)
{
	if (feed_subscribe(agent->sample_feed, fd) < 0)
		return -1;
	if (feed_subscribe(agent->probe_feed, fd) < 0) {
		feed_unsubscribe(agent->sample_feed, fd);
		return -1;
	}
	return 0;
}

void svc_watch_unsubscribe(struct agent *agent, int fd)
{
	feed_unsubscribe(agent->sample_feed, fd);
	feed_unsubscribe(agent->probe_feed, fd);
}

/* ---------------------------------------------------------------- samples */

static int samples_step(struct svc_watch *w, size_t max, svc_emit_fn emit, void *ctx,
			struct gerr *err)
{
	Graind__ListSamplesRequest req = GRAIND__LIST_SAMPLES_REQUEST__INIT;
	Graind__ListSamplesResponse *page = NULL;
	int n = 0;

	req.probe = w->probe;
	req.map = w->map;
	req.after = w->position;
	req.limit = max > 10000 ? 10000 : (uint32_t)max;
	if (svc_list_samples(&w->call, &req, &page, err) < 0) {
		pbmsg_free(page ? &page->base : NULL);
		return -1;
	}
	for (size_t i = 0; i < page->n_samples; i++) {
		if (emit(ctx, &page->samples[i]->base, page->samples[i]->id) != 0) {
			n = -1;
			break;
		}
		w->position = page->samples[i]->id;
		n++;
	}
	/* Past the samples read but out of the caller's scope too. */
	if (n == (int)page->n_samples && page->next_page_token[0])
		w->position = strtoull(page->next_page_token, NULL, 10);
	pbmsg_free(&page->base);
	return n;
}

/* ---------------------------------------------------------------- probes */

static int emit_event(struct svc_watch *w, Graind__ProbeEvent *ev, svc_emit_fn emit, void *ctx)
{
	const char *name = ev->probe && ev->probe->name ? ev->probe->name : "";

	if ((w->probe[0] && strcmp(w->probe, name) != 0) || !auth_in_scope(&w->call.who, name))
		return 0;
	return emit(ctx, &ev->base, ev->seq) != 0 ? -1 : 1;
}

/* One page of CURRENT events; the count, done when the listing ended. */
static int snapshot_step(struct svc_watch *w, size_t max, svc_emit_fn emit, void *ctx,
			 struct gerr *err)
{
	Graind__ListProbesRequest req = GRAIND__LIST_PROBES_REQUEST__INIT;
	Graind__ListProbesResponse *page = NULL;
	char when[CLOCK_TEXT_MAX];
	int n = 0;

	req.page_size = max < PROBE_PAGE ? (uint32_t)max : PROBE_PAGE;
	req.page_token = w->snapshot_after;
	if (svc_list_probes(&w->call, &req, &page, err) < 0) {
		pbmsg_free(page ? &page->base : NULL);
		return -1;
	}
	clock_format(clock_unix_ms(), when);
	for (size_t i = 0; i < page->n_probes && n >= 0; i++) {
		Graind__ProbeEvent ev = GRAIND__PROBE_EVENT__INIT;
		int r;

		ev.seq = w->snapshot_seq;
		ev.kind = GRAIND__PROBE_EVENT_KIND__PROBE_CURRENT;
		ev.probe = page->probes[i];
		ev.time = when;
		r = emit_event(w, &ev, emit, ctx);
		n = r < 0 ? -1 : n + r;
		snprintf(w->snapshot_after, sizeof(w->snapshot_after), "%s", page->probes[i]->name);
	}
	/* A page whose probes were all out of scope still moves on. */
	if (page->next_page_token[0])
		snprintf(w->snapshot_after, sizeof(w->snapshot_after), "%s", page->next_page_token);
	if (n >= 0 && !page->next_page_token[0]) {
		w->snapshot = false;
		w->position = w->snapshot_seq;
	}
	pbmsg_free(&page->base);
	return n;
}

struct held_events {
	Graind__ProbeEvent *ev[PROBE_PAGE];
	size_t n;
};

static int hold_event(const struct feed_event *fe, void *ctx)
{
	struct held_events *h = ctx;
	Graind__ProbeEvent *ev = graind__probe_event__unpack(NULL, fe->len, fe->data);

	if (!ev)
		return -1;
	ev->seq = fe->seq;
	h->ev[h->n++] = ev;
	return 0;
}

static int probes_step(struct svc_watch *w, size_t max, svc_emit_fn emit, void *ctx,
		       struct gerr *err)
{
	struct held_events held = { .n = 0 };
	bool lost = false;
	int n = 0, got;

	if (!w->snapshot) {
		/* Copied out first: the feed's lock is not held while emitting. */
		got = feed_read(w->feed, w->position, max < PROBE_PAGE ? max : PROBE_PAGE,
				hold_event, &held, &lost);
		if (got < 0) {
			n = gerr_set(err, 500, "out of memory reading probe events");
		} else if (lost) {
			/* Fell behind what the feed holds: start over from the state. */
			w->snapshot = true;
			w->snapshot_seq = feed_seq(w->feed);
			w->snapshot_after[0] = '\0';
		}
		for (size_t i = 0; i < held.n && n >= 0 && !lost; i++) {
			int r = emit_event(w, held.ev[i], emit, ctx);

			n = r < 0 ? -1 : n + r;
			if (r >= 0)
				w->position = held.ev[i]->seq;
		}
		for (size_t i = 0; i < held.n; i++)
			pbmsg_free(&held.ev[i]->base);
		/* Only filtered-out events: read on. */
		if (n == 0 && held.n && !lost)
			return probes_step(w, max, emit, ctx, err);
	}
	if (w->snapshot && n >= 0)
		n = snapshot_step(w, max, emit, ctx, err);
	return n;
}

int svc_watch_step(struct svc_watch *w, size_t max, svc_emit_fn emit, void *ctx,
		   struct gerr *err)
{
	int n;

	if (!max)
		return 0;
	/* Read before looking, so a change during the step is not missed. */
	w->seen = feed_seq(w->feed);
	n = w->kind == WATCH_SAMPLES ? samples_step(w, max, emit, ctx, err) :
				       probes_step(w, max, emit, ctx, err);
	/* A snapshot still under way has more to give at once. */
	if (n == 0 && w->snapshot)
		w->seen--;
	return n;
}

void svc_probe_event(struct agent *agent, Graind__ProbeEventKind kind, const Graind__Probe *probe,
		     const char *name, const char *error)
{
	Graind__ProbeEvent ev = GRAIND__PROBE_EVENT__INIT;
	Graind__Probe bare = GRAIND__PROBE__INIT;
	char when[CLOCK_TEXT_MAX];
	uint8_t *packed;
	size_t len;

	if (!agent->probe_feed)
		return;
	if (!probe) {
		bare.name = (char *)name;
		probe = &bare;
	}
	clock_format(clock_unix_ms(), when);
	ev.kind = kind;
	ev.probe = (Graind__Probe *)probe;
	ev.error = (char *)(error ? error : "");
	ev.time = when;
	len = graind__probe_event__get_packed_size(&ev);
	packed = malloc(len ? len : 1);
	if (!packed) {
		log_error("msg=\"probe event not recorded: out of memory\" probe=%s", probe->name);
		return;
	}
	graind__probe_event__pack(&ev, packed);
	feed_publish(agent->probe_feed, packed, len);
	free(packed);
}
