/* grainctl plan and apply: make each host hold the objects, probes and
 * sinks a directory of documents declares (server/util/declare.h).
 *
 * Both read every host's probes, sinks and objects first (three requests
 * per host, hosts in parallel) and work out per host what to push or
 * fetch, create, change (with the field-level diff of the spec) and, with
 * --prune, remove. plan prints that; apply then performs it, host by host in
 * order and hosts in parallel, a change of a probe guarded by If-Match on
 * the generation it was planned against. An unchanged resource gets no
 * request, so a second apply writes nothing. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "server/grainctl/ctl.h"
#include "server/util/declare.h"
#include "server/util/codec.h"
#include "server/util/pbmsg.h"

enum act { ACT_PUSH, ACT_FETCH, ACT_CREATE, ACT_CHANGE, ACT_DELETE, ACT__COUNT };

static const char *const act_words[][2] = {
	[ACT_PUSH] = { "push", "pushed" }, [ACT_FETCH] = { "fetch", "fetched" },
	[ACT_CREATE] = { "create", "created" }, [ACT_CHANGE] = { "change", "changed" },
	[ACT_DELETE] = { "remove", "removed" },
};
static const char act_marks[] = { [ACT_PUSH] = '+', [ACT_FETCH] = '+', [ACT_CREATE] = '+',
				  [ACT_CHANGE] = '~', [ACT_DELETE] = '-' };

struct action {
	enum act act;
	enum declare_kind kind;
	char *name;                    /* probe, sink or object source; the object's file for a push */
	const struct declare_doc *doc; /* NULL for a removal */
	char generation[32];           /* for If-Match on a change ("" unknown) */
	json_t *diff;                  /* a change's fields */
	Graind__Status *error;         /* apply: why it failed */
	bool done;
};

struct host_plan {
	struct action *acts;
	size_t n, unchanged, kept;     /* kept: on the host, not in the files */
	Graind__Status *error;         /* the host's state could not be read */
};

/* ---------------------------------------------------------------- reading */

static json_t *msg_json(const ProtobufCMessage *m)
{
	char *text = NULL;
	size_t len;
	json_t *j;

	if (codec_encode(CODEC_JSON, m, &text, &len, NULL) < 0)
		return NULL;
	j = json_loadb(text, len, 0, NULL);
	free(text);
	return j;
}

static Graind__Status *status_msg(int code, const char *msg)
{
	Graind__Status *st = (Graind__Status *)pbmsg_new(&graind__status__descriptor);

	if (st) {
		st->code = code;
		pbmsg_set_string(&st->message, msg);
	}
	return st;
}

/* GET `path` on every host; the answers as JSON (the field `field` of the
 * list message), a failure into plans[i].error. */
static void fetch(struct ctl *ctl, const char *path, const ProtobufCMessageDescriptor *d,
		  const char *field, struct host_plan *plans, json_t **out)
{
	struct client_reply *replies = calloc(ctl->nhosts, sizeof(*replies));
	struct client_request *reqs = calloc(ctl->nhosts, sizeof(*reqs));

	if (!replies || !reqs)
		goto out;
	for (size_t i = 0; i < ctl->nhosts; i++)
		if (!plans[i].error)
			reqs[i] = (struct client_request){ "GET", path, .token = ctl->token };
	client_run_each(ctl->hosts, ctl->nhosts, reqs, ctl->parallel, ctl->timeout_ms, replies);
	for (size_t i = 0; i < ctl->nhosts; i++) {
		ProtobufCMessage *m = NULL;
		json_t *j;

		if (!reqs[i].method)
			continue;
		if (ctl_reply_decode(&replies[i], d, &m, &plans[i].error) < 0) {
			client_reply_clear(&replies[i]);
			continue;
		}
		j = msg_json(m);
		out[i] = json_incref(json_object_get(j, field));
		if (!out[i])
			out[i] = json_array();
		json_decref(j);
		pbmsg_free(m);
		client_reply_clear(&replies[i]);
	}
out:
	free(replies);
	free(reqs);
}

static json_t *find_named(json_t *list, const char *key, const char *name)
{
	size_t i;
	json_t *v;

	json_array_foreach(list, i, v) {
		const char *n = json_string_value(json_object_get(v, key));

		if (n && strcmp(n, name) == 0)
			return v;
	}
	return NULL;
}

