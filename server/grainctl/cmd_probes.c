/* grainctl probes: ls, get, put, attach, detach, rm. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "server/grainctl/ctl.h"

static const char *const probe_cols[] = { "NAME", "OBJECT", "GENERATION", "DESIRED",
					  "ATTACHED", "UPDATED", "ERROR" };

static const char *probe_object(const Graind__ProbeSpec *s, char *buf, size_t n)
{
	if (!s)
		return "-";
	if (s->object_case == GRAIND__PROBE_SPEC__OBJECT_BUILTIN)
		snprintf(buf, n, "builtin:%s", s->builtin);
	else if (s->object_case == GRAIND__PROBE_SPEC__OBJECT_OBJECT_SHA256)
		snprintf(buf, n, "%.12s", s->object_sha256);
	else
		snprintf(buf, n, "-");
	return buf;
}

static const char *desired(const Graind__ProbeSpec *s)
{
	return s && s->desired_state == GRAIND__DESIRED_STATE__DETACHED ? "detached" : "attached";
}

static void probe_row(struct ctl_rows *r, const Graind__Probe *p)
{
	char obj[80], gen[32], att[32];
	size_t on = 0;

	for (size_t i = 0; i < p->n_programs; i++)
		on += p->programs[i]->state == GRAIND__PROGRAM_STATE__PROGRAM_ATTACHED;
	snprintf(gen, sizeof(gen), "%" PRIu64, p->generation);
	snprintf(att, sizeof(att), "%zu/%zu", on, p->n_programs);
	ctl_row(r, (const char *[]){ p->name, probe_object(p->spec, obj, sizeof(obj)), gen,
				     desired(p->spec), att, p->updated, p->error });
}

static void probes_rows(struct ctl_rows *r, const ProtobufCMessage *m)
{
	const Graind__ListProbesResponse *l = (const void *)m;

	for (size_t i = 0; i < l->n_probes; i++)
		probe_row(r, l->probes[i]);
}

static const char *state_name(Graind__ProgramState s)
{
	switch (s) {
	case GRAIND__PROGRAM_STATE__PROGRAM_ATTACHED: return "attached";
	case GRAIND__PROGRAM_STATE__PROGRAM_DETACHED: return "detached";
	case GRAIND__PROGRAM_STATE__PROGRAM_FAILED: return "failed";
	default: return "-";
	}
}

/* Where a program runs in libxdp's dispatcher: it has no link to show. */
static void xdp_slot_line(const Graind__ProgramStatus *s, FILE *f)
{
	const Graind__XdpSlot *x = s->xdp_slot;

	if (!x)
		return;
	fprintf(f, "%s: in the XDP dispatcher of %s (program %u), priority %u, proceeds on",
		s->program, x->ifname, x->dispatcher_id, x->priority);
	for (size_t i = 0; i < x->n_proceed_on; i++) {
		const ProtobufCEnumValue *v =
			protobuf_c_enum_descriptor_get_value(&graind__xdp_action__descriptor,
							     x->proceed_on[i]);
		fprintf(f, " %s", v ? v->name : "?");
	}
	fprintf(f, "%s\n", x->n_proceed_on ? "" : " nothing");
}

static void probe_detail(const ProtobufCMessage *m, FILE *f)
{
	const Graind__Probe *p = (const void *)m;
	struct output_table *t;
	char obj[80];

	fprintf(f, "name:         %s\nobject:       %s\ngeneration:   %" PRIu64 "\n"
		"desired:      %s\ncreated:      %s\nupdated:      %s\n",
		p->name, p->spec && p->spec->object_case == GRAIND__PROBE_SPEC__OBJECT_OBJECT_SHA256
			 ? p->spec->object_sha256 : probe_object(p->spec, obj, sizeof(obj)),
		p->generation, desired(p->spec), p->created, p->updated);
	if (p->error[0])
		fprintf(f, "error:        %s\n", p->error);
	for (size_t i = 0; i < p->n_warnings; i++)
		fprintf(f, "warning:      %s\n", p->warnings[i]);
	if (p->usage)
		fprintf(f, "usage:        %.2f%% CPU, %.0f events/s, %" PRIu64 " map bytes (over %u s)\n",
			p->usage->cpu_percent, p->usage->events_per_second, p->usage->map_bytes,
			p->usage->window_seconds);
	if (p->budget_exceeded)
		fprintf(f, "over budget:  %s (since %s)\n", p->budget_exceeded->message,
			p->budget_exceeded->since);
	fprintf(f, "\n");
	t = output_table_new(8, (const char *[]){ "PROGRAM", "STATE", "PROG ID", "LINK ID",
						  "RUNS", "RUN TIME", "ATTACHED AT", "ERROR" });
	for (size_t i = 0; i < p->n_programs; i++) {
		const Graind__ProgramStatus *s = p->programs[i];
		char prog[16], link[16], runs[32], ns[32];

		snprintf(prog, sizeof(prog), "%u", s->prog_id);
		snprintf(link, sizeof(link), "%u", s->link_id);
		snprintf(runs, sizeof(runs), "%" PRIu64, s->run_count);
		snprintf(ns, sizeof(ns), "%" PRIu64 " ns", s->run_time_ns);
		output_table_row(t, (const char *[]){ s->program, state_name(s->state),
						      s->prog_id ? prog : NULL,
						      s->link_id ? link : NULL, runs, ns,
						      s->attached_at, s->error });
	}
	output_table_print(t, f);
	for (size_t i = 0; i < p->n_programs; i++)
		xdp_slot_line(p->programs[i], f);
}

