/* svc objects: upload, fetch, list, get, content, verify, delete. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/agent.h"
#include "server/builtin.h"
#include "server/elf/elfchk.h"
#include "server/fetch.h"
#include "server/oci/pull.h"
#include "server/oci/ref.h"
#include "server/objects.h"
#include "server/signing.h"
#include "server/svc/svc_int.h"
#include "server/util/log.h"
#include "server/util/sha256.h"
#include "store/store.h"

#define OBJECT_NAME_MAX 128

/* Object names label uploads for people: letters, digits, ".", "_", "-",
 * "+", starting with a letter or digit, so they can never be a path. */
static int check_object_name(const char *name, struct gerr *err)
{
	size_t len = strlen(name);

	if (len == 0 || len > OBJECT_NAME_MAX)
		return gerr_set(err, 400, "object name must be 1 to %d characters",
				OBJECT_NAME_MAX);
	if (!isalnum((unsigned char)name[0]))
		return gerr_set(err, 400, "object name must start with a letter or digit");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (!isalnum(c) && !strchr("._+-", c))
			return gerr_set(err, 400,
					"object name may hold only letters, digits, '.', '_', '+' and '-'; "
					"character %zu is not allowed", i + 1);
	}
	return 0;
}

/* An object id: 64 hex digits, either case, into `id` lowercased. */
static int check_object_id(const char *given, char id[SHA256_HEX_LEN + 1], struct gerr *err)
{
	size_t len = strlen(given);

	for (size_t i = 0; i < len; i++)
		if (!isxdigit((unsigned char)given[i]))
			return gerr_set(err, 400,
					"object id must be the object's sha256: 64 hex digits");
	if (len != SHA256_HEX_LEN)
		return gerr_set(err, 400,
				"object id must be the object's sha256: 64 hex digits, got %zu characters",
				len);
	for (size_t i = 0; i <= len; i++)
		id[i] = (char)tolower((unsigned char)given[i]);
	return 0;
}

/* A Graind__Object for a stored row: the metadata blob plus the columns
 * and who signed it. */
static int object_from_row(struct signing *sg, const struct store_object *row,
			   Graind__Object **out, struct gerr *err)
{
	Graind__Object *obj;

	*out = NULL;
	obj = graind__object__unpack(NULL, row->meta_len, row->meta);
	if (!obj)
		return gerr_set(err, 500, "stored metadata of object %s does not decode",
				row->sha256);
	obj->size = row->size;
	obj->builtin = row->builtin;
	if (pbmsg_set_string(&obj->sha256, row->sha256) < 0 ||
	    pbmsg_set_string(&obj->name, row->name) < 0 ||
	    pbmsg_set_time(&obj->created, row->created_ms) < 0 ||
	    signing_describe(sg, row, &obj->signer) < 0) {
		pbmsg_free(&obj->base);
		return gerr_set(err, 500, "out of memory");
	}
	*out = obj;
	return 0;
}

static int stored_object(struct agent *ag, const char *sha256, Graind__Object **resp,
			 struct gerr *err)
{
	struct store_object row = { 0 };
	int ret;

	if (store_object_get(ag->store, sha256, &row, err) < 0)
		return -1;
	ret = object_from_row(ag->signing, &row, resp, err);
	store_object_clear(&row);
	return ret;
}

/* An upload, or fetched bytes with where they came from (origin). */
static int store_upload(struct svc_call *call, const Graind__UploadObjectRequest *req,
			const Graind__ObjectOrigin *origin, Graind__Object **resp,
			struct gerr *err)
{
	struct agent *ag = call->agent;
	size_t max = ag->cfg.max_object_size;
	const char *name = req->name;
	char sha256[SHA256_HEX_LEN + 1], fallback_name[16], verified_key[65];

