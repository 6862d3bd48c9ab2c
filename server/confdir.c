/* confdir: the agent applies the documents of --config-dir itself. */
#define _GNU_SOURCE
#include "server/confdir.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "server/agent.h"
#include "server/confstat.h"
#include "server/svc/svc.h"
#include "server/util/codec.h"
#include "server/util/declare.h"
#include "server/util/file.h"
#include "server/util/log.h"
#include "server/util/pbmsg.h"
#include "store/store.h"

#define QUIET_MS 200            /* a pass waits for the directory to settle */
#define RETRY_MS 30000          /* while a file is in error */
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | \
		    IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF)

struct confdir {
	struct agent *ag;
	char *dir;
	int inotify_fd, watch, stop_fd;
	pthread_t thread;
	bool thread_started;
	bool in_error;                  /* the last pass found a file in error */
	char **logged;                  /* the last pass's error lines, logged once */
	size_t n_logged;
};

/* One pass over the files. */
struct pass {
	struct confdir *cd;
	struct declare_set set;
	char **paths;
	size_t n_files;
	char **owners;                  /* "file:<path>" of each file */
	size_t *file_of;                /* the file of each document */
	bool *broken;                   /* each file: does not parse */
	struct confstat_error *errors;  /* strings malloc'd */
	size_t n_errors;
};

