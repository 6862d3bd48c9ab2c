/* console: see console.h. */
#include "api/console.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "server/util/sha256.h"

struct asset {
	const char *name;
	const char *start, *end;
	char etag[35];                  /* "\"" + 32 hex + "\"" */
};

/* build/console_assets.h: CONSOLE_ASSET(name, symbol) for every file. */
#define CONSOLE_ASSET(name, sym) extern const char sym##_start[], sym##_end[];
#include "console_assets.h"
#undef CONSOLE_ASSET

#define CONSOLE_ASSET(name, sym) { name, sym##_start, sym##_end, "" },
static struct asset assets[] = {
#include "console_assets.h"
};
#undef CONSOLE_ASSET
#define N_ASSETS (sizeof(assets) / sizeof(assets[0]))

static pthread_once_t etags_once = PTHREAD_ONCE_INIT;

static void compute_etags(void)
{
	char hex[SHA256_HEX_LEN + 1];

	for (size_t i = 0; i < N_ASSETS; i++) {
		sha256_hex(assets[i].start, (size_t)(assets[i].end - assets[i].start), hex);
		snprintf(assets[i].etag, sizeof(assets[i].etag), "\"%.32s\"", hex);
	}
}

static const char *content_type(const char *name)
{
	static const struct { const char *ext, *type; } types[] = {
		{ ".html", "text/html; charset=utf-8" },
		{ ".js", "text/javascript; charset=utf-8" },
		{ ".css", "text/css; charset=utf-8" },
		{ ".svg", "image/svg+xml" },
		{ ".txt", "text/plain; charset=utf-8" },
	};
	const char *dot = strrchr(name, '.');

	for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(dot, types[i].ext) == 0)
			return types[i].type;
	return "application/octet-stream";
}

/* Whether an If-None-Match value lists etag (or is "*"). */
static bool etag_listed(const char *header, const char *etag)
{
	size_t len = strlen(etag);

	for (const char *p = header; *p; ) {
		p += strspn(p, " \t,");
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		if (*p == '*' || strncmp(p, etag, len) == 0)
			return true;
		p += strcspn(p, ",");
	}
	return false;
}

void console_serve(const char *name, const char *if_none_match, const char *accept,
		   struct api_response *resp)
{
	const char *file = name[0] ? name : "index.html";
	const struct asset *a = NULL;

	pthread_once(&etags_once, compute_etags);
	for (size_t i = 0; i < N_ASSETS && !a; i++)
		if (strcmp(assets[i].name, file) == 0)
			a = &assets[i];
	if (!a || (name[0] && strcmp(file, "index.html") == 0)) {
		char msg[160];

		snprintf(msg, sizeof(msg), "the console has no file %.100s", file);
		api_refuse(accept, 404, msg, resp);
		return;
	}
	memset(resp, 0, sizeof(*resp));
	resp->etag = a->etag;
	resp->cache_control = "no-cache";
	if (if_none_match && etag_listed(if_none_match, a->etag)) {
		resp->status = 304;
		return;
	}
	resp->status = 200;
	resp->content_type = content_type(a->name);
	resp->body = (char *)a->start;
	resp->body_len = (size_t)(a->end - a->start);
	resp->body_static = true;
}
