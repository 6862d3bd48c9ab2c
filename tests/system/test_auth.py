"""Bearer tokens, roles, unknown endpoints and methods."""

import hashlib

import pytest
import requests

from conftest import assert_error, bpf_object, raw_http

ZERO_SHA = "0" * 64


@pytest.fixture(scope="module")
def a(module_agent):
    return module_agent


@pytest.fixture(scope="module")
def stored(a):
    data = bpf_object("accept.bpf.o")
    r = a.upload(data, name="auth-test")
    assert r.status_code in (200, 201), r.text
    return r.json()["sha256"]


def test_healthz_needs_no_token(a):
    r = requests.get(a.url + "/healthz", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    # A wrong token does not hurt an open endpoint.
    assert a.get("/healthz", token="nonsense").status_code == 200


def test_no_token_is_401(a):
    r = a.get("/v1/objects", token=None)
    assert_error(r, 401, "missing token", "Authorization: Bearer")
    assert_error(a.get("/v1/status", token=None), 401, "missing token")
    assert_error(a.get("/v1/audit", token=None), 401, "missing token")


def test_wrong_token_is_401(a):
    assert_error(a.get("/v1/objects", token="f" * 64), 401, "invalid token")
    # Another token's prefix, or the token with more after it, is not it.
    assert_error(a.get("/v1/objects", token=a.admin[:-1]), 401, "invalid token")
    assert_error(a.get("/v1/objects", token=a.admin + "0"), 401, "invalid token")


@pytest.mark.parametrize("header", ["Basic {admin}", "{admin}", "Bearer", "Token {admin}"])
def test_other_schemes_are_401(a, header):
    r = a.get("/v1/objects", token=None,
              headers={"Authorization": header.format(admin=a.admin)})
    assert_error(r, 401, "invalid token")


def test_reader_may_read(a, stored):
    for path in ("/v1/objects", f"/v1/objects/{stored}", f"/v1/objects/{stored}/content",
                 "/v1/status", "/v1/audit"):
        r = a.get(path, token="reader")
        assert r.status_code == 200, (path, r.text)


def test_reader_may_not_write(a, stored):
    before = a.get("/v1/objects").json().get("objects", [])
    data = bpf_object("reject_oob.bpf.o")
    r = a.upload(data, token="reader")
    assert_error(r, 403, "principal reader (role reader) may not call POST /v1/objects",
                 "it needs the admin role")
    r = a.delete(f"/v1/objects/{stored}", token="reader")
    assert_error(r, 403, "may not call", f"DELETE /v1/objects/{stored}")
    r = a.post(f"/v1/objects/{stored}:verify", token="reader")
    assert_error(r, 403, "may not call", ":verify", "needs the operator role")
    # Nothing changed: the object is still there, the upload did not land.
    assert a.get(f"/v1/objects/{stored}").status_code == 200
    assert a.get("/v1/objects").json().get("objects", []) == before
    sha = hashlib.sha256(data).hexdigest()
    assert a.get(f"/v1/objects/{sha}").status_code == 404


def test_roles_are_checked_before_the_body(a):
    # A reader sending garbage learns about its role, not about the body.
    r = a.post("/v1/objects", token="reader", data=b"garbage",
               headers={"Content-Type": "text/plain"})
    assert_error(r, 403, "may not call")
    # No token at all: 401 before anything else.
    r = a.post("/v1/objects", token=None, data=b"garbage",
               headers={"Content-Type": "application/octet-stream"})
    assert_error(r, 401, "missing token")


def test_admin_may_write(a):
    data = bpf_object("reject_helper.bpf.o")
    r = a.upload(data)
    assert r.status_code == 201, r.text
    sha = r.json()["sha256"]
    r = a.post(f"/v1/objects/{sha}:verify")
    assert r.status_code == 200, r.text
    r = a.delete(f"/v1/objects/{sha}")
    assert r.status_code == 204, r.text
    assert r.content == b""


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_scheme_is_case_insensitive(a, scheme):
    r = a.get("/v1/status", token=None,
              headers={"Authorization": f"{scheme} {a.reader}"})
    assert r.status_code == 200, r.text
    r = a.get("/v1/audit", token=None,
              headers={"Authorization": f"{scheme} {a.admin}"})
    assert r.status_code == 200, r.text


def raw_get(a, *auth_lines):
    head = "".join(f"{line}\r\n" for line in auth_lines)
    return raw_http(a.port, f"GET /v1/status HTTP/1.1\r\nHost: x\r\n{head}"
                            "Connection: close\r\n\r\n".encode())


@pytest.mark.parametrize("value", ["Bearer  {t}", " Bearer {t}", "Bearer {t}  ", "Bearer\t{t}",
                                   "bearer {t}\t"])
def test_whitespace_around_the_token_is_no_part_of_it(a, value):
    status, _, body = raw_get(a, "Authorization: " + value.format(t=a.reader))
    assert status == 200, body


@pytest.mark.parametrize("value", ["Bearer {t} junk", "Bearer {t},x", "Bearer{t}",
                                   "Bearer {t}\x01", "Bearer \"{t}\""])
def test_junk_around_the_token_is_refused(a, value):
    status, _, body = raw_get(a, "Authorization: " + value.format(t=a.reader))
    assert status == 401, body


def test_two_authorization_headers_are_refused(a):
    status, _, body = raw_get(a, f"Authorization: Bearer {a.reader}",
                              f"Authorization: Bearer {a.reader}")
    assert status == 401 and b"invalid token" in body, body
    status, _, body = raw_get(a, f"Authorization: Bearer {a.admin}",
                              "authorization: Bearer nothing")
    assert status == 401, body


def test_admin_token_also_reads(a, stored):
    assert a.get(f"/v1/objects/{stored}").status_code == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/nothing"),
    ("GET", "/v2/objects"),
    ("GET", "/v1/objects/" + ZERO_SHA + "/nothing"),
    ("GET", "/v1/objectsx"),
])
def test_unknown_endpoint_is_404(a, method, path):
    r = a.request(method, path)
    assert_error(r, 404, f"no such endpoint: {method} {path}")
    # Even without a token: the endpoint does not exist for anybody.
    r = a.request(method, path, token=None)
    assert r.status_code == 404


