/* utf8: checks for text that must be valid UTF-8 (JSON strings, protobuf
 * strings), and a scrubber for text from outside that is merely shown. */
#ifndef GRAIND_UTF8_H
#define GRAIND_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s[0..len) is valid UTF-8 (no overlong forms, no surrogates). */
bool utf8_valid(const char *s, size_t len);

/* Replace, in place, every byte of the NUL-terminated s that is not part
 * of a valid UTF-8 sequence with '?'. */
void utf8_scrub(char *s);

#endif
