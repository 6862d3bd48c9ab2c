"""Sinks against real peers: the Etsy StatsD daemon (values read back
through its management port) and s3rver behind a proxy that checks every
request's SigV4 signature with botocore, as S3 does. What the peers hold
is compared with what the probe counted and with the samples graind
reports in GET /v1/samples.

The samples come from tests/bpf/emit.bpf.c driven by a caller process
(see test_samples.py): each getpid() of the caller is one `events` and
one `records` event sample and moves the `calls` counter and the `stats`
gauges."""

import base64
import glob
import hashlib
import os
import re
import signal
import socket
import subprocess
import sysconfig
import time

import pytest
from google.protobuf import json_format

from conftest import S3_ACCESS_KEY, assert_error, bpf_object
from test_samples import Caller, delete_probe, emit_spec, put_probe, samples
from test_samples import wait_for as _wait_for

PB = "application/x-protobuf"
RUN = os.getpid() % 10000
KEY_PREFIX = "graind-test"
KEY_RE = re.compile(r"^(?P<prefix>[^/]+)/(?P<host>[^/]+)/(?P<probe>[^/]+)/"
                    r"dt=(?P<day>\d{4}-\d\d-\d\d)/hour=(?P<hour>\d\d)/"
                    r"(?P<first>\d+)-(?P<last>\d+)\.ndjson\.gz$")
_seq = iter(range(1000))


# ---------------------------------------------------------------- helpers

def wait_for(fn, timeout=20, what="condition"):
    """test_samples.wait_for with room for a loaded machine."""
    return _wait_for(fn, timeout, what)


def unique(kind):
    return f"{kind}-{RUN}-{next(_seq)}"


def put_sink(a, name, body, want=(200, 201)):
    r = a.request("PUT", f"/v1/sinks/{name}", json=body)
    assert r.status_code in want, r.text
    return r


def sink(a, pb, name):
    r = a.get(f"/v1/sinks/{name}")
    assert r.status_code == 200, r.text
    return json_format.Parse(r.text, pb.Sink())


def delete_sink(a, name):
    if a.alive():
        a.delete(f"/v1/sinks/{name}")


def statsd_body(port, prefix, dialect, probe):
    return {"statsd": {"host": "127.0.0.1", "port": port, "prefix": prefix,
                       "dialect": dialect, "flushIntervalMs": 100},
            "selector": {"probes": [probe]}}


def s3_body(peer, probe, secret=None, rows=40, age_ms=200):
    return {"s3": {"endpoint": peer.endpoint, "bucket": peer.bucket, "region": peer.region,
                   "keyPrefix": KEY_PREFIX, "accessKeyId": S3_ACCESS_KEY,
                   "secretAccessKey": secret or peer.secret, "pathStyle": True,
                   "batchMaxRows": rows, "batchMaxAgeMs": age_ms},
            "selector": {"probes": [probe], "maps": ["events", "records"]}}


class Emit:
    """The emit probe `name` in agent `a`, aimed at a fresh caller."""

    def __init__(self, a, pb):
        self.a, self.pb = a, pb
        self.caller = Caller()
        self.name = unique("sinkemit")
        r = a.upload(bpf_object("emit.bpf.o"), name="emit")
        assert r.status_code in (200, 201), r.text
        put_probe(a, self.name, emit_spec(r.json()["sha256"], self.caller.tid))
        wait_for(lambda: any(s.name == "stats.hits" for s in samples(a, pb, self.name, "stats")),
                 timeout=20, what=f"the collector to follow {self.name}")

    def events(self):
        """graind's event samples of the probe (both event maps), by id."""
        return {s.id: s for m in ("events", "records")
                for s in samples(self.a, self.pb, self.name, m)}

    def wait_events(self, n):
        return wait_for(lambda: len(self.events()) >= n and self.events(),
                        what=f"{n} event samples")

    def close(self):
        delete_probe(self.a, self.name)
        self.caller.stop()


