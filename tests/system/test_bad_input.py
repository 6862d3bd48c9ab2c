"""Untrusted input: every malformed request gets a clear 4xx Status, never a
5xx or a crash, and what was stored before stays intact."""

import base64
import hashlib
import json
import random
import struct

import pytest
import requests

from conftest import (assert_error, bpf_object, raw_http, start_module_agent)

PB = "application/x-protobuf"
OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def a(module_agent):
    return module_agent


@pytest.fixture(scope="module")
def stored(a):
    data = bpf_object("accept.bpf.o")
    r = a.upload(data, name="keep-me")
    assert r.status_code == 201, r.text
    return r.json()["sha256"], data


@pytest.fixture(autouse=True)
def still_serving(request, a, stored):
    """After every test: the agent answers and the stored object is intact."""
    yield
    assert a.alive(), a.read_log()[-4000:]
    assert a.get("/healthz").status_code == 200
    sha, data = stored
    r = a.get(f"/v1/objects/{sha}/content")
    assert r.status_code == 200
    assert r.content == data
    assert a.get(f"/v1/objects/{sha}").json()["name"] == "keep-me"


@pytest.fixture(scope="module")
def small(request):
    """An agent that takes objects of at most 4 KiB."""
    return start_module_agent(request, ["--max-object-size", "4096"])


def object_count(a):
    return int(a.get("/v1/status").json().get("objectCount", "0"))


