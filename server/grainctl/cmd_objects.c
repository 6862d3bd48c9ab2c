/* grainctl objects: push, ls, get, rm, verify. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/grainctl/ctl.h"

static const char *const object_cols[] = { "SHA256", "NAME", "SIZE", "PROGRAMS", "MAPS",
					   "BUILTIN", "CREATED" };

static void object_row(struct ctl_rows *r, const Graind__Object *o)
{
	char size[32], progs[16], maps[16];

	snprintf(size, sizeof(size), "%" PRIu64, o->size);
	snprintf(progs, sizeof(progs), "%zu", o->n_programs);
	snprintf(maps, sizeof(maps), "%zu", o->n_maps);
	ctl_row(r, (const char *[]){ o->sha256, o->name, size, progs, maps,
				     o->builtin ? "yes" : "no", o->created });
}

static void objects_rows(struct ctl_rows *r, const ProtobufCMessage *m)
{
	const Graind__ListObjectsResponse *l = (const void *)m;

	for (size_t i = 0; i < l->n_objects; i++)
		object_row(r, l->objects[i]);
}

static void one_object_rows(struct ctl_rows *r, const ProtobufCMessage *m)
{
	object_row(r, (const void *)m);
}

static void object_detail(const ProtobufCMessage *m, FILE *f)
{
	const Graind__Object *o = (const void *)m;
	struct output_table *t;

	fprintf(f, "sha256:       %s\nname:         %s\nsize:         %" PRIu64 "\n"
		"license:      %s\nbtf:          %s%s\ncreated:      %s\nbuiltin:      %s\n",
		o->sha256, o->name, o->size, o->license, o->has_btf ? "yes" : "no",
		o->has_btf_ext ? " (with line info)" : "", o->created, o->builtin ? "yes" : "no");
	if (o->description[0])
		fprintf(f, "description:  %s\n", o->description);
	if (o->signer)
		fprintf(f, "signed by:    key %s, %s%s%s\ncomment:      %s\n", o->signer->key_id,
			o->signer->trusted ? "trusted" : "not trusted",
			o->signer->reason[0] ? ": " : "", o->signer->reason,
			o->signer->trusted_comment);
	else
		fprintf(f, "signed by:    %s\n", o->builtin ? "(built into the agent)" : "(unsigned)");
	for (size_t i = 0; i < o->n_warnings; i++)
		fprintf(f, "warning:      %s\n", o->warnings[i]);
	fprintf(f, "\n");
	t = output_table_new(5, (const char *[]){ "PROGRAM", "SECTION", "TYPE", "ATTACH TYPE",
						  "INSNS" });
	for (size_t i = 0; i < o->n_programs; i++) {
		const Graind__Program *p = o->programs[i];
		char insns[16];

		snprintf(insns, sizeof(insns), "%u", p->insn_count);
		output_table_row(t, (const char *[]){ p->name, p->section, p->type,
						      p->expected_attach_type, insns });
	}
	output_table_print(t, f);
	fprintf(f, "\n");
	t = output_table_new(6, (const char *[]){ "MAP", "TYPE", "KEY", "VALUE", "MAX ENTRIES",
						  "INTERNAL" });
	for (size_t i = 0; i < o->n_maps; i++) {
		const Graind__Map *p = o->maps[i];
		char key[128], value[128], max[16];

		snprintf(key, sizeof(key), "%s%s%u B", p->key_type, p->key_type[0] ? " " : "",
			 p->key_size);
		snprintf(value, sizeof(value), "%s%s%u B", p->value_type,
			 p->value_type[0] ? " " : "", p->value_size);
		snprintf(max, sizeof(max), "%u", p->max_entries);
		output_table_row(t, (const char *[]){ p->name, p->type, key, value, max,
						      p->internal ? "yes" : "no" });
	}
	output_table_print(t, f);
}

/* ---------------------------------------------------------------- verify */

/* The verifier log with the line of the failing instruction's source
 * marked: the last "; <source_text>" line, as the agent found it. */
