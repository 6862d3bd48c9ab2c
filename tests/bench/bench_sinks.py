"""The sinks benchmark: StatsD lines/s formed and sent on loopback, S3
samples/s with gzip, and what forwarding adds to the samples pipeline's
CPU. Each figure is a ratio against a reference measured in the same run.

  1. StatsD: tests/bench/statsd_bench.c, linked with server/sink/statsd.c,
     against a bare send() loop of datagrams of the same size.
  2. S3: tests/bench/s3_bench.c, linked with server/sink/s3.c, PUTs to
     s3rver (straight, and through the SigV4-verifying proxy), against
     the same NDJSON gzipped by Python's zlib and PUT with http.client.
  3. Forwarding: graind's CPU time per 1000 event samples of a getpid()
     tracepoint, with no sink, a StatsD sink and an S3 sink.

run.py calls main(build_dir, graind_bin); alone:
  python3 tests/bench/bench_sinks.py [BUILD_DIR [GRAIND_BIN]]"""

import http.client
import os
import re
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import requests

import report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PEERS = os.path.join(ROOT, "tests", "peers")
PIN_ROOT = os.environ.get("GRAIND_SINKBENCH_PIN_ROOT", "/sys/fs/bpf/graind-sinkbench")

STATSD_SECONDS = 1.5    # each of the two StatsD runs
S3_BATCHES = 8          # PUTs of each S3 run
S3_ROWS = 10000         # samples per PUT: the S3 sink's default batch
S3_KEY, S3_SECRET = "AKIDSINKBENCH", "sinkbench/secret/key"
FORWARD_EVENTS = 150000  # events of each forwarding round,
FORWARD_RATE = 100000    # paced at this many per second: below what the
                         # pipeline sustains, so that none is dropped
FORWARD_REPEATS = 3      # rounds of each kind: the machine is shared

# getpid() FORWARD_EVENTS times at FORWARD_RATE, after a line on stdin.
PACED_GETPID = r"""
import os, sys, time
n, rate = int(sys.argv[1]), float(sys.argv[2])
print(os.getpid(), flush=True)
sys.stdin.readline()
t0, done = time.monotonic(), 0
while done < n:
    step = min(500, n - done)
    for _ in range(step):
        os.getpid()
    done += step
    ahead = done / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
print(time.monotonic() - t0, flush=True)
"""