def elf_sections(data):
    """{name: (offset, size)} from an ELF64 little-endian section table."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
               for i in range(shnum)]
    strtab_off = headers[shstrndx][4]
    out = {}
    for h in headers:
        name_off = strtab_off + h[0]
        name = data[name_off:data.index(b"\0", name_off)].decode()
        out[name] = (h[4], h[5])
    return out


# ---------------------------------------------------------------- ELF bytes

def test_empty_body(a):
    assert_error(a.post("/v1/objects", data=b"", headers=OCTETS), 400, "empty object")


def test_random_bytes(a):
    rnd = random.Random(7)
    for n in (1, 3, 16, 63, 64, 1000, 5000):
        body = bytes(rnd.randrange(256) for _ in range(n))
        assert_error(a.upload(body), 400, "not an ELF")


def test_text_is_not_an_elf(a):
    assert_error(a.upload(b"hello, world\n" * 10), 400, "not an ELF")


def test_truncated_elf(a):
    data = bpf_object("accept.bpf.o")
    before = object_count(a)
    offsets = sorted(set(range(0, 65)) |
                     {len(data) * k // 21 for k in range(1, 21)} |
                     {len(data) - 1})
    assert len(offsets) >= 85
    for n in offsets:
        r = a.upload(data[:n])
        assert r.status_code in (400, 422), (n, r.status_code, r.text)
        body = r.json()
        assert body["code"] == r.status_code and body["message"], (n, body)
    # The short headers say so.
    assert_error(a.upload(data[:40]), 400, "truncated ELF header")
    assert object_count(a) == before


def test_x86_64_executable(a):
    with open("/bin/true", "rb") as f:
        data = f.read()
    assert_error(a.upload(data), 400, "x86-64", "not eBPF")


def test_big_endian_object(a):
    data = bpf_object("accept.bpfeb.o")
    assert_error(a.upload(data), 400, "object is big-endian; this host is little-endian")


def test_32_bit_elf(a):
    data = bytearray(bpf_object("accept.bpf.o"))
    data[4] = 1                                     # EI_CLASS = ELFCLASS32
    assert_error(a.upload(bytes(data)), 400, "32-bit")


def test_section_table_outside_file(a):
    data = bytearray(bpf_object("accept.bpf.o"))
    struct.pack_into("<Q", data, 0x28, len(data) + 4096)     # e_shoff
    assert_error(a.upload(bytes(data)), 400, "section header table")


def test_corrupt_btf(a):
    data = bytearray(bpf_object("accept.bpf.o"))
    off, size = elf_sections(bytes(data))[".BTF"]
    assert size > 24
    assert struct.unpack_from("<H", data, off)[0] == 0xEB9F   # BTF magic
    struct.pack_into("<H", data, off, 0x1234)
    assert_error(a.upload(bytes(data)), 422, "BTF")
    # Nothing was stored under the corrupt bytes' hash.
    sha = hashlib.sha256(bytes(data)).hexdigest()
    assert a.get(f"/v1/objects/{sha}").status_code == 404


def test_btf_with_lying_lengths(a):
    data = bytearray(bpf_object("accept.bpf.o"))
    off, _ = elf_sections(bytes(data))[".BTF"]
    # btf_header: magic u16, version u8, flags u8, hdr_len u32, type_off,
    # type_len, str_off, str_len (u32 each): make the types run far away.
    struct.pack_into("<I", data, off + 12, 0x7FFFFFF0)
    r = a.upload(bytes(data))
    assert_error(r, 422, "BTF")


def test_no_programs(a):
    # The only code section loses its executable flag: a well-formed ELF
    # without programs (and with relocations into a data section).
    data = bytearray(bpf_object("reject_oob.bpf.o"))
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    _, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    strtab_off = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 24)[0]
    cleared = 0
    for i in range(shnum):
        h = shoff + i * shentsize
        name_off, = struct.unpack_from("<I", data, h)
        flags, = struct.unpack_from("<Q", data, h + 8)
        if data[strtab_off + name_off:].startswith(b"xdp\0") and flags & 0x4:
            struct.pack_into("<Q", data, h + 8, flags & ~0x4)   # SHF_EXECINSTR
            cleared += 1
    assert cleared == 1
    r = a.upload(bytes(data))
    assert r.status_code in (400, 422), r.text
    assert r.json()["message"]


# ---------------------------------------------------------------- media types

def test_wrong_content_type(a):
    data = bpf_object("accept.bpf.o")
    r = a.post("/v1/objects", data=data, headers={"Content-Type": "text/plain"})
    assert_error(r, 415, "unsupported Content-Type 'text/plain'", "application/json",
                 "application/x-protobuf", "application/octet-stream")


def test_raw_types_accepted(a, stored):
    sha, data = stored
    for ctype in ("application/x-elf", "application/octet-stream; foo=bar", None):
        headers = {"Content-Type": ctype} if ctype else {}
        r = a.post("/v1/objects", data=data, headers=headers)
        assert r.status_code == 200, (ctype, r.text)
        assert r.json()["sha256"] == sha


def test_body_on_a_bodyless_route(a, stored):
    sha, _ = stored
    r = a.get("/v1/objects", data=b"{}", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "GET /v1/objects takes no request body")
    r = a.post(f"/v1/objects/{sha}:verify", data=b"x")
    assert_error(r, 400, "takes no request body")


# ---------------------------------------------------------------- JSON bodies

def post_json(a, text):
    return a.post("/v1/objects", data=text.encode() if isinstance(text, str) else text,
                  headers={"Content-Type": "application/json"})


def test_malformed_json(a):
    assert_error(post_json(a, '{"name":'), 400, "invalid JSON at line 1")
    assert_error(post_json(a, '{"name": "x",}'), 400, "invalid JSON")
    assert_error(post_json(a, b'{"name": "\xff"}'), 400)


def test_empty_json_body(a):
    assert_error(post_json(a, ""), 400, "empty body")


def test_json_not_an_object(a):
    assert_error(post_json(a, "[]"), 400, "expected a JSON object", "array")
    assert_error(post_json(a, '"x"'), 400, "invalid JSON")
    assert_error(post_json(a, "5"), 400, "invalid JSON")


def test_json_unknown_field(a):
    assert_error(post_json(a, '{"nmae": "x"}'), 400, 'unknown field "nmae"',
                 "graind.UploadObjectRequest")


def test_json_wrong_types(a):
    assert_error(post_json(a, '{"name": 5}'), 400, "name", "expected a string")
    assert_error(post_json(a, '{"content": 5}'), 400, "content", "base64")
    assert_error(post_json(a, '{"content": "!!not base64!!"}'), 400, "content",
                 "invalid base64")
    assert_error(post_json(a, '{"name": ["a"]}'), 400, "name")


def test_json_duplicate_field(a):
    r = post_json(a, '{"name": "a", "name": "b"}')
    assert r.status_code == 400
    r = post_json(a, '{"name": "a", "content": "", "content": ""}')
    assert r.status_code == 400


def test_json_content_that_is_not_an_elf(a):
    body = json.dumps({"name": "x", "content": base64.b64encode(b"garbage!").decode()})
    assert_error(post_json(a, body), 400, "not an ELF")


def test_json_without_content(a):
    assert_error(post_json(a, '{"name": "x"}'), 400, "empty object")


def test_invalid_protobuf_body(a):
    for body in (b"\xff\xff\xff\xff", b"\x0a\x10abc", b"\x12\x80\x80\x80\x80\x80\x80"):
        r = a.post("/v1/objects", data=body, headers={"Content-Type": PB})
        assert_error(r, 400, "not a valid protobuf graind.UploadObjectRequest")


def test_protobuf_name_with_invalid_utf8(a, pb):
    # Field 1 (name), length 2, bytes that are not UTF-8.
    r = a.post("/v1/objects", data=b"\x0a\x02\xc3\x28",
               headers={"Content-Type": PB})
    assert r.status_code == 400, r.text


# ---------------------------------------------------------------- names and ids

@pytest.mark.parametrize("query, message", [
    ("name=../etc", "must start with a letter or digit"),
    ("name=..%2Fetc", "must start with a letter or digit"),
    ("name=a/../b", "character 2 is not allowed"),
    ("name=abc%00def", "character 4 is not allowed"),
    ("name=%00", "must start with a letter or digit"),
    ("name=a%20b", "character 2 is not allowed"),
    ("name=" + "a" * 129, "1 to 128 characters"),
    ("name=-x", "must start with a letter or digit"),
])
def test_bad_names(a, stored, query, message):
    _, data = stored
    r = a.post(f"/v1/objects?{query}", data=data, headers=OCTETS)
    assert_error(r, 400, message)


def test_bad_name_in_json(a, stored):
    _, data = stored
    body = json.dumps({"name": "../../etc/passwd",
                       "content": base64.b64encode(data).decode()})
    assert_error(post_json(a, body), 400, "object name")
    body = json.dumps({"name": "a\u0000b", "content": base64.b64encode(data).decode()})
    r = post_json(a, body)
    assert r.status_code == 400, r.text


def test_longest_name_is_fine(a):
    data = bpf_object("reject_oob.bpf.o")
    sha = hashlib.sha256(data).hexdigest()
    a.delete(f"/v1/objects/{sha}")
    r = a.post("/v1/objects?name=" + "n" * 128, data=data, headers=OCTETS)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "n" * 128


@pytest.mark.parametrize("suffix", ["", "/content", ":verify"])
def test_bad_ids(a, suffix):
    method = "POST" if suffix == ":verify" else "GET"
    cases = [
        ("a" * 63, "64 hex digits, got 63 characters"),
        ("a" * 65, "64 hex digits, got 65 characters"),
        ("g" * 64, "64 hex digits"),
        ("%00" + "a" * 61, "64 hex digits"),
        ("a" * 61 + "%00", "64 hex digits"),
        ("x", "64 hex digits"),
    ]
    for ident, message in cases:
        r = a.request(method, f"/v1/objects/{ident}{suffix}")
        assert_error(r, 400, message)
    r = a.delete("/v1/objects/" + "a" * 63)
    assert_error(r, 400, "got 63 characters")


@pytest.mark.parametrize("path", [
    "/v1/objects/..%2F..%2Fetc",
    "/v1/objects/..%2F..%2Fetc%2Fpasswd/content",
    "/v1/objects/../../etc/passwd",
    "/v1/objects/%2e%2e/content",
    "/v1/objects/..",
    "/v1/objects/%2F",
    "/v1/objects//content",
    "/v1/%00/objects",
])
def test_path_tricks(a, path):
    req = (f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.admin}\r\n"
           f"Connection: close\r\n\r\n").encode()
    status, headers, body = raw_http(a.port, req)
    assert status in (400, 404), (path, status, body[:300])
    doc = json.loads(body)
    assert doc["code"] == status and doc["message"], doc


# ---------------------------------------------------------------- sizes

def test_object_over_the_limit(small):
    data = bytes(8192)
    r = small.upload(data)
    assert_error(r, 413, "object of 8192 bytes is over the 4096-byte limit",
                 "--max-object-size")
    body = json.dumps({"content": base64.b64encode(data).decode()})
    assert_error(post_json(small, body), 413, "over the 4096-byte limit")
    assert small.alive()


def test_object_at_the_limit_is_inspected(small):
    # 4096 bytes are allowed through to the ELF checks.
    assert_error(small.upload(b"\x01" * 4096), 400, "not an ELF")


def test_body_over_the_request_limit(small):
    # Every route takes at least 1 MiB; this body is bigger.
    big = b"{" + b" " * (1536 * 1024) + b"}"
    r = post_json(small, big)
    assert_error(r, 413, "request body is over the")
    assert small.get("/healthz").status_code == 200


def test_chunked_body_over_the_limit(small):
    def chunks():
        for _ in range(40):
            yield b"\0" * 65536

    r = small.post("/v1/objects", data=chunks(), headers=OCTETS)
    assert_error(r, 413, "request body is over the")
    assert small.get("/healthz").status_code == 200


def test_huge_content_length_refused_before_the_body(a):
    req = (f"POST /v1/objects HTTP/1.1\r\nHost: x\r\n"
           f"Authorization: Bearer {a.admin}\r\n"
           f"Content-Type: application/octet-stream\r\n"
           f"Content-Length: 1000000000000\r\n\r\nabc").encode()
    # Only three bytes of the trillion are sent: the answer must come anyway.
    status, headers, body = raw_http(a.port, req, timeout=10, read_all=False)
    assert status == 413, body
    doc = json.loads(body)
    assert doc["code"] == 413
    assert "request body is over the" in doc["message"]


def test_declared_length_over_the_limit_without_token(a):
    # Without a token no body is worth reading: the refusal is 401, at once.
    req = (b"POST /v1/objects HTTP/1.1\r\nHost: x\r\n"
           b"Content-Length: 99999999999\r\n\r\n")
    status, _, _ = raw_http(a.port, req, timeout=10, read_all=False)
    assert status == 401


def test_reader_body_is_refused_before_it_is_read(a):
    req = (b"POST /v1/objects HTTP/1.1\r\nHost: x\r\n"
           b"Authorization: Bearer " + a.reader.encode() + b"\r\n"
           b"Content-Length: 5000000\r\n\r\n")
    status, _, _ = raw_http(a.port, req, timeout=10, read_all=False)
    assert status == 403


def test_message_route_body_over_a_mebibyte_is_413(a):
    req = (b"PUT /v1/probes/big HTTP/1.1\r\nHost: x\r\n"
           b"Authorization: Bearer " + a.admin.encode() + b"\r\n"
           b"Content-Type: application/json\r\n"
           b"Content-Length: 2000000\r\n\r\n")
    status, _, _ = raw_http(a.port, req, timeout=10, read_all=False)
    assert status == 413


def test_many_bad_requests_in_a_row(a):
    """A burst of garbage over keep-alive connections."""
    rnd = random.Random(11)
    data = bpf_object("accept.bpf.o")
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {a.admin}"
        for i in range(60):
            b = bytearray(data)
            for _ in range(8):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            r = s.post(a.url + "/v1/objects", data=bytes(b), headers=OCTETS, timeout=60)
            assert r.status_code in (200, 201, 400, 422), (i, r.status_code, r.text)
            if r.status_code >= 400:
                assert r.json()["message"]


def test_license_that_is_not_utf8(a):
    data = bytearray(bpf_object("accept.bpf.o"))
    off, size = elf_sections(bytes(data))["license"]
    assert data[off:off + 3] == b"GPL"
    data[off + 2] = 0xFF
    assert_error(a.upload(bytes(data)), 422, "not valid UTF-8")


def test_path_that_is_not_utf8_keeps_the_audit_log_readable(a):
    # A change to a path of raw bytes is refused for what it is, and the
    # audit log still reads back as JSON.
    req = (b"POST /v1/probes/%ff%fe:detach HTTP/1.1\r\nHost: x\r\n"
           b"Authorization: Bearer " + a.admin.encode() + b"\r\nContent-Length: 0\r\n\r\n")
    status, _, body = raw_http(a.port, req, read_all=False)
    assert status == 400
    assert "name: not valid UTF-8" in json.loads(body)["message"]
    r = a.get("/v1/audit?page_size=1000")
    assert r.status_code == 200, r.text
    assert all(isinstance(e.get("target", ""), str) for e in r.json().get("entries", []))


def test_anonymous_noise_is_not_audited(a):
    # Requests without a valid token, and to paths that do not exist, leave
    # no record: anyone can make them.
    before = a.get("/v1/audit?page_size=1000").json().get("entries", [])
    for path in ("/v1/objects", "/v1/probes/x:attach", "/nowhere"):
        raw_http(a.port, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode(),
                 read_all=False)
    assert a.post("/v1/probes/x:attach", token=None).status_code == 401
    after = a.get("/v1/audit?page_size=1000").json().get("entries", [])
    assert after == before


def test_verb_segments_route_by_their_verb(a, stored):
    sha, _ = stored
    r = a.get(f"/v1/objects/{sha}:verify")
    assert_error(r, 405, "allowed: POST")
    assert r.headers["Allow"] == "POST"


def test_changes_refused_before_they_run_are_audited(a):
    def entries():
        return a.get("/v1/audit?page_size=1000").json().get("entries", [])
    before = len(entries())
    assert a.request("PUT", "/v1/probes/refused", data=b"{", headers={
        "Content-Type": "application/json"}).status_code == 400
    assert a.request("PUT", "/v1/probes/refused", data=b"x", headers={
        "Content-Type": "text/plain"}).status_code == 415
    new = entries()[before:]
    assert [(e["action"], e["target"], e["result"]) for e in new] == [
        ("PutProbe", "refused", 400), ("PutProbe", "refused", 415)], new
    assert "invalid JSON" in new[0]["message"]


def test_audit_page_token_out_of_range(a):
    assert_error(a.get("/v1/audit?page_token=18446744073709551616"), 400, "page_token")


# ---------------------------------------------------------------- enums

def put_probe(a, name, body, ctype="application/json"):
    return a.request("PUT", f"/v1/probes/{name}", data=body,
                     headers={"Content-Type": ctype})


def assert_no_probe(a, name):
    assert a.get(f"/v1/probes/{name}").status_code == 404


def test_unknown_enum_numbers_in_json(a, stored):
    sha, _ = stored
    spec = {"objectSha256": sha,
            "programs": [{"program": "x", "attach": {"xdp": {"ifname": "lo", "mode": 77}}}]}
    assert_error(put_probe(a, "enum-xdp", json.dumps(spec)), 400,
                 "programs[0].attach.xdp.mode", "unknown enum value 77 for graind.XdpMode")
    assert_no_probe(a, "enum-xdp")
    spec = {"objectSha256": sha, "desiredState": 99}
    assert_error(put_probe(a, "enum-state", json.dumps(spec)), 400,
                 "desiredState", "unknown enum value 99 for graind.DesiredState")
    spec["desiredState"] = "SOMETIMES"
    assert_error(put_probe(a, "enum-state", json.dumps(spec)), 400,
                 "desiredState", 'unknown enum value "SOMETIMES"')
    assert_no_probe(a, "enum-state")


def test_unknown_enum_numbers_in_protobuf(a, stored, pb):
    sha, _ = stored
    spec = pb.ProbeSpec(object_sha256=sha)
    prog = spec.programs.add(program="x")
    prog.attach.xdp.ifname = "lo"
    prog.attach.xdp.mode = 77   # proto3 enums are open: python keeps it
    assert_error(put_probe(a, "enum-xdp", spec.SerializeToString(), PB), 400,
                 "programs[0].attach.xdp.mode", "unknown enum value 77 for graind.XdpMode")
    assert_no_probe(a, "enum-xdp")
    spec = pb.ProbeSpec(object_sha256=sha, desired_state=99)
    assert_error(put_probe(a, "enum-state", spec.SerializeToString(), PB), 400,
                 "desiredState", "unknown enum value 99 for graind.DesiredState")
    assert_no_probe(a, "enum-state")


def test_uint64_bounds_in_query(a):
    # Query parameters are read as the field's JSON string would be.
    r = a.get("/v1/samples?after=18446744073709551615")
    assert r.status_code == 200, r.text
    assert_error(a.get("/v1/samples?after=18446744073709551616"), 400,
                 "after", "out of range for uint64")