/* ---------------------------------------------------------------- planning */

static struct action *add_action(struct host_plan *p, enum act act, enum declare_kind kind,
				 const char *name, const struct declare_doc *doc)
{
	struct action *a = realloc(p->acts, (p->n + 1) * sizeof(*a));

	if (!a)
		return NULL;
	p->acts = a;
	a = &p->acts[p->n++];
	memset(a, 0, sizeof(*a));
	a->act = act;
	a->kind = kind;
	a->name = strdup(name);
	a->doc = doc;
	return a;
}

static bool named(const struct declare_set *set, enum declare_kind kind, const char *name)
{
	for (size_t i = 0; i < set->n; i++)
		if (set->docs[i].kind == kind && strcmp(set->docs[i].name, name) == 0)
			return true;
	return false;
}

static void plan_host(struct host_plan *p, const struct declare_set *set, json_t *probes,
		      json_t *sinks, json_t *objects, bool prune)
{
	size_t i;
	json_t *v;

	/* Objects first: a probe can only name an object the host has. Each
	 * digest is brought once, by the first document that has it. */
	for (i = 0; i < set->n; i++) {
		const struct declare_doc *d = &set->docs[i];
		bool source = d->kind == DECLARE_OBJECT_SOURCE, queued = false;

		if (!d->object_file && !source)
			continue;
		if (find_named(objects, "sha256", d->object_sha)) {
			p->unchanged += source;
			continue;
		}
		for (size_t k = 0; k < p->n; k++)
			queued |= strcmp(p->acts[k].doc->object_sha, d->object_sha) == 0;
		if (!queued)
			add_action(p, source ? ACT_FETCH : ACT_PUSH, d->kind,
				   source ? d->name : d->object_file, d);
	}
	for (i = 0; i < set->n; i++) {
		const struct declare_doc *d = &set->docs[i];
		bool probe = d->kind == DECLARE_PROBE;
		json_t *have, *cur, *diff;
		struct action *a;

		if (d->kind == DECLARE_OBJECT_SOURCE)
			continue;
		have = find_named(probe ? probes : sinks, "name", d->name);

		if (!have) {
			add_action(p, ACT_CREATE, d->kind, d->name, d);
			continue;
		}
		if (probe) {
			cur = json_deep_copy(json_object_get(have, "spec"));
			if (!cur)
				cur = json_object();
			declare_normalise_probe(cur);
		} else {
			cur = json_deep_copy(have);
			declare_normalise_sink(cur, d->spec);
		}
		diff = json_array();
		declare_diff(cur, d->spec, "spec", diff);
		json_decref(cur);
		if (!json_array_size(diff)) {
			p->unchanged++;
			json_decref(diff);
			continue;
		}
		if (!(a = add_action(p, ACT_CHANGE, d->kind, d->name, d))) {
			json_decref(diff);
			continue;
		}
		a->diff = diff;
		snprintf(a->generation, sizeof(a->generation), "%s",
			 json_string_value(json_object_get(have, "generation")) ?: "");
	}
	for (int k = 0; k < 2; k++) {
		json_t *list = k == 0 ? probes : sinks;
		enum declare_kind kind = k == 0 ? DECLARE_PROBE : DECLARE_SINK;

		json_array_foreach(list, i, v) {
			const char *name = json_string_value(json_object_get(v, "name"));

			if (!name || named(set, kind, name))
				continue;
			if (prune)
				add_action(p, ACT_DELETE, kind, name, NULL);
			else
				p->kept++;
		}
	}
}

/* ---------------------------------------------------------------- applying */