static void print_log(const Graind__ProgramVerdict *v, FILE *f)
{
	const char *log = v->verifier_log, *p, *mark = NULL;
	bool colour = output_colours_on(f);

	if (v->source_text[0])
		for (p = log; *p; ) {
			const char *e = strchr(p, '\n');
			size_t len = e ? (size_t)(e - p) : strlen(p);
			const char *hit = len > 1 && p[0] == ';' ? strstr(p, v->source_text) : NULL;

			if (hit && hit < p + len)
				mark = p;
			p += len + (e ? 1 : 0);
		}
	for (p = log; *p; ) {
		const char *e = strchr(p, '\n');
		int len = e ? (int)(e - p) : (int)strlen(p);

		if (p == mark)
			fprintf(f, "%s%.*s%s\n", colour ? "\033[1;31m>> " : ">> ", len, p,
				colour ? "\033[0m" : "");
		else
			fprintf(f, "   %.*s\n", len, p);
		p += len + (e ? 1 : 0);
	}
	if (v->verifier_log_truncated)
		fprintf(f, "   ... (log truncated)\n");
}

void ctl_verify_detail(const Graind__VerifyReport *r, FILE *f)
{
	struct output_table *t;
	const char *verdict = r->accepted ? "accepted" : "REJECTED";

	if (output_colours_on(f))
		verdict = output_colour(r->accepted ? COLOUR_GREEN : COLOUR_RED, verdict, 1);
	fprintf(f, "object %s: %s by kernel %s\n\n", r->sha256[0] ? r->sha256 : "-", verdict,
		r->kernel_release[0] ? r->kernel_release : "-");
	t = output_table_new(6, (const char *[]){ "PROGRAM", "SECTION", "TYPE", "VERDICT",
						  "INSNS", "LOAD TIME" });
	for (size_t i = 0; i < r->n_programs; i++) {
		const Graind__ProgramVerdict *v = r->programs[i];
		char insns[16], us[32];

		snprintf(insns, sizeof(insns), "%u", v->verified_insns);
		snprintf(us, sizeof(us), "%" PRIu64 " us", v->load_time_us);
		output_table_row(t, (const char *[]){ v->program, v->section, v->type,
						      v->accepted ? "accepted" : "rejected",
						      insns, us });
	}
	output_table_print(t, f);
	for (size_t i = 0; i < r->n_programs; i++) {
		const Graind__ProgramVerdict *v = r->programs[i];

		if (v->accepted)
			continue;
		fprintf(f, "\nprogram %s: %s\n", v->program, v->error[0] ? v->error : "rejected");
		if (v->missing_feature[0])
			fprintf(f, "  needs kernel feature: %s\n", v->missing_feature);
		if (v->source_text[0])
			fprintf(f, "  at %s: %s\n", v->source_line[0] ? v->source_line : "?",
				v->source_text);
		if (v->verifier_log[0]) {
			fprintf(f, "  verifier log:\n");
			print_log(v, f);
		}
	}
}

static void verify_detail(const ProtobufCMessage *m, FILE *f)
{
	ctl_verify_detail((const void *)m, f);
}

static const char *verify_failed(const ProtobufCMessage *m)
{
	const Graind__VerifyReport *r = (const void *)m;

	return r->accepted ? NULL : "the verifier refused a program";
}

/* ---------------------------------------------------------------- commands */

static int objects_ls(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = {
		&graind__list_objects_response__descriptor, 7, object_cols, objects_rows,
	};
	struct client_request req = { "GET", "/v1/objects?page_size=1000" };

	(void)a;
	return ctl_execute(ctl, &req, &view);
}

/* "/v1/objects/<sha><suffix>" with the argument escaped. */
static char *object_path(const char *prefix, const char *arg, const char *suffix)
{
	char *e = client_escape(arg), *p = NULL;

	if (e && asprintf(&p, "%s%s%s", prefix, e, suffix) < 0)
		p = NULL;
	free(e);
	return p;
}

static int run_on(struct ctl *ctl, const char *method, const char *prefix, const char *arg,
		  const char *suffix, const struct ctl_view *view)
{
	struct client_request req = { method, object_path(prefix, arg, suffix) };
	int ret;

	if (!req.path) {
		fprintf(stderr, "grainctl: out of memory\n");
		return CTL_EXIT_HOST;
	}
	ret = ctl_execute(ctl, &req, view);
	free((char *)req.path);
	return ret;
}

static int objects_get(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = { &graind__object__descriptor, .detail = object_detail };

	return run_on(ctl, "GET", "/v1/objects/", a->pos[0], "", &view);
}

