/* Unit tests of the gRPC transport's pieces that need no connection: the
 * status code table, message framing, and reflection over the embedded
 * descriptor set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "server/grpc/grpc_int.h"
#include "server/util/gerr.h"

/* google.rpc.Code, as the gRPC spec numbers them. */
static void test_code_table(void **state)
{
	(void)state;
	assert_int_equal(gerr_grpc_code(200), 0);
	assert_int_equal(gerr_grpc_code(400), 3);
	assert_int_equal(gerr_grpc_code(401), 16);
	assert_int_equal(gerr_grpc_code(403), 7);
	assert_int_equal(gerr_grpc_code(404), 5);
	assert_int_equal(gerr_grpc_code(409), 9);
	assert_int_equal(gerr_grpc_code(412), 10);
	assert_int_equal(gerr_grpc_code(413), 8);
	assert_int_equal(gerr_grpc_code(415), 3);
	assert_int_equal(gerr_grpc_code(422), 9);
	assert_int_equal(gerr_grpc_code(503), 14);
	assert_int_equal(gerr_grpc_code(500), 13);
	assert_int_equal(gerr_grpc_code(418), 13);
	assert_int_equal(gerr_grpc_code(0), 13);
}

static void test_framing(void **state)
{
	Graind__GetProbeRequest req = GRAIND__GET_PROBE_REQUEST__INIT, *back;
	struct grpc_reply r = { 0 };
	size_t n;

	(void)state;
	req.name = "one";
	assert_int_equal(grpc_reply_message(&r, &req.base), 0);
	req.name = "two-two";
	assert_int_equal(grpc_reply_message(&r, &req.base), 0);
	/* Two messages, each behind its flag byte and big-endian length. */
	n = (size_t)r.data[1] << 24 | r.data[2] << 16 | r.data[3] << 8 | r.data[4];
	assert_int_equal(r.data[0], 0);
	assert_int_equal(r.len, GRPC_PREFIX + n + GRPC_PREFIX + 9);
	back = graind__get_probe_request__unpack(NULL, n, r.data + GRPC_PREFIX);
	assert_non_null(back);
	assert_string_equal(back->name, "one");
	graind__get_probe_request__free_unpacked(back, NULL);
	back = graind__get_probe_request__unpack(NULL, 9, r.data + 2 * GRPC_PREFIX + n);
	assert_non_null(back);
	assert_string_equal(back->name, "two-two");
	graind__get_probe_request__free_unpacked(back, NULL);
	grpc_reply_clear(&r);
	assert_null(r.data);
}

static Grpc__Reflection__V1__ServerReflectionResponse *reflect(
	Grpc__Reflection__V1__ServerReflectionRequest *req)
{
	uint8_t buf[512];
	size_t n = grpc__reflection__v1__server_reflection_request__pack(req, buf);
	struct grpc_reply r = { 0 };
	Grpc__Reflection__V1__ServerReflectionResponse *resp;

	assert_int_equal(grpc_reflection_answer(buf, n, &r), 0);
	resp = grpc__reflection__v1__server_reflection_response__unpack(NULL, r.len - GRPC_PREFIX,
									  r.data + GRPC_PREFIX);
	assert_non_null(resp);
	grpc_reply_clear(&r);
	return resp;
}

static void test_reflection(void **state)
{
	Grpc__Reflection__V1__ServerReflectionRequest req =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
	Grpc__Reflection__V1__ServerReflectionResponse *resp;
	struct grpc_reply r = { 0 };
	static const char *const found[] = { "graind.Graind", "graind.Graind.DumpMap",
					     "graind.ProbeSpec", "graind.DesiredState",
					     "grpc.health.v1.HealthCheckResponse.ServingStatus" };
	static const char *const missing[] = { "graind", "graind.Graind.NoSuch", "graind.Probe.x",
					       "grpc.health.v1", "" };

	(void)state;
	req.message_request_case =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
	req.list_services = "";
	resp = reflect(&req);
	assert_int_equal(resp->list_services_response->n_service, 4);
	assert_string_equal(resp->list_services_response->service[0]->name, "graind.Graind");
	grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);

	req.message_request_case =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
	for (size_t i = 0; i < sizeof(found) / sizeof(found[0]); i++) {
		req.file_containing_symbol = (char *)found[i];
		resp = reflect(&req);
		assert_non_null(resp->file_descriptor_response);
		assert_true(resp->file_descriptor_response->n_file_descriptor_proto >= 1);
		grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);
	}
	for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
		req.file_containing_symbol = (char *)missing[i];
		resp = reflect(&req);
		assert_non_null(resp->error_response);
		assert_int_equal(resp->error_response->error_code, GRPC_NOT_FOUND);
		grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);
	}
	/* Bytes that are no request. */
	assert_int_equal(grpc_reflection_answer((const uint8_t *)"\xff\xff", 2, &r), -1);
	assert_int_equal(r.code, GRPC_INVALID_ARGUMENT);
	grpc_reply_clear(&r);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(test_code_table),
	cmocka_unit_test(test_framing),
	cmocka_unit_test(test_reflection),
};

int main(void)
{
	return cmocka_run_group_tests(tests, NULL, NULL);
}
