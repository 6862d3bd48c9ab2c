/* Fuzz the YAML documents (server/util/yamldoc.h) that grainctl's plan and
 * apply and the agent's --config-dir read: a stream parses to an array of
 * documents or fails with a 400 naming where; a parse that succeeds gives
 * JSON that jansson can write out, and that JSON, read back as YAML (JSON
 * is YAML), gives the same documents. */
#include <jansson.h>
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gerr err = { 0 };
	json_t *docs = NULL, *again = NULL;
	char *text;

	if (yamldoc_parse("input", data, size, &docs, &err) < 0) {
		fuzz_check(err.status == 400 || err.status == 500, "status %d: %s", err.status,
			   err.msg);
		fuzz_check(err.msg[0], "a failure without a message");
		return 0;
	}
	fuzz_check(json_is_array(docs), "not an array of documents");
	/* ASCII only: YAML refuses C1 controls written as they are, and the
	 * surrogate pairs that JSON writes for characters beyond U+FFFF;
	 * those become YAML's own \U escapes. */
	text = json_dumps(docs, JSON_COMPACT | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY |
					JSON_ENSURE_ASCII);
	if (text)
		join_surrogates(text);
	fuzz_check(text, "the documents do not write out as JSON");
	/* The array of documents as one flow sequence: one document. */
	fuzz_check(yamldoc_parse("json", text, strlen(text), &again, &err) == 0,
		   "its JSON does not read back: %s: %s", err.msg, text);
	fuzz_check(json_array_size(again) == 1 && json_equal(json_array_get(again, 0), docs),
		   "its JSON reads back as something else: %s", text);
	free(text);
	json_decref(again);
	json_decref(docs);
	return 0;
}