static int action_request(const struct action *a, struct client_request *req, char **path,
			  char **file_buf)
{
	const char *kind = a->kind == DECLARE_PROBE ? "probes" : "sinks";
	char *e;
	size_t len;

	*path = NULL;
	*file_buf = NULL;
	if (a->act == ACT_PUSH) {
		if (file_read(a->name, file_buf, &len) < 0)
			return -1;
		*path = strdup("/v1/objects");
		*req = (struct client_request){ "POST", *path, *file_buf, len,
						"application/octet-stream" };
		return *path ? 0 : -1;
	}
	if (a->act == ACT_FETCH) {
		*path = strdup("/v1/objects:fetch");
		*req = (struct client_request){ "POST", *path, a->doc->body, a->doc->body_len,
						"application/x-protobuf" };
		return *path ? 0 : -1;
	}
	if (!(e = client_escape(a->name)) || asprintf(path, "/v1/%s/%s", kind, e) < 0) {
		free(e);
		*path = NULL;
		return -1;
	}
	free(e);
	if (a->act == ACT_DELETE) {
		*req = (struct client_request){ "DELETE", *path };
		return 0;
	}
	*req = (struct client_request){ "PUT", *path, a->doc->body ? a->doc->body : "",
					a->doc->body_len, "application/x-protobuf" };
	if (a->act == ACT_CHANGE && a->generation[0])
		req->if_match = a->generation;
	return 0;
}

/* What the agent answers to an action. */
static const ProtobufCMessageDescriptor *reply_desc(const struct action *a)
{
	if (a->act == ACT_PUSH || a->act == ACT_FETCH)
		return &graind__object__descriptor;
	if (a->act == ACT_DELETE)
		return &graind__empty__descriptor;
	return a->kind == DECLARE_PROBE ? &graind__probe__descriptor : &graind__sink__descriptor;
}

/* Round k sends each host its k-th action, unless one before it failed. */
static void apply_all(struct ctl *ctl, struct host_plan *plans)
{
	size_t n = ctl->nhosts, most = 0;
	struct client_request *reqs = calloc(n, sizeof(*reqs));
	struct client_reply *replies = calloc(n, sizeof(*replies));
	char **paths = calloc(n, sizeof(*paths)), **bufs = calloc(n, sizeof(*bufs));
	bool *stopped = calloc(n, sizeof(*stopped));

	if (!reqs || !replies || !paths || !bufs || !stopped)
		goto out;
	for (size_t i = 0; i < n; i++)
		if (plans[i].n > most)
			most = plans[i].n;
	for (size_t k = 0; k < most; k++) {
		for (size_t i = 0; i < n; i++) {
			struct action *a = k < plans[i].n ? &plans[i].acts[k] : NULL;

			reqs[i] = (struct client_request){ 0 };
			if (!a || stopped[i] || plans[i].error)
				continue;
			if (action_request(a, &reqs[i], &paths[i], &bufs[i]) < 0) {
				a->error = status_msg(0, "cannot read the object's file or out of memory");
				stopped[i] = true;
				reqs[i] = (struct client_request){ 0 };
				continue;
			}
			reqs[i].token = ctl->token;
		}
		client_run_each(ctl->hosts, n, reqs, ctl->parallel, ctl->timeout_ms, replies);
		for (size_t i = 0; i < n; i++) {
			ProtobufCMessage *m = NULL;

			if (reqs[i].method) {
				struct action *a = &plans[i].acts[k];

				a->done = ctl_reply_decode(&replies[i], reply_desc(a), &m,
							   &a->error) == 0;
				stopped[i] |= !a->done;
				pbmsg_free(m);
			}
			client_reply_clear(&replies[i]);
			free(paths[i]);
			free(bufs[i]);
			paths[i] = bufs[i] = NULL;
		}
	}
out:
	free(reqs);
	free(replies);
	free(paths);
	free(bufs);
	free(stopped);
}

/* ---------------------------------------------------------------- output */

static const char *kind_word(const struct action *a)
{
	if (a->act == ACT_PUSH || a->act == ACT_FETCH)
		return "object";
	return a->kind == DECLARE_PROBE ? "probe" : "sink";
}

static char *value_text(const json_t *v)
{
	return v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : strdup("(unset)");
}