static const struct ctl_view probe_view = { &graind__probe__descriptor, .detail = probe_detail };

static int on_probe(struct ctl *ctl, const char *method, const char *name, const char *suffix,
		    const struct ctl_view *view, struct client_request *base)
{
	char *e = client_escape(name), *path = NULL;
	struct client_request req = base ? *base : (struct client_request){ method };
	int ret;

	if (!e || asprintf(&path, "/v1/probes/%s%s", e, suffix) < 0) {
		free(e);
		fprintf(stderr, "grainctl: out of memory\n");
		return CTL_EXIT_HOST;
	}
	free(e);
	req.method = method;
	req.path = path;
	ret = ctl_execute(ctl, &req, view);
	free(path);
	return ret;
}

static int probes_ls(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = {
		&graind__list_probes_response__descriptor, 7, probe_cols, probes_rows,
	};
	struct client_request req = { "GET", "/v1/probes?page_size=1000" };

	(void)a;
	return ctl_execute(ctl, &req, &view);
}

static int probes_get(struct ctl *ctl, const struct ctl_args *a)
{
	return on_probe(ctl, "GET", a->pos[0], "", &probe_view, NULL);
}

static int probes_attach(struct ctl *ctl, const struct ctl_args *a)
{
	return on_probe(ctl, "POST", a->pos[0], ":attach", &probe_view, NULL);
}

static int probes_detach(struct ctl *ctl, const struct ctl_args *a)
{
	return on_probe(ctl, "POST", a->pos[0], ":detach", &probe_view, NULL);
}

static int probes_rm(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = { NULL, .done = "deleted" };

	return on_probe(ctl, "DELETE", a->pos[0], "", &view, NULL);
}

static int probes_put(struct ctl *ctl, const struct ctl_args *a)
{
	struct client_request req = { "PUT" };
	const char *file = a->opt[0], *if_match = a->opt[1];
	void *body = NULL;
	size_t len = 0;
	int ret;

	if (!file) {
		fprintf(stderr, "grainctl: probes put: -f SPEC.json is needed\n");
		return CTL_EXIT_USAGE;
	}
	if (if_match && (!*if_match || strspn(if_match, "0123456789") != strlen(if_match))) {
		fprintf(stderr, "grainctl: --if-match %s: a generation number\n", if_match);
		return CTL_EXIT_USAGE;
	}
	if (ctl_json_file_to_pb(file, &graind__probe_spec__descriptor, &body, &len) < 0)
		return CTL_EXIT_USAGE;
	req.body = body ? body : "";
	req.body_len = len;
	req.content_type = "application/x-protobuf";
	req.if_match = if_match;
	ret = on_probe(ctl, "PUT", a->pos[0], "", &probe_view, &req);
	free(body);
	return ret;
}

const struct ctl_cmd ctl_probe_cmds[] = {
	{ "probes", "ls", "", "list the probes: object, generation, programs attached", 0, 0,
	  { { 0 } }, probes_ls },
	{ "probes", "get", "NAME", "a probe and each program's state in the kernel", 1, 1,
	  { { 0 } }, probes_get },
	{ "probes", "put", "NAME -f SPEC.json [--if-match GENERATION]",
	  "create or change a probe from a graind.ProbeSpec in proto3 JSON; the same spec "
	  "again changes nothing", 1, 1,
	  { { "file", 'f', true, "the ProbeSpec (JSON)" },
	    { "if-match", 0, true, "change only while the probe is at this generation" } },
	  probes_put },
	{ "probes", "attach", "NAME", "attach a stored probe's programs", 1, 1, { { 0 } },
	  probes_attach },
	{ "probes", "detach", "NAME", "detach a probe's programs; it stays stored", 1, 1,
	  { { 0 } }, probes_detach },
	{ "probes", "rm", "NAME", "delete a probe; nothing stays in the kernel", 1, 1,
	  { { 0 } }, probes_rm },
	{ 0 }
};
