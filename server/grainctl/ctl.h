/* ctl: what grainctl's commands share: the parsed global options, the
 * command table entry, and ctl_execute(), which sends one request to every
 * host, decodes the answers with the agent's codec and prints them.
 *
 * Exit codes: CTL_EXIT_OK (every host answered with success), CTL_EXIT_HOST
 * (at least one host failed or refused), CTL_EXIT_USAGE (bad command line
 * or an input file that does not parse; no host was asked). */
#ifndef GRAINCTL_CTL_H
#define GRAINCTL_CTL_H

#include <stdbool.h>
#include <stdio.h>
#include <protobuf-c/protobuf-c.h>

#include "build/proto/graind.pb-c.h"
#include "server/grainctl/client.h"
#include "server/grainctl/output.h"
#include "server/util/file.h"

enum { CTL_EXIT_OK = 0, CTL_EXIT_HOST = 1, CTL_EXIT_USAGE = 2 };

#define CTL_MAX_OPTS 8

struct ctl {
	const char **hosts;
	size_t nhosts;
	char *token;                  /* NULL: no token found */
	enum output_format fmt;
	int parallel;
	long timeout_ms;
};

/* A command's options: "--name VALUE" (has_arg) or a flag "--name". */
struct ctl_opt {
	const char *name;
	char short_name;              /* 0: none */
	bool has_arg;
	const char *help;
};

struct ctl_args {
	char **pos;                   /* positional arguments after the verb */
	int npos;
	const char *opt[CTL_MAX_OPTS];/* by the command's option index; NULL unset */
};

struct ctl_cmd {
	const char *family;           /* "objects"; "status" for a bare command */
	const char *verb;             /* "push"; NULL for a bare command */
	const char *synopsis;         /* "FILE [--name NAME]" */
	const char *help;
	int min_pos, max_pos;
	struct ctl_opt opts[CTL_MAX_OPTS];
	int (*run)(struct ctl *ctl, const struct ctl_args *args);
};

/* Rows of a table across hosts: with more than one host the first column
 * is HOST. */
struct ctl_rows {
	struct output_table *t;
	const char *host;             /* NULL: no HOST column */
	int ncols;
};
void ctl_row(struct ctl_rows *r, const char *const *cells);

/* How a command's successful answer is shown. */
struct ctl_view {
	const ProtobufCMessageDescriptor *reply;   /* NULL: Empty (204) */
	/* A table: the columns and the rows of one host's answer. */
	int ncols;
	const char *const *cols;
	void (*rows)(struct ctl_rows *r, const ProtobufCMessage *msg);
	/* Or the details of one host's answer, printed to stdout. */
	void (*detail)(const ProtobufCMessage *msg, FILE *f);
	/* Or a line for an Empty answer: "deleted probe x". */
	const char *done;
	/* Optional: a failure the answer itself reports (a refused program);
	 * returns its one-line description or NULL. */
	const char *(*failed)(const ProtobufCMessage *msg);
};

/* Send `req` (token filled in here) to every host and print each answer
 * per `view` and ctl->fmt. Returns the exit code. */
int ctl_execute(struct ctl *ctl, struct client_request *req, const struct ctl_view *view);

/* A reply as the message `d` (NULL: Empty) into *msg, or as the error
 * into *st (the agent's graind.Status, or one saying what came instead);
 * 0 or -1. Free both with pbmsg_free(). */
int ctl_reply_decode(const struct client_reply *r, const ProtobufCMessageDescriptor *d,
		     ProtobufCMessage **msg, Graind__Status **st);
/* "HOST: message (code)" on stderr. */
void ctl_print_error(const char *host, const Graind__Status *st);
/* The per-host line on stderr: host (padded to width), ok or failed, time. */
void ctl_print_summary(const struct client_reply *r, int width, const char *failure);

/* Helpers for views. */
const char *ctl_field_text(const Graind__Field *f, char *buf, size_t n);
/* "k=v k=v" of fields, or tags, into buf. */
const char *ctl_fields_text(Graind__Field *const *fs, size_t n, char *buf, size_t len);
const char *ctl_enum_name(const ProtobufCEnumDescriptor *d, int value);
void ctl_verify_detail(const Graind__VerifyReport *r, FILE *f);

/* The command families, each a table ending in a zeroed entry. */
extern const struct ctl_cmd ctl_object_cmds[];
extern const struct ctl_cmd ctl_probe_cmds[];
extern const struct ctl_cmd ctl_data_cmds[];     /* status, maps, samples */
/* samples tail [-f] (cmd_tail.c). */
int ctl_samples_tail(struct ctl *ctl, const struct ctl_args *args);
extern const struct ctl_cmd ctl_sink_cmds[];
extern const struct ctl_cmd ctl_apply_cmds[];    /* plan, apply */
extern const struct ctl_cmd ctl_prom_cmds[];     /* prometheus-targets */

/* Read `path` as proto3 JSON of `desc` and pack it as protobuf into *body;
 * prints the reason and returns -1 when it does not parse. */
int ctl_json_file_to_pb(const char *path, const ProtobufCMessageDescriptor *desc,
			void **body, size_t *len);

#endif