@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/v1/objects", "GET, POST"),
    ("DELETE", "/v1/objects", "GET, POST"),
    ("PATCH", "/v1/objects/" + ZERO_SHA, "GET, DELETE"),
    ("POST", "/v1/status", "GET"),
    ("DELETE", "/healthz", "GET"),
])
def test_wrong_method_is_405_with_allow(a, method, path, allow):
    r = a.request(method, path)
    assert_error(r, 405, f"method {method} is not allowed on {path}", f"(allowed: {allow})")
    assert r.headers.get("Allow") == allow


def test_success_answers_have_no_allow_header(a):
    assert "Allow" not in a.get("/v1/objects").headers


def test_responses_are_not_cached(a):
    assert a.get("/v1/status").headers.get("Cache-Control") == "no-store"
    assert a.get("/v1/status", token=None).headers.get("Cache-Control") == "no-store"


def test_changes_beyond_the_write_rate_are_429_with_retry_after(make_agent, pb):
    """--write-rate 5: a burst of 10 changes passes, the next are 429 with
    Retry-After (gRPC RESOURCE_EXHAUSTED), reads are never held back, and
    after the wait changes pass again; the refusals are counted."""
    import grpc
    import time
    a = make_agent(["--write-rate", "5"])
    codes = [a.delete(f"/v1/probes/nothing-{i}").status_code for i in range(14)]
    assert codes[:10] == [404] * 10 and 429 in codes[10:], codes
    r = a.delete("/v1/probes/nothing")
    assert_error(r, 429, "too many changes", "--write-rate", "retry in")
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 2, r.headers
    assert a.get("/v1/status", token="reader").status_code == 200
    assert a.get("/v1/objects").status_code == 200
    ch = grpc.insecure_channel(a.grpc_target)
    with pytest.raises(grpc.RpcError) as e:
        ch.unary_unary("/graind.Graind/DeleteProbe",
                       request_serializer=pb.DeleteProbeRequest.SerializeToString,
                       response_deserializer=pb.Empty.FromString)(
            pb.DeleteProbeRequest(name="nothing"),
            metadata=[("authorization", f"Bearer {a.admin}")], timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ch.close()
    time.sleep(retry)
    assert a.delete("/v1/probes/nothing").status_code == 404
    metrics = a.get("/metrics").text
    refused = [line for line in metrics.splitlines()
               if line.startswith("graind_write_rate_limited_total ")]
    assert refused and float(refused[0].split()[1]) >= 3, refused
    assert a.stop() == 0