	if (req->content.len > max)
		return gerr_set(err, 413, "object of %zu bytes is over the %zu-byte limit (--max-object-size)",
				req->content.len, max);
	if (req->content.len == 0)
		return gerr_set(err, 400, "empty object: send the ELF file's bytes as the body "
				"(Content-Type: application/octet-stream)");
	sha256_hex(req->content.data, req->content.len, sha256);
	if (!name[0]) {
		snprintf(fallback_name, sizeof(fallback_name), "object-%.8s", sha256);
		name = fallback_name;
	}
	if (check_object_name(name, err) < 0)
		return -1;
	snprintf(call->target, sizeof(call->target), "%s (%s)", sha256, name);
	/* A signature that does not hold is refused before anything is kept. */
	if (req->signature[0] &&
	    signing_check_upload(ag->signing, req->signature, req->content.data,
				 req->content.len, verified_key, err) < 0)
		return -1;

	/* Content addressing: the same bytes are stored once. */
	if (objects_add(ag->store, sha256, name, req->content.data, req->content.len,
			false, NULL, origin, &call->created, err) < 0)
		return -1;
	if (call->created)
		log_info("msg=\"object stored\" sha256=%s name=%s size=%zu", sha256, name,
			 req->content.len);
	/* The latest signature sent with these bytes is the one kept. */
	if (req->signature[0] &&
	    store_object_sign(ag->store, sha256, req->signature, verified_key, err) < 0)
		return -1;
	return stored_object(ag, sha256, resp, err);
}

int svc_upload_object(struct svc_call *call, const Graind__UploadObjectRequest *req,
		      Graind__Object **resp, struct gerr *err)
{
	return store_upload(call, req, NULL, resp, err);
}

/* The last segment of the URL's path, when it makes an object name. */
static void name_from_url(const char *url, char *out, size_t size)
{
	const char *path = strstr(url, "://");
	const char *end, *seg;
	struct gerr ignored;

	out[0] = '\0';
	if (!path || !(path = strchr(path + 3, '/')))
		return;
	end = path + strcspn(path, "?#");
	for (seg = end; seg > path && seg[-1] != '/'; seg--)
		;
	if (end > seg && (size_t)(end - seg) < size) {
		snprintf(out, size, "%.*s", (int)(end - seg), seg);
		if (check_object_name(out, &ignored) < 0)
			out[0] = '\0';
	}
}

/* "<sha256> from <url>", the URL cut to fit. */
static void fetch_target(struct svc_call *call, const char *sha256, const char *shown)
{
	int n = snprintf(call->target, sizeof(call->target), "%s from ", sha256);
	size_t at = n > 0 && (size_t)n < sizeof(call->target) ? (size_t)n : 0;
	size_t len = strnlen(shown, sizeof(call->target) - at - 1);

	memcpy(call->target + at, shown, len);
	call->target[at + len] = '\0';
}

/* The bytes of req->url, or those stored already under req->sha256
 * (needed again only to check a signature sent along). *bytes NULL:
 * stored, nothing to add. */
static int fetch_bytes(struct svc_call *call, const Graind__FetchObjectRequest *req,
		       const char *want, void **bytes, size_t *len, struct gerr *err)
{
	struct agent *ag = call->agent;
	const struct fetch_opts opts = {
		.ca_file = ag->cfg.fetch_ca,
		.allow_http = ag->cfg.fetch_allow_http,
		.max_bytes = ag->cfg.max_object_size,
	};
	struct gerr stored = { 0 };

	*bytes = NULL;
	*len = 0;
	/* Content addressing: intact bytes stored already need not travel
	 * again; damaged ones are fetched and written over. */
	if (store_object_content(ag->store, want, bytes, len, &stored) == 0) {
		if (req->signature[0])
			return 0;
		free(*bytes);
		*bytes = NULL;
		return 0;
	}
	if (stored.status != 404 && stored.status != 500) {
		*err = stored;
		return -1;
	}
	return fetch_url(&opts, req->url, bytes, len, err);
}

