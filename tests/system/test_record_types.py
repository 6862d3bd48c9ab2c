"""Record types of third-party objects, without configuration: a ring
buffer or perf event array whose records are named unlike the map decodes
as the only struct of the object of the records' size; when none or
several fit, the records stay hex and the probe's status says why and how
to name the type; a recordType the object lacks is refused at PUT.

The objects are tests/bpf/rectype_*.bpf.c, driven by test_samples'
caller process through getpid()."""

import contextlib
import os
import struct

import pytest
from google.protobuf import json_format

from conftest import assert_error, bpf_object
from test_samples import COMM, Caller, delete_probe, fields, put_probe, samples, wait_events, \
    wait_for

RUN = os.getpid() % 10000
_seq = iter(range(1000))


@pytest.fixture(scope="module")
def a(module_agent):
    return module_agent


@pytest.fixture(scope="module")
def shas(a):
    out = {}
    for obj in ("rectype_one", "rectype_twins", "rectype_none"):
        r = a.upload(bpf_object(f"{obj}.bpf.o"), name=obj)
        assert r.status_code in (200, 201), r.text
        out[obj] = r.json()["sha256"]
    return out


def spec(sha, tid, outputs=None):
    s = {"objectSha256": sha, "constants": [{"name": "target_tid", "value": str(tid)}]}
    if outputs is not None:
        s["outputs"] = outputs
    return s


@contextlib.contextmanager
def running(a, sha, outputs=None):
    """A probe of the object aimed at a fresh caller: (name, caller)."""
    caller = Caller()
    name = f"rectype-{RUN}-{next(_seq)}"
    try:
        put_probe(a, name, spec(sha, caller.tid, outputs))
        yield name, caller
    finally:
        delete_probe(a, name)
        caller.stop()


def probe_status(a, pb, name):
    """GET /v1/probes/{name}, parsed strictly as a graind.Probe."""
    r = a.get(f"/v1/probes/{name}")
    assert r.status_code == 200, r.text
    return json_format.Parse(r.text, pb.Probe())


def wait_warnings(a, pb, name, n):
    return wait_for(lambda: len(probe_status(a, pb, name).warnings) >= n and
                    list(probe_status(a, pb, name).warnings), what=f"{n} warnings of {name}")


def raw_records(got):
    return [(f["raw"], f["size"]) for f in map(fields, got)]


