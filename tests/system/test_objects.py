"""Objects: upload (raw, JSON, protobuf), read, list, delete, verify; status
and the audit log."""

import base64
import hashlib
import json
import os
import re
import subprocess
import threading
import time

import pytest
from google.protobuf import json_format

from conftest import GRAIND_BIN, TEST_BPF, agent_fds, assert_error, bpf_object

PB = "application/x-protobuf"
BPF_SRC = os.path.join(os.path.dirname(__file__), "..", "bpf")


@pytest.fixture(scope="module")
def a(module_agent):
    return module_agent


def sha_of(name):
    return hashlib.sha256(bpf_object(name)).hexdigest()


def ensure(a, name):
    """Upload a test object (stored or not yet) and return its sha256."""
    r = a.upload(bpf_object(name))
    assert r.status_code in (200, 201), r.text
    assert r.json()["sha256"] == sha_of(name)
    return sha_of(name)


def curl_upload(a, path, data_file, token):
    """POST a file with curl; returns (status, headers dict, body bytes)."""
    out = subprocess.run(
        ["curl", "-sS", "-D", "-", "-X", "POST", "--data-binary", f"@{data_file}",
         "-H", f"Authorization: Bearer {token}",
         "-H", "Content-Type: application/octet-stream", a.url + path],
        capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


def source_line_of(file, marker):
    """1-based number of the line of tests/bpf/<file> holding `marker`."""
    with open(os.path.join(BPF_SRC, file)) as f:
        hits = [i for i, line in enumerate(f, 1) if marker in line]
    assert len(hits) == 1, (file, marker, hits)
    return hits[0]


def source_of(file):
    with open(os.path.join(BPF_SRC, file)) as f:
        return f.read()


def programs_in(file):
    """{program name: section} as written in tests/bpf/<file>."""
    found = re.findall(r'SEC\("([^"]+)"\)\s*\nint\s+(?:BPF_PROG\()?(\w+)', source_of(file))
    return {name: section for section, name in found}


def helpers_in(file):
    return set(re.findall(r"\b(bpf_\w+)\s*\(", source_of(file)))


# ---------------------------------------------------------------- upload

def test_raw_upload_with_curl(a):
    data = bpf_object("accept.bpf.o")
    sha = hashlib.sha256(data).hexdigest()
    status, headers, body = curl_upload(a, "/v1/objects?name=accept.v1",
                                        os.path.join(TEST_BPF, "accept.bpf.o"), a.admin)
    assert status == 201, body
    assert headers["location"] == f"/v1/objects/{sha}"
    assert headers["content-type"].startswith("application/json")
    obj = json.loads(body)
    assert obj["sha256"] == sha
    assert obj["name"] == "accept.v1"
    assert obj["size"] == str(len(data))        # uint64: a JSON string
    assert obj["license"] == "GPL"
    assert obj["hasBtf"] is True
    assert obj["hasBtfExt"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", obj["created"]), obj
    assert "builtin" not in obj                 # false: omitted


def test_upload_describes_programs(a):
    ensure(a, "accept.bpf.o")
    obj = a.get(f"/v1/objects/{sha_of('accept.bpf.o')}").json()
    progs = {p["name"]: p for p in obj["programs"]}
    assert {n: p["section"] for n, p in progs.items()} == programs_in("accept.bpf.c")
    assert progs["count_packets"]["section"] == "xdp"
    assert progs["count_packets"]["type"] == "xdp"
    assert progs["count_packets"]["expectedAttachType"] == "xdp"
    assert progs["trace_nanosleep"]["section"] == "tracepoint/syscalls/sys_enter_nanosleep"
    assert progs["trace_nanosleep"]["type"] == "tracepoint"
    for p in progs.values():
        # Counted in 8-byte instructions; both programs are non-trivial.
        assert p["insnCount"] > 5, p


def test_upload_describes_maps(a):
    ensure(a, "accept.bpf.o")
    obj = a.get(f"/v1/objects/{sha_of('accept.bpf.o')}").json()
    maps = {m["name"]: m for m in obj["maps"] if not m.get("internal")}
    assert set(maps) == {"packets", "totals", "events"}, obj["maps"]

    packets = maps["packets"]
    assert packets["type"] == "hash"
    assert packets["keySize"] == 2              # struct proto_key { u8, u8 }
    assert packets["valueSize"] == 8
    assert packets["maxEntries"] == 256
    assert "proto_key" in packets["keyType"]
    assert packets["valueType"] == "__u64"

    totals = maps["totals"]
    assert totals["type"] == "array"
    assert (totals["keySize"], totals["valueSize"], totals["maxEntries"]) == (4, 8, 4)
    assert totals["keyType"] == "__u32"
    assert totals["valueType"] == "__u64"

    events = maps["events"]
    assert events["type"] == "ringbuf"
    assert events["maxEntries"] == 4096
    assert "keySize" not in events and "valueSize" not in events


def test_same_bytes_again_is_200_and_stored_once(a):
    data = bpf_object("accept.bpf.o")
    first = a.upload(data, name="first-name")
    assert first.status_code in (200, 201)
    again = a.upload(data, name="second-name")
    assert again.status_code == 200, again.text
    assert "Location" not in again.headers
    # The name of a stored object does not change.
    assert again.json()["name"] == first.json()["name"]
    assert again.json() == first.json()
    listed = [o["sha256"] for o in list_all(a)]
    assert listed.count(sha_of("accept.bpf.o")) == 1


def test_default_name(a):
    data = bpf_object("reject_helper.bpf.o")
    sha = hashlib.sha256(data).hexdigest()
    a.delete(f"/v1/objects/{sha}")
    r = a.upload(data)
    assert r.status_code == 201
    assert r.json()["name"] == f"object-{sha[:8]}"


def test_json_upload(a):
    data = bpf_object("reject_oob.bpf.o")
    sha = hashlib.sha256(data).hexdigest()
    a.delete(f"/v1/objects/{sha}")
    body = {"name": "oob-json", "content": base64.b64encode(data).decode()}
    r = a.post("/v1/objects", json=body)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v1/objects/{sha}"
    obj = r.json()
    assert obj["sha256"] == sha
    assert obj["name"] == "oob-json"
    assert obj["size"] == str(len(data))
    assert a.get(f"/v1/objects/{sha}/content").content == data

    # The same bytes through JSON again: 200, same object.
    r = a.post("/v1/objects", json=body)
    assert r.status_code == 200
    assert r.json()["sha256"] == sha


def test_json_upload_with_proto_field_names_and_urlsafe_base64(a):
    data = bpf_object("accept.bpf.o")
    content = base64.urlsafe_b64encode(data).decode().rstrip("=")
    r = a.post("/v1/objects", json={"name": "x", "content": content})
    assert r.status_code in (200, 201), r.text
    assert r.json()["sha256"] == sha_of("accept.bpf.o")


def test_protobuf_upload(a, pb):
    data = bpf_object("fentry.bpf.o")
    sha = hashlib.sha256(data).hexdigest()
    a.delete(f"/v1/objects/{sha}")
    msg = pb.UploadObjectRequest(name="fentry-pb", content=data)
    r = a.post("/v1/objects", data=msg.SerializeToString(),
               headers={"Content-Type": PB, "Accept": PB})
    assert r.status_code == 201, r.content[:300]
    assert r.headers["Content-Type"] == PB
    obj = pb.Object.FromString(r.content)
    assert obj.sha256 == sha
    assert obj.name == "fentry-pb"
    assert obj.size == len(data)
    assert obj.license == "GPL"
    assert {p.name: p.section for p in obj.programs} == programs_in("fentry.bpf.c")
    assert obj.programs[0].type == "tracing"


def test_query_name_applies_to_raw_upload(a):
    data = bpf_object("reject_helper.bpf.o")
    sha = hashlib.sha256(data).hexdigest()
    a.delete(f"/v1/objects/{sha}")
    r = a.post("/v1/objects", params={"name": "Helper_1.0+b-2"}, data=data,
               headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Helper_1.0+b-2"


def test_concurrent_uploads_of_new_bytes_create_once(a):
    data = bpf_object("reject_helper.bpf.o")
    sha = hashlib.sha256(data).hexdigest()
    a.delete(f"/v1/objects/{sha}")
    codes, lock = [], threading.Lock()

    def upload():
        r = a.upload(data)
        with lock:
            codes.append((r.status_code, r.json().get("sha256")))

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c for c, _ in codes) == [200] * 7 + [201], codes
    assert {s for _, s in codes} == {sha}
    assert [o["sha256"] for o in list_all(a)].count(sha) == 1


# ---------------------------------------------------------------- read

def test_get_json_and_protobuf_agree(a, pb):
    sha = ensure(a, "accept.bpf.o")
    j = a.get(f"/v1/objects/{sha}")
    assert j.status_code == 200
    assert j.headers["Content-Type"].startswith("application/json")
    p = a.get(f"/v1/objects/{sha}", headers={"Accept": PB})
    assert p.status_code == 200
    assert p.headers["Content-Type"] == PB
    binary = pb.Object.FromString(p.content)
    from_json = json_format.Parse(j.text, pb.Object())
    assert binary == from_json
    # Field by field, for readable failures.
    js = j.json()
    assert binary.sha256 == js["sha256"] == sha
    assert binary.name == js["name"]
    assert binary.size == int(js["size"])
    assert binary.license == js["license"]
    assert binary.has_btf == js.get("hasBtf", False)
    assert binary.has_btf_ext == js.get("hasBtfExt", False)
    assert binary.created == js["created"]
    assert binary.kernel_version == js.get("kernelVersion", 0)
    assert list(binary.warnings) == js.get("warnings", [])
    assert len(binary.programs) == len(js["programs"])
    for bp, jp in zip(binary.programs, js["programs"]):
        assert (bp.name, bp.section, bp.type, bp.insn_count) == \
            (jp["name"], jp["section"], jp["type"], jp["insnCount"])
        assert bp.expected_attach_type == jp.get("expectedAttachType", "")
    assert len(binary.maps) == len(js["maps"])
    for bm, jm in zip(binary.maps, js["maps"]):
        assert bm.name == jm["name"] and bm.type == jm["type"]
        assert bm.key_size == jm.get("keySize", 0)
        assert bm.value_size == jm.get("valueSize", 0)
        assert bm.max_entries == jm.get("maxEntries", 0)
        assert bm.flags == jm.get("flags", 0)
        assert bm.key_type == jm.get("keyType", "")
        assert bm.value_type == jm.get("valueType", "")
        assert bm.internal == jm.get("internal", False)
    # And the canonical JSON python writes is exactly ours.
    assert json_format.MessageToDict(binary) == js


def test_accept_header_with_several_types(a, pb):
    sha = ensure(a, "accept.bpf.o")
    r = a.get(f"/v1/objects/{sha}", headers={"Accept": f"text/html, {PB};q=0.9"})
    assert r.headers["Content-Type"] == PB
    assert pb.Object.FromString(r.content).sha256 == sha
    r = a.get(f"/v1/objects/{sha}", headers={"Accept": "*/*"})
    assert r.headers["Content-Type"].startswith("application/json")


def test_get_content_is_the_exact_bytes(a):
    for name in ("accept.bpf.o", "reject_oob.bpf.o"):
        sha = ensure(a, name)
        r = a.get(f"/v1/objects/{sha}/content")
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.content == bpf_object(name)
        assert int(r.headers["Content-Length"]) == len(bpf_object(name))


def test_get_with_uppercase_id(a):
    sha = ensure(a, "accept.bpf.o")
    r = a.get(f"/v1/objects/{sha.upper()}")
    assert r.status_code == 200
    assert r.json()["sha256"] == sha


def test_get_missing_is_404(a):
    missing = "ab" * 32
    assert_error(a.get(f"/v1/objects/{missing}"), 404, f"object {missing} not found")
    assert_error(a.get(f"/v1/objects/{missing}/content"), 404, "not found")
    assert_error(a.post(f"/v1/objects/{missing}:verify"), 404, "not found")


# ---------------------------------------------------------------- list

def list_all(a, page_size=None):
    objs, token, pages = [], None, 0
    while True:
        params = {}
        if page_size:
            params["page_size"] = page_size
        if token:
            params["page_token"] = token
        r = a.get("/v1/objects", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        if page_size:
            assert len(page.get("objects", [])) <= page_size
        objs += page.get("objects", [])
        token = page.get("nextPageToken")
        if not token:
            return objs
        assert pages < 100


def test_list_paging(a):
    for name in ("accept.bpf.o", "reject_oob.bpf.o", "reject_helper.bpf.o", "fentry.bpf.o"):
        ensure(a, name)
    full = list_all(a)
    shas = [o["sha256"] for o in full]
    assert len(shas) >= 4
    assert shas == sorted(shas)
    assert len(set(shas)) == len(shas)
    paged = list_all(a, page_size=1)
    assert [o["sha256"] for o in paged] == shas
    assert paged == full
    by2 = list_all(a, page_size=2)
    assert [o["sha256"] for o in by2] == shas

    first = a.get("/v1/objects", params={"page_size": 1}).json()
    assert len(first["objects"]) == 1
    assert first["nextPageToken"] == shas[0]


@pytest.mark.parametrize("size,words", [
    ("1001", "page_size must be 1 to 1000"), ("-1", "page_size: -1 is out of range"),
    ("abc", 'page_size: expected an integer, got "abc"'), ("", "page_size: expected an integer"),
])
def test_list_bad_page_size(a, size, words):
    assert_error(a.get(f"/v1/objects?page_size={size}"), 400, words)


def test_page_size_zero_is_the_default(a):
    # proto3 cannot tell 0 from unset: 0 asks for the default page of 100.
    assert a.get("/v1/objects?page_size=0").json() == a.get("/v1/objects").json()


def listed(a, pb):
    """The first page of the listing in JSON and in protobuf, checked to
    agree; its object ids."""
    j = a.get("/v1/objects")
    p = a.get("/v1/objects", headers={"Accept": PB})
    assert j.status_code == p.status_code == 200, j.text
    assert p.headers["Content-Type"] == PB
    assert pb.ListObjectsResponse.FromString(p.content) == \
        json_format.Parse(j.text, pb.ListObjectsResponse())
    return [o["sha256"] for o in j.json().get("objects", [])]


def test_listing_follows_every_change_at_once(a, pb):
    # The listing is answered from its last encoding while nothing
    # changed: each change shows in the very next call, in both encodings.
    sha = ensure(a, "reject_helper.bpf.o")
    before = listed(a, pb)
    assert listed(a, pb) == before and sha in before
    assert a.delete(f"/v1/objects/{sha}").status_code == 204
    assert sha not in listed(a, pb)
    assert a.upload(bpf_object("reject_helper.bpf.o")).status_code == 201
    assert listed(a, pb) == before
    # A page asked for by token is its own answer, not the first page's.
    first = a.get("/v1/objects", params={"page_size": 1}).json()
    after = a.get("/v1/objects", params={"page_size": 1,
                                         "page_token": first["nextPageToken"]}).json()
    assert after["objects"][0]["sha256"] == before[1]
    assert a.get("/v1/objects", params={"page_size": 1}).json() == first


def test_listing_under_concurrent_uploads_is_never_stale(a, pb):
    # Readers hammer the listing while objects come and go: after each
    # change returns, the next listing shows it.
    stop, errors = threading.Event(), []

    def read():
        while not stop.is_set():
            r = a.get("/v1/objects")
            if r.status_code != 200:
                errors.append(r.text)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i in range(20):
            data = bpf_object("accept.bpf.o") + f"padding {i}".encode()
            r = a.upload(data, name=f"churn-{i}")
            assert r.status_code == 201, r.text
            sha = r.json()["sha256"]
            assert sha in listed(a, pb)
            assert a.delete(f"/v1/objects/{sha}").status_code == 204
            assert sha not in listed(a, pb)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert errors == []


# ---------------------------------------------------------------- delete

def test_delete(a):
    sha = ensure(a, "fentry.bpf.o")
    r = a.delete(f"/v1/objects/{sha}")
    assert r.status_code == 204
    assert r.content == b""
    assert_error(a.get(f"/v1/objects/{sha}"), 404, "not found")
    assert_error(a.get(f"/v1/objects/{sha}/content"), 404, "not found")
    assert_error(a.delete(f"/v1/objects/{sha}"), 404, "not found")
    assert sha not in [o["sha256"] for o in list_all(a)]
    # Uploading it again creates it again.
    r = a.upload(bpf_object("fentry.bpf.o"))
    assert r.status_code == 201


# ---------------------------------------------------------------- verify

def verify(a, name, **kw):
    sha = ensure(a, name)
    r = a.post(f"/v1/objects/{sha}:verify", **kw)
    assert r.status_code == 200, r.text
    return sha, r


def test_verify_accepts_accept(a):
    sha, r = verify(a, "accept.bpf.o")
    rep = r.json()
    assert rep["sha256"] == sha
    assert rep["accepted"] is True
    assert rep["kernelRelease"] == os.uname().release
    progs = {p["program"]: p for p in rep["programs"]}
    assert {n: p["section"] for n, p in progs.items()} == programs_in("accept.bpf.c")
    assert progs["count_packets"]["section"] == "xdp"
    assert progs["count_packets"]["type"] == "xdp"
    assert progs["trace_nanosleep"]["type"] == "tracepoint"
    for p in progs.values():
        assert p["accepted"] is True, p
        assert p["verifiedInsns"] > 0, p
        assert "error" not in p and "sourceLine" not in p, p


def test_verify_rejects_out_of_bounds_read(a):
    _, r = verify(a, "reject_oob.bpf.o")
    rep = r.json()
    assert rep.get("accepted", False) is False
    [p] = rep["programs"]
    assert {p["program"]: p["section"]} == programs_in("reject_oob.bpf.c")
    assert p.get("accepted", False) is False
    assert p["error"], p
    assert "\n" not in p["error"]
    assert p["verifierLog"].strip(), p
    line = source_line_of("reject_oob.bpf.c", "arr[8]")
    m = re.search(r"reject_oob\.bpf\.c:(\d+)$", p["sourceLine"])
    assert m, p["sourceLine"]
    assert int(m.group(1)) == line, (p["sourceLine"], line)
    assert "arr[8]" in p.get("sourceText", ""), p


def test_verify_rejects_forbidden_helper(a):
    _, r = verify(a, "reject_helper.bpf.o")
    rep = r.json()
    assert rep.get("accepted", False) is False
    [p] = rep["programs"]
    assert {p["program"]: p["section"]} == programs_in("reject_helper.bpf.c")
    assert p["type"] == "socket_filter"
    assert p.get("accepted", False) is False
    [helper] = helpers_in("reject_helper.bpf.c")
    assert helper in p["error"], p["error"]
    assert helper in p["verifierLog"]


def test_verify_fentry(a):
    _, r = verify(a, "fentry.bpf.o")
    rep = r.json()
    [p] = rep["programs"]
    assert {p["program"]: p["section"]} == programs_in("fentry.bpf.c")
    assert p["type"] == "tracing"
    fentry_supported = a.get("/v1/status").json()["features"]["fentry"] == "FEATURE_PRESENT"
    if p.get("accepted"):
        assert rep["accepted"] is True
        assert p["verifiedInsns"] > 0
        # A kernel may load it and still not attach it (arm64 before 6.4):
        # the verdict says so.
        assert ("missingFeature" in p) == (not fentry_supported), p
    else:
        assert rep.get("accepted", False) is False
        assert p["error"]
        assert p["missingFeature"], p
        assert p["missingFeature"] in p["error"]
    # The verdict agrees with what the status says about this kernel.
    if not fentry_supported:
        assert "fentry" in p["missingFeature"], p


def test_verify_report_in_protobuf(a, pb):
    sha, r = verify(a, "reject_oob.bpf.o", headers={"Accept": PB})
    assert r.headers["Content-Type"] == PB
    rep = pb.VerifyReport.FromString(r.content)
    assert rep.sha256 == sha
    assert rep.accepted is False
    assert rep.kernel_release == os.uname().release
    [p] = rep.programs
    assert p.program in programs_in("reject_oob.bpf.c") and not p.accepted
    assert p.source_line.endswith(f"reject_oob.bpf.c:{source_line_of('reject_oob.bpf.c', 'arr[8]')}")
    assert p.verifier_log


def test_verify_leaves_nothing_loaded(a):
    def prog_ids():
        out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        return {p["id"]: p.get("name", "") for p in json.loads(out)}

    ours = set()
    for src in ("accept.bpf.c", "reject_oob.bpf.c", "reject_helper.bpf.c", "fentry.bpf.c"):
        ours |= {n[:15] for n in programs_in(src)}   # the kernel keeps 15 chars
    assert "count_packets" in ours
    before = prog_ids()
    for name in ("accept.bpf.o", "reject_oob.bpf.o", "reject_helper.bpf.o",
                 "fentry.bpf.o"):
        verify(a, name)
    # Other processes on this host may load the same test objects for a
    # moment; a program graind leaked would stay.
    deadline = time.time() + 5
    while True:
        after = prog_ids()
        new = {i: n for i, n in after.items() if i not in before and n in ours}
        if not new or time.time() > deadline:
            break
        time.sleep(0.1)
    assert new == {}, new
    # And the process holds no BPF program, map or link (only the switch
    # that keeps the kernel's run statistics on).
    assert [fd for fd in agent_fds(a) if fd != "anon_inode:bpf-stats"] == []


# ---------------------------------------------------------------- status, audit

def test_status(a):
    ensure(a, "accept.bpf.o")
    r = a.get("/v1/status", token="reader")
    assert r.status_code == 200
    st = r.json()
    version = subprocess.run([GRAIND_BIN, "--version"],
                             capture_output=True, text=True).stdout.split()[1]
    assert st["version"] == version
    assert st["kernelRelease"] == os.uname().release
    feats = st["features"]
    # Every feature is named, present or missing: a curl user can tell "no"
    # from "unknown".
    assert set(feats) == {"btf", "bpffs", "tracefs", "kprobes", "ringbuf", "xdp",
                          "bpfStats", "fentry", "lsm", "notes", "tcx", "perfLink",
                          "bpfCookie", "kprobeMulti", "tcMode", "xdpDispatcher"}, feats
    assert feats["btf"] == "FEATURE_PRESENT"
    has = {True: "FEATURE_PRESENT", False: "FEATURE_MISSING"}
    # The kprobe PMU is there exactly when the kernel has CONFIG_KPROBES.
    kprobes = os.path.exists("/sys/bus/event_source/devices/kprobe")
    assert feats["kprobes"] == has[kprobes], feats
    assert any("CONFIG_KPROBES" in n for n in feats["notes"]) != kprobes, feats["notes"]
    # What the kernel's version says it has, the probes found.
    release = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    assert feats["tcx"] == has[release >= (6, 6)], (release, feats)
    assert any("6.6" in n for n in feats["notes"] if n.startswith("tcx:")) == (release < (6, 6))
    assert feats["tcMode"] == ("TC_MODE_TCX" if release >= (6, 6) else "TC_MODE_CLASSIC")
    assert feats["perfLink"] == feats["bpfCookie"] == has[release >= (5, 15)], feats
    # kprobe.multi rides on kprobes (fprobe): never without them.
    if not kprobes:
        assert feats["kprobeMulti"] == "FEATURE_MISSING", feats
    assert feats["bpffs"] == "FEATURE_PRESENT"
    missing = [k for k, v in feats.items() if v == "FEATURE_MISSING"]
    assert len(feats["notes"]) == len(missing), (missing, feats["notes"])
    assert int(st["objectCount"]) == len(list_all(a))
    assert int(st.get("probeCount", "0")) == 0
    assert int(st["databaseBytes"]) > 0
    assert f"127.0.0.1:{a.port}" in st["listen"]
    assert f"unix:{a.socket_path}" in st["listen"]
    assert int(st.get("uptimeSeconds", "0")) < 600
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", st["started"])


def audit_all(a):
    entries, token = [], None
    while True:
        params = {"page_size": 50}
        if token:
            params["page_token"] = token
        r = a.get("/v1/audit", params=params, token="reader")
        assert r.status_code == 200, r.text
        page = r.json()
        entries += page.get("entries", [])
        token = page.get("nextPageToken")
        if not token:
            return entries


def test_audit_records_changes(a):
    data = bpf_object("reject_helper.bpf.o")
    sha = hashlib.sha256(data).hexdigest()
    a.delete(f"/v1/objects/{sha}")
    start = len(audit_all(a))
    assert a.upload(data, name="audited").status_code == 201
    assert a.post(f"/v1/objects/{sha}:verify").status_code == 200
    assert a.upload(data, token="reader").status_code == 403
    assert a.get(f"/v1/objects/{sha}").status_code == 200   # reads are not audited
    assert a.delete(f"/v1/objects/{sha}").status_code == 204
    assert a.delete(f"/v1/objects/{sha}").status_code == 404

    entries = audit_all(a)
    ids = [int(e["id"]) for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    new = entries[start:]
    got = [(e["role"], e["action"], e["result"]) for e in new]
    # The token files' principals are named after their roles.
    assert [e["principal"] for e in new] == [e["role"] for e in new], new
    assert got == [
        ("admin", "UploadObject", 201),
        ("admin", "VerifyObject", 200),
        ("reader", "UploadObject", 403),
        ("admin", "DeleteObject", 204),
        ("admin", "DeleteObject", 404),
    ], got
    assert sha in new[0]["target"] and "audited" in new[0]["target"]
    assert "message" not in new[0]
    assert new[1]["target"] == sha
    assert "may not call" in new[2]["message"]
    assert new[3]["target"] == sha
    assert "not found" in new[4]["message"]
    for e in new:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", e["time"])
    assert not any(e["action"].startswith("GET") for e in entries)


def test_audit_paging(a):
    entries = audit_all(a)
    assert len(entries) >= 3
    paged, token = [], None
    while True:
        r = a.get("/v1/audit", params={"page_size": 1, **({"page_token": token} if token else {})})
        page = r.json()
        assert len(page.get("entries", [])) <= 1
        paged += page.get("entries", [])
        token = page.get("nextPageToken")
        if not token:
            break
    assert paged == entries
    assert_error(a.get("/v1/audit?page_token=xyz"), 400, "page_token")


def test_damaged_object_bytes_are_never_served(make_agent):
    """Bytes changed in the database behind the agent's back (a flipped
    byte a quick_check cannot see): content, verify and attach refuse the
    object with the reason, the damage is counted, the agent serves on."""
    import sqlite3
    a = make_agent()
    data = bpf_object("accept.bpf.o")
    sha = a.upload(data, name="fragile").json()["sha256"]
    assert a.stop() == 0
    db = sqlite3.connect(os.path.join(a.state_dir, "graind.db"))
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x40
    db.execute("UPDATE objects SET bytes = ? WHERE sha256 = ?", (bytes(flipped), sha))
    db.commit()
    db.close()
    a.start()
    got = hashlib.sha256(bytes(flipped)).hexdigest()
    r = a.get(f"/v1/objects/{sha}/content")
    assert_error(r, 500, f"object {sha} is damaged", got, "upload it again")
    assert_error(a.post(f"/v1/objects/{sha}:verify"), 500, "is damaged")
    r = a.request("PUT", "/v1/probes/fragile", json={
        "objectSha256": sha, "desiredState": "ATTACHED",
        "programs": [{"program": "count_packets", "attach": {"xdp": {"ifname": "lo"}}}]})
    assert_error(r, 500, "is damaged")
    assert a.get("/v1/probes/fragile").status_code == 404
    status = a.get("/v1/status").json()
    assert status["storage"]["corruptReads"] == "3", status["storage"]
    assert status["storage"]["damagedObjects"] == "1", status["storage"]
    assert "graind_storage_corrupt_reads_total 3" in a.get("/metrics").text
    assert "graind_storage_damaged_objects 1" in a.get("/metrics").text
    # Three reads, one damaged object: logged once.
    assert a.read_log().count("object damaged in the store") == 1, a.read_log()[-2000:]
    # Uploading the right bytes again repairs it.
    r = a.upload(data, name="fragile")
    assert r.status_code in (200, 201), r.text
    r = a.get(f"/v1/objects/{sha}/content")
    assert r.status_code == 200 and r.content == data
    assert a.stop() == 0
