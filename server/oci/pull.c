/* oci pull: the distribution API's few requests, with their auth flow
 * (see pull.h). */
#define _GNU_SOURCE
#include "server/oci/pull.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/oci/image.h"
#include "server/oci/ref.h"
#include "server/util/pbmsg.h"
#include "server/util/sha256.h"

#define TOKEN_MAX (16u << 10)

struct session {
	const struct oci_pull_opts *o;
	struct oci_ref ref;
	char shown[700];                /* the image, for messages */
	char base[800];                 /* "https://registry/v2/repository" */
	struct fetch_opts fetch;        /* http allowed when the registry is insecure */
	char basic[600];                /* "Authorization: Basic ...", "" none */
	char *bearer;                   /* "Authorization: Bearer ...", NULL none */
	const char *auth;               /* the header sent: basic, bearer or NULL */
};

void oci_pulled_clear(struct oci_pulled *p)
{
	free(p->object);
	pbmsg_free(p->origin ? &p->origin->base : NULL);
	memset(p, 0, sizeof(*p));
}

/* ---------------------------------------------------------------- credentials */

static bool is_base64(const char *s)
{
	return s[0] && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") ==
		       strlen(s);
}

/* The registry's entry of the auth file, as a Basic header. */
static int load_credentials(struct session *s, struct gerr *err)
{
	const char *file = s->o->auth_file, *auth;
	json_error_t jerr;
	json_t *j;

	if (!file || !file[0])
		return 0;
	j = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		return gerr_set(err, 500, "--registry-auth %s: %s", file,
				jerr.line > 0 ? jerr.text : strerror(errno));
	auth = json_string_value(json_object_get(
		json_object_get(json_object_get(j, "auths"), s->ref.registry), "auth"));
	if (auth && (!is_base64(auth) || strlen(auth) > 500)) {
		json_decref(j);
		return gerr_set(err, 500, "--registry-auth %s: the auth of %s is not base64 of "
				"user:password", file, s->ref.registry);
	}
	if (auth)
		snprintf(s->basic, sizeof(s->basic), "Authorization: Basic %s", auth);
	json_decref(j);
	return 0;
}

/* ---------------------------------------------------------------- challenges */

/* The value of parameter `key` of a challenge ("Bearer realm=\"...\",
 * service=\"...\""), unquoted, into out; false when absent. */
static bool challenge_param(const char *challenge, const char *key, char *out, size_t size)
{
	const char *p = strchr(challenge, ' ');
	size_t klen = strlen(key);

	while (p && *p) {
		size_t n = 0;
		bool match;

		while (*p == ' ' || *p == ',')
			p++;
		match = strncasecmp(p, key, klen) == 0 && p[klen] == '=';
		p = strchr(p, '=');
		if (!p)
			return false;
		p++;
		if (*p == '"') {
			for (p++; p[n] && p[n] != '"'; n++)
				;
		} else {
			n = strcspn(p, ",");
		}
		if (match) {
			snprintf(out, size, "%.*s", (int)n, p);
			return n < size;
		}
		p += n + (p[n] == '"');
	}
	return false;
}

/* Percent-encode a query value. */
static void query_escape(const char *in, char *out, size_t size)
{
	size_t o = 0;

	for (; *in && o + 4 < size; in++) {
		unsigned char c = (unsigned char)*in;

		if (isalnum(c) || strchr("-._~:/", c))
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, size - o, "%%%02X", c);
	}
	out[o] = '\0';
}

/* A Bearer challenge: a token from its realm, with the Basic credentials
 * when there are any. */
