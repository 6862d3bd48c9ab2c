/* console: the web console's files, embedded at build time (web/ and
 * Debian's Chart.js, see the Makefile), served by the REST transport.
 *
 * "/" is web/index.html; every other file is "/ui/NAME". Each answer
 * carries a strong ETag (the first 128 bits of the file's SHA-256,
 * computed once) and "Cache-Control: no-cache", so a browser keeps the
 * file and revalidates it with If-None-Match, getting a bodiless 304
 * while it is unchanged. Bodies point at the embedded bytes: nothing is
 * copied. Safe from any thread. */
#ifndef GRAIND_CONSOLE_H
#define GRAIND_CONSOLE_H

#include "api/api.h"

/* Answer GET of console file `name` ("" for the page itself): 200 with
 * it, 304 when `if_none_match` (the header, NULL: none) names its ETag,
 * 404 when there is no such file. */
void console_serve(const char *name, const char *if_none_match, const char *accept,
		   struct api_response *resp);

#endif
