/* grpc_std: the standard services, health and server reflection.
 *
 * Reflection answers from the FileDescriptorSet the build generates from
 * proto/graind.proto and the health and reflection protos (protoc
 * --include_imports) and embeds as embed_grpc_desc. The descriptors are
 * read by hand, only as far as names go: file name, package,
 * dependencies, messages (with nested ones), enums, services and their
 * methods. */
#include "server/grpc/grpc_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

extern const uint8_t embed_grpc_desc_start[], embed_grpc_desc_end[];

/* ---------------------------------------------------------------- health */

int grpc_health_check(bool serving, bool watch, const uint8_t *msg, size_t len, bool *known,
		      struct grpc_reply *r)
{
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	Grpc__Health__V1__HealthCheckRequest *req;
	int ret = -1;

	req = grpc__health__v1__health_check_request__unpack(NULL, len, msg);
	if (!req)
		return grpc_reply_status(r, GRPC_INVALID_ARGUMENT,
					 "not a grpc.health.v1.HealthCheckRequest");
	*known = !req->service[0] || strcmp(req->service, "graind.Graind") == 0;
	if (!*known && !watch) {
		grpc_reply_status(r, GRPC_NOT_FOUND, "unknown service '%.200s'", req->service);
		goto out;
	}
	resp.status = !*known ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN :
		      serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING :
				GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	ret = grpc_reply_message(r, &resp.base);
	if (ret == 0)
		r->code = GRPC_OK;
out:
	grpc__health__v1__health_check_request__free_unpacked(req, NULL);
	return ret;
}

/* ---------------------------------------------------------------- descriptors */

/* A length-delimited field or a whole message. */
struct span {
	const uint8_t *p;
	size_t len;
};