static void pass_error(struct pass *p, const char *file, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void pass_error(struct pass *p, const char *file, const char *fmt, ...)
{
	struct confstat_error *grown = realloc(p->errors, (p->n_errors + 1) * sizeof(*grown));
	char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (!grown || !msg) {
		free(msg);
		return;
	}
	p->errors = grown;
	grown[p->n_errors].file = strdup(file);
	grown[p->n_errors].message = msg;
	if (!grown[p->n_errors].file) {
		free(msg);
		return;
	}
	p->n_errors++;
}

/* One operation of the service layer on behalf of `owner`. */
static int call_svc(struct pass *p, const char *owner, const char *rpc,
		    const ProtobufCMessage *req, ProtobufCMessage **resp, struct gerr *err)
{
	struct svc_call call = {
		.agent = p->cd->ag, .who = SVC_AGENT_CALLER,
		.method = "FILE", .path = owner + strlen("file:"), .manager = owner,
	};
	int ret = svc_run(&call, svc_method_find(rpc), req, resp, err);

	pbmsg_free(call.report ? &call.report->base : NULL);
	return ret;
}

/* A message as the canonical proto3 JSON the documents are kept in. */
static json_t *as_json(const ProtobufCMessage *m)
{
	struct gerr err = { 0 };
	char *text = NULL;
	size_t len;
	json_t *j;

	if (codec_encode(CODEC_JSON, m, &text, &len, &err) < 0)
		return NULL;
	j = json_loadb(text, len, 0, NULL);
	free(text);
	return j;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* Does the agent hold the object of the document's digest? */
static bool has_object(struct pass *p, const struct declare_doc *d)
{
	Graind__GetObjectRequest get = GRAIND__GET_OBJECT_REQUEST__INIT;
	struct svc_call reader = { .agent = p->cd->ag, .who = SVC_AGENT_CALLER };
	Graind__Object *have = NULL;
	struct gerr err = { 0 };
	int ret;

	get.sha256 = (char *)d->object_sha;
	ret = svc_get_object(&reader, &get, &have, &err);
	pbmsg_free(have ? &have->base : NULL);
	return ret == 0;
}

/* The object file of a Probe document, pushed unless the agent has it. */
static int push_object(struct pass *p, const struct declare_doc *d, const char *owner,
		       struct gerr *err)
{
	Graind__UploadObjectRequest up = GRAIND__UPLOAD_OBJECT_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	char *bytes;
	size_t len;
	int ret;

	if (has_object(p, d))
		return 0;
	if (file_read(d->object_file, &bytes, &len) < 0)
		return gerr_set(err, 400, "objectFile %s: %s", d->object_file, strerror(errno));
	up.name = (char *)base_name(d->object_file);
	up.content.data = (uint8_t *)bytes;
	up.content.len = len;
	ret = call_svc(p, owner, "UploadObject", &up.base, &resp, err);
	pbmsg_free(resp);
	free(bytes);
	return ret;
}

/* An ObjectSource: fetched unless the agent has the digest already. */
static int fetch_object(struct pass *p, const struct declare_doc *d, const char *owner,
			struct gerr *err)
{
	Graind__FetchObjectRequest *req;
	ProtobufCMessage *resp = NULL;
	int ret;

	if (has_object(p, d))
		return 0;
	req = graind__fetch_object_request__unpack(NULL, d->body_len, d->body);
	if (!req)
		return gerr_set(err, 500, "the checked spec does not decode");
	ret = call_svc(p, owner, "FetchObject", &req->base, &resp, err);
	pbmsg_free(resp);
	pbmsg_free(&req->base);
	return ret;
}

/* Does the agent have what the document says, owned by this file? */
static bool probe_matches(struct pass *p, const struct declare_doc *d, const char *owner)
{
	Graind__GetProbeRequest get = GRAIND__GET_PROBE_REQUEST__INIT;
	struct svc_call reader = { .agent = p->cd->ag, .who = SVC_AGENT_CALLER };
	Graind__Probe *have = NULL;
	struct gerr err = { 0 };
	json_t *spec = NULL;
	bool same = false;

	get.name = d->name;
	if (svc_get_probe(&reader, &get, &have, &err) == 0 && have->spec &&
	    strcmp(have->managed_by, owner) == 0 && (spec = as_json(&have->spec->base))) {
		declare_normalise_probe(spec);
		same = json_equal(spec, d->spec);
	}
	json_decref(spec);
	pbmsg_free(have ? &have->base : NULL);
	return same;
}

static bool sink_matches(struct pass *p, const struct declare_doc *d, const char *owner)
{
	Graind__GetSinkRequest get = GRAIND__GET_SINK_REQUEST__INIT;
	struct svc_call reader = { .agent = p->cd->ag, .who = SVC_AGENT_CALLER };
	Graind__Sink *have = NULL;
	struct gerr err = { 0 };
	json_t *sink = NULL;
	bool same = false;

	get.name = d->name;
	if (svc_get_sink(&reader, &get, &have, &err) == 0 &&
	    strcmp(have->managed_by, owner) == 0 && (sink = as_json(&have->base))) {
		declare_normalise_sink(sink, d->spec);
		same = json_equal(sink, d->spec);
	}
	json_decref(sink);
	pbmsg_free(have ? &have->base : NULL);
	return same;
}

static int apply_probe(struct pass *p, const struct declare_doc *d, const char *owner,
		       struct gerr *err)
{
	Graind__PutProbeRequest put = GRAIND__PUT_PROBE_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	int ret;

	if (d->object_file && push_object(p, d, owner, err) < 0)
		return -1;
	if (probe_matches(p, d, owner))
		return 0;
	put.name = d->name;
	put.spec = graind__probe_spec__unpack(NULL, d->body_len, d->body);
	if (!put.spec)
		return gerr_set(err, 500, "the checked spec does not decode");
	ret = call_svc(p, owner, "PutProbe", &put.base, &resp, err);
	pbmsg_free(resp);
	pbmsg_free(&put.spec->base);
	return ret;
}

static int apply_sink(struct pass *p, const struct declare_doc *d, const char *owner,
		      struct gerr *err)
{
	Graind__PutSinkRequest put = GRAIND__PUT_SINK_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	int ret;

	if (sink_matches(p, d, owner))
		return 0;
	put.name = d->name;
	put.sink = graind__sink__unpack(NULL, d->body_len, d->body);
	if (!put.sink)
		return gerr_set(err, 500, "the checked sink does not decode");
	ret = call_svc(p, owner, "PutSink", &put.base, &resp, err);
	pbmsg_free(resp);
	pbmsg_free(&put.sink->base);
	return ret;
}

/* ------------------------------------------------------------ removal */

struct owned {
	enum store_managed_kind kind;
	char *name, *owner;
};

struct owned_list {
	struct owned *items;
	size_t n;
};

static int collect_owned(enum store_managed_kind kind, const char *name, const char *owner,
			 void *ctx)
{
	struct owned_list *l = ctx;
	struct owned *grown = realloc(l->items, (l->n + 1) * sizeof(*grown));

	if (!grown)
		return -1;
	l->items = grown;
	grown[l->n] = (struct owned){ kind, strdup(name), strdup(owner) };
	if (!grown[l->n].name || !grown[l->n].owner) {
		free(grown[l->n].name);
		free(grown[l->n].owner);
		return -1;
	}
	l->n++;
	return 0;
}

static void owned_free(struct owned_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->items[i].name);
		free(l->items[i].owner);
	}
	free(l->items);
}

/* Is what `o` names still wanted: its file broken (left as it was), or
 * naming it? */
static bool still_wanted(const struct pass *p, const struct owned *o)
{
	enum declare_kind kind = o->kind == STORE_MANAGED_PROBE ? DECLARE_PROBE : DECLARE_SINK;

	for (size_t f = 0; f < p->n_files; f++) {
		if (strcmp(p->owners[f], o->owner) != 0)
			continue;
		if (p->broken[f])
			return true;
		for (size_t i = 0; i < p->set.n; i++)
			if (p->file_of[i] == f && p->set.docs[i].kind == kind &&
			    strcmp(p->set.docs[i].name, o->name) == 0)
				return true;
	}
	return false;
}

