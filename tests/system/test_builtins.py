"""Built-in probes on the real kernel: each one attached through the API by
name, fed real activity made by the test (a DNS query over a veth pair from
another network namespace, /bin/true exec'd, TCP connections to a local
listener, a process making a known number of system calls, scheduling), and
the decoded samples asserted field by field.

Agreement with a peer: exec, tcpstate, syscalls and runqlat run side by
side with Debian's libbpf-tools (execsnoop, tcpstates, syscount, runqlat)
on the same workload, and must report the same events and counts. A tool
that does not run on this kernel skips its comparison with the tool's own
error as the reason."""

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections import Counter

import pytest
from google.protobuf import json_format

from conftest import sh, veth_namespace
from test_probes import Waiting, pin_dir

RUN = os.getpid() % 10000
BUILTINS = {"dns", "netstat", "syscalls", "exec", "tcpstate", "runqlat"}
SBIN = "/usr/sbin"


# ---------------------------------------------------------------- reading samples

def wait_for(fn, timeout=8, what="condition"):
    """fn()'s first truthy answer, polled every 50 ms."""
    deadline = time.time() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {got!r}")
        time.sleep(0.05)


def samples(a, pb, probe, map=None):
    """Every sample of the probe (oldest first), over all pages, parsed
    strictly as proto3 JSON. For metric maps: their samples are few."""
    out, after, limit = [], 0, 10000
    while True:
        params = {"probe": probe, "after": after, "limit": limit}
        if map:
            params["map"] = map
        r = a.get("/v1/samples", params=params)
        assert r.status_code == 200, r.text
        page = json_format.Parse(r.text, pb.ListSamplesResponse())
        out.extend(page.samples)
        if len(page.samples) < limit:
            return out
        after = page.samples[-1].id


def fields(sample):
    """An event sample's fields as {name: value}."""
    return {f.name: getattr(f, f.WhichOneof("value")) if f.WhichOneof("value") else None
            for f in sample.fields}


class Events:
    """The decoded events of a probe's ring buffer, read incrementally with
    the after= cursor: exec and tcpstate see the whole host (including the
    connections that fetch their samples, and whatever else runs here), so
    only the events `keep` accepts are kept, parsed strictly as proto3
    JSON. A record decoded as raw bytes fails: built-in events are
    BTF-typed."""

    def __init__(self, a, pb, probe, keep=lambda f: True, map="events"):
        self.a, self.pb, self.probe, self.map, self.keep = a, pb, probe, map, keep
        self.after, self.kept = 0, []

    def poll(self):
        limit = 5000
        while True:
            r = self.a.get("/v1/samples", params={"probe": self.probe, "map": self.map,
                                                  "after": self.after, "limit": limit})
            assert r.status_code == 200, r.text
            page = r.json().get("samples", [])
            for raw in page:
                loose = _loose(raw)
                if "raw" in loose:
                    raise AssertionError(f"{self.probe}/{self.map}: event decoded as raw "
                                         f"bytes, not by its BTF struct: {loose}")
                if self.keep(loose):
                    s = json_format.ParseDict(raw, self.pb.Sample())
                    assert s.kind == self.pb.EVENT, s
                    self.kept.append(fields(s))
            if page:
                self.after = int(page[-1]["id"])
            if len(page) < limit:
                return self.kept

    def wait(self, pred, timeout=8, what="events"):
        """The kept events once pred(kept) holds."""
        return wait_for(lambda: (lambda k: k if pred(k) else None)(self.poll()),
                        timeout=timeout, what=what)


def _loose(sample):
    """{name: value} of a JSON sample's fields, for filtering before the
    strict parse."""
    out = {}
    for x in sample.get("fields", []):
        kind = next((k for k in ("text", "uint", "int", "flag", "real") if k in x), None)
        out[x["name"]] = int(x[kind]) if kind in ("uint", "int") else x.get(kind)
    return out


def latest_counters(a, pb, probe, map, name):
    """{tags tuple: value} of the newest sample of each series `name`."""
    out = {}
    for s in samples(a, pb, probe, map):
        if s.kind == pb.METRIC and s.name == name:
            out[tuple((t.key, t.value) for t in s.tags)] = s.value
    return out


