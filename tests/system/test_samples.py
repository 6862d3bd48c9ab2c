"""Samples on the real kernel: probes count and emit, the collector turns
that into samples, and GET /v1/samples, the live map dumps and /metrics
report exactly what the test made happen, field by field.

Events and metrics come from tests/bpf/emit.bpf.c, driven by a caller
process whose main thread (the probe's `target_tid`) calls getpid() on
demand, on a chosen CPU; packets from the built-in netstat probe on a veth
pair into a network namespace."""

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import pytest
import requests
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from conftest import Agent, assert_error, bpf_object, sh, veth_namespace
from test_probes import pin_dir

PB = "application/x-protobuf"
RUN = os.getpid() % 10000
COMM = "emit-caller"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CPUS = os.cpu_count()


# ---------------------------------------------------------------- helpers

def wait_for(fn, timeout=8, what="condition"):
    """fn()'s first truthy answer, polled every 20 ms."""
    deadline = time.time() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {got!r}")
        time.sleep(0.02)


def page(a, pb, **params):
    """One page of GET /v1/samples, parsed strictly as proto3 JSON."""
    r = a.get("/v1/samples", params=params)
    assert r.status_code == 200, r.text
    return json_format.Parse(r.text, pb.ListSamplesResponse())


def samples(a, pb, probe=None, map=None, after=0):
    """Every sample (oldest first) matching the filters, over all pages."""
    out, params = [], {"after": after, "limit": 1000}
    if probe:
        params["probe"] = probe
    if map:
        params["map"] = map
    while True:
        p = page(a, pb, **params)
        if not p.samples:
            assert p.next_page_token == str(params["after"]), p.next_page_token
            return out
        out += p.samples
        params["after"] = int(p.next_page_token)


def fields(s):
    """{name: value} of a sample's fields, with the oneof case checked
    against the type the value has in Python."""
    out = {}
    for f in s.fields:
        case = f.WhichOneof("value")
        out[f.name] = (case, getattr(f, case))
    return out


def tags(s):
    return {t.key: t.value for t in s.tags}


def latest_metrics(sample_list):
    """The newest metric sample per (name, tags)."""
    out = {}
    for s in sample_list:
        if s.kind == 1:     # METRIC
            out[(s.name, tuple(sorted(tags(s).items())))] = s
    return out


