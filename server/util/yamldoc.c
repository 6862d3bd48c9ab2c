/* YAML → JSON through libyaml's event parser. */
#include "server/util/yamldoc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#define MAX_DEPTH 64

static json_t *plain_scalar(const char *s, size_t len)
{
	json_error_t jerr;
	json_t *v;

	if (len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0)
		return json_null();
	if (strcmp(s, "true") == 0)
		return json_true();
	if (strcmp(s, "false") == 0)
		return json_false();
	/* A JSON number stays one: "-12", "1.5e3". */
	if (strspn(s, "-+0123456789.eE") == len &&
	    (v = json_loadb(s, len, JSON_DECODE_ANY, &jerr)) && json_is_number(v))
		return v;
	return json_stringn(s, len);
}

struct parse {
	yaml_parser_t p;
	const char *path;
	struct gerr *err;
};

static int next(struct parse *ps, yaml_event_t *ev)
{
	if (yaml_parser_parse(&ps->p, ev))
		return 0;
	return gerr_set(ps->err, 400, "%s:%zu: %s", ps->path, ps->p.problem_mark.line + 1,
			ps->p.problem ? ps->p.problem : "YAML does not parse");
}

/* The node that `ev` starts (ev is consumed). */
static json_t *node(struct parse *ps, yaml_event_t *ev, int depth)
{
	json_t *v = NULL;
	yaml_event_t e;

	if (depth > MAX_DEPTH) {
		gerr_set(ps->err, 400, "%s:%zu: nested too deep", ps->path, ev->start_mark.line + 1);
		goto out;
	}
	switch (ev->type) {
	case YAML_SCALAR_EVENT: {
		const char *s = (const char *)ev->data.scalar.value;
		size_t len = ev->data.scalar.length;

		v = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? plain_scalar(s, len)
								     : json_stringn(s, len);
		if (!v)
			gerr_set(ps->err, 400, "%s:%zu: not UTF-8", ps->path, ev->start_mark.line + 1);
		break;
	}
	case YAML_SEQUENCE_START_EVENT:
		v = json_array();
		for (;;) {
			json_t *item;

			if (next(ps, &e) < 0)
				goto fail;
			if (e.type == YAML_SEQUENCE_END_EVENT) {
				yaml_event_delete(&e);
				break;
			}
			if (!(item = node(ps, &e, depth + 1)))
				goto fail;
			json_array_append_new(v, item);
		}
		break;
	case YAML_MAPPING_START_EVENT:
		v = json_object();
		for (;;) {
			json_t *item;
			char *key;
			size_t line;

			if (next(ps, &e) < 0)
				goto fail;
			if (e.type == YAML_MAPPING_END_EVENT) {
				yaml_event_delete(&e);
				break;
			}
			line = e.start_mark.line + 1;
			if (e.type != YAML_SCALAR_EVENT) {
				yaml_event_delete(&e);
				gerr_set(ps->err, 400, "%s:%zu: a key must be a scalar", ps->path, line);
				goto fail;
			}
			key = strndup((const char *)e.data.scalar.value, e.data.scalar.length);
			yaml_event_delete(&e);
			if (!key || json_object_get(v, key)) {
				gerr_set(ps->err, 400, "%s:%zu: key %s twice", ps->path, line,
					 key ? key : "?");
				free(key);
				goto fail;
			}
			if (next(ps, &e) < 0 || !(item = node(ps, &e, depth + 1))) {
				free(key);
				goto fail;
			}
			json_object_set_new(v, key, item);
			free(key);
		}
		break;
	case YAML_ALIAS_EVENT:
		gerr_set(ps->err, 400, "%s:%zu: aliases are not supported", ps->path,
			 ev->start_mark.line + 1);
		break;
	default:
		gerr_set(ps->err, 400, "%s:%zu: unexpected YAML", ps->path, ev->start_mark.line + 1);
	}
	goto out;
fail:
	json_decref(v);
	v = NULL;
out:
	yaml_event_delete(ev);
	return v;
}

/* The stream ps->p was set up to read. */
static int load_stream(struct parse *ps, json_t **docs)
{
	json_t *all = json_array();
	yaml_event_t ev;
	int ret = -1;

	if (!all)
		return gerr_set(ps->err, 500, "out of memory");
	for (;;) {
		if (next(ps, &ev) < 0)
			goto out;
		if (ev.type == YAML_STREAM_END_EVENT) {
			yaml_event_delete(&ev);
			break;
		}
		if (ev.type == YAML_DOCUMENT_START_EVENT) {
			json_t *doc;

			yaml_event_delete(&ev);
			if (next(ps, &ev) < 0 || !(doc = node(ps, &ev, 0)))
				goto out;
			json_array_append_new(all, doc);
			if (next(ps, &ev) < 0)   /* the document's end */
				goto out;
		}
		yaml_event_delete(&ev);
	}
	*docs = all;
	all = NULL;
	ret = 0;
out:
	json_decref(all);
	return ret;
}

int yamldoc_load(const char *path, json_t **docs, struct gerr *err)
{
	struct parse ps = { .path = path, .err = err };
	FILE *f = fopen(path, "rb");
	int ret;

	*docs = NULL;
	if (!f)
		return gerr_set(err, 400, "%s: %s", path, strerror(errno));
	if (!yaml_parser_initialize(&ps.p)) {
		fclose(f);
		return gerr_set(err, 500, "out of memory");
	}
	yaml_parser_set_input_file(&ps.p, f);
	ret = load_stream(&ps, docs);
	yaml_parser_delete(&ps.p);
	fclose(f);
	return ret;
}

int yamldoc_parse(const char *name, const void *text, size_t len, json_t **docs,
		  struct gerr *err)
{
	struct parse ps = { .path = name, .err = err };
	int ret;

	*docs = NULL;
	if (!yaml_parser_initialize(&ps.p))
		return gerr_set(err, 500, "out of memory");
	yaml_parser_set_input_string(&ps.p, text, len);
	ret = load_stream(&ps, docs);
	yaml_parser_delete(&ps.p);
	return ret;
}