static bool read_varint(struct span *s, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; shift < 64 && s->len; shift += 7) {
		uint8_t b = *s->p++;

		s->len--;
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

/* The next field of s: its number, and its bytes when length-delimited
 * (other wire types are skipped, value empty). False at the end or on
 * bytes that are no protobuf. */
static bool next_field(struct span *s, uint32_t *field, struct span *value)
{
	uint64_t tag, v;

	if (!s->len || !read_varint(s, &tag))
		return false;
	*field = (uint32_t)(tag >> 3);
	value->p = NULL;
	value->len = 0;
	switch (tag & 7) {
	case 0:
		return read_varint(s, &v);
	case 1:
	case 5:
		v = (tag & 7) == 1 ? 8 : 4;
		break;
	case 2:
		if (!read_varint(s, &v))
			return false;
		value->p = s->p;
		value->len = v;
		break;
	default:
		return false;
	}
	if (v > s->len)
		return false;
	s->p += v;
	s->len -= v;
	return true;
}

static bool span_is(struct span v, const char *s, size_t n)
{
	return v.len == n && memcmp(v.p, s, n) == 0;
}

/* The string field `want` of message m. */
static struct span string_of(struct span m, uint32_t want)
{
	struct span v, none = { 0 };
	uint32_t f;

	while (next_field(&m, &f, &v))
		if (f == want && v.p)
			return v;
	return none;
}

#define MAX_FILES 16

struct dfile {
	struct span bytes;              /* the FileDescriptorProto */
	struct span name, package;
};

static struct dfile files[MAX_FILES];
static size_t n_files;
static pthread_once_t files_once = PTHREAD_ONCE_INIT;

static void files_load(void)
{
	struct span set = { embed_grpc_desc_start,
			    (size_t)(embed_grpc_desc_end - embed_grpc_desc_start) }, v;
	uint32_t f;

	while (n_files < MAX_FILES && next_field(&set, &f, &v)) {
		if (f != 1 || !v.p)
			continue;
		files[n_files].bytes = v;
		files[n_files].name = string_of(v, 1);
		files[n_files].package = string_of(v, 2);
		n_files++;
	}
}

static const struct dfile *file_named(struct span name)
{
	for (size_t i = 0; i < n_files; i++)
		if (span_is(files[i].name, (const char *)name.p, name.len))
			return &files[i];
	return NULL;
}

/* Does message/enum/service descriptor d (named by field 1) declare sym,
 * relative to its scope? Messages look into nested messages (3) and enums
 * (4), services into methods (2). */
static bool declares(struct span d, const char *sym, uint32_t kind)
{
	struct span name = string_of(d, 1), v;
	size_t n = strlen(sym);
	uint32_t f;

	if (span_is(name, sym, n))
		return true;
	if (kind == 5 || n <= name.len + 1 || memcmp(sym, name.p, name.len) != 0 ||
	    sym[name.len] != '.')
		return false;
	sym += name.len + 1;
	while (next_field(&d, &f, &v)) {
		if (kind == 4 && (f == 3 || f == 4) && declares(v, sym, f == 3 ? 4 : 5))
			return true;
		if (kind == 6 && f == 2 && span_is(string_of(v, 1), sym, strlen(sym)))
			return true;
	}
	return false;
}

static const struct dfile *file_declaring(const char *sym)
{
	for (size_t i = 0; i < n_files; i++) {
		struct span pkg = files[i].package, d = files[i].bytes, v;
		const char *rest = sym;
		uint32_t f;

		if (pkg.len) {
			if (strncmp(sym, (const char *)pkg.p, pkg.len) != 0 || sym[pkg.len] != '.')
				continue;
			rest = sym + pkg.len + 1;
		}
		while (next_field(&d, &f, &v))
			if ((f == 4 || f == 5 || f == 6) && declares(v, rest, f))
				return &files[i];
	}
	return NULL;
}

/* f and, after it, every file it depends on, each once. */
static void add_with_deps(const struct dfile *f, const struct dfile **out, size_t *n)
{
	struct span d = f->bytes, v;
	uint32_t field;

	for (size_t i = 0; i < *n; i++)
		if (out[i] == f)
			return;
	if (*n == MAX_FILES)
		return;
	out[(*n)++] = f;
	while (next_field(&d, &field, &v)) {
		const struct dfile *dep = field == 3 && v.p ? file_named(v) : NULL;

		if (dep)
			add_with_deps(dep, out, n);
	}
}

/* ---------------------------------------------------------------- reflection */

int grpc_reflection_answer(const uint8_t *msg, size_t len, struct grpc_reply *r)
{
	Grpc__Reflection__V1__ServerReflectionResponse resp =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
	Grpc__Reflection__V1__FileDescriptorResponse fdr =
		GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
	Grpc__Reflection__V1__ListServiceResponse list =
		GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
	Grpc__Reflection__V1__ErrorResponse error = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
	Grpc__Reflection__V1__ServiceResponse services[MAX_FILES * 2], *service_ptrs[MAX_FILES * 2];
	char names[MAX_FILES * 2][128], error_msg[256];
	ProtobufCBinaryData blobs[MAX_FILES];
	const struct dfile *found[MAX_FILES], *f = NULL;
	Grpc__Reflection__V1__ServerReflectionRequest *req;
	size_t n_found = 0;
	int ret;

	pthread_once(&files_once, files_load);
	req = grpc__reflection__v1__server_reflection_request__unpack(NULL, len, msg);
	if (!req)
		return grpc_reply_status(r, GRPC_INVALID_ARGUMENT,
					 "not a grpc.reflection.v1.ServerReflectionRequest");
	resp.valid_host = req->host;
	resp.original_request = req;
	switch (req->message_request_case) {
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
		for (size_t i = 0; i < n_files; i++) {
			struct span d = files[i].bytes, v;
			uint32_t field;

			while (list.n_service < MAX_FILES * 2 && next_field(&d, &field, &v)) {
				struct span name = field == 6 ? string_of(v, 1) : (struct span){ 0 };
				size_t k = list.n_service;

				if (!name.len)
					continue;
				grpc__reflection__v1__service_response__init(&services[k]);
				snprintf(names[k], sizeof(names[k]), "%.*s%s%.*s",
					 (int)files[i].package.len, (const char *)files[i].package.p,
					 files[i].package.len ? "." : "",
					 (int)name.len, (const char *)name.p);
				services[k].name = names[k];
				service_ptrs[k] = &services[k];
				list.n_service++;
			}
		}
		list.service = service_ptrs;
		resp.message_response_case =
			GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
		resp.list_services_response = &list;
		break;
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
		f = file_named((struct span){ (const uint8_t *)req->file_by_filename,
					      strlen(req->file_by_filename) });
		snprintf(error_msg, sizeof(error_msg), "no file '%.200s'", req->file_by_filename);
		break;
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
		f = file_declaring(req->file_containing_symbol);
		snprintf(error_msg, sizeof(error_msg), "no symbol '%.200s'",
			 req->file_containing_symbol);
		break;
	default:
		/* No proto of the agent declares extensions. */
		snprintf(error_msg, sizeof(error_msg), "no extensions are known");
		break;
	}
	if (f) {
		add_with_deps(f, found, &n_found);
		for (size_t i = 0; i < n_found; i++) {
			blobs[i].data = (uint8_t *)found[i]->bytes.p;
			blobs[i].len = found[i]->bytes.len;
		}
		fdr.n_file_descriptor_proto = n_found;
		fdr.file_descriptor_proto = blobs;
		resp.message_response_case =
			GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
		resp.file_descriptor_response = &fdr;
	} else if (!resp.message_response_case) {
		error.error_code = GRPC_NOT_FOUND;
		error.error_message = error_msg;
		resp.message_response_case =
			GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
		resp.error_response = &error;
	}
	ret = grpc_reply_message(r, &resp.base);
	grpc__reflection__v1__server_reflection_request__free_unpacked(req, NULL);
	return ret;
}
