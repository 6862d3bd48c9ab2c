/* Unit tests of the service layer's contract: one operation per rpc of
 * service Graind, in its order, with the role the rpc's kind needs; and
 * the text binding transports use for path and query values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "proto/graind.pb-c.h"
#include "server/svc/svc.h"
#include "server/util/codec.h"
#include "server/util/pbmsg.h"

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Every rpc has its operation, found by name, at its own index. */
static void test_every_rpc_has_an_operation(void **state)
{
	const ProtobufCServiceDescriptor *sd = &graind__graind__descriptor;

	(void)state;
	for (size_t i = 0; i < sd->n_methods; i++) {
		const struct svc_method *m = svc_method_at(i);

		assert_non_null(m);
		assert_ptr_equal(svc_rpc(m), &sd->methods[i]);
		assert_ptr_equal(svc_method_find(sd->methods[i].name), m);
		/* A stream is served in steps (svc_watch_*), not by run. */
		assert_true(m->streams == starts_with(sd->methods[i].name, "Watch"));
		assert_true((m->run == NULL) == m->streams);
	}
	assert_null(svc_method_at(sd->n_methods));
	assert_null(svc_method_find("NoSuchRpc"));
}

/* Reads are open to readers (health to anyone) and never audited; every
 * other rpc is a change, audited: uploads, fetches and deletes of objects
 * need an admin, the rest an operator. */
static void test_roles_follow_the_kind_of_rpc(void **state)
{
	const ProtobufCServiceDescriptor *sd = &graind__graind__descriptor;

	(void)state;
	for (size_t i = 0; i < sd->n_methods; i++) {
		const struct svc_method *m = svc_method_at(i);
		const char *name = sd->methods[i].name;
		bool read = starts_with(name, "Get") || starts_with(name, "List") ||
			    starts_with(name, "Dump") || starts_with(name, "Watch");

		if (!strcmp(name, "GetHealth"))
			assert_int_equal(m->role, AUTH_NONE);
		else if (read)
			assert_int_equal(m->role, AUTH_READER);
		else if (!strcmp(name, "UploadObject") || !strcmp(name, "FetchObject") ||
			 !strcmp(name, "DeleteObject"))
			assert_int_equal(m->role, AUTH_ADMIN);
		else
			assert_int_equal(m->role, AUTH_OPERATOR);
		assert_int_equal(m->changes, !read);
		/* Whatever names a probe is judged against the caller's scope. */
		if (strstr(name, "Probe") && !starts_with(name, "List") && !starts_with(name, "Watch"))
			assert_int_equal(m->scope, SVC_SCOPE_PROBE);
	}
}

/* A caller without a valid credential is refused before the operation
 * runs; a role too low, or a probe out of scope, is 403. */
static void test_authorize(void **state)
{
	const struct svc_method *put = svc_method_find("PutProbe");
	const struct svc_method *health = svc_method_find("GetHealth");
	const struct svc_method *sink = svc_method_find("PutSink");
	const struct svc_method *upload = svc_method_find("UploadObject");
	struct svc_call anon = { .verdict = AUTH_NO_CREDENTIAL };
	struct svc_call bad = { .verdict = AUTH_UNKNOWN };
	struct svc_call expired = { .verdict = AUTH_EXPIRED,
				    .who = { .name = "ci", .expires_ms = 1000 } };
	struct svc_call reader = { .who = { .name = "dash", .role = AUTH_READER } };
	struct svc_call team = { .who = { .name = "team-a", .role = AUTH_OPERATOR, .n_scopes = 2,
					  .scopes = { "team-a-*", "shared" } } };
	struct gerr err = { 0 };

	(void)state;
	assert_int_equal(svc_authorize(&anon, put, "x", &err), -1);
	assert_int_equal(err.status, 401);
	assert_non_null(strstr(err.msg, "missing token"));
	assert_int_equal(svc_authorize(&bad, put, "x", &err), -1);
	assert_int_equal(err.status, 401);
	assert_non_null(strstr(err.msg, "invalid token"));
	assert_int_equal(svc_authorize(&expired, put, "x", &err), -1);
	assert_int_equal(err.status, 401);
	assert_non_null(strstr(err.msg, "principal ci expired at 1970-01-01T00:00:01"));
	assert_int_equal(svc_authorize(&anon, health, "", &err), 0);

	assert_int_equal(svc_authorize(&reader, put, "x", &err), -1);
	assert_int_equal(err.status, 403);
	assert_non_null(strstr(err.msg, "principal dash (role reader)"));
	assert_non_null(strstr(err.msg, "needs the operator role"));

	assert_int_equal(svc_authorize(&team, put, "team-a-web", &err), 0);
	assert_int_equal(svc_authorize(&team, put, "shared", &err), 0);
	assert_int_equal(svc_authorize(&team, put, NULL, &err), 0);     /* not known yet */
	assert_int_equal(svc_authorize(&team, put, "team-b-web", &err), -1);
	assert_int_equal(err.status, 403);
	assert_non_null(strstr(err.msg, "matching team-a-*,shared, not team-b-web"));
	assert_int_equal(svc_authorize(&team, sink, "s", &err), -1);
	assert_int_equal(err.status, 403);
	assert_non_null(strstr(err.msg, "PutSink is for principals without a scope"));
	assert_int_equal(svc_authorize(&team, upload, "o", &err), -1);
	assert_non_null(strstr(err.msg, "needs the admin role"));
}

static void test_set_text(void **state)
{
	Graind__ListSamplesRequest *req =
		(Graind__ListSamplesRequest *)pbmsg_new(&graind__list_samples_request__descriptor);
	Graind__XdpAttach *xdp = (Graind__XdpAttach *)pbmsg_new(&graind__xdp_attach__descriptor);
	struct gerr err = { 0 };

	(void)state;
	assert_int_equal(codec_set_text(&req->base, "after", "18446744073709551615", &err), 0);
	assert_true(req->after == UINT64_MAX);
	assert_int_equal(codec_set_text(&req->base, "limit", "7", &err), 0);
	assert_int_equal(req->limit, 7);
	assert_int_equal(codec_set_text(&req->base, "probe", "net.x", &err), 0);
	assert_string_equal(req->probe, "net.x");

	assert_int_equal(codec_set_text(&req->base, "limit", "4294967296", &err), -1);
	assert_int_equal(err.status, 400);
	assert_non_null(strstr(err.msg, "limit: "));
	assert_int_equal(codec_set_text(&req->base, "after", "-1", &err), -1);
	assert_non_null(strstr(err.msg, "after: -1 is out of range"));
	assert_int_equal(codec_set_text(&req->base, "after", "1x", &err), -1);
	assert_int_equal(codec_set_text(&req->base, "probe", "\xff", &err), -1);
	assert_non_null(strstr(err.msg, "probe: not valid UTF-8"));

	assert_int_equal(codec_set_text(&xdp->base, "mode", "XDP_MODE_SKB", &err), 0);
	assert_int_equal(xdp->mode, GRAIND__XDP_MODE__XDP_MODE_SKB);
	assert_int_equal(codec_set_text(&xdp->base, "mode", "NOPE", &err), -1);
	assert_int_equal(err.status, 400);
	pbmsg_free(&req->base);
	pbmsg_free(&xdp->base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_rpc_has_an_operation),
		cmocka_unit_test(test_roles_follow_the_kind_of_rpc),
		cmocka_unit_test(test_authorize),
		cmocka_unit_test(test_set_text),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