static void remove_unwanted(struct pass *p, size_t *managed)
{
	struct owned_list l = { 0 };
	struct gerr err = { 0 };

	*managed = 0;
	if (store_managed_list(p->cd->ag->store, collect_owned, &l, &err) != 0) {
		pass_error(p, p->cd->dir, "cannot list what the files own: %s",
			   err.msg[0] ? err.msg : "out of memory");
		owned_free(&l);
		return;
	}
	for (size_t i = 0; i < l.n; i++) {
		const struct owned *o = &l.items[i];
		bool probe = o->kind == STORE_MANAGED_PROBE;
		ProtobufCMessage *resp = NULL;
		Graind__DeleteProbeRequest dp = GRAIND__DELETE_PROBE_REQUEST__INIT;
		Graind__DeleteSinkRequest ds = GRAIND__DELETE_SINK_REQUEST__INIT;

		if (strncmp(o->owner, "file:", 5) != 0 || still_wanted(p, o)) {
			(*managed)++;
			continue;
		}
		memset(&err, 0, sizeof(err));
		dp.name = ds.name = o->name;
		if (call_svc(p, o->owner, probe ? "DeleteProbe" : "DeleteSink",
			     probe ? &dp.base : &ds.base, &resp, &err) == 0 || err.status == 404)
			log_info("msg=\"removed: its file no longer names it\" %s=%s file=%s",
				 probe ? "probe" : "sink", o->name, o->owner + 5);
		else
			pass_error(p, o->owner + 5, "%s %s: cannot remove it: %s",
				   probe ? "Probe" : "Sink", o->name, err.msg);
		pbmsg_free(resp);
	}
	owned_free(&l);
}

/* ------------------------------------------------------------ a pass */

static void load_files(struct pass *p)
{
	struct gerr err = { 0 };

	if (declare_files(p->cd->dir, &p->paths, &p->n_files, &err) < 0) {
		pass_error(p, p->cd->dir, "%s", err.msg);
		return;
	}
	p->owners = calloc(p->n_files ? p->n_files : 1, sizeof(*p->owners));
	p->broken = calloc(p->n_files ? p->n_files : 1, sizeof(*p->broken));
	if (!p->owners || !p->broken) {
		p->n_files = 0;
		return;
	}
	for (size_t f = 0; f < p->n_files; f++) {
		size_t before = p->set.n;
		size_t *grown;

		if (asprintf(&p->owners[f], "file:%s", p->paths[f]) < 0) {
			p->owners[f] = NULL;
			p->n_files = f;
			return;
		}
		memset(&err, 0, sizeof(err));
		if (declare_load_file(p->paths[f], &p->set, &err) < 0) {
			p->broken[f] = true;
			pass_error(p, p->paths[f], "%s", err.msg);
			continue;
		}
		grown = realloc(p->file_of, (p->set.n ? p->set.n : 1) * sizeof(*grown));
		if (!grown) {
			p->broken[f] = true;
			continue;
		}
		p->file_of = grown;
		for (size_t i = before; i < p->set.n; i++)
			grown[i] = f;
	}
}

/* Log each error line once while it lasts. */
static void log_new_errors(struct confdir *cd, const struct pass *p)
{
	char **now = calloc(p->n_errors ? p->n_errors : 1, sizeof(*now));
	size_t n = 0;

	for (size_t i = 0; now && i < p->n_errors; i++) {
		char *line;
		bool seen = false;

		if (asprintf(&line, "%s: %s", p->errors[i].file, p->errors[i].message) < 0)
			continue;
		for (size_t j = 0; j < cd->n_logged && !seen; j++)
			seen = strcmp(cd->logged[j], line) == 0;
		if (!seen)
			log_warn("msg=\"config file not applied\" file=%s error=\"%s\"",
				 p->errors[i].file, p->errors[i].message);
		now[n++] = line;
	}
	for (size_t j = 0; j < cd->n_logged; j++)
		free(cd->logged[j]);
	free(cd->logged);
	cd->logged = now;
	cd->n_logged = now ? n : 0;
}