def key_values(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


def run_tool(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{os.path.basename(cmd[0])} failed: {out.stderr.strip()}")
    return out.stdout


# ---------------------------------------------------------------- build

def build_drivers(build_dir, work):
    """statsd_bench and s3_bench, -O2, into work."""
    proto = os.path.join(build_dir, "proto", "graind.pb-c.c")
    if not os.path.exists(proto):
        subprocess.run(["make", "-s", f"BUILD={build_dir}",
                        os.path.join(build_dir, "proto", "graind.pb-c.h")],
                       cwd=ROOT, check=True)

    def flags(*pkgs):
        return subprocess.run(["pkg-config", "--cflags", "--libs", *pkgs], capture_output=True,
                              text=True, check=True).stdout.split()
    cc = ["cc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror",
          "-Wno-missing-field-initializers", "-Wno-unused-parameter", f"-I{ROOT}",
          f"-I{build_dir}", '-DGRAIND_VERSION="bench"']
    util = [os.path.join(ROOT, "server", "util", f) for f in ("gerr.c", "log.c")]
    tools = {name: os.path.join(work, name) for name in ("statsd_bench", "s3_bench")}
    subprocess.run(cc + ["-Wl,--wrap=send", "-o", tools["statsd_bench"],
                         os.path.join(HERE, "statsd_bench.c"),
                         os.path.join(ROOT, "server", "sink", "statsd.c"), proto, *util] +
                   flags("libprotobuf-c") + ["-lpthread", "-lm"], cwd=ROOT, check=True)
    subprocess.run(cc + ["-o", tools["s3_bench"], os.path.join(HERE, "s3_bench.c"),
                         os.path.join(ROOT, "server", "sink", "s3.c"),
                         os.path.join(ROOT, "server", "util", "codec.c"),
                         os.path.join(ROOT, "server", "util", "pbmsg.c"),
                         os.path.join(ROOT, "server", "util", "clock.c"),
                         os.path.join(ROOT, "server", "util", "utf8.c"),
                         os.path.join(ROOT, "server", "util", "sha256.c"),
                         os.path.join(ROOT, "server", "util", "curlso.c"), proto, *util] +
                   flags("libprotobuf-c", "jansson", "zlib", "libcurl", "gnutls") +
                   ["-ldl", "-lpthread", "-lm"],
                   cwd=ROOT, check=True)
    return tools


def peers_ready(build_dir):
    """The pinned StatsD daemon and s3rver, installed by `make peers`."""
    if not os.path.exists(os.path.join(PEERS, "node_modules", "s3rver")):
        out = subprocess.run(["make", "-s", f"BUILD={build_dir}", "peers"], cwd=ROOT,
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"  (S3 left out: `make peers` failed: {out.stderr.strip()[-300:]})")
            return False
    if PEERS not in sys.path:
        sys.path.insert(0, PEERS)
    return True


# ---------------------------------------------------------------- 1. StatsD

def bench_statsd(tools):
    out = run_tool([tools["statsd_bench"], str(STATSD_SECONDS)]).splitlines()
    ours = key_values(next(l for l in out if l.startswith("statsd ")))
    bare = key_values(next(l for l in out if l.startswith("bare ")))
    lines_s = ours["lines"] / ours["seconds"]
    dgrams_s = ours["datagrams"] / ours["seconds"]
    bare_s = bare["datagrams"] / bare["seconds"]
    size = ours["bytes"] / ours["datagrams"]
    lost = ours["lines"] - ours["recv_lines"]
    print(f"StatsD sink (statsd.c, dogstatsd, batches of 1000 metric samples, loopback UDP):")
    print(f"  graind  {lines_s / 1e6:5.2f} M lines/s formed and sent (goal >= 1), "
          f"{dgrams_s / 1e3:6.1f} k datagrams/s of {size:.0f} B "
          f"({ours['lines'] / ours['datagrams']:.1f} lines each), {lost:.0f} lines lost")
    print(f"  bare send() of {size:.0f}-byte datagrams: {bare_s / 1e3:6.1f} k datagrams/s "
          f"(= {bare['lines'] / bare['seconds'] / 1e6:.2f} M lines/s)")
    print(f"  ratio graind/bare datagrams/s {dgrams_s / bare_s:.2f}")
    report.record("sinks.statsd.lines", lines_s, "lines/s", goal=">= 1e6", met=lines_s >= 1e6)
    report.record("sinks.statsd.bare_datagrams", bare_s, "datagrams/s")


# ---------------------------------------------------------------- 2. S3

def python_put_reference(port, bucket, raw_dir, batches):
    """The same NDJSON: gzip by zlib (level 6, as s3.c), plain PUT by
    http.client on a new connection each time (as s3.c). Seconds, bytes."""
    bodies = [open(os.path.join(raw_dir, f"{b}.ndjson"), "rb").read() for b in range(batches)]
    seconds = sent = 0
    for b, raw in enumerate(bodies):
        t0 = time.monotonic()
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
        body = z.compress(raw) + z.flush()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("PUT", f"/{bucket}/reference/{b}.ndjson.gz", body=body,
                     headers={"Content-Type": "application/gzip"})
        r = conn.getresponse()
        r.read()
        conn.close()
        seconds += time.monotonic() - t0
        sent += len(body)
        if r.status != 200:
            raise RuntimeError(f"reference PUT: HTTP {r.status}")
    return seconds, sent


def bench_s3(tools, peer, work):
    raw_dir = os.path.join(work, "s3raw")
    os.makedirs(raw_dir, exist_ok=True)
    direct = key_values(run_tool([tools["s3_bench"], f"http://127.0.0.1:{peer.s3rver_port}",
                                  peer.bucket, "S3RVER", "S3RVER", str(S3_BATCHES),
                                  str(S3_ROWS), raw_dir]))
    proxied = key_values(run_tool([tools["s3_bench"], peer.endpoint, peer.bucket, S3_KEY,
                                   S3_SECRET, str(S3_BATCHES), str(S3_ROWS), raw_dir]))
    verified = len(peer.entries(verdict="verified", method="PUT"))
    rejected = len(peer.entries(verdict="rejected"))
    ref_s, ref_bytes = python_put_reference(peer.s3rver_port, peer.bucket, raw_dir, S3_BATCHES)
    n = direct["samples"]
    ours = n / direct["seconds"]
    ref = n / ref_s
    print(f"S3 sink (s3.c, {S3_BATCHES} PUTs of {S3_ROWS} event samples, gzip NDJSON, s3rver):")
    print(f"  graind to s3rver          {ours / 1e3:7.1f} k samples/s "
          f"({direct['raw_bytes'] / direct['seconds'] / 2**20:.0f} MiB/s of NDJSON; "
          f"JSON encoding alone {n / direct['encode_seconds'] / 1e3:.0f} k samples/s)")
    print(f"  graind via SigV4 proxy    {n / proxied['seconds'] / 1e3:7.1f} k samples/s "
          f"({verified} PUTs verified, {rejected} rejected)")
    print(f"  Python zlib + http.client {ref / 1e3:7.1f} k samples/s (same NDJSON, "
          f"{ref_bytes} B gzipped vs graind's {direct['bytes']:.0f} B)")
    report.record("sinks.s3.graind", ours, "samples/s")
    report.record("sinks.s3.python", ref, "samples/s")
    report.record("sinks.s3.ratio", ours / ref, "ratio", goal=">= 1.5", met=ours / ref >= 1.5)
    print(f"  ratio graind/reference {ours / ref:.2f}; gzip ratio "
          f"{direct['bytes'] / direct['raw_bytes']:.3f} "
          f"({direct['raw_bytes'] / n:.0f} B of JSON per sample, "
          f"{direct['bytes'] / n:.1f} B gzipped)")


# ---------------------------------------------------------------- 3. forwarding

class Agent:
    """graind on a free port, its own state dir and pin root."""

    def __init__(self, graind_bin, state_dir):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.makedirs(state_dir, exist_ok=True)
        with open(os.path.join(state_dir, "graind.log"), "ab") as log:
            self.proc = subprocess.Popen(
                [graind_bin, "--listen", f"127.0.0.1:{port}", "--grpc-listen", "none",
                 "--state-dir", state_dir,
                 "--pin-root", PIN_ROOT], stdout=subprocess.PIPE, stderr=log)
        while b"reader token" not in self.proc.stdout.readline():
            if self.proc.poll() is not None:
                raise RuntimeError(f"graind did not start (see {state_dir}/graind.log)")
        token = open(os.path.join(state_dir, "admin.token")).read().strip()
        self.url = f"http://127.0.0.1:{port}"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.tick = os.sysconf("SC_CLK_TCK")

    def call(self, method, path, **kw):
        r = self.http.request(method, self.url + path, **kw)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r

    def cpu(self):
        """utime + stime of the whole process, in seconds."""
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def metrics(self):
        text = self.call("GET", "/metrics").text
        return {m.group(1): float(m.group(2))
                for m in re.finditer(r"^(graind_[a-z_]+) ([0-9.e+-]+)$", text, re.M)}

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_stored(agent, before, produced, timeout=60):
    """Until the collector has stored or dropped all it was given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = agent.metrics()
        done = (m["graind_samples_stored_total"] - before["graind_samples_stored_total"] +
                m["graind_samples_dropped_total"] - before["graind_samples_dropped_total"])
        if done >= produced and m["graind_samples_queue_depth"] == 0:
            return (m["graind_samples_stored_total"] - before["graind_samples_stored_total"],
                    m["graind_samples_dropped_total"] - before["graind_samples_dropped_total"])
        time.sleep(0.02)
    raise RuntimeError("the collector did not store the samples in time")


def wait_forwarded(agent, sink, timeout=60):
    """Until the sink has nothing left to send; its health."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = agent.call("GET", f"/v1/sinks/{sink}").json().get("health")
        if h is not None and int(h.get("lagRows", 0)) == 0:
            return h
        time.sleep(0.02)
    raise RuntimeError(f"sink {sink} did not catch up in time: {h}")


def forwarding_round(agent, sha, name, sink_body):
    """The getpid() workload under a fresh probe, with sink_body (or no
    sink): graind's CPU seconds from the go until it has stored (and the
    sink forwarded) everything; samples stored; the sink's health."""
    loop = subprocess.Popen([sys.executable, "-c", PACED_GETPID, str(FORWARD_EVENTS),
                             str(FORWARD_RATE)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(loop.stdout.readline())
        agent.call("PUT", f"/v1/probes/{name}", json={
            "objectSha256": sha,
            "programs": [{"program": "emit_getpid", "attach": {
                "tracepoint": {"category": "syscalls", "name": "sys_enter_getpid"}}}],
            "constants": [{"name": "target_pid", "value": str(pid)}],
            "outputs": [{"map": "counts", "none": True}]})
        if sink_body:
            agent.call("PUT", f"/v1/sinks/{name}",
                       json={**sink_body, "selector": {"probes": [name]}})
            wait_forwarded(agent, name)
        time.sleep(0.3)     # the collector follows the ring buffer
        before, cpu0 = agent.metrics(), agent.cpu()
        loop.stdin.write("go\n")
        loop.stdin.flush()
        loop.stdout.readline()
        loop.wait()
        stored, dropped = wait_stored(agent, before, FORWARD_EVENTS)
        health = wait_forwarded(agent, name) if sink_body else {}
        used = agent.cpu() - cpu0
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    if sink_body:
        agent.call("DELETE", f"/v1/sinks/{name}")
    agent.call("DELETE", f"/v1/probes/{name}")
    return used, int(stored), int(dropped), health


class UdpDrain:
    """A UDP socket on loopback that reads and counts what comes."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            self.lines += data.count(b"\n") + 1

    def close(self):
        self.stopping = True
        self.thread.join()
        self.sock.close()


def bench_forwarding(graind_bin, test_bpf, peer, work):
    agent = Agent(graind_bin, os.path.join(work, "agent"))
    drain = UdpDrain()
    try:
        obj = os.path.join(test_bpf, "bench_events.bpf.o")
        sha = agent.call("POST", "/v1/objects?name=bench_events", data=open(obj, "rb").read(),
                         headers={"Content-Type": "application/octet-stream"}).json()["sha256"]
        rounds = [("none", None),
                  ("statsd", {"statsd": {"host": "127.0.0.1", "port": drain.port,
                                         "prefix": "graind", "flushIntervalMs": 100}})]
        if peer:
            rounds.append(("s3", {"s3": {
                "endpoint": f"http://127.0.0.1:{peer.s3rver_port}", "bucket": peer.bucket,
                "accessKeyId": "S3RVER", "secretAccessKey": "S3RVER", "pathStyle": True,
                "keyPrefix": "forwarding", "batchMaxAgeMs": 200}}))
        print(f"forwarding cost: graind CPU per 1000 event samples ({FORWARD_EVENTS} "
              f"getpid() at {FORWARD_RATE // 1000} k/s under a tracepoint probe; median "
              f"of {FORWARD_REPEATS} rounds taken in turn, min-max):")
        per_k = {kind: [] for kind, _ in rounds}
        stored = dropped = sent = 0
        for rep in range(FORWARD_REPEATS):
            for kind, body in rounds:
                used, n, lost, health = forwarding_round(agent, sha, f"fwd-{kind}-{rep}", body)
                per_k[kind].append(1e6 * used / max(n, 1))     # ms per 1000
                stored, dropped = stored + n, dropped + lost
                sent += int(health.get("samplesSent", 0))
        base = statistics.median(per_k["none"])
        for kind, _ in rounds:
            ms = statistics.median(per_k[kind])
            added = 100 * (ms - base) / base
            share = "" if kind == "none" else (
                f", forwarding {ms - base:+5.2f} ms = {added:+3.0f} % "
                f"of the pipeline's CPU (goal <= +50 %: {report.met_text(added <= 50)})")
            report.record(f"sinks.forwarding.{kind}", ms, "ms per 1000 samples")
            if kind != "none":
                report.record(f"sinks.forwarding.{kind}.added", added, "%", goal="<= 50",
                              met=added <= 50)
            print(f"  {'no sink' if kind == 'none' else kind + ' sink':<12} {ms:6.2f} ms "
                  f"({min(per_k[kind]):.2f}-{max(per_k[kind]):.2f}){share}")
        print(f"  ({stored} samples stored, {dropped} dropped, {sent} forwarded; the StatsD "
              f"peer got {drain.lines} lines: one '<map>.events' counter per batch)")
    finally:
        drain.close()
        agent.stop()


# ---------------------------------------------------------------- main

def main(build_dir, graind_bin):
    """Build the drivers against build_dir's generated code, run the three
    benchmarks with graind_bin, print their lines."""
    build_dir = os.path.join(ROOT, build_dir)
    test_bpf = os.environ.get("GRAIND_TEST_BPF", os.path.join(build_dir, "tests", "bpf"))
    work = tempfile.mkdtemp(prefix="graind-sinkbench-")
    peer = None
    try:
        tools = build_drivers(build_dir, work)
        bench_statsd(tools)
        if peers_ready(build_dir):
            from peers import S3Peer
            peer = S3Peer(work, S3_KEY, S3_SECRET, bucket="sinkbench").start()
            bench_s3(tools, peer, work)
        bench_forwarding(graind_bin, test_bpf, peer, work)
    finally:
        if peer:
            peer.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    build = args[0] if args else os.environ.get("BUILD", "build")
    main(build, args[1] if len(args) > 1 else os.environ.get(
        "GRAIND_BIN", os.path.join(ROOT, build, "graind")))
