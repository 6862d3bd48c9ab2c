/* curlso: libcurl through dlopen (see curlso.h). */
#include "server/util/curlso.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static struct curlso api;
static pthread_once_t once = PTHREAD_ONCE_INIT;
/* What is missing, after "... need": "" when libcurl is there. */
static char load_error[256];

static bool symbol(void *lib, const char *name, void *fn)
{
	void *sym = dlsym(lib, name);

	if (!sym)
		snprintf(load_error, sizeof(load_error), "a libcurl with %s (%s has none)", name,
			 CURLSO_LIBRARY);
	memcpy(fn, &sym, sizeof(sym));
	return sym != NULL;
}

static void load(void)
{
	void *lib = dlopen(CURLSO_LIBRARY, RTLD_NOW | RTLD_LOCAL);
	CURLcode (*global_init)(long flags);
	CURLcode rc;

	if (!lib) {
		snprintf(load_error, sizeof(load_error),
			 "libcurl (%s, Debian package libcurl4): %s", CURLSO_LIBRARY,
			 dlerror());
		return;
	}
	if (!symbol(lib, "curl_global_init", &global_init) ||
	    !symbol(lib, "curl_easy_init", &api.easy_init) ||
	    !symbol(lib, "curl_easy_setopt", &api.easy_setopt) ||
	    !symbol(lib, "curl_easy_perform", &api.easy_perform) ||
	    !symbol(lib, "curl_easy_getinfo", &api.easy_getinfo) ||
	    !symbol(lib, "curl_easy_cleanup", &api.easy_cleanup) ||
	    !symbol(lib, "curl_easy_strerror", &api.easy_strerror) ||
	    !symbol(lib, "curl_slist_append", &api.slist_append) ||
	    !symbol(lib, "curl_slist_free_all", &api.slist_free_all))
		return;
	rc = global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK)
		snprintf(load_error, sizeof(load_error), "a libcurl that starts: %s",
			 api.easy_strerror(rc));
}

const struct curlso *curlso_get(const char *who, struct gerr *err)
{
	pthread_once(&once, load);
	if (load_error[0]) {
		gerr_set(err, 500, "%s need %s", who, load_error);
		return NULL;
	}
	return &api;
}
