/* output: how grainctl prints answers.
 *
 * Tables for people (columns aligned, the header bold on a colour
 * terminal), or per host one proto3 JSON document: {"host": URL, "result":
 * <message>} or {"host": URL, "error": <graind.Status>}, pretty-printed
 * for -o json and on one line for -o jsonl. Colours only when stdout is a
 * terminal and NO_COLOR is unset. */
#ifndef GRAINCTL_OUTPUT_H
#define GRAINCTL_OUTPUT_H

#include <stdbool.h>
#include <stdio.h>
#include <protobuf-c/protobuf-c.h>

enum output_format { OUTPUT_TABLE, OUTPUT_JSON, OUTPUT_JSONL };

enum output_colour { COLOUR_NONE, COLOUR_BOLD, COLOUR_GREEN, COLOUR_RED, COLOUR_YELLOW };

/* Decide once whether stdout (and stderr) get colours. */
void output_init(void);

/* `s` wrapped in the colour's escape codes when colours are on, else `s`
 * itself; the result lives until the next call with the same slot (0..3). */
const char *output_colour(enum output_colour c, const char *s, int slot);
bool output_colours_on(FILE *f);

struct output_table;

/* A table of `ncols` columns named by `headers`. */
struct output_table *output_table_new(int ncols, const char *const *headers);
/* Append a row of ncols strings (copied; NULL prints as "-"). */
void output_table_row(struct output_table *t, const char *const *cells);
/* Print aligned to `f` and free the table. With no rows, nothing but the
 * header is printed. */
void output_table_print(struct output_table *t, FILE *f);

/* Print one host's document: `msg` as "result" or, when `error` is set, a
 * graind.Status as "error". Returns 0, -1 when the message does not
 * encode. */
int output_json(enum output_format fmt, const char *host, const ProtobufCMessage *msg,
		bool error);

#endif