def metrics(a):
    """/metrics parsed by prometheus_client: {family name: family}. Each
    family is typed exactly once in the text."""
    r = a.get("/metrics", token="reader")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    typed = re.findall(r"^# TYPE (\S+) ", r.text, re.M)
    assert len(typed) == len(set(typed)), [t for t in typed if typed.count(t) > 1]
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def series(fams, family, **labels):
    """The value of the one sample of `family` carrying at least `labels`."""
    assert family in fams, f"no family {family}: {sorted(fams)}"
    hits = [s for s in fams[family].samples
            if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (family, labels, fams[family].samples)
    return hits[0].value


# ---------------------------------------------------------------- the caller

CALLER = r"""
import os, sys, time
with open("/proc/self/task/%d/comm" % os.getpid(), "w") as f:
    f.write("emit-caller")
print(os.getpid(), flush=True)
for line in sys.stdin:
    n, cpu, pause = line.split()
    if int(cpu) >= 0:
        os.sched_setaffinity(0, {int(cpu)})
    for _ in range(int(n)):
        os.getpid()
        if float(pause):
            time.sleep(float(pause))
    os.sched_setaffinity(0, set(range(os.cpu_count())))
    print("done", flush=True)
"""


class Caller:
    """A process whose main thread makes getpid() calls when told to: its
    pid (= that thread's id) is the emit probe's target_tid."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", CALLER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.tid = int(self.proc.stdout.readline())
        self.made = 0
        self.lock = threading.Lock()

    def call(self, n, cpu=-1, pause=0.0):
        with self.lock:
            self.proc.stdin.write(f"{n} {cpu} {pause}\n")
            self.proc.stdin.flush()
            assert self.proc.stdout.readline().strip() == "done"
            self.made += n

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def emit_spec(sha, tid, outputs=None):
    if outputs is None:
        outputs = [{"map": "calls", "metric": {"pollIntervalMs": 100}},
                   {"map": "stats", "metric": {"pollIntervalMs": 100, "kind": "GAUGE"}}]
    return {"objectSha256": sha, "desiredState": "ATTACHED", "outputs": outputs,
            "constants": [{"name": "target_tid", "value": str(tid)}]}


def put_probe(a, name, spec):
    r = a.request("PUT", f"/v1/probes/{name}", json=spec)
    assert r.status_code in (200, 201), r.text
    progs = r.json().get("programs", [])
    assert progs and all(p["state"] == "PROGRAM_ATTACHED" for p in progs), r.json()
    return r.json()


def delete_probe(a, name):
    try:
        a.delete(f"/v1/probes/{name}")
    except requests.RequestException:
        pass
    shutil.rmtree(pin_dir(name), ignore_errors=True)


@pytest.fixture(scope="module")
def a(module_agent):
    return module_agent


@pytest.fixture(scope="module")
def emit_sha(a):
    r = a.upload(bpf_object("emit.bpf.o"), name="emit")
    assert r.status_code in (200, 201), r.text
    return r.json()["sha256"]


@dataclass
class Emit:
    name: str
    caller: Caller


_emit_seq = iter(range(1000))


def wait_collected(a, pb, probe):
    """Once the per-CPU array `stats` has been polled, the collector has
    opened every source of the probe: a perf event array drops what the
    program writes before there is a reader (a ring buffer keeps it)."""
    wait_for(lambda: any(s.name == "stats.hits" for s in samples(a, pb, probe, "stats")),
             what=f"the collector to follow {probe}")


@pytest.fixture
def emit(a, pb, emit_sha):
    """A fresh emit probe aimed at a fresh caller."""
    caller = Caller()
    name = f"emit-{RUN}-{next(_emit_seq)}"
    try:
        put_probe(a, name, emit_spec(emit_sha, caller.tid))
        wait_collected(a, pb, name)
        yield Emit(name, caller)
    finally:
        delete_probe(a, name)
        caller.stop()


def wait_events(a, pb, probe, map, n, after=0):
    """Exactly n samples of the event map once they are all in (with a
    short settle that would catch more than n)."""
    wait_for(lambda: len(samples(a, pb, probe, map, after)) >= n, what=f"{n} {map}")
    time.sleep(0.15)
    got = samples(a, pb, probe, map, after)
    assert len(got) == n, [fields(s) for s in got[n:n + 5]]
    return got


def wait_metric(a, pb, probe, name, want, **want_tags):
    """The newest sample `name` (with the tags) once its value is `want`."""
    def newest():
        hits = [s for s in samples(a, pb, probe) if s.name == name and
                all(tags(s).get(k) == v for k, v in want_tags.items())]
        return hits[-1] if hits and hits[-1].value == want else None
    return wait_for(newest, what=f"{name}={want}")


# ---------------------------------------------------------------- events

def test_ringbuf_events_every_field(a, pb, emit):
    half = 25
    emit.caller.call(half, cpu=0)
    emit.caller.call(half, cpu=CPUS - 1)
    got = wait_events(a, pb, emit.name, "events", 2 * half)
    ids = [s.id for s in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for i, s in enumerate(got, start=1):
        assert s.probe == emit.name and s.map == "events" and s.name == "events"
        assert s.kind == pb.EVENT and s.value == 1.0
        assert TIME_RE.match(s.time), s.time
        assert list(s.tags) == []
        assert fields(s) == {
            "pid": ("uint", emit.caller.tid),
            "seq": ("uint", i),
            "comm": ("text", COMM),
            "saddr": ("text", f"10.0.0.{1 + i}"),
            "state": ("text", "EMIT_ODD" if i % 2 else "EMIT_EVEN"),
        }, (i, s)


def test_events_aggregated_by_field_with_histogram(a, pb, emit_sha):
    """countBy and histogramField: the agent counts the records by state
    and sorts their seq into power-of-two buckets, and stores those
    counters instead of the events."""
    caller = Caller()
    name = f"emit-agg-{RUN}"
    outputs = [{"map": "stats", "metric": {"pollIntervalMs": 100, "kind": "GAUGE"}},
               {"map": "events", "events": {"countBy": ["state"], "histogramField": "seq"}}]
    try:
        put_probe(a, name, emit_spec(emit_sha, caller.tid, outputs))
        wait_collected(a, pb, name)
        caller.call(10)     # seq 1..10: odd 1,3,5,7,9 and even 2,4,6,8,10
        wait_metric(a, pb, name, "events.count", 5, state="EMIT_ODD")
        wait_metric(a, pb, name, "events.count", 5, state="EMIT_EVEN")
        wait_metric(a, pb, name, "events.seq_sum", 25, state="EMIT_ODD")
        wait_metric(a, pb, name, "events.seq_sum", 30, state="EMIT_EVEN")
        # Cumulative buckets: le=4 holds 1 and 3; le=8 adds 5 and 7.
        wait_metric(a, pb, name, "events.seq_bucket", 2, state="EMIT_ODD", le="4")
        wait_metric(a, pb, name, "events.seq_bucket", 4, state="EMIT_ODD", le="8")
        wait_metric(a, pb, name, "events.seq_bucket", 5, state="EMIT_EVEN", le="16")
        got = samples(a, pb, name, "events")
        assert got and all(s.kind == pb.METRIC and s.metric_kind == pb.COUNTER for s in got)
        assert not [s for s in got if s.name == "events"], "events stored one by one"
    finally:
        delete_probe(a, name)
        caller.stop()


def test_perf_event_array_every_field(a, pb, emit):
    half = 20
    emit.caller.call(half, cpu=0)
    emit.caller.call(half, cpu=CPUS - 1)
    got = wait_events(a, pb, emit.name, "records", 2 * half)
    seen = set()
    for s in got:
        assert s.probe == emit.name and s.map == "records" and s.name == "records"
        assert s.kind == pb.EVENT and s.value == 1.0 and TIME_RE.match(s.time)
        f = fields(s)
        seq = f["seq"][1]
        assert f == {"pid": ("uint", emit.caller.tid), "delta": ("int", -seq),
                     "seq": ("uint", seq)}, s
        seen.add(seq)
    # Per-CPU buffers: any order across CPUs, but every record exactly once.
    assert seen == set(range(1, 2 * half + 1))
    fams = metrics(a)
    assert series(fams, "graind_perf_events_lost", probe=emit.name) == 0


# ---------------------------------------------------------------- metrics

def test_metric_samples_and_percpu_sum(a, pb, emit):
    on0, on1 = 7, 13
    emit.caller.call(on0, cpu=0)
    emit.caller.call(on1, cpu=CPUS - 1)
    total = on0 + on1
    pid = str(emit.caller.tid)

    s = wait_metric(a, pb, emit.name, "calls", total)
    assert s.kind == pb.METRIC and s.metric_kind == pb.COUNTER and s.map == "calls"
    assert tags(s) == {"pid": pid, "comm": COMM}
    assert list(s.fields) == [] and TIME_RE.match(s.time)
    s = wait_metric(a, pb, emit.name, "stats.hits", total)
    assert s.metric_kind == pb.GAUGE and tags(s) == {"key": "0"}
    s = wait_metric(a, pb, emit.name, "stats.weight", 2 * total)
    assert s.metric_kind == pb.GAUGE and tags(s) == {"key": "0"}

    # The live dump: decoded and summed, with each CPU's share in raw_value.
    r = a.get(f"/v1/probes/{emit.name}/maps/stats")
    assert r.status_code == 200, r.text
    d = json_format.Parse(r.text, pb.MapDump())
    assert (d.probe, d.map, d.decoded, d.warning) == (emit.name, "stats", True, "")
    assert len(d.entries) == 1
    e = d.entries[0]
    assert [(f.name, f.uint) for f in e.key] == [("", 0)]
    assert {f.name: f.uint for f in e.value} == {"hits": total, "weight": 2 * total}
    assert len(e.raw_value) == 16 * CPUS
    per_cpu = [struct.unpack_from("<QQ", e.raw_value, 16 * c) for c in range(CPUS)]
    if CPUS > 1:
        assert per_cpu[0] == (on0, 2 * on0) and per_cpu[-1] == (on1, 2 * on1), per_cpu
    assert sum(h for h, _ in per_cpu) == total

    r = a.get(f"/v1/probes/{emit.name}/maps/calls")
    assert r.status_code == 200, r.text
    d = json_format.Parse(r.text, pb.MapDump())
    assert d.decoded and len(d.entries) == 1
    e = d.entries[0]
    assert fields_of(e.key) == {"pid": ("uint", emit.caller.tid), "comm": ("text", COMM)}
    assert fields_of(e.value) == {"": ("uint", total)}
    assert e.raw_value == struct.pack("<Q", total)
    assert e.raw_key[:4] == struct.pack("<I", emit.caller.tid)


def fields_of(field_list):
    return {f.name: (f.WhichOneof("value"), getattr(f, f.WhichOneof("value")))
            for f in field_list}


def test_prometheus_text_parses_with_the_families(a, pb, emit):
    emit.caller.call(9, cpu=0)
    wait_metric(a, pb, emit.name, "calls", 9)
    wait_events(a, pb, emit.name, "events", 9)
    fams = metrics(a)
    pid = str(emit.caller.tid)

    calls = fams["graind_probe_calls"]
    assert calls.type == "counter"
    assert series(fams, "graind_probe_calls", probe=emit.name) == 9
    [s] = [s for s in calls.samples if s.labels.get("probe") == emit.name]
    assert s.labels == {"probe": emit.name, "pid": pid, "comm": COMM}
    assert fams["graind_probe_stats_hits"].type == "gauge"
    assert series(fams, "graind_probe_stats_hits", probe=emit.name, key="0") == 9
    assert series(fams, "graind_probe_stats_weight", probe=emit.name, key="0") == 18
    # Event maps are no families.
    assert not [f for f in fams if f.startswith(("graind_probe_events", "graind_probe_records"))]

    types = {
        "graind_samples_collected": "counter", "graind_samples_stored": "counter",
        "graind_samples_dropped": "counter", "graind_samples_queue_depth": "gauge",
        "graind_events_lost": "counter", "graind_decode_errors": "counter",
        "graind_sample_batches": "counter", "graind_sample_batch_commit_seconds": "counter",
        "graind_database_bytes": "gauge", "graind_sample_buffer_rows": "gauge",
        "graind_sample_buffer_bytes": "gauge",
        "graind_sample_buffer_dropped": "counter", "graind_queue_depth": "gauge",
        "graind_queue_dropped": "counter", "graind_perf_events_lost": "counter",
        "graind_program_run_count": "counter", "graind_program_run_time_seconds": "counter",
        "graind_program_attach_failed": "gauge", "graind_metric_series_dropped": "gauge",
    }
    for name, kind in types.items():
        assert name in fams, f"no family {name}"
        assert fams[name].type == kind, (name, fams[name].type)
    assert series(fams, "graind_samples_stored") >= 9 * 3
    assert series(fams, "graind_samples_dropped") == 0
    assert series(fams, "graind_decode_errors") == 0
    assert series(fams, "graind_database_bytes") > 0
    assert series(fams, "graind_queue_dropped", probe=emit.name) == 0
    assert series(fams, "graind_program_run_count", probe=emit.name,
                  program="on_getpid") >= 9
    assert series(fams, "graind_program_attach_failed", probe=emit.name,
                  program="on_getpid") == 0
    assert series(fams, "graind_metric_series_dropped", probe=emit.name, map="calls") == 0


# ---------------------------------------------------------------- the API

def test_paging_filters_and_protobuf(a, pb, emit):
    n = 30
    emit.caller.call(n)
    events = wait_events(a, pb, emit.name, "events", n)
    wait_events(a, pb, emit.name, "records", n)

    # Pages of 7 follow next_page_token to exactly the same list.
    pages, after = [], 0
    while True:
        p = page(a, pb, probe=emit.name, map="events", after=after, limit=7)
        pages.append(len(p.samples))
        if not p.samples:
            assert p.next_page_token == str(after)
            break
        assert p.next_page_token == str(p.samples[-1].id)
        assert [fields(s)["seq"][1] for s in p.samples] == \
            [fields(s)["seq"][1] for s in events[sum(pages[:-1]):sum(pages)]]
        after = int(p.next_page_token)
    assert pages == [7, 7, 7, 7, 2, 0]

    # after= starts past an id; map= and probe= filter.
    p = page(a, pb, probe=emit.name, map="events", after=events[9].id)
    assert [fields(s)["seq"][1] for s in p.samples] == list(range(11, n + 1))
    records = samples(a, pb, emit.name, "records")
    assert len(records) == n and {s.map for s in records} == {"records"}
    everything = samples(a, pb, emit.name)
    assert {s.probe for s in everything} == {emit.name}
    assert {s.map for s in everything} == {"events", "records", "calls", "stats"}
    assert {s.id for s in events} | {s.id for s in records} <= {s.id for s in everything}
    assert samples(a, pb, "no-such-probe") == []
    assert samples(a, pb, emit.name, "no-such-map") == []
    # Without filters the probe's samples are among all the others.
    mixed = samples(a, pb, after=events[0].id - 1)
    assert [s.id for s in mixed if s.probe == emit.name and s.map == "events"] == \
        [s.id for s in events]

    # The same page as protobuf, decoded by python protobuf.
    path = f"/v1/samples?probe={emit.name}&map=events&limit=5"
    j = a.get(path, headers={"Accept": "application/json"})
    b = a.get(path, headers={"Accept": PB})
    assert b.status_code == 200 and b.headers["Content-Type"] == PB
    binary = pb.ListSamplesResponse.FromString(b.content)
    assert binary == json_format.Parse(j.text, pb.ListSamplesResponse())
    assert [s.id for s in binary.samples] == [s.id for s in events[:5]]
    assert binary.next_page_token == str(events[4].id)
    assert fields(binary.samples[2])["saddr"] == ("text", "10.0.0.4")


@pytest.mark.parametrize("query,word", [
    ("after=-1", "after"), ("after=x", "after"), ("after=", "after"),
    ("after=1x", "after"), ("limit=x", "limit"),
    ("limit=-5", "limit"), ("limit=10001", "limit"), ("limit=", "limit"),
])
def test_bad_sample_parameters_are_400(a, query, word):
    assert_error(a.get(f"/v1/samples?{query}"), 400, word)


def test_map_dump_errors(a, emit):
    assert_error(a.get(f"/v1/probes/{emit.name}/maps/nope"), 404, "nope")
    assert_error(a.get(f"/v1/probes/{emit.name}/maps/events"), 400, "ringbuf")
    assert_error(a.get(f"/v1/probes/{emit.name}/maps/records"), 400, "perf_event_array")
    assert_error(a.get(f"/v1/probes/no-such-probe-{RUN}/maps/calls"), 404)


def test_detached_probe_gives_no_more_samples(a, pb, emit):
    emit.caller.call(5)
    wait_events(a, pb, emit.name, "events", 5)
    wait_metric(a, pb, emit.name, "calls", 5)
    r = a.post(f"/v1/probes/{emit.name}:detach")
    assert r.status_code == 200, r.text
    time.sleep(0.2)         # what was in flight when it detached
    last = max(s.id for s in samples(a, pb, emit.name))
    emit.caller.call(10)
    # Several poll intervals (100 ms) and batch windows (50 ms) later:
    time.sleep(0.6)
    assert samples(a, pb, emit.name, after=last) == []
    assert_error(a.get(f"/v1/probes/{emit.name}/maps/calls"), 404, "not pinned")
    # Attached again: samples resume, from a fresh program and maps.
    r = a.post(f"/v1/probes/{emit.name}:attach")
    assert r.status_code == 200, r.text
    emit.caller.call(3)
    got = wait_events(a, pb, emit.name, "events", 3, after=last)
    assert [fields(s)["seq"][1] for s in got] == [1, 2, 3]


# ---------------------------------------------------------------- packets

@pytest.fixture(scope="module")
def net():
    with veth_namespace("s", 2) as n:
        yield n


SEND_C = r"""
import socket, struct, sys
dst, n_udp, n_tcp, n_icmp = sys.argv[1], *map(int, sys.argv[2:5])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n_udp):
    u.sendto(b"u" * 20, (dst, 9))
