/* Fuzz the YAML documents (server/util/yamldoc.h) that grainctl's plan and
 * apply and the agent's --config-dir read: a stream parses to an array of
 * documents or fails with a 400 naming where; a parse that succeeds gives
 * JSON that jansson can write out, and that JSON, read back as YAML (JSON
 * is YAML), gives the same documents. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
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
	/* UTF-8 as it is: YAML refuses the surrogate pairs that JSON's
	 * \u escapes of characters beyond U+FFFF would be. */
	text = json_dumps(docs, JSON_COMPACT | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY);
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