@pytest.fixture(scope="module")
def a(module_agent):
    return module_agent


@pytest.fixture
def emit(a, pb):
    e = Emit(a, pb)
    yield e
    e.close()


def s3_objects(peer, pb, probe):
    """{key: [Sample]} of the probe's objects, every line parsed strictly."""
    out = {}
    for key in peer.keys(f"{KEY_PREFIX}/"):
        m = KEY_RE.match(key)
        assert m, f"object key {key!r} is not <prefix>/<host>/<probe>/dt=/hour=/<a>-<b>.ndjson.gz"
        if m["probe"] != probe:
            continue
        out[key] = [json_format.ParseDict(d, pb.Sample()) for d in peer.ndjson(key)]
    return out


def s3_ids(peer, pb, probe):
    return [s.id for objs in s3_objects(peer, pb, probe).values() for s in objs]


def sanitized_host():
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())


# ---------------------------------------------------------------- the peers themselves

def test_verifying_proxy_checks_every_signature(s3_peer):
    """The S3 tests mean something only if the front rejects what S3
    would: a botocore-signed request passes; a wrong secret, an unknown
    key, a body that is not the signed one, and a key signed unencoded
    (as curl's aws-sigv4 does with "=") do not."""
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import ClientError

    good = s3_peer.client(through_proxy=True)
    good.put_object(Bucket=s3_peer.bucket, Key="x/dt=2024-01-01/a", Body=b"hello")
    got = good.get_object(Bucket=s3_peer.bucket, Key="x/dt=2024-01-01/a")
    assert got["Body"].read() == b"hello"
    assert s3_peer.keys("x/") == ["x/dt=2024-01-01/a"]

    def client(key, secret):
        return botocore.session.get_session().create_client(
            "s3", region_name=s3_peer.region, endpoint_url=s3_peer.endpoint,
            aws_access_key_id=key, aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    for key, secret, code in [(S3_ACCESS_KEY, "wrong", "SignatureDoesNotMatch"),
                              ("AKIAUNKNOWN000000000", s3_peer.secret, "InvalidAccessKeyId")]:
        with pytest.raises(ClientError) as e:
            client(key, secret).put_object(Bucket=s3_peer.bucket, Key="x/bad", Body=b"x")
        assert e.value.response["Error"]["Code"] == code
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    # Signed for one body, sent with another.
    body = b"the signed body"
    curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
            "--aws-sigv4", f"aws:amz:{s3_peer.region}:s3",
            "--user", f"{S3_ACCESS_KEY}:{s3_peer.secret}"]
    sha = hashlib.sha256(body).hexdigest()
    r = subprocess.run(curl + ["-H", f"x-amz-content-sha256: {sha}", "--data-binary", "tampered",
                               f"{s3_peer.endpoint}/{s3_peer.bucket}/x/c"],
                       capture_output=True, text=True, check=True)
    assert r.stdout == "400"
    md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = subprocess.run(curl + ["-H", f"x-amz-content-sha256: {sha}", "-H", f"Content-MD5: {md5}",
                               "--data-binary", body, f"{s3_peer.endpoint}/{s3_peer.bucket}/x/c"],
                       capture_output=True, text=True, check=True)
    assert r.stdout == "400"
    # S3 encodes '=' in the canonical URI: sent raw, the signature fails;
    # sent as %3D, it passes.
    for path, want in [("x/dt=1/c", "403"), ("x/dt%3D1/c", "200")]:
        r = subprocess.run(curl + ["-H", f"x-amz-content-sha256: {sha}", "--data-binary", body,
                                   f"{s3_peer.endpoint}/{s3_peer.bucket}/{path}"],
                           capture_output=True, text=True, check=True)
        assert r.stdout == want, path
    assert s3_peer.get("x/dt=1/c") == body

    codes = [e.code for e in s3_peer.entries("rejected")]
    assert codes == ["SignatureDoesNotMatch", "InvalidAccessKeyId", "XAmzContentSHA256Mismatch",
                     "BadDigest", "SignatureDoesNotMatch"], codes
    assert len(s3_peer.entries("verified", "PUT")) == 2