static void print_plan(const struct host_plan *p, bool applied, FILE *f)
{
	size_t counts[ACT__COUNT] = { 0 };

	for (size_t i = 0; i < p->n; i++) {
		const struct action *a = &p->acts[i];
		const char *word = act_words[a->act][applied && a->done];

		counts[a->act]++;
		if (a->act == ACT_PUSH || a->act == ACT_FETCH)
			fprintf(f, "  %c object %s (%.12s)", act_marks[a->act], a->name,
				a->doc->object_sha);
		else
			fprintf(f, "  %c %s %s", act_marks[a->act], kind_word(a), a->name);
		if (applied)
			fprintf(f, ": %s", a->error ? "FAILED" : a->done ? word : "not tried");
		fputc('\n', f);
		if (a->error)
			fprintf(f, "      %s%s%d%s\n", a->error->message, a->error->code ? " (" : "",
				a->error->code, a->error->code ? ")" : "");
		for (size_t k = 0; a->diff && k < json_array_size(a->diff); k++) {
			json_t *d = json_array_get(a->diff, k);
			char *from = value_text(json_object_get(d, "from"));
			char *to = value_text(json_object_get(d, "to"));

			fprintf(f, "      %s: %s -> %s\n", json_string_value(json_object_get(d, "path")),
				from ? from : "?", to ? to : "?");
			free(from);
			free(to);
		}
	}
	fprintf(f, applied ? "  %zu pushed, " : "  %zu to push, ", counts[ACT_PUSH]);
	if (counts[ACT_FETCH])
		fprintf(f, applied ? "%zu fetched, " : "%zu to fetch, ", counts[ACT_FETCH]);
	fprintf(f, applied ? "%zu created, %zu changed, %zu removed; %zu unchanged"
			   : "%zu to create, %zu to change, %zu to remove; %zu unchanged",
		counts[ACT_CREATE], counts[ACT_CHANGE], counts[ACT_DELETE], p->unchanged);
	if (p->kept)
		fprintf(f, "; %zu not in the files (--prune removes them)", p->kept);
	fputc('\n', f);
}

static json_t *status_json(const Graind__Status *st)
{
	return msg_json(&st->base);
}

static void print_json(struct ctl *ctl, const char *host, const struct host_plan *p, bool applied)
{
	json_t *doc = json_object(), *res = json_object(), *changes = json_array();
	char *out;

	json_object_set_new(doc, "host", json_string(host));
	if (p->error) {
		json_object_set_new(doc, "error", status_json(p->error));
	} else {
		for (size_t i = 0; i < p->n; i++) {
			const struct action *a = &p->acts[i];
			json_t *c = json_object();

			json_object_set_new(c, "action", json_string(act_words[a->act][0]));
			json_object_set_new(c, "kind", json_string(
				a->act == ACT_PUSH ? "Object" : a->act == ACT_FETCH ? "ObjectSource"
				: a->kind == DECLARE_PROBE ? "Probe" : "Sink"));
			json_object_set_new(c, "name", json_string(a->act == ACT_PUSH
					    ? a->doc->object_sha : a->name));
			if (a->act == ACT_PUSH)
				json_object_set_new(c, "file", json_string(a->name));
			if (a->act == ACT_FETCH)
				json_object_set_new(c, "sha256", json_string(a->doc->object_sha));
			if (a->diff)
				json_object_set(c, "diff", a->diff);
			if (applied)
				json_object_set_new(c, "done", json_boolean(a->done));
			if (a->error)
				json_object_set_new(c, "error", status_json(a->error));
			json_array_append_new(changes, c);
		}
		json_object_set_new(res, "changes", changes);
		changes = NULL;
		json_object_set_new(res, "unchanged", json_integer((json_int_t)p->unchanged));
		json_object_set_new(res, "notInFiles", json_integer((json_int_t)p->kept));
		json_object_set_new(doc, "result", res);
		res = NULL;
	}
	out = json_dumps(doc, JSON_PRESERVE_ORDER |
			 (ctl->fmt == OUTPUT_JSONL ? JSON_COMPACT : JSON_INDENT(2)));
	if (out)
		puts(out);
	free(out);
	json_decref(changes);
	json_decref(res);
	json_decref(doc);
}

/* ---------------------------------------------------------------- commands */

