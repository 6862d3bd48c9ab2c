/* grainctl's tables and JSON documents. */
#include "server/grainctl/output.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "server/util/codec.h"

static bool colour_out, colour_err;

void output_init(void)
{
	const char *no = getenv("NO_COLOR");
	bool allowed = !(no && *no);

	colour_out = allowed && isatty(STDOUT_FILENO);
	colour_err = allowed && isatty(STDERR_FILENO);
}

bool output_colours_on(FILE *f)
{
	return f == stderr ? colour_err : colour_out;
}

const char *output_colour(enum output_colour c, const char *s, int slot)
{
	static char buf[4][512];
	static const char *codes[] = { "", "1", "32", "31", "33" };

	if (c == COLOUR_NONE || slot < 0 || slot > 3)
		return s;
	snprintf(buf[slot], sizeof(buf[slot]), "\033[%sm%s\033[0m", codes[c], s);
	return buf[slot];
}

struct output_table {
	int ncols;
	size_t nrows, cap;
	char **cells;           /* (nrows + 1) * ncols; row 0 is the header */
};

static char *cell_dup(const char *s)
{
	char *c = strdup(s && *s ? s : "-");

	/* A cell is one line: newlines and tabs would break the alignment. */
	for (char *p = c; p && *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	return c;
}

struct output_table *output_table_new(int ncols, const char *const *headers)
{
	struct output_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->ncols = ncols;
	output_table_row(t, headers);
	return t;
}

void output_table_row(struct output_table *t, const char *const *cells)
{
	if (!t)
		return;
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));

		if (!c)
			return;
		t->cells = c;
		t->cap = cap;
	}
	for (int i = 0; i < t->ncols; i++)
		t->cells[t->nrows * t->ncols + i] = cell_dup(cells[i]);
	t->nrows++;
}

/* Display width: count UTF-8 lead bytes, not continuation bytes. */
static size_t width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

void output_table_print(struct output_table *t, FILE *f)
{
	size_t *w;

	if (!t)
		return;
	w = calloc(t->ncols, sizeof(*w));
	for (size_t r = 0; w && r < t->nrows; r++)
		for (int c = 0; c < t->ncols; c++) {
			const char *s = t->cells[r * t->ncols + c];
			if (s && width(s) > w[c])
				w[c] = width(s);
		}
	for (size_t r = 0; w && r < t->nrows; r++) {
		bool bold = r == 0 && output_colours_on(f);

		if (bold)
			fputs("\033[1m", f);
		for (int c = 0; c < t->ncols; c++) {
			const char *s = t->cells[r * t->ncols + c];

			s = s ? s : "";
			if (c == t->ncols - 1)
				fputs(s, f);
			else
				fprintf(f, "%s%*s", s, (int)(w[c] - width(s) + 2), "");
		}
		if (bold)
			fputs("\033[0m", f);
		fputc('\n', f);
	}
	for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(w);
	free(t);
}

int output_json(enum output_format fmt, const char *host, const ProtobufCMessage *msg,
		bool error)
{
	json_t *doc = NULL, *inner = NULL;
	char *text = NULL, *out = NULL;
	size_t len;
	int ret = -1;

	if (codec_encode(CODEC_JSON, msg, &text, &len, NULL) < 0)
		goto out;
	if (!(inner = json_loadb(text, len, 0, NULL)) || !(doc = json_object()))
		goto out;
	json_object_set_new(doc, "host", json_string(host));
	json_object_set(doc, error ? "error" : "result", inner);
	out = json_dumps(doc, JSON_PRESERVE_ORDER |
			 (fmt == OUTPUT_JSONL ? JSON_COMPACT : JSON_INDENT(2)));
	if (!out)
		goto out;
	puts(out);
	ret = 0;
out:
	free(out);
	free(text);
	json_decref(inner);
	json_decref(doc);
	return ret;
}