class Builtins:
    """PUTs built-in probes for one test; cleanup() deletes them (and their
    pins, should the agent have failed to)."""

    def __init__(self, agent):
        self.a, self.names = agent, []

    def put(self, name, builtin, programs=None, constants=None, outputs=None):
        spec = {"builtin": builtin}
        if programs:
            spec["programs"] = programs
        if constants:
            spec["constants"] = [{"name": k, "value": str(v)} for k, v in constants.items()]
        if outputs:
            spec["outputs"] = outputs
        self.names.append(name)
        r = self.a.request("PUT", f"/v1/probes/{name}", json=spec)
        assert r.status_code in (200, 201), r.text
        probe = r.json()
        assert probe["spec"]["builtin"] == builtin, probe
        for st in probe.get("programs", []):
            assert st["state"] == "PROGRAM_ATTACHED", probe
        return probe

    def cleanup(self):
        for name in self.names:
            self.a.delete(f"/v1/probes/{name}")
        for name in self.names:
            shutil.rmtree(pin_dir(name), ignore_errors=True)


def record_type(struct_name):
    """outputs naming the record struct of a built-in's `events` ring buffer."""
    return [{"map": "events", "events": {"recordType": struct_name}}]


class Tool:
    """A libbpf-tool in a subprocess with line-buffered output, read by a
    thread. start() returns once its ready line is printed (it prints that
    after attaching) and skips the test when the tool cannot run here."""

    def __init__(self, *argv):
        self.argv = [os.path.join(SBIN, argv[0]), *argv[1:]]
        self.lines, self.proc, self.reader = [], None, None

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def start(self, ready, timeout=20):
        if not os.access(self.argv[0], os.X_OK):
            pytest.skip(f"{self.argv[0]} is not installed")
        self.proc = subprocess.Popen(["stdbuf", "-oL", *self.argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.time() + timeout
        while not any(ready in l for l in self.lines):
            if self.proc.poll() is not None:
                self.reader.join(5)
                pytest.skip(f"{os.path.basename(self.argv[0])} does not run on this kernel "
                            f"(exit {self.proc.returncode}): " + " | ".join(self.lines[-5:]))
            if time.time() > deadline:
                raise AssertionError(f"{self.argv} printed no '{ready}' in {timeout} s: "
                                     f"{self.lines[-5:]}")
            time.sleep(0.05)
        return self

    def stop(self):
        """SIGINT (the tools print their summary on it); the whole output."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.reader:
            self.reader.join(5)
        if self.proc:
            self.proc.stdout.close()
        return self.lines


@pytest.fixture
def tools():
    """Start tools with tools(name, args...); all are stopped at the end."""
    started = []

    def make(*argv):
        t = Tool(*argv)
        started.append(t)
        return t

    yield make
    for t in started:
        t.stop()


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def a(module_agent):
    return module_agent


@pytest.fixture
def builtins(a):
    b = Builtins(a)
    yield b
    b.cleanup()


@pytest.fixture(scope="module")
def net():
    with veth_namespace("b", 1) as n:
        yield n


CALLER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

/* caller N: print the pid, wait for a byte on stdin, call getpid N times
 * and exit: after the read, exactly N getpid and one exit_group enter. */
int main(int argc, char **argv)
{
	int n = atoi(argv[1]);
	char go;

	printf("%d\n", (int)getpid());
	fflush(stdout);
	if (read(0, &go, 1) != 1)
		return 2;
	for (int i = 0; i < n; i++)
		syscall(SYS_getpid);
	_exit(0);
}
"""


@pytest.fixture(scope="module")
def caller_bin():
    d = tempfile.mkdtemp(prefix="graind-caller-")
    src, binary = os.path.join(d, "caller.c"), os.path.join(d, "caller")
    with open(src, "w") as f:
        f.write(CALLER_C)
    sh("gcc", "-O1", "-o", binary, src)
    yield binary
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- objects

def test_builtins_are_listed_with_descriptions(a):
    r = a.get("/v1/objects")
    assert r.status_code == 200, r.text
    listed = {o["name"]: o for o in r.json()["objects"] if o.get("builtin")}
    assert set(listed) == BUILTINS, sorted(listed)
    programs = {"dns": {"dns_parse"},
                "netstat": {"netstat_xdp", "netstat_tc_ingress", "netstat_tc_egress"},
                "syscalls": {"count_syscalls"}, "exec": {"trace_exec"},
                "tcpstate": {"trace_tcp_state"},
                "runqlat": {"runq_wakeup", "runq_wakeup_new", "runq_switch"}}
    for name, o in listed.items():
        assert len(o.get("description", "")) > 20, o
        assert o["hasBtf"], o
        assert {p["name"] for p in o["programs"]} == programs[name], o
    # The built-in by name resolves to the listed object.
    r = a.get(f"/v1/objects/{listed['exec']['sha256']}")
    assert r.status_code == 200 and r.json()["builtin"] is True, r.text


def _dns_case(request):
    n = request.getfixturevalue("net")
    attach = {"xdp": {"ifname": n.host_if, "mode": "XDP_MODE_SKB"}}
    return "dns_parse", attach, lambda: send_from_ns(
        n, [(dns_message(1, "decode.graind.example", 1), 53)], 20000 + RUN)


DEFAULT_DECODE_CASES = {
    "dns": _dns_case,
    "exec": lambda request: (
        "trace_exec", {"tracepoint": {"category": "sched", "name": "sched_process_exec"}},
        lambda: subprocess.run(["/bin/true"], check=True)),
    "tcpstate": lambda request: (
        "trace_tcp_state", {"tracepoint": {"category": "sock", "name": "inet_sock_set_state"}},
        _refused_connect),
}


@pytest.mark.parametrize("builtin", sorted(DEFAULT_DECODE_CASES))
def test_builtin_events_decode_without_outputs(a, pb, builtins, request, builtin):
    """Run as the README shows ({"builtin": ..., "programs": [...]}, no
    outputs), a built-in's ring-buffer records decode by their BTF struct,
    not as hex."""
    program, attach, trigger = DEFAULT_DECODE_CASES[builtin](request)
    name = f"bd-{builtin}-{RUN}"
    builtins.put(name, builtin, programs=[{"program": program, "attach": attach}])
    trigger()

    def first():
        r = a.get("/v1/samples", params={"probe": name, "map": "events", "limit": 1})
        assert r.status_code == 200, r.text
        return json_format.Parse(r.text, pb.ListSamplesResponse()).samples
    f = fields(wait_for(first, what=f"{builtin} events")[0])
    assert "raw" not in f, (f"{builtin}: events decoded as raw bytes when the spec has "
                            f"no outputs: {f}")


def _refused_connect():
    """A TCP connection attempt to a closed local port: CLOSE -> SYN_SENT ->
    CLOSE state changes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as c:
        try:
            c.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            pass


# ---------------------------------------------------------------- dns

def dns_message(qid, qname, qtype, flags=0x0100, raw_labels=None):
    """A DNS message with one question (class IN)."""
    labels = raw_labels if raw_labels is not None else b"".join(
        bytes([len(l)]) + l.encode() for l in qname.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + labels + \
        struct.pack("!HH", qtype, 1)


def send_from_ns(n, packets, sport):
    """Send each (payload, dport) as UDP from ns_ip:sport to host_ip, from
    inside the namespace."""
    code = ("import socket\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('{n.ns_ip}', {sport}))\n"
            f"for p, d in {packets!r}: s.sendto(p, ('{n.host_ip}', d))\n")
    sh("ip", "netns", "exec", n.ns, "/usr/bin/python3", "-c", code)


def test_dns_queries_over_veth(a, pb, builtins, net):
    name = f"dns-{RUN}"
    builtins.put(name, "dns", programs=[{
        "program": "dns_parse",
        "attach": {"xdp": {"ifname": net.host_if, "mode": "XDP_MODE_SKB"}}}])
    sport = 20000 + RUN
    qname = f"q{RUN}.graind.example"
    send_from_ns(net, [(dns_message(0x1234, qname, 1), 53),
                       (dns_message(0xbeef, "www." + qname, 28), 53),
                       (b"not dns at all", 54)], sport)
    # A response: from port 53, QR set, NXDOMAIN.
    send_from_ns(net, [(dns_message(0x4242, qname, 1, flags=0x8183), 40000 + RUN)], 53)
    # Broken: a label length of 64 (reserved bits), counted, no event.
    send_from_ns(net, [(dns_message(7, "", 1, raw_labels=b"\x40" + b"a" * 64 + b"\0"), 53)],
                 sport)

    evs = Events(a, pb, name, keep=lambda e: qname in (e.get("qname") or ""))
    got = evs.wait(lambda k: len(k) >= 3, what="3 dns events")
    time.sleep(0.2)
    got = evs.poll()
    by_id = {e["id"]: e for e in got}
    assert set(by_id) == {0x1234, 0xbeef, 0x4242}, got

    common = {"ifindex": net.host_if, "l3_proto": "IPV4", "vlan_id": 0,
              "opcode": "QUERY", "qdcount": 1, "ancount": 0, "qclass": 1, "truncated": 0}
    for qid, qtype, qn in ((0x1234, "A", qname), (0xbeef, "AAAA", "www." + qname)):
        e = by_id[qid]
        want = dict(common, saddr=net.ns_ip, daddr=net.host_ip, sport=sport, dport=53,
                    response=0, rcode="NOERROR", flags=0x0100, qname=qn, qtype=qtype,
                    qname_len=len(qn))
        assert {k: e.get(k) for k in want} == want, e
    e = by_id[0x4242]
    want = dict(common, saddr=net.ns_ip, daddr=net.host_ip, sport=53, dport=40000 + RUN,
                response=1, rcode="NXDOMAIN", flags=0x8183, qname=qname, qtype="A")
    assert {k: e.get(k) for k in want} == want, e

    # The broken one is counted by reason in `errors`.
    errors = wait_for(lambda: latest_counters(a, pb, name, "errors", "errors"),
                      what="dns errors counter")
    assert errors == {(("key", "BAD_LABEL"),): 1.0}, errors


# ---------------------------------------------------------------- netstat

@contextlib.contextmanager
def veth_pair_with_indexes(first_tag, second_tag):
    """Two veth namespaces whose host sides have ifindexes a and a+3 (a a
    multiple of 4, so a+3 differs from a only in its two low bits): the
    collector once folded the field index into the first key byte, which
    made (a, packets) and (a+3, bytes) one series."""
    for attempt in range(16):
        a = 1004 + 4 * ((os.getpid() + 37 * attempt) % 2000)
        with contextlib.ExitStack() as stack:
            try:
                first = stack.enter_context(veth_namespace(first_tag, 2, index=a))
                second = stack.enter_context(veth_namespace(second_tag, 3, index=a + 3))
            except AssertionError as e:
                if "exists" in str(e):
                    continue        # an ifindex in use: another pair
                raise
            yield first, second
            return
    raise AssertionError("no free pair of ifindexes for the netstat test")


def test_netstat_deltas_exact_per_series_in_samples_and_statsd(a, pb, builtins,
                                                               statsd_daemon):
    """netstat with `delta: true` on two interfaces: several keys (ifindex
    a and a+3) and two value fields (packets, bytes), traffic over several
    polls. The delta samples of each series add up to exactly what was
    sent on its interface, and so do the counters the StatsD daemon
    summed."""
    from test_sinks import delete_sink, put_sink, statsd_body, stored_name

    rounds = 4
    sent = {"d": (25, 100), "e": (50, 200)}         # packets a round, UDP payload
    with veth_pair_with_indexes("d", "e") as (na, nb):
        name = f"netstat-delta-{RUN}"
        nets = {"d": na, "e": nb}
        sink, prefix = f"nsd-{RUN}", f"n{RUN}"
        put_sink(a, sink, statsd_body(statsd_daemon.port, prefix, "TAG_DIALECT_GRAPHITE",
                                      name))
        try:
            builtins.put(name, "netstat", programs=[
                {"program": "netstat_xdp",
                 "attach": {"xdp": {"ifname": na.host_if, "mode": "XDP_MODE_SKB"}}},
                {"program": "netstat_tc_ingress",
                 "attach": {"tc": {"ifname": nb.host_if, "direction": "TC_INGRESS"}}}],
                outputs=[{"map": "traffic", "metric": {"pollIntervalMs": 100,
                                                        "delta": True}}])
            time.sleep(0.5)             # the first poll, which only records, is done
            for _ in range(rounds):
                for tag, (n, size) in sent.items():
                    send_from_ns(nets[tag], [(b"x" * size, 9)] * n, 30000 + RUN)
                time.sleep(0.35)        # a few polls between rounds

            want = {}
            for tag, (n, size) in sent.items():
                tags = (("ifindex", nets[tag].host_if), ("direction", "INGRESS"),
                        ("l3_proto", "IPV4"), ("l4_proto", "UDP"))
                want[("traffic.packets", tags)] = rounds * n
                want[("traffic.bytes", tags)] = rounds * n * (14 + 20 + 8 + size)

            def sums():
                got = Counter()
                for smp in samples(a, pb, name, "traffic"):
                    assert smp.kind == pb.METRIC and smp.delta, smp
                    key = (smp.name, tuple((t.key, t.value) for t in smp.tags))
                    if key in want:
                        got[key] += smp.value
                return dict(got)

            try:
                wait_for(lambda: sums() == want, timeout=10, what="delta sums")
            except AssertionError:
                raise AssertionError(f"delta samples add up to {sums()}, sent {want}")
            time.sleep(0.5)             # more polls change nothing
            assert sums() == want

            def in_statsd():
                c = statsd_daemon.counters()
                return {k: c.get(stored_name(prefix, "TAG_DIALECT_GRAPHITE", k[0], list(k[1])))
                        for k in want}
            try:
                wait_for(lambda: in_statsd() == want, timeout=20, what="statsd counters")
            except AssertionError:
                raise AssertionError(f"statsd counted {in_statsd()}, sent {want}")
            assert statsd_daemon.counters()["statsd.bad_lines_seen"] == 0
        finally:
            delete_sink(a, sink)
            builtins.cleanup()
            builtins.names.clear()


# ---------------------------------------------------------------- exec

EXEC_ATTACH = [{"program": "trace_exec",
                "attach": {"tracepoint": {"category": "sched", "name": "sched_process_exec"}}}]


def test_exec_event_fields(a, pb, builtins):
    name = f"exec-{RUN}"
    # recordType as "struct <name>"; the other tests rely on the default.
    builtins.put(name, "exec", programs=EXEC_ATTACH, outputs=record_type("struct exec_event"))
    p = subprocess.Popen(["/bin/true", f"graind-exec-{RUN}"])
    assert p.wait(timeout=10) == 0
    got = Events(a, pb, name, keep=lambda e: e.get("pid") == p.pid).wait(
        len, what=f"exec event of pid {p.pid}")
    assert len(got) == 1, got
    assert got[0] == {"pid": p.pid, "ppid": os.getpid(), "uid": os.getuid(), "comm": "true",
                      "filename": "/bin/true"}, got


EXECSNOOP_RE = re.compile(r"^(\S+)\s+(\d+)\s+(\d+)\s+(-?\d+)\s+(.*)$")


def test_exec_agrees_with_execsnoop(a, pb, builtins, tools):
    name = f"exec-peer-{RUN}"
    marker = f"graind-peer-{RUN}-{time.time_ns()}"
    builtins.put(name, "exec", programs=EXEC_ATTACH)
    # No -l filter: it matches the first argument only (the path).
    snoop = tools("execsnoop").start("PCOMM")
    pids = []
    for i in range(5):
        p = subprocess.Popen(["/bin/true", marker, str(i)])
        assert p.wait(timeout=10) == 0
        pids.append(p.pid)
    evs = Events(a, pb, name, keep=lambda e: e.get("pid") in pids)
    evs.wait(lambda k: len(k) >= 5, what="5 exec events")
    time.sleep(0.3)
    lines = snoop.stop()
    mine = evs.poll()

    peer = set()
    for line in lines:
        m = EXECSNOOP_RE.match(line)
        if m and marker in m.group(5):
            peer.add((m.group(1), int(m.group(2)), int(m.group(3)), m.group(5).split()[0]))
    ours = {(e["comm"], e["pid"], e["ppid"], e["filename"]) for e in mine}
    assert len(mine) == 5, mine
    assert peer == ours, f"execsnoop {sorted(peer)} != graind {sorted(ours)}\n{lines}"
    assert {p for _, p, _, _ in ours} == set(pids)


# ---------------------------------------------------------------- tcpstate

TCP_ATTACH = [{"program": "trace_tcp_state",
               "attach": {"tracepoint": {"category": "sock", "name": "inet_sock_set_state"}}}]


def bound_socket():
    """A TCP socket bound to a free port of 127.0.0.1, not yet listening."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    return lsock


def connect_n(lsock, n):
    """Listen on lsock; n TCP connections to it, each accepted and closed,
    client first; then the listener closes. Returns the client ports."""
    clients = []
    with lsock:
        lsock.listen(8)
        port = lsock.getsockname()[1]
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            s, _ = lsock.accept()
            clients.append(c.getsockname()[1])
            c.close()
            time.sleep(0.02)    # the FIN reaches the server before it closes
            s.close()
    return clients


def tcp_events(a, pb, probe, port):
    """The IPv4 state changes of `port` the probe reports."""
    return Events(a, pb, probe, keep=lambda e: e.get("l3_proto") == "IPV4" and
                  port in (e.get("sport"), e.get("dport")))


def transitions(evs):
    """(laddr, lport, raddr, rport, old, new) of each event, counted."""
    return Counter((e["saddr"], e["sport"], e["daddr"], e["dport"], e["oldstate"],
                    e["newstate"]) for e in evs)


# Per connection, client first to close: 5 changes on each side; and the
# listener's own 2 (CLOSE -> LISTEN -> CLOSE).
CHANGES_PER_CONNECTION = 10


def test_tcpstate_events(a, pb, builtins):
    name = f"tcp-{RUN}"
    builtins.put(name, "tcpstate", programs=TCP_ATTACH)
    lsock = bound_socket()
    port = lsock.getsockname()[1]
    evs = tcp_events(a, pb, name, port)
    clients = connect_n(lsock, 3)
    lo = "127.0.0.1"
    want = Counter({(lo, port, "0.0.0.0", 0, "TCP_CLOSE", "TCP_LISTEN"): 1,
                    (lo, port, "0.0.0.0", 0, "TCP_LISTEN", "TCP_CLOSE"): 1,
                    (lo, 0, lo, port, "TCP_CLOSE", "TCP_SYN_SENT"): 3})
    for cp in clients:
        want.update({(lo, cp, lo, port, "TCP_SYN_SENT", "TCP_ESTABLISHED"): 1,
                     (lo, cp, lo, port, "TCP_ESTABLISHED", "TCP_FIN_WAIT1"): 1,
                     (lo, cp, lo, port, "TCP_FIN_WAIT1", "TCP_FIN_WAIT2"): 1,
                     (lo, cp, lo, port, "TCP_FIN_WAIT2", "TCP_CLOSE"): 1,
                     (lo, port, lo, cp, "TCP_LISTEN", "TCP_SYN_RECV"): 1,
                     (lo, port, lo, cp, "TCP_SYN_RECV", "TCP_ESTABLISHED"): 1,
                     (lo, port, lo, cp, "TCP_ESTABLISHED", "TCP_CLOSE_WAIT"): 1,
                     (lo, port, lo, cp, "TCP_CLOSE_WAIT", "TCP_LAST_ACK"): 1,
                     (lo, port, lo, cp, "TCP_LAST_ACK", "TCP_CLOSE"): 1})
    assert sum(want.values()) == 3 * CHANGES_PER_CONNECTION + 2
    got = evs.wait(lambda k: len(k) >= sum(want.values()), what="tcp state changes")
    time.sleep(0.2)
    got = evs.poll()
    assert transitions(got) == want, \
        f"unexpected: {transitions(got) - want}; missing: {want - transitions(got)}"
    listen = [e for e in got if e["newstate"] == "TCP_LISTEN"]
    assert listen[0]["pid"] == os.getpid(), listen
    assert listen[0]["saddr6"] == "::" and listen[0]["daddr6"] == "::", listen


TCPSTATES_RE = re.compile(r"^[0-9a-f]+\s+(\d+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+"
                          r"(\S+)\s+->\s+(\S+)")


def test_tcpstate_agrees_with_tcpstates(a, pb, builtins, tools):
    name = f"tcp-peer-{RUN}"
    builtins.put(name, "tcpstate", programs=TCP_ATTACH)
    lsock = bound_socket()
    port = lsock.getsockname()[1]
    evs = tcp_events(a, pb, name, port)
    peer_tool = tools("tcpstates", "-4").start("SKADDR")
    connect_n(lsock, 3)
    evs.wait(lambda k: len(k) >= 3 * CHANGES_PER_CONNECTION + 2, what="32 state changes")
    time.sleep(0.3)
    lines = peer_tool.stop()
    ours = transitions(evs.poll())

    peer = Counter()
    for line in lines:
        m = TCPSTATES_RE.match(line)
        if m and port in (int(m.group(4)), int(m.group(6))):
            peer[(m.group(3), int(m.group(4)), m.group(5), int(m.group(6)),
                  "TCP_" + m.group(7), "TCP_" + m.group(8))] += 1
    assert sum(peer.values()) == 3 * CHANGES_PER_CONNECTION + 2, lines[:40]
    assert ours == peer, f"graind - tcpstates: {ours - peer}; tcpstates - graind: {peer - ours}"


# ---------------------------------------------------------------- syscalls

SYSCALLS_ATTACH = [{"program": "count_syscalls",
                    "attach": {"rawTracepoint": {"name": "sys_enter"}}}]


def syscall_counts(a, pb, probe):
    return {dict(tags)["syscall_nr"]: int(v)
            for tags, v in latest_counters(a, pb, probe, "counts", "counts.count").items()}


def test_syscalls_counts_by_name_for_target_pid(a, pb, builtins, caller_bin):
    n = 777
    c = Waiting([caller_bin, str(n)])
    try:
        name = f"sys-{RUN}"
        builtins.put(name, "syscalls", programs=SYSCALLS_ATTACH,
                     constants={"target_pid": c.pid})
        c.go()
        # Exact: the probe sees only the target, which after its read
        # makes n getpid calls and exits.
        got = wait_for(lambda: (lambda g: g if g.get("getpid") == n and "exit_group" in g
                                else None)(syscall_counts(a, pb, name)),
                       what="getpid and exit_group counts")
        time.sleep(1.2)     # one more poll: nothing else shows up
        assert syscall_counts(a, pb, name) == {"getpid": n, "exit_group": 1}, got
    finally:
        c.kill()


SYSCOUNT_RE = re.compile(r"^(\w+)\s+(\d+)$")


def test_syscalls_agrees_with_syscount(a, pb, builtins, tools, caller_bin):
    """syscount counts at sys_exit, graind at sys_enter: the read the caller
    waits in is entered before either attached (syscount alone sees it
    return) and exit_group never returns (graind alone sees it). Between
    them the counts must match exactly: n getpid calls."""
    n = 1234
    c = Waiting([caller_bin, str(n)])
    try:
        name = f"sys-peer-{RUN}"
        builtins.put(name, "syscalls", programs=SYSCALLS_ATTACH,
                     constants={"target_pid": c.pid})
        peer_tool = tools("syscount", "-p", str(c.pid), "-T", "100").start("Tracing syscalls")
        c.go()
        ours = wait_for(lambda: (lambda g: g if "exit_group" in g else None)(
            syscall_counts(a, pb, name)), what="exit_group count")
        time.sleep(0.2)
        lines = peer_tool.stop()
    finally:
        c.kill()
    peer = {m.group(1): int(m.group(2)) for m in map(SYSCOUNT_RE.match, lines) if m}
    assert peer == {"getpid": n, "read": 1}, lines
    assert ours == {"getpid": n, "exit_group": 1}, ours
    assert ours["getpid"] == peer["getpid"]


# ---------------------------------------------------------------- /metrics

def test_metrics_pass_promtool_with_builtins_attached(a, builtins, net, request):
    """/metrics of an agent running every built-in, each with its default
    outputs and with data in its maps, and a sink, passes Prometheus' own
    linter (`promtool check metrics`) without a problem reported."""
    from test_sinks import delete_sink, put_sink, statsd_body

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make deps-test` installs the Debian package prometheus"
    sink = f"pm-sink-{RUN}"     # for the graind_sink_* families (port 9: discard)
    put_sink(a, sink, statsd_body(9, "lint", "TAG_DIALECT_NONE", f"pm-syscalls-{RUN}"))
    request.addfinalizer(lambda: delete_sink(a, sink))
    builtins.put(f"pm-dns-{RUN}", "dns", programs=[{
        "program": "dns_parse",
        "attach": {"xdp": {"ifname": net.host_if, "mode": "XDP_MODE_SKB"}}}])
    builtins.put(f"pm-netstat-{RUN}", "netstat", programs=[
        {"program": "netstat_tc_ingress",
         "attach": {"tc": {"ifname": net.host_if, "direction": "TC_INGRESS"}}},
        {"program": "netstat_tc_egress",
         "attach": {"tc": {"ifname": net.host_if, "direction": "TC_EGRESS"}}}])
    builtins.put(f"pm-syscalls-{RUN}", "syscalls", programs=SYSCALLS_ATTACH)
    builtins.put(f"pm-exec-{RUN}", "exec", programs=EXEC_ATTACH)
    builtins.put(f"pm-tcpstate-{RUN}", "tcpstate")
    builtins.put(f"pm-runqlat-{RUN}", "runqlat")
    # Something in every map: a DNS query and a broken one, exec, TCP,
    # system calls, wake-ups.
    send_from_ns(net, [(dns_message(9, "lint.graind.example", 1), 53)], 21000 + RUN)
    send_from_ns(net, [(dns_message(7, "", 1, raw_labels=b"\x40" + b"a" * 64 + b"\0"), 53)],
                 21000 + RUN)
    subprocess.run(["/bin/true"], check=True)
    _refused_connect()
    ping_pong(200)

    def scraped():
        text = a.get("/metrics").text
        want = (f'probe="pm-syscalls-{RUN}"', f'probe="pm-netstat-{RUN}"',
                f'probe="pm-dns-{RUN}"', f'probe="pm-runqlat-{RUN}"', f'probe="pm-exec-{RUN}"',
                f'sink="{sink}"', "graind_probe_latency_seconds_bucket")
        return text if all(w in text for w in want) and "graind_probe_" in text else None
    text = wait_for(scraped, what="every built-in's maps in /metrics")
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "", \
        f"promtool ({out.returncode}):\n{out.stdout}{out.stderr}"


# ---------------------------------------------------------------- runqlat

def latency_slots(a, probe):
    """{slot: count} of the live latency_us map (non-zero slots)."""
    r = a.get(f"/v1/probes/{probe}/maps/latency_us")
    assert r.status_code == 200, r.text
    dump = r.json()
    assert dump["decoded"], dump
    out = {}
    for e in dump["entries"]:
        k, v = int(e["key"][0]["uint"]), int(e["value"][0].get("uint", 0))
        if v:
            out[k] = v
    return out


def ping_pong(rounds):
    """Two threads passing a byte back and forth over pipes: 2 wake-ups a
    round."""
    (r1, w1), (r2, w2) = os.pipe(), os.pipe()

    def pong():
        for _ in range(rounds):
            os.write(w2, os.read(r1, 1))

    t = threading.Thread(target=pong, daemon=True)
    t.start()
    try:
        for _ in range(rounds):
            os.write(w1, b"x")
            os.read(r2, 1)
        t.join(10)
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_runqlat_histogram_samples(a, pb, builtins):
    name = f"runq-{RUN}"
    builtins.put(name, "runqlat")
    ping_pong(2000)
    got = wait_for(lambda: latest_counters(a, pb, name, "latency_us", "latency_us"),
                   what="latency_us samples")
    slots = {int(dict(tags)["key"]): v for tags, v in got.items()}
    assert set(slots) == set(range(32)), sorted(slots)     # every slot, tagged by index
    assert sum(slots.values()) > 0, slots


@pytest.mark.parametrize("outputs", [None, [{"map": "latency_us",
                                              "metric": {"log2Histogram": True}}]],
                         ids=["default", "log2Histogram"])
def test_runqlat_as_prometheus_histogram(a, builtins, outputs):
    """By default (the built-in tags latency_us as a log2 histogram), as with
    outputs log2Histogram, /metrics shows the latency map as one Prometheus
    histogram in seconds: cumulative buckets at powers of two microseconds,
    +Inf equal to the count, parsed by the Prometheus client's own text
    parser. The scratch map `start` is not exported at all."""
    from prometheus_client.parser import text_string_to_metric_families

    name = f"runq-hist-{RUN}"
    builtins.put(name, "runqlat", outputs=outputs)
    ping_pong(2000)

    def histogram():
        text = a.get("/metrics").text
        for fam in text_string_to_metric_families(text):
            if fam.name == "graind_probe_latency_seconds":
                mine = [s for s in fam.samples if s.labels.get("probe") == name]
                count = [s.value for s in mine if s.name.endswith("_count")]
                if count and count[0] > 0:
                    return fam, mine
        return None

    fam, samples = wait_for(histogram, what="latency_us histogram in /metrics")
    assert fam.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in samples if s.name.endswith("_bucket")]
    assert buckets[-1][0] == "+Inf", buckets
    bounds = [float(le) for le, _ in buckets[:-1]]
    assert bounds == [2.0 ** (k + 1) * 1e-6 for k in range(len(bounds))], bounds
    values = [v for _, v in buckets]
    assert values == sorted(values), buckets           # cumulative
    count = next(s.value for s in samples if s.name.endswith("_count"))
    assert values[-1] == count > 0
    # The plain per-slot family is not emitted for a histogram map, and the
    # map of wake-up times not at all.
    text = a.get("/metrics").text
    assert f'graind_probe_latency_us_total{{probe="{name}"' not in text
    assert f'graind_probe_latency_us{{probe="{name}"' not in text
    assert not re.search(rf'^graind_probe_start\w*{{probe="{name}"', text, re.M), text


RUNQLAT_RE = re.compile(r"^\s*(\d+)\s+->\s+(\d+)\s+:\s+(\d+)\s+\|")


def test_runqlat_agrees_with_runqlat(a, pb, builtins, tools):
    """Both hook the same scheduler events and bucket by log2 of the wait in
    microseconds, but latencies of a live system cannot match exactly, and
    the two windows differ by the time it takes to start and stop the tool
    and read the map. Asserted: the tool's buckets are [2^k, 2^(k+1)) (0 -> 1
    first), both saw events during the window, the totals are within a
    factor of 2 and the mean log2 slot within 1.5."""
    name = f"runq-peer-{RUN}"
    builtins.put(name, "runqlat")
    peer_tool = tools("runqlat").start("Tracing run queue latency")
    before = latency_slots(a, name)
    ping_pong(50000)
    after = latency_slots(a, name)
    lines = peer_tool.stop()

    peer = {}
    for line in lines:
        m = RUNQLAT_RE.match(line)
        if m:
            low, high, count = map(int, m.groups())
            k = (high + 1).bit_length() - 2
            assert high + 1 == 2 ** (k + 1) and low == (2 ** k if k else 0), line
            peer[k] = count
    ours = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    ours = {k: v for k, v in ours.items() if v}
    assert peer and sum(peer.values()) > 0, lines
    assert ours and sum(ours.values()) > 0, (before, after)
    total_ours, total_peer = sum(ours.values()), sum(peer.values())
    assert total_peer / 2 <= total_ours <= total_peer * 2, (ours, peer)
    mean = lambda h: sum(k * v for k, v in h.items()) / sum(h.values())
    assert abs(mean(ours) - mean(peer)) < 1.5, (ours, peer)