static int objects_rm(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = { NULL, .done = "deleted" };

	return run_on(ctl, "DELETE", "/v1/objects/", a->pos[0], "", &view);
}

static int objects_verify(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = { &graind__verify_report__descriptor,
					      .detail = verify_detail, .failed = verify_failed };

	return run_on(ctl, "POST", "/v1/objects/", a->pos[0], ":verify", &view);
}

/* The signature to send with `file`: --signature, else FILE.minisig when
 * it exists (what `minisign -S` writes), else none. 0 with *text NULL:
 * unsigned; -1: the named file cannot be read (reason printed). */
static int signature_for(const char *file, const char *given, char **text)
{
	char *guess = NULL;
	size_t len;
	int ret = 0;

	*text = NULL;
	if (!given && asprintf(&guess, "%s.minisig", file) < 0)
		return -1;
	if (!given && access(guess, F_OK) != 0) {
		free(guess);
		return 0;
	}
	if (file_read(given ? given : guess, text, &len) < 0) {
		fprintf(stderr, "grainctl: %s: %s\n", given ? given : guess, strerror(errno));
		ret = -1;
	}
	free(guess);
	return ret;
}

/* The raw bytes go as octet-stream; with a signature, the bytes and the
 * signature go together in one UploadObjectRequest. */
static int objects_push(struct ctl *ctl, const struct ctl_args *a)
{
	static const struct ctl_view view = {
		&graind__object__descriptor, 7, object_cols, one_object_rows,
	};
	const char *file = a->pos[0], *name = a->opt[0];
	struct client_request req = { "POST", NULL };
	char *buf = NULL, *path = NULL, *signature = NULL;
	uint8_t *packed = NULL;
	size_t len;
	int ret = CTL_EXIT_USAGE;

	if (file_read(file, &buf, &len) < 0) {
		fprintf(stderr, "grainctl: %s: %s\n", file, strerror(errno));
		return CTL_EXIT_USAGE;
	}
	if (signature_for(file, a->opt[1], &signature) < 0)
		goto out;
	ret = CTL_EXIT_HOST;
	if (signature) {
		Graind__UploadObjectRequest up = GRAIND__UPLOAD_OBJECT_REQUEST__INIT;

		up.name = (char *)(name ? name : "");
		up.content.data = (uint8_t *)buf;
		up.content.len = len;
		up.signature = signature;
		if (!(packed = malloc(graind__upload_object_request__get_packed_size(&up))) ||
		    !(path = strdup("/v1/objects")))
			goto oom;
		req.body = packed;
		req.body_len = graind__upload_object_request__pack(&up, packed);
		req.content_type = "application/x-protobuf";
	} else {
		path = name ? object_path("/v1/objects?name=", name, "") : strdup("/v1/objects");
		if (!path)
			goto oom;
		req.body = buf;
		req.body_len = len;
		req.content_type = "application/octet-stream";
	}
	req.path = path;
	ret = ctl_execute(ctl, &req, &view);
	goto out;
oom:
	fprintf(stderr, "grainctl: out of memory\n");
out:
	free(packed);
	free(path);
	free(signature);
	free(buf);
	return ret;
}

const struct ctl_cmd ctl_object_cmds[] = {
	{ "objects", "push", "FILE [--name NAME] [--signature FILE.minisig]",
	  "upload an eBPF ELF object; the same bytes again give the same object. "
	  "FILE.minisig, when there, goes with it as its minisign signature", 1, 1,
	  { { "name", 'n', true, "the object's name" },
	    { "signature", 's', true, "its minisign signature (default FILE.minisig)" } },
	  objects_push },
	{ "objects", "ls", "", "list the objects, built-in ones included", 0, 0, { { 0 } },
	  objects_ls },
	{ "objects", "get", "SHA256", "an object's programs and maps", 1, 1, { { 0 } },
	  objects_get },
	{ "objects", "rm", "SHA256", "delete an object no probe uses", 1, 1, { { 0 } },
	  objects_rm },
	{ "objects", "verify", "SHA256",
	  "run the kernel verifier on each program: verdicts, and for a refused one the "
	  "verifier log with the failing source line marked (exit 1)", 1, 1, { { 0 } },
	  objects_verify },
	{ 0 }
};