def test_ring_and_perf_records_decode_as_the_only_struct_of_their_size(a, pb, shas):
    n = 5
    with running(a, shas["rectype_one"]) as (name, caller):
        caller.call(n)
        # sample_rec (64 bytes) every call, tick_rec (24) after every second.
        want = []
        for seq in range(1, n + 1):
            want.append({
                "pid": ("uint", caller.tid), "tgid": ("uint", caller.tid),
                "seq": ("uint", seq), "comm": ("text", COMM),
                "daddr": ("text", f"198.18.0.{seq}"), "dport": ("uint", 8000 + seq),
                "kind": ("uint", 2), "total": ("uint", 10 * seq), "delta": ("int", -seq),
                "cookie": ("text", hex(0xabcd0000 + seq)),
            })
            if seq % 2 == 0:
                want.append({"seq": ("uint", seq), "half": ("uint", seq // 2),
                             "pid": ("uint", caller.tid), "even": ("uint", 1)})
        got = wait_events(a, pb, name, "rb", len(want))
        assert [fields(s) for s in got] == want
        # 10-byte records padded by the kernel to 12.
        got = wait_events(a, pb, name, "out", n)
        assert [fields(s) for s in got] == [
            {"pid": ("uint", caller.tid), "seq": ("uint", seq), "code": ("uint", 7)}
            for seq in range(1, n + 1)]
        assert list(probe_status(a, pb, name).warnings) == []


def test_two_structs_of_the_size_leave_hex_and_a_warning_naming_both(a, pb, shas):
    n = 3
    with running(a, shas["rectype_twins"]) as (name, caller):
        caller.call(n)
        got = wait_events(a, pb, name, "rb", n)
        assert raw_records(got) == [
            (("text", struct.pack("<QQ", seq, caller.tid).hex()), ("uint", 16))
            for seq in range(1, n + 1)]
        [w] = wait_warnings(a, pb, name, 1)
        assert w.startswith("map rb: records of 16 bytes are shown as hex"), w
        assert "(pair_a, pair_b)" in w, w
        assert "pair_key" not in w, w      # a map's key is no record
        assert '{"map": "rb", "events": {"recordType": "<struct>"}}' in w, w

    # Naming one of them decodes the records, and nothing is left to say.
    outputs = [{"map": "rb", "events": {"recordType": "pair_a"}}]
    with running(a, shas["rectype_twins"], outputs) as (name, caller):
        caller.call(n)
        got = wait_events(a, pb, name, "rb", n)
        assert [fields(s) for s in got] == [
            {"seq": ("uint", seq), "pid": ("uint", caller.tid)} for seq in range(1, n + 1)]
        assert list(probe_status(a, pb, name).warnings) == []


def test_no_struct_of_the_size_leaves_hex_and_says_how_to_keep_one(a, pb, shas):
    n = 2
    with running(a, shas["rectype_none"]) as (name, caller):
        caller.call(n)
        got = wait_events(a, pb, name, "rb", n)
        assert raw_records(got) == [
            (("text", struct.pack("<QIIQ", seq, caller.tid, 5, 0).hex()), ("uint", 24))
            for seq in range(1, n + 1)]
        [w] = wait_warnings(a, pb, name, 1)
        assert w.startswith("map rb: records of 24 bytes are shown as hex: "
                            "no struct of the object fits (its structs: tune (8 bytes))"), w
        assert "global pointer" in w and '"recordType"' in w, w
        # More records of the same size say nothing new.
        caller.call(1)
        wait_events(a, pb, name, "rb", n + 1)
        assert len(probe_status(a, pb, name).warnings) == 1


@pytest.mark.parametrize("obj, named, listed, unlisted", [
    ("rectype_none", "lone_rec", ["tune (8 bytes)"], []),
    ("rectype_one", "struct nosuch",
     ["out_rec (10 bytes), sample_rec (64 bytes), tick_rec (24 bytes)"],
     ["task_struct", "trace_event_raw_sys_enter"]),
])
def test_a_record_type_the_object_lacks_is_refused(a, pb, shas, obj, named, listed, unlisted):
    name = f"rectype-bad-{RUN}-{next(_seq)}"
    r = a.request("PUT", f"/v1/probes/{name}",
                  json=spec(shas[obj], 1, [{"map": "rb", "events": {"recordType": named}}]))
    msg = assert_error(r, 400, f'map rb: events.recordType "{named}" is no struct',
                       "its structs: ", *listed)
    for kernel_type in unlisted:
        assert kernel_type not in msg
    assert a.get(f"/v1/probes/{name}").status_code == 404     # nothing stored
    assert not any(s.probe == name for s in samples(a, pb))


def test_a_record_type_the_object_has_is_taken_in_either_form(a, pb, shas):
    outputs = [{"map": "rb", "events": {"recordType": "struct sample_rec"}},
               {"map": "out", "events": {"recordType": "out_rec"}}]
    with running(a, shas["rectype_one"], outputs) as (name, caller):
        caller.call(1)
        [s] = wait_events(a, pb, name, "rb", 1)
        assert fields(s)["comm"] == ("text", COMM)
        [s] = wait_events(a, pb, name, "out", 1)
        assert fields(s)["code"] == ("uint", 7)
        assert list(probe_status(a, pb, name).warnings) == []
        # The second call's tick_rec is shorter than the type named: hex.
        caller.call(1)
        got = wait_events(a, pb, name, "rb", 3)
        assert fields(got[1])["seq"] == ("uint", 2)
        assert raw_records(got[2:]) == [
            (("text", struct.pack("<QQII", 2, 1, caller.tid, 1).hex()), ("uint", 24))]
        assert wait_warnings(a, pb, name, 1) == [
            "map rb: records of 24 bytes are shown as hex: they are shorter than their type, "
            "sample_rec (64 bytes)"]