static int bearer_token(struct session *s, const char *challenge, struct gerr *err)
{
	char realm[512], service[256] = "", scope[512] = "", url[4096], esc[1024], esc2[1024];
	const char *headers[2] = { s->basic[0] ? s->basic : NULL, NULL };
	struct fetch_opts fo = s->fetch;
	struct fetch_reply r;
	json_t *j = NULL;
	const char *token;
	int ret = -1;

	if (!challenge_param(challenge, "realm", realm, sizeof(realm)) || !realm[0])
		return gerr_set(err, 502, "%s: the registry's Bearer challenge names no realm",
				s->shown);
	challenge_param(challenge, "service", service, sizeof(service));
	challenge_param(challenge, "scope", scope, sizeof(scope));
	query_escape(service, esc, sizeof(esc));
	query_escape(scope, esc2, sizeof(esc2));
	snprintf(url, sizeof(url), "%s%sservice=%s%s%s", realm, strchr(realm, '?') ? "&" : "?",
		 esc, scope[0] ? "&scope=" : "", esc2);
	fo.max_bytes = TOKEN_MAX;
	if (fetch_get(&fo, url, "application/json", headers, &r, err) < 0) {
		gerr_prefix(err, "%s: the registry's token service", s->shown);
		return -1;
	}
	if (r.status != 200) {
		gerr_set(err, 502, "%s: the registry's token service %s answered HTTP %ld%s",
			 s->shown, realm, r.status, r.status == 401 && !s->basic[0]
			 ? "; it needs credentials: add them to --registry-auth" : "");
		goto out;
	}
	j = json_loadb(r.body, r.len, 0, NULL);
	token = json_string_value(json_object_get(j, "token"));
	if (!token)
		token = json_string_value(json_object_get(j, "access_token"));
	if (!token || !token[0] || strpbrk(token, "\r\n")) {
		gerr_set(err, 502, "%s: the registry's token service sent no token", s->shown);
		goto out;
	}
	free(s->bearer);
	if (asprintf(&s->bearer, "Authorization: Bearer %s", token) < 0) {
		s->bearer = NULL;
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	s->auth = s->bearer;
	ret = 0;
out:
	json_decref(j);
	fetch_reply_clear(&r);
	return ret;
}

/* What a 401 asks for, once per pull. */
static int authenticate(struct session *s, const char *challenge, struct gerr *err)
{
	if (strncasecmp(challenge, "Bearer ", 7) == 0)
		return bearer_token(s, challenge, err);
	if (strncasecmp(challenge, "Basic", 5) == 0) {
		if (!s->basic[0])
			return gerr_set(err, 502, "%s: registry %s asks for a user and password: add "
					"them to --registry-auth", s->shown, s->ref.registry);
		s->auth = s->basic;
		return 0;
	}
	return gerr_set(err, 502, "%s: registry %s answered 401 with no challenge graind knows "
			"(\"%.60s\")", s->shown, s->ref.registry, challenge);
}

/* ---------------------------------------------------------------- requests */

/* GET base + path; a 401 is answered once, then anything but 200 fails. */
static int registry_get(struct session *s, const char *what, const char *path,
			const char *accept, size_t max, struct fetch_reply *r, struct gerr *err)
{
	char url[2048], challenge[sizeof(r->www_authenticate)];
	struct fetch_opts fo = s->fetch;

	fo.max_bytes = max;
	snprintf(url, sizeof(url), "%s%s", s->base, path);
	for (int round = 0; round < 2; round++) {
		const char *headers[2] = { s->auth, NULL };

		if (fetch_get(&fo, url, accept, headers, r, err) < 0) {
			gerr_prefix(err, "%s: %s", s->shown, what);
			return -1;
		}
		if (r->status == 200)
			return 0;
		if (r->status != 401 || round == 1 || s->auth)
			break;
		snprintf(challenge, sizeof(challenge), "%s", r->www_authenticate);
		fetch_reply_clear(r);
		if (authenticate(s, challenge, err) < 0)
			return -1;
	}
	gerr_set(err, 502, "%s: the registry answered HTTP %ld for the %s%s", s->shown, r->status,
		 what, r->status == 401 ? (s->basic[0] ? ": it refused the credentials of "
					   "--registry-auth" : ": it needs credentials: add them "
					   "to --registry-auth")
		 : r->status == 404 ? " (no such image, tag or blob)" : "");
	fetch_reply_clear(r);
	return -1;
}

/* A blob, checked against its descriptor's size and digest. */
static int get_blob(struct session *s, const char *what, const struct oci_descriptor *d,
		    size_t max, struct fetch_reply *r, struct gerr *err)
{
	char path[128];

	if (d->size > max)
		return gerr_set(err, 413, "%s: the %s is %llu bytes, over the %zu-byte limit",
				s->shown, what, (unsigned long long)d->size, max);
	snprintf(path, sizeof(path), "/blobs/%s", d->digest);
	if (registry_get(s, what, path, NULL, max, r, err) < 0)
		return -1;
	if (r->len != d->size || !oci_digest_matches(d->digest, r->body, r->len)) {
		char got[SHA256_HEX_LEN + 1];

		sha256_hex(r->body, r->len, got);
		gerr_set(err, 422, "%s: the %s's %zu bytes hash to sha256:%s, not to %s (%llu "
			 "bytes); nothing was stored", s->shown, what, r->len, got, d->digest,
			 (unsigned long long)d->size);
		fetch_reply_clear(r);
		return -1;
	}
	return 0;
}

/* The manifest at `reference` (a tag or digest), checked against the
 * digest when it is one; its digest into `digest`. */
static int get_manifest(struct session *s, const char *reference, struct oci_manifest *m,
			char *digest, struct gerr *err)
{
	struct fetch_reply r;
	char path[400], hex[SHA256_HEX_LEN + 1];
	int ret;

	snprintf(path, sizeof(path), "/manifests/%s", reference);
	if (registry_get(s, "manifest", path, OCI_MANIFEST_ACCEPT, OCI_MANIFEST_MAX, &r, err) < 0)
		return -1;
	sha256_hex(r.body, r.len, hex);
	snprintf(digest, OCI_DIGEST_MAX, "sha256:%s", hex);
	if (strncmp(reference, "sha256:", 7) == 0 && strcmp(reference, digest) != 0) {
		fetch_reply_clear(&r);
		return gerr_set(err, 422, "%s: the manifest hashes to %s, not to %s; nothing was "
				"stored", s->shown, digest, reference);
	}
	ret = oci_manifest_parse(r.body, r.len, r.content_type, oci_host_arch(), m, err);
	if (ret < 0)
		gerr_prefix(err, "%s", s->shown);
	fetch_reply_clear(&r);
	return ret;
}

static bool insecure(const struct oci_pull_opts *o, const char *registry)
{
	for (size_t i = 0; o->insecure && o->insecure[i]; i++)
		if (strcmp(o->insecure[i], registry) == 0)
			return true;
	return false;
}

static int pull(struct session *s, struct oci_pulled *out, struct gerr *err)
{
	struct oci_manifest m;
	struct fetch_reply config, layer;
	char digest[OCI_DIGEST_MAX];
	Graind__ObjectOrigin *origin;

	if (get_manifest(s, s->ref.digest[0] ? s->ref.digest : s->ref.tag, &m, digest, err) < 0)
		return -1;
	if (m.index) {
		char want[OCI_DIGEST_MAX];

		snprintf(want, sizeof(want), "%s", m.next.digest);
		if (get_manifest(s, want, &m, digest, err) < 0)
			return -1;
		if (m.index)
			return gerr_set(err, 422, "%s: an index leads to another index", s->shown);
	}
	if (get_blob(s, "config", &m.config, OCI_CONFIG_MAX, &config, err) < 0)
		return -1;
	origin = (Graind__ObjectOrigin *)pbmsg_new(&graind__object_origin__descriptor);
	out->origin = origin;
	if (!origin) {
		fetch_reply_clear(&config);
		return gerr_set(err, 500, "out of memory");
	}
	if (oci_config_labels(config.body, config.len, origin, err) < 0) {
		fetch_reply_clear(&config);
		gerr_prefix(err, "%s", s->shown);
		return -1;
	}
	fetch_reply_clear(&config);
	if (get_blob(s, "layer", &m.layer, s->o->fetch.max_bytes, &layer, err) < 0)
		return -1;
	if (oci_layer_object(layer.body, layer.len, m.layer.media_type, s->o->fetch.max_bytes,
			     &out->object, &out->len, out->filename, sizeof(out->filename), err) < 0) {
		fetch_reply_clear(&layer);
		gerr_prefix(err, "%s", s->shown);
		return -1;
	}
	fetch_reply_clear(&layer);
	if (pbmsg_set_string(&origin->image, s->shown) < 0 ||
	    pbmsg_set_string(&origin->image_digest, digest) < 0)
		return gerr_set(err, 500, "out of memory");
	return 0;
}

int oci_pull(const struct oci_pull_opts *o, const char *image, struct oci_pulled *out,
	     struct gerr *err)
{
	struct session s = { .o = o, .fetch = o->fetch };
	int ret;

	memset(out, 0, sizeof(*out));
	if (oci_ref_parse(image, &s.ref, err) < 0)
		return -1;
	oci_ref_format(&s.ref, s.shown, sizeof(s.shown));
	s.fetch.allow_http = insecure(o, s.ref.registry);
	snprintf(s.base, sizeof(s.base), "%s://%s/v2/%s", s.fetch.allow_http ? "http" : "https",
		 s.ref.registry, s.ref.repository);
	ret = load_credentials(&s, err);
	if (ret == 0)
		ret = pull(&s, out, err);
	free(s.bearer);
	if (ret < 0)
		oci_pulled_clear(out);
	return ret;
}
