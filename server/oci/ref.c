/* oci ref: image references parsed strictly (see ref.h). */
#include "server/oci/ref.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define FORM "registry[:port]/repository[:tag][@sha256:digest]"

int oci_digest_valid(const char *digest)
{
	if (strncmp(digest, "sha256:", 7) != 0 || strlen(digest) != 7 + 64)
		return 0;
	return strspn(digest + 7, "0123456789abcdef") == 64;
}

static bool is_registry(const char *host, size_t n)
{
	if (n == 9 && strncmp(host, "localhost", 9) == 0)
		return true;
	return memchr(host, '.', n) || memchr(host, ':', n);
}

/* A host, optionally ":port": letters, digits, '.', '-', and one ':'
 * before digits. */
static bool host_valid(const char *host, size_t n)
{
	const char *colon = memchr(host, ':', n);
	size_t name = colon ? (size_t)(colon - host) : n;

	if (!name || host[0] == '-' || host[0] == '.')
		return false;
	for (size_t i = 0; i < name; i++)
		if (!isalnum((unsigned char)host[i]) && host[i] != '.' && host[i] != '-')
			return false;
	if (!colon)
		return true;
	if (colon + 1 == host + n || n - name - 1 > 5)
		return false;
	for (const char *p = colon + 1; p < host + n; p++)
		if (!isdigit((unsigned char)*p))
			return false;
	return true;
}

/* Path components of lowercase letters and digits, joined inside a
 * component by one '.', '_' or '-' run (as the distribution spec asks). */
static bool repository_valid(const char *repo, size_t n)
{
	bool at_start = true;

	if (!n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = repo[i];

		if (islower((unsigned char)c) || isdigit((unsigned char)c)) {
			at_start = false;
		} else if (c == '/') {
			if (at_start)
				return false;
			at_start = true;
		} else if (c == '.' || c == '_' || c == '-') {
			if (at_start || i + 1 == n || repo[i + 1] == '/')
				return false;
		} else {
			return false;
		}
	}
	return !at_start;
}

static bool tag_valid(const char *tag, size_t n)
{
	if (!n || n > 128 || !(isalnum((unsigned char)tag[0]) || tag[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!isalnum((unsigned char)tag[i]) && !strchr("._-", tag[i]))
			return false;
	return true;
}

int oci_ref_parse(const char *text, struct oci_ref *ref, struct gerr *err)
{
	const char *slash = strchr(text, '/'), *at = strchr(text, '@'), *end, *colon;
	size_t n;

	memset(ref, 0, sizeof(*ref));
	if (!text[0])
		return gerr_set(err, 400, "image is empty: " FORM);
	if (strlen(text) > 600)
		return gerr_set(err, 400, "image is longer than 600 characters");
	if (!slash || !is_registry(text, (size_t)(slash - text)))
		return gerr_set(err, 400, "image \"%.200s\": name the registry first, "
				FORM " (no registry is assumed)", text);
	if (!host_valid(text, (size_t)(slash - text)) ||
	    (size_t)(slash - text) >= sizeof(ref->registry))
		return gerr_set(err, 400, "image \"%.200s\": the registry \"%.*s\" is not a "
				"host[:port]", text, (int)(slash - text), text);
	snprintf(ref->registry, sizeof(ref->registry), "%.*s", (int)(slash - text), text);
	end = at ? at : text + strlen(text);
	if (at) {
		if (!oci_digest_valid(at + 1))
			return gerr_set(err, 400, "image \"%.200s\": the digest must be sha256: and "
					"64 lowercase hex digits", text);
		snprintf(ref->digest, sizeof(ref->digest), "%s", at + 1);
	}
	/* A ':' after the last '/' starts the tag. */
	colon = memchr(slash + 1, ':', (size_t)(end - slash - 1));
	if (colon && memchr(colon, '/', (size_t)(end - colon)))
		colon = NULL;
	n = (size_t)((colon ? colon : end) - slash - 1);
	if (!repository_valid(slash + 1, n) || n >= sizeof(ref->repository))
		return gerr_set(err, 400, "image \"%.200s\": the repository must be lowercase "
				"letters and digits in components joined by '/', '.', '_' or '-'",
				text);
	snprintf(ref->repository, sizeof(ref->repository), "%.*s", (int)n, slash + 1);
	if (colon) {
		n = (size_t)(end - colon - 1);
		if (!tag_valid(colon + 1, n))
			return gerr_set(err, 400, "image \"%.200s\": a tag is 1 to 128 letters, "
					"digits, '_', '.' or '-', not starting with '.' or '-'",
					text);
		snprintf(ref->tag, sizeof(ref->tag), "%.*s", (int)n, colon + 1);
	} else if (!ref->digest[0]) {
		strcpy(ref->tag, "latest");
	}
	return 0;
}

void oci_ref_format(const struct oci_ref *ref, char *out, size_t size)
{
	snprintf(out, size, "%s/%s%s%s%s%s", ref->registry, ref->repository,
		 ref->tag[0] ? ":" : "", ref->tag, ref->digest[0] ? "@" : "", ref->digest);
}