for i in range(n_tcp):
    t = socket.socket()
    t.settimeout(5)
    try:
        t.connect((dst, 1))         # closed: one SYN, answered by a RST
        sys.exit("port 1 is open")
    except ConnectionRefusedError:
        pass
    t.close()
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for i in range(n_icmp):
    body = struct.pack("!HH", 0x6a6a, i) + b"p" * 12
    r.sendto(struct.pack("!BBH", 8, 0, csum(b"\x08\x00\x00\x00" + body)) + body, (dst, 0))
"""

UDP_FRAME = 14 + 20 + 8 + 20
ICMP_FRAME = 14 + 20 + 8 + 12


def test_xdp_netstat_counts_by_protocol(a, pb, net):
    n_udp, n_tcp, n_icmp = 23, 5, 4
    name = f"netstat-{RUN}"
    spec = {"builtin": "netstat", "desiredState": "ATTACHED",
            "programs": [{"program": "netstat_xdp",
                          "attach": {"xdp": {"ifname": net.host_if, "mode": "XDP_MODE_SKB"}}}],
            "outputs": [{"map": "traffic", "metric": {"pollIntervalMs": 100}}]}
    try:
        put_probe(a, name, spec)
        sh("ip", "netns", "exec", net.ns, sys.executable, "-c", SEND_C, net.host_ip,
           str(n_udp), str(n_tcp), str(n_icmp))
        want = {"UDP": n_udp, "TCP": n_tcp, "ICMP": n_icmp}
        base = {"ifindex": net.host_if, "direction": "INGRESS", "l3_proto": "IPV4"}

        def ipv4_packets():
            latest = latest_metrics(samples(a, pb, name, "traffic"))
            got = {}
            for (sname, key), s in latest.items():
                t = dict(key)
                if sname == "traffic.packets" and t.get("l3_proto") == "IPV4":
                    got[t["l4_proto"]] = (s.value, t, s)
            return got if {k: v[0] for k, v in got.items()} == want else None

        got = wait_for(ipv4_packets, what=f"IPv4 packet counts {want}")
        time.sleep(0.25)        # two more polls: nothing more arrives
        got = ipv4_packets()
        assert got, "IPv4 counts moved past what was sent"
        for proto, (value, t, s) in got.items():
            assert t == {**base, "l4_proto": proto}, t
            assert s.kind == pb.METRIC and s.metric_kind == pb.COUNTER and s.map == "traffic"
        latest = latest_metrics(samples(a, pb, name, "traffic"))
        nbytes = {dict(k)["l4_proto"]: s.value for (n, k), s in latest.items()
                  if n == "traffic.bytes" and dict(k)["l3_proto"] == "IPV4"}
        assert nbytes["UDP"] == n_udp * UDP_FRAME and nbytes["ICMP"] == n_icmp * ICMP_FRAME
        assert nbytes["TCP"] >= n_tcp * (14 + 20 + 20)

        # The live dump says the same, decoded.
        r = a.get(f"/v1/probes/{name}/maps/traffic")
        assert r.status_code == 200, r.text
        d = json_format.Parse(r.text, pb.MapDump())
        assert d.decoded and d.warning == ""
        dumped = {}
        for e in d.entries:
            k, v = fields_of(e.key), fields_of(e.value)
            assert set(k) == {"ifindex", "direction", "l3_proto", "l4_proto"}, k
            if k["l3_proto"] == ("text", "IPV4"):
                assert k["ifindex"] == ("text", net.host_if)
                assert k["direction"] == ("text", "INGRESS")
                dumped[k["l4_proto"][1]] = v["packets"][1]
        assert dumped == want

        fams = metrics(a)
        assert fams["graind_probe_traffic_packets"].type == "counter"
        for proto, count in want.items():
            assert series(fams, "graind_probe_traffic_packets", probe=name, **base,
                          l4_proto=proto) == count
        assert series(fams, "graind_probe_traffic_bytes", probe=name, **base,
                      l4_proto="UDP") == n_udp * UDP_FRAME
    finally:
        delete_probe(a, name)


# ---------------------------------------------------------------- restarts, bounds

@pytest.fixture
def private_agents():
    """Agents with state directories of their own, killed at the end."""
    made = []

    def start(directory=None, extra_args=()):
        d = directory or tempfile.mkdtemp(prefix="graind-test-")
        ag = Agent(d, extra_args).start()
        made.append(ag)
        return ag

    yield start
    for ag in made:
        ag.stop(signal.SIGKILL)
    for d in {ag.state_dir for ag in made}:
        shutil.rmtree(d, ignore_errors=True)


def test_kill_9_keeps_every_returned_sample_and_ids_continue(pb, private_agents):
    name = f"kill-{RUN}"
    caller = Caller()
    a1 = private_agents()
    try:
        r = a1.upload(bpf_object("emit.bpf.o"))
        assert r.status_code in (200, 201), r.text
        put_probe(a1, name, emit_spec(r.json()["sha256"], caller.tid))
        stream = threading.Thread(target=caller.call, args=(600, -1, 0.002))
        stream.start()
        seen, after = {}, 0
        while len(seen) < 150:
            p = page(a1, pb, probe=name, after=after, limit=50)
            seen.update({s.id: s for s in p.samples})
            after = int(p.next_page_token)
        a1.stop(signal.SIGKILL)
        assert stream.is_alive(), "the stream ended before the kill"

        a2 = private_agents(a1.state_dir)
        stream.join(timeout=30)
        after_kill = {s.id: s for s in samples(a2, pb, name)}
        missing = sorted(set(seen) - set(after_kill))
        assert not missing, f"{len(missing)} samples lost: ids {missing[:10]}"
        for i, s in seen.items():
            assert after_kill[i] == s, (i, s, after_kill[i])

        # The probe is adopted and keeps emitting; new ids follow the old.
        top = max(after_kill)
        caller.call(5)
        new = wait_for(lambda: [s for s in samples(a2, pb, name, "events", top)
                                if fields(s)["seq"][1] > 600], what="events after restart")
        assert min(s.id for s in new) > max(seen)
        every = samples(a2, pb, name)
        ids = [s.id for s in every]
        assert ids == sorted(set(ids))
        seqs = [fields(s)["seq"][1] for s in every if s.map == "events"]
        assert len(seqs) == len(set(seqs)), "an event was stored twice"
        wait_for(lambda: len([s for s in samples(a2, pb, name, "events", top)
                              if fields(s)["seq"][1] > 600]) == 5, what="5 new events")
        assert a2.delete(f"/v1/probes/{name}").status_code == 204
        assert a2.stop() == 0, a2.read_log()[-3000:]
    finally:
        caller.stop()
        shutil.rmtree(pin_dir(name), ignore_errors=True)


def test_buffer_bound_keeps_the_newest_and_counts_drops(pb, private_agents):
    name = f"bound-{RUN}"
    caller = Caller()
    ag = private_agents(extra_args=("--buffer-rows", "50"))
    try:
        r = ag.upload(bpf_object("emit.bpf.o"))
        assert r.status_code in (200, 201), r.text
        only_events = [{"map": m, "none": True} for m in ("calls", "stats", "records")]
        put_probe(ag, name, emit_spec(r.json()["sha256"], caller.tid, only_events))
        caller.call(200)
        wait_for(lambda: series(metrics(ag), "graind_samples_stored") == 200,
                 what="200 samples stored")
        kept = samples(ag, pb)
        assert [s.id for s in kept] == list(range(151, 201))
        assert [fields(s)["seq"][1] for s in kept] == list(range(151, 201))
        assert {(s.probe, s.map) for s in kept} == {(name, "events")}
        fams = metrics(ag)
        assert series(fams, "graind_sample_buffer_dropped", probe=name) == 150
        assert series(fams, "graind_sample_buffer_rows") == 50
        assert series(fams, "graind_samples_dropped") == 0
        assert ag.delete(f"/v1/probes/{name}").status_code == 204
        assert ag.stop() == 0, ag.read_log()[-3000:]
    finally:
        caller.stop()
        shutil.rmtree(pin_dir(name), ignore_errors=True)


def test_queue_bound_of_every_probe_and_counters_across_changes(pb, private_agents):
    """--queue-bytes bounds the queues of every probe together: at 16 KiB
    a 64 KiB chunk of one probe's events does not fit though the probe's
    own queue (32 MiB) has room, so it is dropped and counted against the
    probe (graind_queue_dropped_total, graind_queue_overflow_total) and the
    agent (graind_samples_queue_overflow_total). The probe's counters never
    go down while it is detached, attached again and given a new
    generation, as another probe's samples keep the writer going."""
    flood, steady = Caller(), Caller()
    fname, sname = f"qflood-{RUN}", f"qsteady-{RUN}"
    ag = private_agents(extra_args=("--queue-bytes", "16K"))
    try:
        r = ag.upload(bpf_object("emit.bpf.o"))
        assert r.status_code in (200, 201), r.text
        sha = r.json()["sha256"]
        put_probe(ag, fname, emit_spec(sha, flood.tid))
        put_probe(ag, sname, emit_spec(sha, steady.tid))
        wait_collected(ag, pb, fname)
        wait_collected(ag, pb, sname)

        def counters():
            fams = metrics(ag)
            return (series(fams, "graind_queue_dropped", probe=fname),
                    series(fams, "graind_queue_overflow", probe=fname))

        flood.call(20000)
        first = wait_for(lambda: (lambda c: c if c[1] > 0 else None)(counters()),
                         what="chunks over the bound of every queue")
        assert first[0] >= first[1] > 0, first
        fams = metrics(ag)
        assert series(fams, "graind_samples_queue_limit_bytes") == 16 * 1024
        assert series(fams, "graind_samples_queue_overflow") >= first[1]
        assert series(fams, "graind_samples_dropped") >= first[0]
        assert series(fams, "graind_samples_queue_bytes") <= 16 * 1024

        seen = [counters()]
        changes = [
            lambda: ag.post(f"/v1/probes/{fname}:detach"),
            lambda: ag.post(f"/v1/probes/{fname}:attach"),
            lambda: ag.request("PUT", f"/v1/probes/{fname}", json=emit_spec(
                sha, flood.tid, [{"map": "calls", "metric": {"pollIntervalMs": 200}}])),
        ]
        for change in changes:
            r = change()
            assert r.status_code == 200, r.text
            for _ in range(10):         # the steady probe's polls keep the writer going
                time.sleep(0.06)
                seen.append(counters())
        for before, after in zip(seen, seen[1:]):
            assert after[0] >= before[0] and after[1] >= before[1], seen

        flood.call(20000)               # still counted after the changes
        wait_for(lambda: counters()[1] > seen[-1][1], what="more overflow")
        assert counters()[0] > seen[-1][0]
        for name in (fname, sname):
            assert ag.delete(f"/v1/probes/{name}").status_code == 204
        assert ag.stop() == 0, ag.read_log()[-3000:]
    finally:
        flood.stop()
        steady.stop()
        for name in (fname, sname):
            shutil.rmtree(pin_dir(name), ignore_errors=True)


