/* ctl_execute: one request to every host, each answer decoded and shown. */
#include "server/grainctl/ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "server/util/codec.h"
#include "server/util/pbmsg.h"

#define MIME_PROTOBUF "application/x-protobuf"

void ctl_row(struct ctl_rows *r, const char *const *cells)
{
	const char *row[32];
	int n = 0;

	if (r->host)
		row[n++] = r->host;
	for (int i = 0; i < r->ncols && n < 32; i++)
		row[n++] = cells[i];
	output_table_row(r->t, row);
}

static bool is_protobuf(const char *ct)
{
	return ct && strncmp(ct, MIME_PROTOBUF, strlen(MIME_PROTOBUF)) == 0;
}

/* A graind.Status for a reply that is not a success: the agent's own, or
 * one made from what came (no answer, a body that is no Status). */
static Graind__Status *reply_status(const struct client_reply *r)
{
	ProtobufCMessage *m = NULL;
	Graind__Status *st;
	char msg[512];

	if (r->status && r->body_len &&
	    codec_decode(is_protobuf(r->content_type) ? CODEC_PROTOBUF : CODEC_JSON,
			 &graind__status__descriptor, r->body, r->body_len, &m, NULL) == 0) {
		st = (Graind__Status *)m;
		if (!st->code)
			st->code = r->status;
		if (st->message[0])
			return st;
		pbmsg_free(m);
	}
	if (!(st = (Graind__Status *)pbmsg_new(&graind__status__descriptor)))
		return NULL;
	if (!r->status)
		snprintf(msg, sizeof(msg), "%s", r->transport_error);
	else
		snprintf(msg, sizeof(msg), "HTTP %d%s%.200s", r->status,
			 r->body_len && !is_protobuf(r->content_type) ? ": " : "",
			 is_protobuf(r->content_type) ? "" : r->body);
	st->code = r->status;
	pbmsg_set_string(&st->message, msg);
	return st;
}

int ctl_reply_decode(const struct client_reply *r, const ProtobufCMessageDescriptor *d,
		     ProtobufCMessage **msg, Graind__Status **st)
{
	struct gerr err = { 0 };

	*msg = NULL;
	*st = NULL;
	if (!d)
		d = &graind__empty__descriptor;
	if (r->status < 200 || r->status > 299) {
		*st = reply_status(r);
		return -1;
	}
	/* A 204 has no body and no type: an empty protobuf message. */
	if (codec_decode(is_protobuf(r->content_type) || !r->body_len ? CODEC_PROTOBUF : CODEC_JSON,
			 d, r->body, r->body_len, msg, &err) == 0)
		return 0;
	if ((*st = (Graind__Status *)pbmsg_new(&graind__status__descriptor))) {
		char m[600];

		snprintf(m, sizeof(m), "the answer is no %s: %s", d->name, err.msg);
		pbmsg_set_string(&(*st)->message, m);
	}
	return -1;
}

void ctl_print_error(const char *host, const Graind__Status *st)
{
	char code[32] = "";

	if (st->code)
		snprintf(code, sizeof(code), " (%d)", st->code);
	fprintf(stderr, "%s: %s%s\n", host,
		output_colours_on(stderr) ? output_colour(COLOUR_RED, st->message, 0) : st->message,
		code);
	if (st->verify_report)
		ctl_verify_detail(st->verify_report, stderr);
}

void ctl_print_summary(const struct client_reply *r, int width, const char *failure)
{
	const char *word = failure ? "failed" : "ok    ";

	if (output_colours_on(stderr))
		word = output_colour(failure ? COLOUR_RED : COLOUR_GREEN, word, 0);
	fprintf(stderr, "%-*s  %s  %5ld ms%s%s\n", width, r->host, word, r->elapsed_ms,
		failure ? "  " : "", failure ? failure : "");
}