/* The object file of req->image, with where it came from. */
static int pull_image(struct svc_call *call, const Graind__FetchObjectRequest *req,
		      struct oci_pulled *image, struct gerr *err)
{
	struct agent *ag = call->agent;
	const char *insecure[9] = { 0 };
	struct oci_pull_opts opts = {
		.fetch = { .ca_file = ag->cfg.fetch_ca, .max_bytes = ag->cfg.max_object_size },
		.auth_file = ag->cfg.registry_auth,
		.insecure = insecure,
	};

	for (unsigned i = 0; i < ag->cfg.n_insecure_registries && i < 8; i++)
		insecure[i] = ag->cfg.insecure_registries[i];
	return oci_pull(&opts, req->image, image, err);
}

int svc_fetch_object(struct svc_call *call, const Graind__FetchObjectRequest *req,
		     Graind__Object **resp, struct gerr *err)
{
	Graind__UploadObjectRequest upload = GRAIND__UPLOAD_OBJECT_REQUEST__INIT;
	Graind__ObjectOrigin origin = GRAIND__OBJECT_ORIGIN__INIT;
	char want[SHA256_HEX_LEN + 1] = "", got[SHA256_HEX_LEN + 1];
	char name[OBJECT_NAME_MAX + 1] = "", shown[256];
	struct oci_pulled image = { 0 };
	void *bytes = NULL;
	size_t len = 0;
	int ret = -1;

	if (!req->url[0] == !req->image[0])
		return gerr_set(err, 400, "one of url and image is needed: where to fetch the "
				"object from");
	if (req->url[0] && !req->sha256[0])
		return gerr_set(err, 400, "sha256 is required: the digest the fetched bytes must "
				"have, so that what is stored is what you meant");
	if (req->sha256[0] && check_object_id(req->sha256, want, err) < 0)
		return gerr_set(err, 400, "sha256 must be 64 hex digits: the digest of the "
				"object's bytes");
	if (req->url[0])
		fetch_display_url(req->url, shown, sizeof(shown));
	else
		snprintf(shown, sizeof(shown), "%.255s", req->image);
	fetch_target(call, want[0] ? want : "object", shown);
	if (req->name[0] && check_object_name(req->name, err) < 0)
		return -1;
	if (req->url[0]) {
		if (fetch_bytes(call, req, want, &bytes, &len, err) < 0)
			return -1;
		if (!bytes)
			return stored_object(call->agent, want, resp, err);
		origin.url = shown;
		name_from_url(req->url, name, sizeof(name));
	} else {
		if (pull_image(call, req, &image, err) < 0)
			return -1;
		bytes = image.object;
		len = image.len;
		image.object = NULL;
		snprintf(name, sizeof(name), "%.*s", OBJECT_NAME_MAX, image.filename);
		if (check_object_name(name, &(struct gerr){ 0 }) < 0)
			name[0] = '\0';            /* the upload names it after its digest */
	}
	if (len == 0) {
		gerr_set(err, 422, "%s: the object is empty", shown);
		goto out;
	}
	sha256_hex(bytes, len, got);
	if (want[0] && strcmp(got, want) != 0) {
		gerr_set(err, 422, "%s: the %zu bytes fetched hash to %s, not to the sha256 asked "
			 "for (%s); nothing was stored", shown, len, got, want);
		goto out;
	}
	if (req->name[0])
		snprintf(name, sizeof(name), "%s", req->name);
	upload.name = name;
	upload.content.data = bytes;
	upload.content.len = len;
	upload.signature = req->signature;
	ret = store_upload(call, &upload, image.origin ? image.origin : &origin, resp, err);
	/* The reference names these bytes now, whoever stored them first. */
	if (ret == 0 && image.origin &&
	    store_image_ref_set(call->agent->store, image.origin->image, got,
				image.origin->image_digest, err) < 0) {
		pbmsg_free(&(*resp)->base);
		*resp = NULL;
		ret = -1;
	}
	fetch_target(call, got, shown);
out:
	free(bytes);
	oci_pulled_clear(&image);
	return ret;
}

