/* curlso: libcurl, loaded with dlopen on first use.
 *
 * With its TLS stack libcurl adds megabytes to a process, and most agents
 * never send to S3 or fetch an object, so it is mapped only when one of
 * them first needs it. Its global state is set up once and never torn down
 * (the process exits with it). The header of libcurl gives the types; the
 * functions are called through the table. */
#ifndef GRAIND_UTIL_CURLSO_H
#define GRAIND_UTIL_CURLSO_H

#include <curl/curl.h>

#include "server/util/gerr.h"

#define CURLSO_LIBRARY "libcurl.so.4"

struct curlso {
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *c, CURLoption opt, ...);
	CURLcode (*easy_perform)(CURL *c);
	CURLcode (*easy_getinfo)(CURL *c, CURLINFO info, ...);
	void (*easy_cleanup)(CURL *c);
	const char *(*easy_strerror)(CURLcode rc);
	struct curl_slist *(*slist_append)(struct curl_slist *list, const char *s);
	void (*slist_free_all)(struct curl_slist *list);
};

/* Set an option of easy handle c through `curl` (a const struct curlso *
 * in scope), returning its CURLcode from the enclosing function when it
 * fails. */
#define CURLSO_SETOPT(c, opt, val)                                   \
	do {                                                         \
		CURLcode rc_ = curl->easy_setopt(c, opt, val);       \
		if (rc_ != CURLE_OK)                                 \
			return rc_;                                  \
	} while (0)

/* The loaded library; NULL when it cannot be loaded, with err (500):
 * "<who> need libcurl (libcurl.so.4, Debian package libcurl4): ...",
 * who being "S3 sinks", say. Thread-safe; loads once. */
const struct curlso *curlso_get(const char *who, struct gerr *err);

#endif