int ctl_execute(struct ctl *ctl, struct client_request *req, const struct ctl_view *view)
{
	struct client_reply *replies = calloc(ctl->nhosts, sizeof(*replies));
	ProtobufCMessage **msgs = calloc(ctl->nhosts, sizeof(*msgs));
	Graind__Status **errs = calloc(ctl->nhosts, sizeof(*errs));
	struct output_table *table = NULL;
	bool multi = ctl->nhosts > 1, any_ok = false;
	int exit_code = CTL_EXIT_OK, width = 0;
	size_t i;

	if (!replies || !msgs || !errs) {
		fprintf(stderr, "grainctl: out of memory\n");
		exit_code = CTL_EXIT_HOST;
		goto out;
	}
	req->token = ctl->token;
	client_run(ctl->hosts, ctl->nhosts, req, ctl->parallel, ctl->timeout_ms, replies);

	for (i = 0; i < ctl->nhosts; i++)
		ctl_reply_decode(&replies[i], view->reply, &msgs[i], &errs[i]);

	for (i = 0; i < ctl->nhosts; i++) {
		any_ok |= msgs[i] != NULL;
		if ((int)strlen(ctl->hosts[i]) > width)
			width = (int)strlen(ctl->hosts[i]);
	}
	/* No table at all when no host answered: the errors say it all. */
	if (ctl->fmt == OUTPUT_TABLE && view->rows && any_ok) {
		const char *cols[32];
		int n = 0;

		if (multi)
			cols[n++] = "HOST";
		for (int c = 0; c < view->ncols && n < 32; c++)
			cols[n++] = view->cols[c];
		table = output_table_new(n, cols);
	}
	for (i = 0; i < ctl->nhosts; i++) {
		const char *host = ctl->hosts[i];

		if (ctl->fmt != OUTPUT_TABLE) {
			if (errs[i] || msgs[i])
				output_json(ctl->fmt, host, errs[i] ? &errs[i]->base : msgs[i], errs[i]);
		} else if (errs[i]) {
			ctl_print_error(host, errs[i]);
		} else if (msgs[i] && view->rows) {
			struct ctl_rows rows = { table, multi ? host : NULL, view->ncols };

			view->rows(&rows, msgs[i]);
		} else if (msgs[i] && view->detail) {
			if (multi)
				printf("%s\n", output_colour(output_colours_on(stdout) ? COLOUR_BOLD
							   : COLOUR_NONE, host, 0));
			view->detail(msgs[i], stdout);
			if (multi && i + 1 < ctl->nhosts)
				putchar('\n');
		} else if (msgs[i] && view->done) {
			if (multi)
				printf("%s: %s\n", host, view->done);
			else
				printf("%s\n", view->done);
		}
	}
	if (table)
		output_table_print(table, stdout);
	fflush(stdout);

	for (i = 0; i < ctl->nhosts; i++) {
		const char *failure = NULL;

		if (errs[i] || !msgs[i])
			failure = errs[i] ? errs[i]->message : "no answer";
		else if (view->failed)
			failure = view->failed(msgs[i]);
		if (failure)
			exit_code = CTL_EXIT_HOST;
		if (multi)
			ctl_print_summary(&replies[i], width, failure);
	}
out:
	for (i = 0; i < ctl->nhosts; i++) {
		if (replies)
			client_reply_clear(&replies[i]);
		if (msgs)
			pbmsg_free(msgs[i]);
		if (errs)
			pbmsg_free(errs[i] ? &errs[i]->base : NULL);
	}
	free(replies);
	free(msgs);
	free(errs);
	return exit_code;
}

/* ---------------------------------------------------------------- helpers */

const char *ctl_enum_name(const ProtobufCEnumDescriptor *d, int value)
{
	const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);

	return v ? v->name : "?";
}

const char *ctl_field_text(const Graind__Field *f, char *buf, size_t n)
{
	switch (f->value_case) {
	case GRAIND__FIELD__VALUE_INT:
		snprintf(buf, n, "%" PRId64, f->int_);
		break;
	case GRAIND__FIELD__VALUE_UINT:
		snprintf(buf, n, "%" PRIu64, f->uint);
		break;
	case GRAIND__FIELD__VALUE_REAL:
		snprintf(buf, n, "%g", f->real);
		break;
	case GRAIND__FIELD__VALUE_TEXT:
		snprintf(buf, n, "%s", f->text);
		break;
	case GRAIND__FIELD__VALUE_FLAG:
		snprintf(buf, n, "%s", f->flag ? "true" : "false");
		break;
	default:
		snprintf(buf, n, "-");
	}
	return buf;
}

const char *ctl_fields_text(Graind__Field *const *fs, size_t n, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = 0;
	for (size_t i = 0; i < n && used + 1 < len; i++) {
		char v[256];
		int w;

		ctl_field_text(fs[i], v, sizeof(v));
		if (fs[i]->name[0])
			w = snprintf(buf + used, len - used, "%s%s=%s", i ? " " : "", fs[i]->name, v);
		else
			w = snprintf(buf + used, len - used, "%s%s", i ? " " : "", v);
		if (w < 0)
			break;
		used += (size_t)w;
	}
	return buf;
}

int ctl_json_file_to_pb(const char *path, const ProtobufCMessageDescriptor *desc,
			void **body, size_t *len)
{
	ProtobufCMessage *m = NULL;
	struct gerr err = { 0 };
	char *text = NULL, *out = NULL;
	size_t tlen;
	int ret = -1;

	if (file_read(path, &text, &tlen) < 0) {
		fprintf(stderr, "grainctl: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (codec_decode(CODEC_JSON, desc, text, tlen, &m, &err) < 0) {
		fprintf(stderr, "grainctl: %s: not a %s: %s\n", path, desc->name, err.msg);
		goto out;
	}
	if (codec_encode(CODEC_PROTOBUF, m, &out, len, &err) < 0) {
		fprintf(stderr, "grainctl: %s: %s\n", path, err.msg);
		goto out;
	}
	*body = out;
	out = NULL;
	ret = 0;
out:
	free(out);
	free(text);
	pbmsg_free(m);
	return ret;
}
