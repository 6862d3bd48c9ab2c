/* Fuzz the YAML documents (server/util/yamldoc.h) that grainctl's plan and
 * apply and the agent's --config-dir read: a stream parses to an array of
 * documents or fails with a 400 naming where; a parse that succeeds gives
 * documents that jansson can write out as JSON, and each one's JSON, read
 * back as YAML (JSON is YAML), gives that document again. */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/util/yamldoc.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

/* Rewrites each JSON surrogate pair \uD8xx\uDCxx in place as YAML's
 * \U0001xxxx, which is shorter and so fits. */
static void join_surrogates(char *text)
{
	for (char *p = text; *p; p++) {
		unsigned hi, lo;
		char repl[11];

		if (*p != '\\')
			continue;
		if (p[1] != 'u' || sscanf(p, "\\u%4x\\u%4x", &hi, &lo) != 2 || hi < 0xD800 ||
		    hi > 0xDBFF || lo < 0xDC00 || lo > 0xDFFF) {
			p++; /* past the escaped character */
			continue;
		}
		snprintf(repl, sizeof(repl), "\\U%08X",
			 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
		memcpy(p, repl, 10);
		memmove(p + 10, p + 12, strlen(p + 12) + 1);
		p += 9;
	}
}

/* YAML allows a key written in one line (a "simple key", as JSON's are)
 * at most 1024 characters: a key that escapes to more cannot be read back
 * from JSON, whatever the parser. */
#define YAML_SIMPLE_KEY_MAX 1024

static bool keys_fit_yaml(json_t *v)
{
	const char *key;
	json_t *item;
	size_t i;

	if (json_is_array(v)) {
		json_array_foreach (v, i, item)
			if (!keys_fit_yaml(item))
				return false;
		return true;
	}
	json_object_foreach (v, key, item) {
		json_t *k = json_string(key);
		char *text = k ? json_dumps(k, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
		bool fits = text && strlen(text) <= YAML_SIMPLE_KEY_MAX;

		free(text);
		json_decref(k);
		if (!fits || !keys_fit_yaml(item))
			return false;
	}
	return true;
}

/* Each document, written out as JSON, reads back as YAML (JSON is YAML)
 * as that one document: at the same depth, so as deep as the original. */
static void check_round_trip(json_t *doc)
{
	struct gerr err = { 0 };
	json_t *again = NULL;
	char *text;

	if (!keys_fit_yaml(doc))
		return;
	/* ASCII only: YAML refuses C1 controls written as they are, and the
	 * surrogate pairs that JSON writes for characters beyond U+FFFF;
	 * those become YAML's own \U escapes. */
	text = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY |
				       JSON_ENSURE_ASCII);
	fuzz_check(text, "a document does not write out as JSON");
	join_surrogates(text);
	fuzz_check(yamldoc_parse("json", text, strlen(text), &again, &err) == 0,
		   "its JSON does not read back: %s: %s", err.msg, text);
	fuzz_check(json_array_size(again) == 1 && json_equal(json_array_get(again, 0), doc),
		   "its JSON reads back as something else: %s", text);
	free(text);
	json_decref(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gerr err = { 0 };
	json_t *docs = NULL, *doc;
	size_t i;

	if (yamldoc_parse("input", data, size, &docs, &err) < 0) {
		fuzz_check(err.status == 400 || err.status == 500, "status %d: %s", err.status,
			   err.msg);
		fuzz_check(err.msg[0], "a failure without a message");
		return 0;
	}
	fuzz_check(json_is_array(docs), "not an array of documents");
	json_array_foreach (docs, i, doc)
		check_round_trip(doc);
	json_decref(docs);
	return 0;
}
