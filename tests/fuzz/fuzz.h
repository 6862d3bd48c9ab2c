/* What every fuzz target shares: a failed check says what failed, then
 * aborts, which libFuzzer reports as a crash with the input saved. */
#ifndef GRAIND_FUZZ_H
#define GRAIND_FUZZ_H

#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define fuzz_check(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "check failed: %s: ", #cond); \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		abort(); \
	} \
} while (0)

#endif
