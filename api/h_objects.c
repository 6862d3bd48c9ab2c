/* Object handlers: upload, list, get, content, delete, verify. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/util/pbmsg.h"
#include "api/handlers.h"
#include "proto/graind.pb-c.h"
#include "server/agent.h"
#include "server/elf/elfchk.h"
#include "server/objects.h"
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

/* The {sha256} path argument: 64 hex digits, lowercased in place. */
static int check_object_id(char *id, struct gerr *err)
{
	size_t len = strlen(id);

	for (size_t i = 0; i < len; i++) {
		if (!isxdigit((unsigned char)id[i]))
			return gerr_set(err, 400,
					"object id must be the object's sha256: 64 hex digits");
		id[i] = (char)tolower((unsigned char)id[i]);
	}
	if (len != SHA256_HEX_LEN)
		return gerr_set(err, 400,
				"object id must be the object's sha256: 64 hex digits, got %zu characters",
				len);
	return 0;
}

/* A Graind__Object for a stored row: the metadata blob plus the columns. */
static int object_from_row(const struct store_object *row, Graind__Object **out,
			   struct gerr *err)
{
	Graind__Object *obj;

	obj = (Graind__Object *)protobuf_c_message_unpack(&graind__object__descriptor, NULL,
							  row->meta_len, row->meta);
	if (!obj)
		return gerr_set(err, 500, "stored metadata of object %s does not decode",
				row->sha256);
	obj->size = row->size;
	obj->builtin = row->builtin;
	if (pbmsg_set_string(&obj->sha256, row->sha256) < 0 ||
	    pbmsg_set_string(&obj->name, row->name) < 0 ||
	    pbmsg_take_string(&obj->created, api_time_string(row->created_ms)) < 0) {
		pbmsg_free(&obj->base);
		return gerr_set(err, 500, "out of memory");
	}
	*out = obj;
	return 0;
}

static int reply_stored_object(struct api_call *call, const char *sha256,
			       struct gerr *err)
{
	struct store_object row = { 0 };
	Graind__Object *obj;
	int ret;

	if (store_object_get(call->agent->store, sha256, &row, err) < 0)
		return -1;
	ret = object_from_row(&row, &obj, err);
	store_object_clear(&row);
	if (ret == 0)
		call->reply = &obj->base;
	return ret;
}

int h_object_upload(struct api_call *call, struct gerr *err)
{
	const struct api_request *req = call->req;
	Graind__UploadObjectRequest *up = (Graind__UploadObjectRequest *)call->body;
	size_t max = call->agent->cfg.max_object_size;
	const uint8_t *bytes = req->body;
	size_t len = req->body_len;
	const char *name = api_query(call, "name");
	char sha256[SHA256_HEX_LEN + 1], fallback_name[16];
	bool created = false;

	if (up) {
		bytes = up->content.data;
		len = up->content.len;
		if (up->name[0])
			name = up->name;
	}
	if (len > max)
		return gerr_set(err, 413, "object of %zu bytes is over the %zu-byte limit (--max-object-size)",
				len, max);
	if (len == 0)
		return gerr_set(err, 400, "empty object: send the ELF file's bytes as the body "
				"(Content-Type: application/octet-stream)");
	sha256_hex(bytes, len, sha256);
	if (!name || !*name) {
		snprintf(fallback_name, sizeof(fallback_name), "object-%.8s", sha256);
		name = fallback_name;
	}
	if (check_object_name(name, err) < 0)
		return -1;
	snprintf(call->audit_target, sizeof(call->audit_target), "%s (%s)", sha256, name);

	/* Content addressing: the same bytes are stored once. */
	if (objects_add(call->agent->store, sha256, name, bytes, len, false, NULL, &created,
			err) < 0)
		return -1;
	if (created) {
		call->status = 201;
		snprintf(call->location, sizeof(call->location), "/v1/objects/%s", sha256);
		log_info("msg=\"object stored\" sha256=%s name=%s size=%zu", sha256, name, len);
	}
	return reply_stored_object(call, sha256, err);
}

struct list_ctx {
	Graind__ListObjectsResponse *resp;
	struct gerr *err;
};

static int list_one(const struct store_object *row, void *ctx_)
{
	struct list_ctx *ctx = ctx_;
	Graind__ListObjectsResponse *resp = ctx->resp;
	Graind__Object **grown, *obj;

	if (object_from_row(row, &obj, ctx->err) < 0)
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

int h_object_list(struct api_call *call, struct gerr *err)
{
	Graind__ListObjectsResponse *resp;
	const char *after = api_query(call, "page_token");
	struct list_ctx ctx = { .err = err };
	unsigned limit;
	bool more = false;

	if (api_page_size(call, &limit, err) < 0)
		return -1;
	resp = (Graind__ListObjectsResponse *)pbmsg_new(&graind__list_objects_response__descriptor);
	if (!resp)
		return gerr_set(err, 500, "out of memory");
	call->reply = &resp->base;
	ctx.resp = resp;
	if (store_object_list(call->agent->store, after, limit, list_one, &ctx, &more, err) < 0)
		return -1;
	if (more && resp->n_objects) {
		resp->next_page_token = strdup(resp->objects[resp->n_objects - 1]->sha256);
		if (!resp->next_page_token)
			return gerr_set(err, 500, "out of memory");
	}
	return 0;
}

int h_object_get(struct api_call *call, struct gerr *err)
{
	if (check_object_id(call->args[0], err) < 0)
		return -1;
	return reply_stored_object(call, call->args[0], err);
}

int h_object_content(struct api_call *call, struct gerr *err)
{
	if (check_object_id(call->args[0], err) < 0 ||
	    store_object_content(call->agent->store, call->args[0], &call->raw,
				 &call->raw_len, err) < 0)
		return -1;
	call->raw_type = "application/octet-stream";
	return 0;
}

int h_object_delete(struct api_call *call, struct gerr *err)
{
	if (check_object_id(call->args[0], err) < 0 ||
	    store_object_delete(call->agent->store, call->args[0], err) < 0)
		return -1;
	log_info("msg=\"object deleted\" sha256=%s", call->args[0]);
	call->status = 204;
	return 0;
}

int h_object_verify(struct api_call *call, struct gerr *err)
{
	Graind__VerifyReport *report;
	void *bytes;
	size_t len;
	int ret;

	if (check_object_id(call->args[0], err) < 0 ||
	    store_object_content(call->agent->store, call->args[0], &bytes, &len, err) < 0)
		return -1;
	report = (Graind__VerifyReport *)pbmsg_new(&graind__verify_report__descriptor);
	if (!report) {
		free(bytes);
		return gerr_set(err, 500, "out of memory");
	}
	call->reply = &report->base;
	ret = elfchk_verify(bytes, len, report, err);
	free(bytes);
	if (ret < 0)
		return -1;
	report->sha256 = strdup(call->args[0]);
	if (!report->sha256)
		return gerr_set(err, 500, "out of memory");
	log_info("msg=\"object verified\" sha256=%s accepted=%d", call->args[0], report->accepted);
	return 0;
}