int svc_image_object(struct svc_call *call, const Graind__ImageSource *image,
		     char sha256[SHA256_HEX_LEN + 1], struct gerr *err)
{
	Graind__FetchObjectRequest fetch = GRAIND__FETCH_OBJECT_REQUEST__INIT;
	struct svc_call sub = *call;
	Graind__Object *obj = NULL;
	char shown[700];
	struct oci_ref ref;
	bool found = false;

	sub.target[0] = '\0';
	if (oci_ref_parse(image->reference, &ref, err) < 0) {
		gerr_prefix(err, "spec.image.reference");
		return -1;
	}
	oci_ref_format(&ref, shown, sizeof(shown));
	if (image->pull_policy == GRAIND__PULL_POLICY__PULL_IF_NOT_PRESENT) {
		struct gerr none = { 0 };

		found = store_image_ref_get(call->agent->store, shown, sha256, &none) == 0;
		if (!found && none.status != 404) {
			*err = none;
			return -1;
		}
	}
	if (found)
		return 0;
	/* A pull stores an object, which only an admin may do (as for an
	 * upload or a fetch). */
	if (call->who.role < AUTH_ADMIN)
		return gerr_set(err, 403, "spec.image %s is not stored and pulling it stores an "
				"object, which needs the admin role: have an admin fetch it "
				"(POST /v1/objects:fetch {image})%s", shown,
				image->pull_policy == GRAIND__PULL_POLICY__PULL_ALWAYS
				? ", and use PULL_IF_NOT_PRESENT" : "");
	fetch.image = image->reference;
	if (svc_fetch_object(&sub, &fetch, &obj, err) < 0) {
		gerr_prefix(err, "spec.image");
		return -1;
	}
	snprintf(sha256, SHA256_HEX_LEN + 1, "%s", obj->sha256);
	pbmsg_free(&obj->base);
	return 0;
}

struct list_ctx {
	struct signing *signing;
	Graind__ListObjectsResponse *resp;
	struct gerr *err;
};

static int list_one(const struct store_object *row, void *ctx_)
{
	struct list_ctx *ctx = ctx_;
	Graind__ListObjectsResponse *resp = ctx->resp;
	Graind__Object **grown, *obj;

	if (object_from_row(ctx->signing, row, &obj, ctx->err) < 0)
		return -1;
	grown = realloc(resp->objects, (resp->n_objects + 1) * sizeof(*grown));
	if (!grown) {
		pbmsg_free(&obj->base);
		return gerr_set(ctx->err, 500, "out of memory");
	}
	resp->objects = grown;
	resp->objects[resp->n_objects++] = obj;
	return 0;
}

int svc_list_objects(struct svc_call *call, const Graind__ListObjectsRequest *req,
		     Graind__ListObjectsResponse **resp, struct gerr *err)
{
	struct list_ctx ctx = { .signing = call->agent->signing, .err = err };
	unsigned limit;
	bool more = false;

	if (svc_page_size("page_size", req->page_size, 100, 1000, &limit, err) < 0 ||
	    SVC_NEW(resp, &graind__list_objects_response__descriptor, err) < 0)
		return -1;
	ctx.resp = *resp;
	if (store_object_list(call->agent->store, req->page_token[0] ? req->page_token : NULL,
			      limit, list_one, &ctx, &more, err) < 0)
		return -1;
	if (more && ctx.resp->n_objects &&
	    pbmsg_set_string(&ctx.resp->next_page_token,
			     ctx.resp->objects[ctx.resp->n_objects - 1]->sha256) < 0)
		return gerr_set(err, 500, "out of memory");
	return 0;
}

struct objects_key {
	const struct agent *agent;
	uint64_t store, objects_version, signing;
	uint32_t page_size;
	char page_token[SHA256_HEX_LEN + 1];
};

_Static_assert(sizeof(struct objects_key) <= SVC_MEMO_KEY_MAX, "objects key too long");