def test_buffer_byte_bound_keeps_whole_newest_events(pb, private_agents):
    """Events are stored sharing their head and field names; a byte bound
    cuts into such blocks and every event kept still reads whole."""
    name = f"bytes-{RUN}"
    bound = 3000
    caller = Caller()
    ag = private_agents(extra_args=("--buffer-bytes", str(bound)))
    try:
        r = ag.upload(bpf_object("emit.bpf.o"))
        assert r.status_code in (200, 201), r.text
        only_events = [{"map": m, "none": True} for m in ("calls", "stats", "records")]
        put_probe(ag, name, emit_spec(r.json()["sha256"], caller.tid, only_events))
        for _ in range(4):              # several blocks, several heads
            caller.call(50)
            time.sleep(0.3)
        wait_for(lambda: series(metrics(ag), "graind_samples_stored") == 200,
                 what="200 samples stored")
        kept = samples(ag, pb)
        assert 10 < len(kept) < 200
        assert [s.id for s in kept] == list(range(201 - len(kept), 201))
        assert [fields(s)["seq"][1] for s in kept] == list(range(201 - len(kept), 201))
        for s in kept:
            assert (s.probe, s.map, s.name, s.kind, s.value) == (
                name, "events", "events", pb.EVENT, 1)
            assert TIME_RE.match(s.time)
            assert fields(s)["comm"] == ("text", COMM)
        fams = metrics(ag)
        assert 0 < series(fams, "graind_sample_buffer_bytes") <= bound
        assert series(fams, "graind_sample_buffer_dropped", probe=name) == 200 - len(kept)
        assert series(fams, "graind_sample_buffer_rows") == len(kept)
        assert ag.delete(f"/v1/probes/{name}").status_code == 204
        assert ag.stop() == 0, ag.read_log()[-3000:]
    finally:
        caller.stop()
        shutil.rmtree(pin_dir(name), ignore_errors=True)