static void run_pass(struct confdir *cd)
{
	struct pass p = { .cd = cd };
	size_t managed = 0;
	bool listed;

	load_files(&p);
	listed = p.owners != NULL;
	/* Objects first (round 0): a probe can only name an object the agent has. */
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < p.set.n; i++) {
			const struct declare_doc *d = &p.set.docs[i];
			bool source = d->kind == DECLARE_OBJECT_SOURCE;
			size_t f = p.file_of[i];
			struct gerr err = { 0 };
			int ret;

			if (source != (round == 0))
				continue;
			ret = source ? fetch_object(&p, d, p.owners[f], &err)
			      : d->kind == DECLARE_PROBE ? apply_probe(&p, d, p.owners[f], &err)
			      : apply_sink(&p, d, p.owners[f], &err);
			if (ret < 0)
				pass_error(&p, p.paths[f], "%s %s: %s", source ? "ObjectSource"
					   : d->kind == DECLARE_PROBE ? "Probe" : "Sink", d->name,
					   err.msg);
		}
	}
	/* Without the list of files nothing can be told unwanted. */
	if (listed)
		remove_unwanted(&p, &managed);
	log_new_errors(cd, &p);
	cd->in_error = p.n_errors > 0;
	if (confstat_publish(cd->ag->confstat, p.n_files, managed, p.errors, p.n_errors) < 0)
		log_warn("msg=\"out of memory reporting the config dir\"");
	for (size_t i = 0; i < p.n_errors; i++) {
		free((char *)p.errors[i].file);
		free((char *)p.errors[i].message);
	}
	free(p.errors);
	for (size_t f = 0; p.owners && f < p.n_files; f++)
		free(p.owners[f]);
	free(p.owners);
	free(p.broken);
	free(p.file_of);
	declare_files_free(p.paths, p.n_files);
	declare_set_free(&p.set);
}

/* ------------------------------------------------------------ following */

static void watch_dir(struct confdir *cd)
{
	if (cd->watch >= 0)
		return;
	cd->watch = inotify_add_watch(cd->inotify_fd, cd->dir, WATCH_MASK);
	if (cd->watch < 0)
		log_warn("msg=\"cannot watch the config dir; changes wait for the next retry\" dir=%s error=\"%s\"",
			 cd->dir, strerror(errno));
}

/* Read the events; the directory's own watch may have gone with it. */
static void drain(struct confdir *cd)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while ((n = read(cd->inotify_fd, buf, sizeof(buf))) > 0)
		for (char *at = buf; at < buf + n;) {
			const struct inotify_event *ev = (const void *)at;

			if (ev->mask & IN_IGNORED)
				cd->watch = -1;
			at += sizeof(*ev) + ev->len;
		}
}

static void *follow(void *arg)
{
	struct confdir *cd = arg;
	bool pending = false;

	for (;;) {
		struct pollfd fds[2] = { { cd->inotify_fd, POLLIN, 0 }, { cd->stop_fd, POLLIN, 0 } };
		int timeout = pending ? QUIET_MS : cd->in_error || cd->watch < 0 ? RETRY_MS : -1;
		int n = poll(fds, 2, timeout);

		if (n < 0 && errno != EINTR)
			break;
		if (fds[1].revents)
			break;
		if (n > 0 && fds[0].revents) {
			drain(cd);
			pending = true;
			continue;
		}
		if (n == 0) {
			pending = false;
			watch_dir(cd);
			run_pass(cd);
		}
	}
	return NULL;
}

int confdir_start(struct agent *ag, const char *dir, struct confdir **out, struct gerr *err)
{
	struct confdir *cd = calloc(1, sizeof(*cd));
	char **paths;
	size_t n;

	*out = NULL;
	if (!cd || !(cd->dir = strdup(dir))) {
		free(cd);
		return gerr_set(err, 500, "out of memory");
	}
	cd->ag = ag;
	cd->watch = -1;
	cd->stop_fd = eventfd(0, EFD_CLOEXEC);
	cd->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (cd->stop_fd < 0 || cd->inotify_fd < 0) {
		gerr_set(err, 500, "config dir %s: %s", dir, strerror(errno));
		goto fail;
	}
	/* A directory that cannot be read at start is a mistake to say now. */
	if (declare_files(dir, &paths, &n, err) < 0) {
		gerr_prefix(err, "--config-dir");
		goto fail;
	}
	declare_files_free(paths, n);
	watch_dir(cd);
	run_pass(cd);
	if (pthread_create(&cd->thread, NULL, follow, cd) != 0) {
		gerr_set(err, 500, "cannot start the config dir thread");
		goto fail;
	}
	cd->thread_started = true;
	log_info("msg=\"following the config dir\" dir=%s", dir);
	*out = cd;
	return 0;
fail:
	confdir_stop(cd);
	return -1;
}

void confdir_stop(struct confdir *cd)
{
	if (!cd)
		return;
	if (cd->thread_started) {
		uint64_t one = 1;

		if (write(cd->stop_fd, &one, sizeof(one)) != sizeof(one))
			log_warn("msg=\"cannot stop the config dir thread\"");
		pthread_join(cd->thread, NULL);
	}
	if (cd->inotify_fd >= 0)
		close(cd->inotify_fd);
	if (cd->stop_fd >= 0)
		close(cd->stop_fd);
	for (size_t i = 0; i < cd->n_logged; i++)
		free(cd->logged[i]);
	free(cd->logged);
	free(cd->dir);
	free(cd);
}
