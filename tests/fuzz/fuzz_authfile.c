/* Fuzz the credentials file parser (authfile_parse) on arbitrary bytes.
 * What it accepts must write back, line by line, to a file that parses to
 * the same principals; what it refuses is a 400 naming the line. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/authfile.h"
#include "server/util/log.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct authfile af, back;
	struct gerr err = { 0 };
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	if (authfile_parse("fuzz", (const char *)data, size, &af, &err) < 0) {
		fuzz_check(err.status == 400 && !strncmp(err.msg, "fuzz", 4), "%d %s", err.status,
			   err.msg);
		return 0;
	}
	f = open_memstream(&text, &len);
	fuzz_check(f, "out of memory");
	for (size_t i = 0; i < af.n; i++) {
		fuzz_check(authfile_name_ok(af.p[i].name), "name '%s'", af.p[i].name);
		fuzz_check(af.p[i].role != AUTH_NONE, "principal %s has no role", af.p[i].name);
		authfile_write_line(f, &af.p[i]);
	}
	fclose(f);
	err = (struct gerr){ 0 };
	fuzz_check(authfile_parse("written", text, len, &back, &err) == 0, "%s\n%s", err.msg, text);
	fuzz_check(back.n == af.n, "%zu principals read back as %zu", af.n, back.n);
	for (size_t i = 0; i < af.n; i++)
		fuzz_check(!memcmp(&af.p[i], &back.p[i], sizeof(af.p[i])) ||
			   (!strcmp(af.p[i].name, back.p[i].name) &&
			    af.p[i].role == back.p[i].role &&
			    af.p[i].n_scopes == back.p[i].n_scopes &&
			    af.p[i].expires_ms == back.p[i].expires_ms &&
			    af.p[i].kind == back.p[i].kind &&
			    !memcmp(af.p[i].digest, back.p[i].digest, 32) &&
			    !strcmp(af.p[i].cert, back.p[i].cert)),
			   "principal %s reads back otherwise:\n%s", af.p[i].name, text);
	free(text);
	authfile_clear(&af);
	authfile_clear(&back);
	return 0;
}