def test_statsd_daemon_stores_tags_its_own_way(statsd_daemon):
    """What statsd 0.9 keeps of each dialect's tags: dogstatsd tags become
    ";k=v" in the name, graphite names are kept, influx loses its commas
    (the sanitiser drops ','), counters add up until a flush."""
    lines = ["p.none.calls.1.comm:3|c", "p.dog.calls:4|c|#pid:1,comm:x",
             "p.influx.calls,pid=1,comm=x:5|c", "p.graphite.calls;pid=1;comm=x:6|c",
             "p.none.calls.1.comm:2|c", "p.g:7|g", "p.t:12|ms"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto("\n".join(lines).encode(), ("127.0.0.1", statsd_daemon.port))
    wait_for(lambda: statsd_daemon.counters().get("statsd.metrics_received") == len(lines))
    c = statsd_daemon.counters()
    assert {k: v for k, v in c.items() if k.startswith("p.")} == {
        "p.none.calls.1.comm": 5, "p.dog.calls;pid=1;comm=x": 4,
        "p.influx.callspid=1comm=x": 5, "p.graphite.calls;pid=1;comm=x": 6}
    assert statsd_daemon.gauges() == {"p.g": 7}
    assert statsd_daemon.timers() == {"p.t": [12]}


# ---------------------------------------------------------------- the API

def test_sink_put_get_delete_masks_the_secret(a, pb, s3_peer):
    name = unique("s3api")
    body = s3_body(s3_peer, "no-such-probe")
    secret = s3_peer.secret
    assert put_sink(a, name, body).status_code == 201
    try:
        for token in ("admin", "reader"):
            r = a.get(f"/v1/sinks/{name}", token=token)
            assert r.status_code == 200, r.text
            assert secret not in r.text
            got = json_format.Parse(r.text, pb.Sink())
            assert got.name == name and got.WhichOneof("kind") == "s3"
            assert got.s3.secret_access_key != secret
            assert (got.s3.endpoint, got.s3.bucket, got.s3.access_key_id, got.s3.key_prefix) == \
                (s3_peer.endpoint, s3_peer.bucket, S3_ACCESS_KEY, KEY_PREFIX)
            assert got.s3.batch_max_rows == 40 and got.s3.path_style
            assert list(got.selector.maps) == ["events", "records"]
            r = a.get(f"/v1/sinks/{name}", token=token, headers={"Accept": PB})
            assert r.status_code == 200 and r.headers["Content-Type"].startswith(PB), r.text
            assert secret.encode() not in r.content
            got = pb.Sink.FromString(r.content)
            assert got.name == name and got.s3.secret_access_key != secret

        # Replaced: 200, and the new settings are what GET shows.
        body["s3"]["batchMaxRows"] = 7
        assert put_sink(a, name, body).status_code == 200
        assert sink(a, pb, name).s3.batch_max_rows == 7
        r = a.get("/v1/sinks")
        assert r.status_code == 200, r.text
        assert name in [s.name for s in json_format.Parse(r.text, pb.ListSinksResponse()).sinks]
        assert secret not in r.text
        r = a.get("/v1/status")
        assert r.status_code == 200, r.text
        status = json_format.Parse(r.text, pb.AgentStatus())
        assert name in [s.name for s in status.sinks] and secret not in r.text

        # The reader may look but not change.
        r = a.request("PUT", f"/v1/sinks/{name}", token="reader", json=body)
        assert_error(r, 403)
        r = a.delete(f"/v1/sinks/{name}", token="reader")
        assert_error(r, 403)
    finally:
        r = a.delete(f"/v1/sinks/{name}")
    assert r.status_code in (200, 204), r.text
    assert_error(a.get(f"/v1/sinks/{name}"), 404)
    assert_error(a.delete(f"/v1/sinks/{name}"), 404)


def test_statsd_sink_settings_read_back(a, pb):
    name = unique("sdapi")
    put_sink(a, name, {"statsd": {"host": "127.0.0.1", "port": 8125, "prefix": "graind",
                                  "dialect": "TAG_DIALECT_INFLUX", "maxDatagram": 512,
                                  "flushIntervalMs": 200}})
    try:
        got = sink(a, pb, name)
        assert got.WhichOneof("kind") == "statsd"
        assert (got.statsd.host, got.statsd.port, got.statsd.prefix, got.statsd.dialect,
                got.statsd.max_datagram, got.statsd.flush_interval_ms) == \
            ("127.0.0.1", 8125, "graind", pb.TAG_DIALECT_INFLUX, 512, 200)
    finally:
        delete_sink(a, name)


def test_sink_generations_and_if_match(a, pb):
    """A sink's generation: 1 at creation, the same after the same PUT,
    +1 after a change; If-Match with another one is 412 and changes
    nothing, with none at all (a missing sink) 404."""
    name = unique("sdgen")
    body = {"statsd": {"host": "127.0.0.1", "port": 8125, "prefix": "one"}}
    put_sink(a, name, body)
    try:
        assert sink(a, pb, name).generation == 1
        put_sink(a, name, body)
        assert sink(a, pb, name).generation == 1
        changed = {"statsd": {**body["statsd"], "prefix": "two"}}
        r = a.request("PUT", f"/v1/sinks/{name}", json=changed, headers={"If-Match": '"1"'})
        assert r.status_code == 200, r.text
        assert r.json()["generation"] == "2"
        r = a.request("PUT", f"/v1/sinks/{name}", json=body, headers={"If-Match": '"1"'})
        assert r.status_code == 412, r.text
        assert "generation 2, not the one in If-Match (1)" in r.json()["message"]
        assert sink(a, pb, name).statsd.prefix == "two"
        r = a.request("PUT", f"/v1/sinks/{name}-missing", json=body, headers={"If-Match": '"1"'})
        assert r.status_code == 404, r.text
        # Sending the generation back, as a client that read the sink does, is no change.
        got = a.get(f"/v1/sinks/{name}").json()
        r = a.request("PUT", f"/v1/sinks/{name}", json={k: v for k, v in got.items()
                                                        if k not in ("health", "name")})
        assert r.status_code == 200 and r.json()["generation"] == "2", r.text
    finally:
        delete_sink(a, name)


def _field_named(msg, *names):
    assert any(n in msg for n in names), f"none of {names} in {msg!r}"


@pytest.mark.parametrize("body,field", [
    ({"statsd": {"port": 8125}}, ("host",)),
    ({"statsd": {"host": "127.0.0.1"}}, ("port",)),
    ({"statsd": {"host": "127.0.0.1", "port": 8125, "maxDatagram": 10}},
     ("max_datagram", "maxDatagram")),
    ({"statsd": {"host": "127.0.0.1", "port": 8125, "maxDatagram": 70000}},
     ("max_datagram", "maxDatagram")),
    ({"s3": {"endpoint": "http://127.0.0.1:1", "accessKeyId": "A", "secretAccessKey": "B"}},
     ("bucket",)),
    ({"s3": {"bucket": "bkt", "accessKeyId": "A", "secretAccessKey": "B"}}, ("endpoint",)),
    ({"s3": {"endpoint": "http://127.0.0.1:1", "bucket": "bkt", "accessKeyId": "A",
             "secretFile": "/nonexistent/graind-secret"}}, ("secret_file", "secretFile")),
    ({"selector": {"probes": ["x"]}}, ("statsd", "s3")),
])
def test_bad_sink_config_names_the_field(a, body, field):
    name = unique("bad")
    r = a.request("PUT", f"/v1/sinks/{name}", json=body)
    _field_named(assert_error(r, 400), *field)
    assert_error(a.get(f"/v1/sinks/{name}"), 404)


def test_malformed_sink_body_is_400(a):
    r = a.request("PUT", f"/v1/sinks/{unique('bad')}", data=b"{not json",
                  headers={"Content-Type": "application/json"})
    assert_error(r, 400)
    r = a.request("PUT", f"/v1/sinks/{unique('bad')}",
                  json={"statsd": {"host": "h", "port": 1, "nosuchfield": 1}})
    assert_error(r, 400, "nosuchfield")


# ---------------------------------------------------------------- StatsD

DIALECTS = ["TAG_DIALECT_NONE", "TAG_DIALECT_DOGSTATSD", "TAG_DIALECT_INFLUX",
            "TAG_DIALECT_GRAPHITE"]


def stored_name(prefix, dialect, name, tag_list):
    """The key statsd 0.9 keeps for graind's line in `dialect` (see
    test_statsd_daemon_stores_tags_its_own_way)."""
    head = f"{prefix}.{name}"
    if dialect == "TAG_DIALECT_NONE":
        return head + "".join("." + re.sub(r"[^A-Za-z0-9_-]", "_", v) for _, v in tag_list)
    if dialect == "TAG_DIALECT_INFLUX":
        return head + "".join(f"{k}={v}" for k, v in tag_list)
    return head + "".join(f";{k}={v}" for k, v in tag_list)


def test_statsd_values_equal_the_probe_counts_in_every_dialect(a, pb, emit, statsd_daemon):
    names = {d: unique("sd") for d in DIALECTS}
    prefixes = {d: f"g{RUN}_{d.split('_')[-1].lower()}" for d in DIALECTS}
    for d in DIALECTS:
        put_sink(a, names[d], statsd_body(statsd_daemon.port, prefixes[d], d, emit.name))
    try:
        # A first value of the counter for the sinks to start from.
        emit.caller.call(5)
        wait_for(lambda: [s for s in samples(a, pb, emit.name, "calls") if s.value == 5],
                 what="calls=5")
        emit.caller.call(25, cpu=0)
        emit.caller.call(12)
        made = emit.caller.made

        def counted():
            c = statsd_daemon.counters()
            return all(c.get(f"{prefixes[d]}.events.events") == made and
                       c.get(f"{prefixes[d]}.records.events") == made for d in DIALECTS) and c
        counters = wait_for(counted, timeout=20, what="every event counted in statsd")

        # The counter series: what the sink saw first is its starting
        # point, every change after it arrives as a delta.
        calls = [s for s in samples(a, pb, emit.name, "calls") if s.name == "calls"]
        assert calls and calls[0].value == 5 and calls[-1].value == made
        calls_tags = [(t.key, t.value) for t in calls[-1].tags]
        assert dict(calls_tags) == {"pid": str(emit.caller.tid), "comm": "emit-caller"}
        stats_tags = [(t.key, t.value) for t in samples(a, pb, emit.name, "stats")[-1].tags]

        def settled():
            c, g = statsd_daemon.counters(), statsd_daemon.gauges()
            return all(c.get(stored_name(prefixes[d], d, "calls", calls_tags)) ==
                       made - calls[0].value and
                       g.get(stored_name(prefixes[d], d, "stats.hits", stats_tags)) == made and
                       g.get(stored_name(prefixes[d], d, "stats.weight", stats_tags)) == 2 * made
                       for d in DIALECTS)
        try:
            wait_for(settled, timeout=20, what="calls and stats in statsd")
        except AssertionError:
            mine = {k: v for k, v in {**statsd_daemon.counters(), **statsd_daemon.gauges()}.items()
                    if k.startswith(f"g{RUN}_")}
            raise AssertionError(f"statsd holds {mine}; calls from {calls[0].value} to {made}")
        assert counters["statsd.bad_lines_seen"] == 0

        for d in DIALECTS:
            h = wait_for(lambda: (lambda s: s.health.lag_rows == 0 and s)(sink(a, pb, names[d])),
                         what=f"{d} caught up")
            assert h.health.last_error == "" and h.health.samples_sent > 0
            assert h.health.bytes_sent > 0 and h.health.last_success
        text = a.get("/metrics", token="reader").text
        for d in DIALECTS:
            assert re.search(rf'^graind_sink_\w+\{{[^}}]*sink="{names[d]}"', text, re.M), \
                f"no graind_sink_* series for {names[d]}"
    finally:
        for n in names.values():
            delete_sink(a, n)


def test_statsd_restart_forwarding_resumes(a, pb, emit, statsd_daemon):
    name, prefix = unique("sd"), f"r{RUN}"
    put_sink(a, name, statsd_body(statsd_daemon.port, prefix, "TAG_DIALECT_GRAPHITE", emit.name))
    events = f"{prefix}.events.events"
    hits = f"{prefix}.stats.hits;key=0"
    try:
        emit.caller.call(10)
        wait_for(lambda: statsd_daemon.counters().get(events) == 10, timeout=20,
                 what="10 events in statsd")
        statsd_daemon.stop()
        emit.caller.call(10, pause=0.05)
        time.sleep(0.5)
        statsd_daemon.start()
        emit.caller.call(10)
        # The new daemon gets at least what came after it started, and the
        # gauge reaches the probe's count.
        wait_for(lambda: statsd_daemon.counters().get(events, 0) >= 10 and
                 statsd_daemon.gauges().get(hits) == 30, timeout=20,
                 what="forwarding to resume after the StatsD restart")
        assert statsd_daemon.counters()[events] <= 20
        wait_for(lambda: sink(a, pb, name).health.lag_rows == 0, what="the sink to catch up")
    finally:
        delete_sink(a, name)


def test_statsd_counter_change_while_down_arrives_after_restart(make_agent, pb, statsd_daemon):
    """Counters go out as changes since the value sent before. Calls made
    while the agent is down (killed once it had sent everything) show in
    its first value after the restart; the agent reads back the value it
    had sent, so their change arrives too."""
    a = make_agent()
    emit = Emit(a, pb)
    name, prefix = unique("sd"), f"k{RUN}"
    try:
        put_sink(a, name, statsd_body(statsd_daemon.port, prefix, "TAG_DIALECT_GRAPHITE",
                                      emit.name))
        emit.caller.call(5)
        wait_for(lambda: [s for s in samples(a, pb, emit.name, "calls") if s.value == 5],
                 what="calls=5")
        emit.caller.call(7)
        tags = [(t.key, t.value) for t in samples(a, pb, emit.name, "calls")[-1].tags]
        key = stored_name(prefix, "TAG_DIALECT_GRAPHITE", "calls", tags)
        wait_for(lambda: statsd_daemon.counters().get(key) == 7, what="the first 7 calls")
        wait_for(lambda: sink(a, pb, name).health.lag_rows == 0, what="the sink to catch up")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        a.stop()

        emit.caller.call(9)              # the probe stays attached, the agent is down
        a = make_agent()
        emit.a = a
        wait_for(lambda: [s for s in samples(a, pb, emit.name, "calls") if s.value == 21],
                 what="calls=21 after the restart")
        wait_for(lambda: statsd_daemon.counters().get(key) == 16, timeout=20,
                 what="the 9 calls made while the agent was down")
        wait_for(lambda: sink(a, pb, name).health.lag_rows == 0, what="the sink to catch up")
        assert statsd_daemon.counters().get(key) == 16
    finally:
        delete_sink(a, name)
        emit.close()
        assert a.stop() == 0, a.read_log()[-3000:]


# ---------------------------------------------------------------- S3

def check_objects(peer, pb, emit, want_ids, exactly_once=True):
    """Every object of the probe is well-named and holds samples equal to
    graind's; every id of want_ids is there (once, unless a crash may have
    made a retry under another range)."""
    objs = s3_objects(peer, pb, emit.name)
    graind = emit.events()
    ids = []
    for key, got in objs.items():
        m = KEY_RE.match(key)
        assert got, f"empty object {key}"
        assert m["prefix"] == KEY_PREFIX and m["host"] == sanitized_host(), key
        assert [s.id for s in got] == sorted(s.id for s in got), key
        assert (int(m["first"]), int(m["last"])) == (got[0].id, got[-1].id), key
        assert (m["day"], m["hour"]) == (got[0].time[:10], got[0].time[11:13]), key
        for s in got:
            assert s.probe == emit.name and s.map in ("events", "records"), s
            if s.id in graind:
                assert s == graind[s.id], (s, graind[s.id])
        ids += [s.id for s in got]
    missing = sorted(set(want_ids) - set(ids))
    assert not missing, f"{len(missing)} samples never arrived: {missing[:10]}"
    if exactly_once:
        dups = sorted({i for i in ids if ids.count(i) > 1})
        assert not dups, f"samples in more than one object: {dups[:10]}"
    return objs


def wait_delivered(peer, pb, emit, want_ids, timeout=45):
    want = set(want_ids)
    return wait_for(lambda: want <= set(s3_ids(peer, pb, emit.name)), timeout=timeout,
                    what=f"{len(want)} samples in S3")


def test_s3_every_sample_arrives_once_and_verified(a, pb, emit, s3_peer):
    name = unique("s3")
    put_sink(a, name, s3_body(s3_peer, emit.name, rows=40))
    try:
        for _ in range(3):
            emit.caller.call(50)
            time.sleep(0.1)
        want = emit.wait_events(300)
        assert len(want) == 300
        wait_delivered(s3_peer, pb, emit, want)
        objs = check_objects(s3_peer, pb, emit, want)
        assert all(len(v) <= 40 for v in objs.values()), {k: len(v) for k, v in objs.items()}
        assert len(objs) >= 300 // 40
        puts = s3_peer.entries(method="PUT")
        assert puts and all(e.verdict == "verified" and e.status == 200 for e in puts), \
            [(e.path, e.code, e.detail) for e in puts if e.verdict != "verified"][:3]
        h = wait_for(lambda: (lambda s: s.health.lag_rows == 0 and s)(sink(a, pb, name)),
                     what="the sink to catch up").health
        assert h.last_error == "" and h.samples_sent >= 300 and h.bytes_sent > 0
        assert h.cursor >= max(want)
    finally:
        delete_sink(a, name)


def test_s3_wrong_secret_is_an_error_nothing_pruned_then_delivered(make_agent, pb, s3_peer):
    a = make_agent(["--sink-retention", "1"])
    emit = Emit(a, pb)
    name = unique("s3")
    try:
        put_sink(a, name, s3_body(s3_peer, emit.name, secret="not-" + s3_peer.secret))
        emit.caller.call(20)
        want = emit.wait_events(40)
        h = wait_for(lambda: (lambda s: s.health.last_error and s)(sink(a, pb, name)),
                     what="a sink error").health
        assert "403" in h.last_error and "SignatureDoesNotMatch" in h.last_error, h.last_error
        assert h.cursor < min(want) and h.samples_sent == 0
        assert {e.code for e in s3_peer.entries("rejected")} == {"SignatureDoesNotMatch"}
        assert not s3_peer.entries("verified", "PUT") and s3_peer.keys() == []
        # Past the retention nothing undelivered is pruned.
        time.sleep(2.5)
        assert set(emit.events()) == set(want)

        body = s3_body(s3_peer, emit.name)
        assert put_sink(a, name, body).status_code == 200
        wait_delivered(s3_peer, pb, emit, want)
        check_objects(s3_peer, pb, emit, want)
        # Delivered everywhere and past the retention: pruned.
        wait_for(lambda: not set(emit.events()) & set(want), timeout=20,
                 what="the delivered samples to be pruned")
    finally:
        delete_sink(a, name)
        emit.close()
        assert a.stop() == 0, a.read_log()[-3000:]


def test_s3_outage_every_sample_arrives(a, pb, emit, s3_peer):
    name = unique("s3")
    put_sink(a, name, s3_body(s3_peer, emit.name, rows=20, age_ms=100))
    try:
        emit.caller.call(20)
        wait_delivered(s3_peer, pb, emit, emit.wait_events(40))
        s3_peer.stop()
        for _ in range(3):
            emit.caller.call(20)
            time.sleep(0.3)
        h = wait_for(lambda: (lambda s: s.health.last_error and s)(sink(a, pb, name)),
                     what="the outage to show").health
        assert h.lag_rows > 0, h
        s3_peer.start()
        emit.caller.call(20)
        want = emit.wait_events(200)
        wait_delivered(s3_peer, pb, emit, want, timeout=45)
        check_objects(s3_peer, pb, emit, want)
    finally:
        delete_sink(a, name)


def test_s3_without_libcurl_names_the_package(make_agent, pb, s3_peer):
    """libcurl is loaded on the first S3 batch. On a host without it (here
    /dev/null mounted over it, in a mount namespace of the agent's own),
    the sink reports an error naming the package, keeps its samples, and
    the agent goes on."""
    # This machine's own: another architecture's may sit beside it (multiarch).
    libs = glob.glob(f"/usr/lib/{sysconfig.get_config_var('MULTIARCH')}/libcurl.so.4")
    assert libs, "no libcurl.so.4 to hide"
    hide = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind /dev/null "$0" && exec "$@"', libs[0]]
    a = make_agent(wrapper=hide)
    emit = Emit(a, pb)
    name = unique("s3")
    puts = len(s3_peer.entries("verified", "PUT"))
    try:
        put_sink(a, name, s3_body(s3_peer, emit.name, rows=10, age_ms=50))
        emit.caller.call(10)
        h = wait_for(lambda: (lambda s: "libcurl" in s.health.last_error and s)(
            sink(a, pb, name)), what="the sink to report the missing libcurl").health
        assert "S3 sinks need libcurl (libcurl.so.4, Debian package libcurl4)" in \
            h.last_error, h.last_error
        assert h.samples_sent == 0 and h.lag_rows > 0, h
        assert len(s3_peer.entries("verified", "PUT")) == puts
        assert a.get("/healthz").status_code == 200
    finally:
        delete_sink(a, name)
        emit.close()
        assert a.stop() == 0, a.read_log()[-3000:]


def test_s3_kill9_mid_upload_loses_nothing(make_agent, pb, s3_peer):
    a = make_agent()
    emit = Emit(a, pb)
    name = unique("s3")
    try:
        s3_peer.set_delay(0.05)
        put_sink(a, name, s3_body(s3_peer, emit.name, rows=10, age_ms=50))
        emit.caller.call(150)
        emit.wait_events(300)
        wait_for(lambda: len(s3_peer.entries("verified", "PUT")) >= 5, what="uploads to start")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        a.stop()
        uploaded = len(s3_peer.entries("verified", "PUT"))
        assert uploaded < 30, "all uploads were done before the kill"
        s3_peer.set_delay(0)

        a = make_agent()
        emit.a = a
        want = emit.events()
        assert len(want) >= 300
        wait_delivered(s3_peer, pb, emit, want, timeout=45)
        check_objects(s3_peer, pb, emit, want, exactly_once=False)
    finally:
        delete_sink(a, name)
        emit.close()
        assert a.stop() == 0, a.read_log()[-3000:]