static int plan_or_apply(struct ctl *ctl, const struct ctl_args *args, bool apply)
{
	struct host_plan *plans = calloc(ctl->nhosts, sizeof(*plans));
	json_t **probes = calloc(ctl->nhosts, sizeof(json_t *));
	json_t **sinks = calloc(ctl->nhosts, sizeof(json_t *));
	json_t **objects = calloc(ctl->nhosts, sizeof(json_t *));
	struct declare_set set = { 0 };
	struct gerr err = { 0 };
	bool multi = ctl->nhosts > 1;
	int ret = CTL_EXIT_OK, width = 0;
	size_t i;

	if (!args->opt[0]) {
		fprintf(stderr, "grainctl: %s: -f DIR is needed\n", apply ? "apply" : "plan");
		ret = CTL_EXIT_USAGE;
		goto out;
	}
	if (!plans || !probes || !sinks || !objects) {
		fprintf(stderr, "grainctl: out of memory\n");
		ret = CTL_EXIT_HOST;
		goto out;
	}
	if (declare_load(args->opt[0], &set, &err) < 0) {
		fprintf(stderr, "grainctl: %s\n", err.msg);
		ret = CTL_EXIT_USAGE;
		goto out;
	}
	fetch(ctl, "/v1/probes?page_size=1000", &graind__list_probes_response__descriptor,
	      "probes", plans, probes);
	fetch(ctl, "/v1/sinks", &graind__list_sinks_response__descriptor, "sinks", plans, sinks);
	fetch(ctl, "/v1/objects?page_size=1000", &graind__list_objects_response__descriptor,
	      "objects", plans, objects);
	for (i = 0; i < ctl->nhosts; i++)
		if (!plans[i].error)
			plan_host(&plans[i], &set, probes[i], sinks[i], objects[i], args->opt[1]);
	if (apply)
		apply_all(ctl, plans);

	for (i = 0; i < ctl->nhosts; i++) {
		if ((int)strlen(ctl->hosts[i]) > width)
			width = (int)strlen(ctl->hosts[i]);
		if (ctl->fmt != OUTPUT_TABLE) {
			print_json(ctl, ctl->hosts[i], &plans[i], apply);
			continue;
		}
		if (plans[i].error) {
			ctl_print_error(ctl->hosts[i], plans[i].error);
			continue;
		}
		if (multi)
			printf("%s\n", output_colours_on(stdout)
			       ? output_colour(COLOUR_BOLD, ctl->hosts[i], 0) : ctl->hosts[i]);
		print_plan(&plans[i], apply, stdout);
	}
	fflush(stdout);
	for (i = 0; i < ctl->nhosts; i++) {
		const char *failure = plans[i].error ? plans[i].error->message : NULL;

		for (size_t k = 0; !failure && k < plans[i].n; k++)
			if (plans[i].acts[k].error)
				failure = plans[i].acts[k].error->message;
		if (failure)
			ret = CTL_EXIT_HOST;
		if (multi) {
			fprintf(stderr, "%-*s  %s  %s\n", width, ctl->hosts[i],
				failure ? "failed" : apply ? "converged" : "planned",
				failure ? failure : "");
		}
	}
out:
	for (i = 0; plans && i < ctl->nhosts; i++) {
		for (size_t k = 0; k < plans[i].n; k++) {
			free(plans[i].acts[k].name);
			json_decref(plans[i].acts[k].diff);
			pbmsg_free(plans[i].acts[k].error ? &plans[i].acts[k].error->base : NULL);
		}
		free(plans[i].acts);
		pbmsg_free(plans[i].error ? &plans[i].error->base : NULL);
		json_decref(probes ? probes[i] : NULL);
		json_decref(sinks ? sinks[i] : NULL);
		json_decref(objects ? objects[i] : NULL);
	}
	free(plans);
	free(probes);
	free(sinks);
	free(objects);
	declare_set_free(&set);
	return ret;
}

static int plan(struct ctl *ctl, const struct ctl_args *args)
{
	return plan_or_apply(ctl, args, false);
}

static int apply(struct ctl *ctl, const struct ctl_args *args)
{
	return plan_or_apply(ctl, args, true);
}

const struct ctl_cmd ctl_apply_cmds[] = {
	{ "plan", NULL, "-f DIR [--prune]",
	  "what apply would push, create, change (field by field) or, with --prune, remove "
	  "on each host", 0, 0,
	  { { "file", 'f', true, "a directory of *.json/*.yaml documents, or one file" },
	    { "prune", 0, false, "also remove probes and sinks the documents do not name" } },
	  plan },
	{ "apply", NULL, "-f DIR [--prune]",
	  "make each host hold what the documents declare; nothing is written where "
	  "nothing differs", 0, 0,
	  { { "file", 'f', true, "a directory of *.json/*.yaml documents, or one file" },
	    { "prune", 0, false, "also remove probes and sinks the documents do not name" } },
	  apply },
	{ 0 }
};