# ---------------------------------------------------------------- broken BTF

BROKEN_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bval {
	__u64 first;
	__u64 second;
};

struct event {
	__u32 tid;
	__u32 nr;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct bval);
} vals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

const volatile __u32 target_tid = 0;
__u32 calls = 0;
struct event *unused_event __attribute__((unused));

SEC("tracepoint/syscalls/sys_enter_getpid")
int on_getpid(void *ctx)
{
	struct bval first = { 1, 2 }, *v;
	struct event *e;
	__u32 key = 7;

	if ((__u32)bpf_get_current_pid_tgid() != target_tid)
		return 0;
	calls++;
	v = bpf_map_lookup_elem(&vals, &key);
	if (v) {
		v->first += 1;
		v->second += 2;
	} else {
		bpf_map_update_elem(&vals, &key, &first, BPF_NOEXIST);
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->tid = target_tid;
		e->nr = calls;
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


def elf_section(data, want):
    """(offset, size) of a section of a little-endian ELF64 file."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3a)
    sh_at = lambda i: struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
    strtab = sh_at(shstrndx)[4]
    for i in range(shnum):
        s = sh_at(i)
        if data[strtab + s[0]:data.index(b"\0", strtab + s[0])] == want.encode():
            return s[4], s[5]
    raise KeyError(want)


# Bytes after struct btf_type, by kind (vlen: the count in info).
BTF_EXTRA = {1: lambda v: 4, 3: lambda v: 12, 4: lambda v: 12 * v, 5: lambda v: 12 * v,
             6: lambda v: 8 * v, 13: lambda v: 8 * v, 14: lambda v: 4, 15: lambda v: 12 * v,
             17: lambda v: 4, 19: lambda v: 12 * v}


def move_member(obj, struct_name, member, bit_offset):
    """obj with one member of a BTF struct moved to bit_offset: ids, names
    and kinds all stay valid, only the layout makes no sense."""
    data = bytearray(obj)
    base, _ = elf_section(data, ".BTF")
    magic, _, _, hdr_len, type_off, type_len, str_off, _ = \
        struct.unpack_from("<HBBIIIII", data, base)
    assert magic == 0xeb9f
    types, strs = base + hdr_len + type_off, base + hdr_len + str_off
    name = lambda off: data[strs + off:data.index(b"\0", strs + off)].decode()
    pos = types
    while pos < types + type_len:
        name_off, info, _ = struct.unpack_from("<III", data, pos)
        kind, vlen = (info >> 24) & 0x1f, info & 0xffff
        if kind == 4 and name(name_off) == struct_name:
            for i in range(vlen):
                m = pos + 12 + 12 * i
                if name(struct.unpack_from("<I", data, m)[0]) == member:
                    struct.pack_into("<I", data, m + 8, bit_offset)
                    return bytes(data)
        pos += 12 + BTF_EXTRA.get(kind, lambda v: 0)(vlen)
    raise KeyError(f"{struct_name}.{member}")


@pytest.fixture(scope="module")
def broken_object():
    d = tempfile.mkdtemp(prefix="graind-btf-")
    try:
        src, obj = os.path.join(d, "broken.bpf.c"), os.path.join(d, "broken.bpf.o")
        with open(src, "w") as f:
            f.write(BROKEN_C)
        sh("clang", "-target", "bpf", "-O2", "-g",
           f"-I/usr/include/{os.uname().machine}-linux-gnu", "-c", src, "-o", obj)
        with open(obj, "rb") as f:
            data = f.read()
        # Members that start past the end of their struct.
        data = move_member(data, "bval", "second", 4096)
        return move_member(data, "event", "nr", 4096)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_broken_btf_attaches_and_dumps_hex(a, pb, broken_object):
    name = f"broken-{RUN}"
    caller = Caller()
    try:
        r = a.upload(broken_object, name="broken")
        assert r.status_code in (200, 201), r.text
        assert r.json()["hasBtf"] is True
        put_probe(a, name, emit_spec(r.json()["sha256"], caller.tid, outputs=[]))
        caller.call(3)

        # The ring buffer's records arrive raw: hex and size.
        got = wait_events(a, pb, name, "events", 3)
        for nr, s in enumerate(got, start=1):
            assert s.kind == pb.EVENT and s.value == 1.0
            assert fields(s) == {"raw": ("text", struct.pack("<II", caller.tid, nr).hex()),
                                 "size": ("uint", 8)}, s
        # A hash map whose value type cannot be decoded is dumped as hex.
        r = a.get(f"/v1/probes/{name}/maps/vals")
        assert r.status_code == 200, r.text
        d = json_format.Parse(r.text, pb.MapDump())
        assert d.decoded is False and d.warning, d
        assert len(d.entries) == 1
        e = d.entries[0]
        assert e.raw_key == struct.pack("<I", 7)
        assert e.raw_value == struct.pack("<QQ", 3, 6)
        assert fields_of(e.value) == {"raw": ("text", struct.pack("<QQ", 3, 6).hex()),
                                      "size": ("uint", 16)}
        # Not polled as a metric by default: untyped maps give no samples.
        assert samples(a, pb, name, "vals") == []
        assert 'msg="map decoded as raw bytes"' in a.read_log()
        assert a.alive() and a.get("/healthz").status_code == 200
        assert "graind_probe_vals" not in a.get("/metrics").text
    finally:
        delete_probe(a, name)
        caller.stop()