size_t svc_objects_memo_key(const struct svc_call *call, const ProtobufCMessage *req_,
			    void *key, size_t max)
{
	const Graind__ListObjectsRequest *req = (const void *)req_;
	const struct agent *ag = call->agent;
	struct objects_key *k = key;
	struct store_summary sum;

	/* A token that is no object id is refused by the listing itself. */
	if (max < sizeof(*k) || strlen(req->page_token) > SHA256_HEX_LEN)
		return 0;
	memset(k, 0, sizeof(*k));
	store_summary_get(ag->store, &sum);
	k->agent = ag;
	k->store = sum.instance;
	k->objects_version = sum.objects_version;
	k->signing = ag->signing ? signing_generation(ag->signing) : 0;
	k->page_size = req->page_size;
	memcpy(k->page_token, req->page_token, strlen(req->page_token));
	return sizeof(*k);
}

int svc_get_object(struct svc_call *call, const Graind__GetObjectRequest *req,
		   Graind__Object **resp, struct gerr *err)
{
	char id[SHA256_HEX_LEN + 1];

	if (check_object_id(req->sha256, id, err) < 0)
		return -1;
	return stored_object(call->agent, id, resp, err);
}

int svc_get_object_content(struct svc_call *call, const Graind__GetObjectContentRequest *req,
			   Graind__ObjectContent **resp, struct gerr *err)
{
	char id[SHA256_HEX_LEN + 1];
	void *bytes;
	size_t len;

	if (check_object_id(req->sha256, id, err) < 0 ||
	    SVC_NEW(resp, &graind__object_content__descriptor, err) < 0 ||
	    store_object_content(call->agent->store, id, &bytes, &len, err) < 0)
		return -1;
	(*resp)->content.data = bytes;
	(*resp)->content.len = len;
	return 0;
}

int svc_verify_object(struct svc_call *call, const Graind__VerifyObjectRequest *req,
		      Graind__VerifyReport **resp, struct gerr *err)
{
	char id[SHA256_HEX_LEN + 1];
	void *bytes;
	size_t len;
	int ret;

	if (check_object_id(req->sha256, id, err) < 0 ||
	    store_object_content(call->agent->store, id, &bytes, &len, err) < 0)
		return -1;
	if (SVC_NEW(resp, &graind__verify_report__descriptor, err) < 0) {
		free(bytes);
		return -1;
	}
	ret = elfchk_verify(bytes, len, *resp, err);
	free(bytes);
	if (ret < 0)
		return -1;
	if (pbmsg_set_string(&(*resp)->sha256, id) < 0)
		return gerr_set(err, 500, "out of memory");
	log_info("msg=\"object verified\" sha256=%s accepted=%d", id, (*resp)->accepted);
	return 0;
}

/* The name of this binary's built-in with that sha256, or NULL. Built-ins
 * of older binaries are ordinary objects, deletable once unused. */
static const char *is_current_builtin(const char *sha256)
{
	char builtin[SHA256_HEX_LEN + 1];
	const char *name;

	for (size_t i = 0; (name = builtin_name(i)); i++)
		if (builtin_object_sha256(name, builtin, NULL) == 0 && !strcmp(builtin, sha256))
			return name;
	return NULL;
}

int svc_delete_object(struct svc_call *call, const Graind__DeleteObjectRequest *req,
		      Graind__Empty **resp, struct gerr *err)
{
	struct agent *ag = call->agent;
	char id[SHA256_HEX_LEN + 1];
	int ret;

	if (check_object_id(req->sha256, id, err) < 0 ||
	    SVC_NEW(resp, &graind__empty__descriptor, err) < 0)
		return -1;
	if (is_current_builtin(id)) {
		return gerr_set(err, 409, "object %s is the built-in '%s' of this graind: it is "
				"stored again at every start and cannot be deleted", id,
				is_current_builtin(id));
	}
	/* Under the lock of probe changes: no probe can start using the
	 * object between the check for users and the delete. */
	pthread_mutex_lock(&ag->probe_lock);
	ret = store_object_delete(ag->store, id, err);
	pthread_mutex_unlock(&ag->probe_lock);
	if (ret < 0)
		return -1;
	log_info("msg=\"object deleted\" sha256=%s", id);
	return 0;
}
