"""graind benchmarks. Figures are ratios against a reference measured in
the same run, since the machines are noisy. Run with `make bench`."""

import hashlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

import bench_grpc
import bench_sinks
import bench_console
import bench_fleet
import bench_tls
import report

BUILD = os.environ.get("BUILD", "build")
GRAIND_BIN = os.environ["GRAIND_BIN"]
GRAINCTL_BIN = os.environ.get("GRAINCTL_BIN", os.path.join(os.path.dirname(GRAIND_BIN),
                                                           "grainctl"))
THREADS = 4  # graind's default --threads
HERE = os.path.dirname(os.path.abspath(__file__))
# Probes pinned apart from a graind that may run on the host.
PIN_ROOT = os.environ.get("GRAIND_PIN_ROOT", "/sys/fs/bpf/graind-bench")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_agent(state_dir):
    port = free_port()
    os.makedirs(state_dir, exist_ok=True)
    # No gRPC listener: two agents of one run would both claim its default port.
    proc = subprocess.Popen([GRAIND_BIN, "--listen", f"127.0.0.1:{port}", "--grpc-listen", "none",
                             "--state-dir", state_dir, "--threads", str(THREADS),
                             "--pin-root", PIN_ROOT],
                            stdout=subprocess.PIPE,
                            stderr=open(os.path.join(state_dir, "graind.log"), "ab"))
    while b"reader token" not in proc.stdout.readline():
        if proc.poll() is not None:
            sys.exit("graind did not start")
    token = open(os.path.join(state_dir, "admin.token")).read().strip()
    return proc, f"http://127.0.0.1:{port}", token


def large_object(workdir, programs=200):
    """An object with many programs, compiled here with clang."""
    src = os.path.join(workdir, "large.bpf.c")
    with open(src, "w") as f:
        f.write('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n')
        f.write("struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 64);"
                " __type(key, __u32); __type(value, __u64); } counts SEC(\".maps\");\n")
        for i in range(programs):
            f.write(f'SEC("xdp") int prog{i}(struct xdp_md *ctx) {{\n'
                    f"  __u32 k = (ctx->rx_queue_index + {i}) & 63;\n"
                    "  __u64 *v = bpf_map_lookup_elem(&counts, &k);\n"
                    "  if (v) __sync_fetch_and_add(v, 1);\n"
                    "  return XDP_PASS;\n}\n")
        f.write('char LICENSE[] SEC("license") = "GPL";\n')
    obj = os.path.join(workdir, "large.bpf.o")
    subprocess.run(["clang", "-target", "bpf", "-g", "-O2", f"-I{BUILD}",
                    f"-I/usr/include/{os.uname().machine}-linux-gnu", "-c", src, "-o", obj],
                   check=True)
    return open(obj, "rb").read()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def wrk(url, token=None, seconds=5):
    cmd = ["wrk", "-t2", "-c50", f"-d{seconds}s", "--latency"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def bench_probes(url, token, work):
    """Attach+detach through the API vs bpftool load/attach/detach, same object."""
    auth = {"Authorization": f"Bearer {token}"}
    obj_path = os.path.join(os.environ["GRAIND_TEST_BPF"], "accept.bpf.o")
    blob = open(obj_path, "rb").read()
    sha = requests.post(url + "/v1/objects?name=accept", data=blob, headers={
        **auth, "Content-Type": "application/octet-stream"}).json()["sha256"]
    spec = {"objectSha256": sha, "programs": [
        {"program": "count_packets", "attach": {"xdp": {"ifname": "lo", "mode": "XDP_MODE_SKB"}}}]}
    cycles = 10

    t0 = time.monotonic()
    for _ in range(cycles):
        r = requests.put(url + "/v1/probes/bench", json=spec, headers=auth)
        r.raise_for_status()
        requests.delete(url + "/v1/probes/bench", headers=auth).raise_for_status()
    ours = (time.monotonic() - t0) / cycles

    pin = f"/sys/fs/bpf/graind-bench-xdp-{os.getpid()}"
    t0 = time.monotonic()
    for _ in range(cycles):
        subprocess.run(["bpftool", "prog", "load", obj_path, pin, "type", "xdp"],
                       check=True, capture_output=True)
        subprocess.run(["bpftool", "net", "attach", "xdpgeneric", "pinned", pin, "dev", "lo"],
                       check=True, capture_output=True)
        subprocess.run(["bpftool", "net", "detach", "xdpgeneric", "dev", "lo"],
                       check=True, capture_output=True)
        os.unlink(pin)
    ref = (time.monotonic() - t0) / cycles
    met = ours <= 0.5 * ref
    print(f"probe attach+detach cycle: graind API {1000 * ours:.1f} ms, "
          f"bpftool {1000 * ref:.1f} ms, ratio {ours / ref:.2f} (goal <= 0.5: "
          f"{report.met_text(met)})")
    report.record("probes.attach_detach.graind", 1000 * ours, "ms")
    report.record("probes.attach_detach.bpftool", 1000 * ref, "ms")
    report.record("probes.attach_detach.ratio", ours / ref, "ratio", goal="<= 0.5", met=met)
    return sha


def bench_reconcile(work, sha_probes=100):
    """Start-up time with 100 pinned probes to re-adopt, vs with none."""
    state = os.path.join(work, "reconcile")
    t0 = time.monotonic()
    proc, url, token = start_agent(state)
    empty = time.monotonic() - t0
    auth = {"Authorization": f"Bearer {token}"}
    # A tracepoint runs at most 64 programs: half the probes on a tracepoint,
    # half on a raw tracepoint.
    specs = []
    for obj, prog, attach in (
            ("accept.bpf.o", "trace_nanosleep",
             {"tracepoint": {"category": "syscalls", "name": "sys_enter_nanosleep"}}),
            ("hooks.bpf.o", "count_sys_enter", {"rawTracepoint": {"name": "sys_enter"}})):
        path = os.path.join(os.environ["GRAIND_TEST_BPF"], obj)
        sha = requests.post(url + "/v1/objects", data=open(path, "rb").read(), headers={
            **auth, "Content-Type": "application/octet-stream"}).json()["sha256"]
        specs.append({"objectSha256": sha, "programs": [{"program": prog, "attach": attach}]})
    try:
        for i in range(sha_probes):
            r = requests.put(url + f"/v1/probes/rc{i}", json=specs[i % 2], headers=auth)
            if r.status_code >= 300:
                sys.exit(f"PUT rc{i}: {r.status_code} {r.text}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    t0 = time.monotonic()
    proc, url, token = start_agent(state)
    full = time.monotonic() - t0
    print(f"start-up with {sha_probes} pinned probes to adopt: {1000 * full:.0f} ms, "
          f"with none: {1000 * empty:.0f} ms, ratio {full / empty:.1f}")
    report.record(f"reconcile.startup_{sha_probes}_probes", 1000 * full, "ms")
    report.record("reconcile.startup_empty", 1000 * empty, "ms")
    auth = {"Authorization": f"Bearer {token}"}
    for i in range(sha_probes):
        requests.delete(url + f"/v1/probes/rc{i}", headers=auth)
    proc.send_signal(signal.SIGTERM)
    proc.wait()


def bench_dns(work):
    """The built-in DNS parser's cost per packet in the kernel, as a ratio
    to an XDP program that only passes (tests/bench/dns_bench.c)."""
    obj = os.path.join(os.environ.get("GRAIND_BUILTIN_BPF", os.path.join(BUILD, "bpf")),
                       "dns.bpf.o")
    bench_bin = os.path.join(work, "dns_bench")
    libbpf = subprocess.run(["pkg-config", "--cflags", "--libs", "libbpf"],
                            capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", "-O2", "-o", bench_bin, os.path.join(HERE, "dns_bench.c")] + libbpf,
                   check=True)
    out = subprocess.run([bench_bin, obj], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"dns_bench failed: {out.stderr.strip()}")
    print(out.stdout.strip())
    for what, ns in re.findall(r"([\w -]+?) ([\d.]+) ns/packet", out.stdout):
        report.record("dns." + what.strip().replace(" ", "_"), float(ns), "ns/packet")


def bench_objects(url, auth, work):
    """Upload and verify of a 200-program object against bpftool loadall,
    and GET /v1/objects against a bare libmicrohttpd responder."""
    blob = large_object(work)
    t0 = time.monotonic()
    r = requests.post(url + "/v1/objects?name=large", data=blob, headers={
        **auth, "Content-Type": "application/octet-stream"})
    t1 = time.monotonic()
    r.raise_for_status()
    sha = hashlib.sha256(blob).hexdigest()
    v = requests.post(url + f"/v1/objects/{sha}:verify", headers=auth)
    t2 = time.monotonic()
    v.raise_for_status()
    n = len(v.json().get("programs", []))
    # Reference: the same object loaded once by bpftool (all programs together).
    t3 = time.monotonic()
    pin = f"/sys/fs/bpf/graind-bench-{os.getpid()}"
    subprocess.run(["bpftool", "prog", "loadall", os.path.join(work, "large.bpf.o"), pin],
                   check=True, capture_output=True)
    t4 = time.monotonic()
    shutil.rmtree(pin, ignore_errors=True)
    print(f"upload of a {len(blob)} B object with {n} programs: {1000 * (t1 - t0):.1f} ms")
    report.record("objects.upload", 1000 * (t1 - t0), "ms")
    report.record("objects.verify", 1000 * (t2 - t1), "ms")
    report.record("objects.verify_over_bpftool", (t2 - t1) / (t4 - t3), "ratio")
    print(f"verify ({n} programs): {1000 * (t2 - t1):.1f} ms; "
          f"bpftool loadall of the same object: {1000 * (t4 - t3):.1f} ms; "
          f"ratio {(t2 - t1) / (t4 - t3):.2f}")

    # HTTP: GET /v1/objects against a bare libmicrohttpd responder.
    listing = requests.get(url + "/v1/objects", headers=auth).content
    body_file = os.path.join(work, "body.json")
    open(body_file, "wb").write(listing)
    bare_bin = os.path.join(work, "bare_mhd")
    subprocess.run(["cc", "-O2", "-o", bare_bin, os.path.join(HERE, "bare_mhd.c"),
                    "-lmicrohttpd", "-lpthread"], check=True)
    bare_port = free_port()
    bare = subprocess.Popen([bare_bin, str(bare_port), str(THREADS), body_file],
                            stdout=subprocess.PIPE)
    bare.stdout.readline()
    try:
        ref = wrk(f"http://127.0.0.1:{bare_port}/v1/objects")
        ours = wrk(url + "/v1/objects", auth["Authorization"].split()[1])
    finally:
        bare.send_signal(signal.SIGTERM)
        bare.wait()
    met = ours >= 0.8 * ref
    print(f"GET /v1/objects ({len(listing)} B): graind {ours:.0f} req/s, "
          f"bare libmicrohttpd {ref:.0f} req/s, ratio {ours / ref:.2f} (goal >= 0.8: "
          f"{report.met_text(met)})")
    report.record("objects.list.graind", ours, "req/s")
    report.record("objects.list.bare_mhd", ref, "req/s")
    report.record("objects.list.ratio", ours / ref, "ratio", goal=">= 0.8", met=met)


# ---------------------------------------------------------------- samples

XDP_SECONDS = 2.0       # source 1 unpaced: how long BPF_PROG_TEST_RUN runs
GETPID_CALLS = 300000   # source 2 unpaced: getpid() calls of the workload
# Zero-loss throughput: the highest paced rate at which every record of
# CONFIRM_SECONDS is delivered. The search takes shorter steps; only the
# rate it ends on is run for CONFIRM_SECONDS.
STEP_SECONDS = 2.0
CONFIRM_SECONDS = 10.0
SEARCH_STEPS = 7
CONFIRM_TRIES = 4
SEARCH_CLOSE = 1.06     # bisect until the bounds are this close
KEPT_UP = 0.97          # a producer below this share of its rate could not go faster
# A step whose records were all delivered but this long (a share of the
# step) after the producer stopped was held by the buffers, not kept up
# with: 8 MiB of ring hold a 2 s step's excess, not a 10 s run's.
LAG_SHARE = 0.1


def metrics(url, auth):
    text = requests.get(url + "/metrics", headers=auth).text
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(graind_[a-z_]+) ([0-9.e+-]+)$", text, re.M)}


def key_values(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


def put_probe(url, auth, name, spec):
    r = requests.put(url + f"/v1/probes/{name}", json=spec, headers=auth)
    if r.status_code >= 300:
        sys.exit(f"PUT probe {name}: {r.status_code} {r.text}")
    states = [p.get("state") for p in r.json().get("programs", [])]
    if states != ["PROGRAM_ATTACHED"]:
        sys.exit(f"probe {name} not attached: {r.text}")
    time.sleep(0.2)     # the collector opens the ring buffer


def drained(url, auth, before, timeout=120):
    """Wait until the collector has stored or dropped everything it made;
    the samples stored since `before` and when the last one was."""
    last, last_t = None, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = metrics(url, auth)
        stored = m["graind_samples_stored_total"] - before["graind_samples_stored_total"]
        if stored != last:
            last, last_t = stored, time.monotonic()
        elif (m["graind_samples_queue_depth"] == 0 and
              m["graind_samples_collected_total"] ==
              m["graind_samples_stored_total"] + m["graind_samples_dropped_total"] and
              time.monotonic() - last_t > 0.5):
            break
        time.sleep(0.02)
    m = metrics(url, auth)
    return last, last_t, m["graind_samples_dropped_total"] - before["graind_samples_dropped_total"]


def last_aggregate(url, auth, probe):
    """The largest events.count the probe's aggregate has reported."""
    count, after = 0, 0
    while True:
        r = requests.get(url + "/v1/samples", params={
            "probe": probe, "after": after, "limit": 1000}, headers=auth).json()
        for s in r.get("samples", []):
            if s.get("name") == "events.count":
                count = max(count, s.get("value", 0))
            after = int(s.get("id", after))
        if len(r.get("samples", [])) < 1000:
            return int(count)


def aggregated_count(url, auth, probe, produced, timeout=8, settle=2.5):
    """The last events.count of the probe's aggregate (flushed every
    second), once it reaches what was produced or stays put for `settle`
    seconds."""
    count, changed = 0, time.monotonic()
    deadline = changed + timeout
    while time.monotonic() < deadline:
        now = last_aggregate(url, auth, probe)
        if now != count:
            count, changed = now, time.monotonic()
        if count >= produced or time.monotonic() - changed > settle:
            break
        time.sleep(0.25)
    return count


class Trial:
    """One run of a source into a consumer: records produced and
    delivered, those lost as ring full (or, for bpftrace, reported lost)
    and in graind's queue, the rate the producer kept, how long until all
    was delivered, how long of that after the producer stopped (None where
    not measured), and the workload's ns per getpid() call."""

    def __init__(self, produced, delivered, full, dropped, kept, seconds, ns_per_call=0.0,
                 lag=None):
        self.produced, self.delivered = int(produced), int(delivered)
        self.full, self.dropped = int(full), int(dropped)
        self.kept, self.seconds, self.ns_per_call = kept, seconds, ns_per_call
        self.lag = lag

    def lossless(self):
        return self.delivered >= self.produced and not self.full and not self.dropped

    def behind(self, step):
        """For a search step of `step` seconds: delivered late."""
        return step is not None and self.lag is not None and self.lag > LAG_SHARE * step

    def held(self, rate, step=None):
        """Everything delivered, at the rate asked (and, for a step, in time)."""
        return self.lossless() and self.kept >= KEPT_UP * rate and not self.behind(step)

    def outcome(self, rate, step=None):
        if not self.lossless():
            return f"lost {self.produced - self.delivered}"
        if self.kept < KEPT_UP * rate:
            return f"producer kept {self.kept / 1e6:.3f}"
        return f"{self.lag:.1f} s late" if self.behind(step) else "ok"


def rate_line(key, what, t):
    """An unpaced run's line: the rate delivered and what was lost."""
    rate = t.delivered / t.seconds
    lost = t.produced - t.delivered
    print(f"  {what:<34} {rate / 1e6:6.2f} M events/s delivered, "
          f"{t.delivered}/{t.produced} ({lost} lost: {t.full} ring full, {t.dropped} agent queue)")
    report.record(f"samples.{key}.unpaced", rate, "events/s")
    report.record(f"samples.{key}.unpaced_lost", lost, "events")
    return rate


def zero_loss_rate(trial, lo, hi):
    """The highest rate in [lo, hi] that trial(rate, seconds) holds: a
    geometric bisection in STEP_SECONDS steps, then the rate found run for
    CONFIRM_SECONDS, lower each time it does not hold. The rate
    (0 when none held), its confirming Trial, the steps' log, and whether
    the search stopped at what the producer could do rather than at a
    loss."""
    good, bad, log, producer_bound = lo, hi, [], True
    for _ in range(SEARCH_STEPS):
        if bad / good < SEARCH_CLOSE:
            break
        mid = math.sqrt(good * bad)
        t = trial(mid, STEP_SECONDS)
        log.append(f"{mid / 1e6:.3f} {t.outcome(mid, STEP_SECONDS)}")
        if t.held(mid, STEP_SECONDS):
            good = mid
        else:
            bad, producer_bound = mid, t.lossless() and not t.behind(STEP_SECONDS)
    failed = None
    for _ in range(CONFIRM_TRIES):
        t = trial(good, CONFIRM_SECONDS)
        log.append(f"{good / 1e6:.3f} x {CONFIRM_SECONDS:.0f} s {t.outcome(good)}")
        if t.held(good):
            return confirm_between(trial, good, t, failed, log) + (producer_bound,)
        producer_bound = producer_bound and t.lossless()
        # A consumer slower over 10 s than over 2 s: try under what it
        # kept up with this time.
        failed, good = good, 0.9 * min(good, t.delivered / CONFIRM_SECONDS)
    return 0.0, t, log, False


def confirm_between(trial, good, t, failed, log):
    """Once, the rate halfway between a confirmed one and one that failed
    its confirmation, when they are far apart. The better (rate, Trial)."""
    if failed is None or failed / good < 1.15:
        return good, t, log
    mid = math.sqrt(good * failed)
    t_mid = trial(mid, CONFIRM_SECONDS)
    log.append(f"{mid / 1e6:.3f} x {CONFIRM_SECONDS:.0f} s {t_mid.outcome(mid)}")
    return (mid, t_mid, log) if t_mid.held(mid) else (good, t, log)


def zero_loss_line(key, what, trial, lo, hi):
    """Search, print and record one consumer's zero-loss throughput."""
    rate, t, log, producer_bound = zero_loss_rate(trial, lo, hi)
    limit = " (a floor: the producer could go no faster)" if producer_bound else ""
    print(f"  {what:<34} {rate / 1e6:6.3f} M events/s: {t.delivered}/{t.produced} in "
          f"{CONFIRM_SECONDS:.0f} s{limit}")
    print(f"      search (M events/s, {STEP_SECONDS:.0f} s steps): {', '.join(log)}")
    return report.record(f"samples.{key}.zero_loss", rate, "events/s")


def goal_line(key, text, ours, ref, factor):
    """Print and record whether ours >= factor x ref."""
    met = ref > 0 and ours >= factor * ref
    ratio = ours / ref if ref else 0.0
    print(f"  goal {text}: {ours / 1e6:.3f} / {ref / 1e6:.3f} = {ratio:.2f}: "
          f"{report.met_text(met)}")
    report.record(f"samples.{key}", ratio, "ratio", goal=f">= {factor:g}", met=met)


class Samples:
    """The samples pipeline's sources against its consumers: (a) the bare
    consumer of ringbuf_bench.c, (b) graind storing every record, (c)
    bpftrace printing the same fields, (d) graind counting by pid."""

    def __init__(self, url, auth, work):
        self.url, self.auth, self.work = url, auth, work
        self.obj = os.path.join(os.environ["GRAIND_TEST_BPF"], "bench_events.bpf.o")
        self.tool = os.path.join(work, "ringbuf_bench")
        libbpf = subprocess.run(["pkg-config", "--cflags", "--libs", "libbpf"],
                                capture_output=True, text=True, check=True).stdout.split()
        subprocess.run(["cc", "-O2", "-o", self.tool, os.path.join(HERE, "ringbuf_bench.c")] +
                       libbpf + ["-lpthread"], check=True)
        self.sha = requests.post(url + "/v1/objects?name=bench_events",
                                 data=open(self.obj, "rb").read(),
                                 headers={**auth, "Content-Type": "application/octet-stream"}
                                 ).json()["sha256"]
        self.quiet = {"map": "counts", "none": True}
        self.agg = {"map": "events", "events": {"countBy": ["pid"]}}
        self.runs = 0       # each run a probe of its own: no samples of another
        self.ifname = None

    def tool_run(self, *args):
        out = subprocess.run([self.tool] + [str(a) for a in args], capture_output=True,
                             text=True)
        if out.returncode != 0:
            sys.exit(f"ringbuf_bench {args[0]}: {out.stderr.strip()}")
        return key_values(out.stdout)

    def graind_run(self, spec, trigger, aggregate):
        """Attach `spec` as a new probe, run trigger(pin_dir) (it returns
        the workload's key=values), measure what graind delivered."""
        self.runs += 1
        name = f"rb{self.runs}"
        pin_dir = os.path.join(PIN_ROOT, name)
        put_probe(self.url, self.auth, name, spec)
        before = metrics(self.url, self.auth)
        t0 = time.monotonic()
        out = trigger(pin_dir)
        t_trigger = time.monotonic() - t0
        counts = self.tool_run("counts", pin_dir)
        produced = counts["produced"]
        if aggregate:
            delivered = aggregated_count(self.url, self.auth, name, produced)
            seconds, dropped = t_trigger, 0
        else:
            delivered, t_last, dropped = drained(self.url, self.auth, before)
            seconds = max(t_last, t0 + t_trigger) - t0
            lag = seconds - t_trigger
        requests.delete(self.url + f"/v1/probes/{name}", headers=self.auth).raise_for_status()
        return Trial(produced, delivered, counts["full"], dropped, out.get("rate", 0), seconds,
                     out.get("ns_per_call", 0), None if aggregate else lag)

    # ---- source 1: XDP under BPF_PROG_TEST_RUN

    def xdp_bare(self, rate, seconds):
        kv = self.tool_run("xdp-bare", self.obj, self.ifname, seconds, rate)
        return Trial(kv["produced"], kv["delivered"], kv["full"], 0, kv["rate"], kv["seconds"])

    def xdp_graind(self, outputs):
        spec = {"objectSha256": self.sha, "outputs": outputs, "programs": [
            {"program": "emit_xdp",
             "attach": {"xdp": {"ifname": self.ifname, "mode": "XDP_MODE_SKB"}}}]}

        def run(rate, seconds):
            return self.graind_run(
                spec, lambda pin: self.tool_run("xdp-trigger", pin, seconds, rate),
                self.agg in outputs)
        return run

    def source_xdp(self):
        print("samples pipeline, source 1: 64-byte records from BPF_PROG_TEST_RUN "
              "(XDP, repeat), paced in batches each millisecond")
        print(f"  unpaced, {XDP_SECONDS:.0f} s:")
        bare = self.xdp_bare(0, XDP_SECONDS)
        ref = rate_line("xdp.bare", "(a) bare consumer, graind's way", bare)
        b = self.xdp_graind([self.quiet])
        ours = rate_line("xdp.graind", "(b) graind (decode + SQLite)", b(0, XDP_SECONDS))
        d = self.xdp_graind([self.quiet, self.agg])
        rate_line("xdp.graind_countby", "(d) graind, countBy pid", d(0, XDP_SECONDS))
        print(f"  unpaced ratio graind/bare {ours / ref:.2f}")
        print(f"  zero-loss throughput, all of {CONFIRM_SECONDS:.0f} s delivered "
              "((c) bpftrace has no XDP probe: see source 2):")
        hi = 0.95 * bare.kept   # the producer unpaced, a little under
        zl_a = zero_loss_line("xdp.bare", "(a) bare consumer, graind's way", self.xdp_bare,
                              min(ref, hi) / 8, hi)
        zl_b = zero_loss_line("xdp.graind", "(b) graind (decode + SQLite)", b, ours / 8, hi)
        zero_loss_line("xdp.graind_countby", "(d) graind, countBy pid", d, ours / 8, hi)
        goal_line("xdp.zero_loss_graind_over_bare", "(b) >= 0.5 x (a)", zl_b, zl_a, 0.5)

    # ---- source 2: the getpid() tracepoint

    def getpid_bare(self, rate, seconds):
        calls = int(rate * seconds) if rate else GETPID_CALLS
        kv = self.tool_run("getpid-bare", self.obj, calls, rate)
        return Trial(kv["produced"], kv["delivered"], kv["full"], 0, kv["rate"], kv["seconds"],
                     kv["ns_per_call"])

    def getpid_graind(self, outputs):
        tp = [{"program": "emit_getpid", "attach": {
            "tracepoint": {"category": "syscalls", "name": "sys_enter_getpid"}}}]

        def run(rate, seconds):
            # The workload's pid is a constant of the probe: the loop
            # starts first and waits for the word to go.
            calls = int(rate * seconds) if rate else GETPID_CALLS
            loop = subprocess.Popen([self.tool, "getpid-loop", str(calls), str(rate)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            pid = int(loop.stdout.readline().split("=")[1])

            def go(_pin):
                loop.stdin.write("go\n")
                loop.stdin.flush()
                out = key_values(loop.stdout.readline())
                loop.wait()
                return out
            spec = {"objectSha256": self.sha, "programs": tp, "outputs": outputs,
                    "constants": [{"name": "target_pid", "value": str(pid)}]}
            return self.graind_run(spec, go, self.agg in outputs)
        return run

    def getpid_bpftrace(self, rate, seconds):
        calls = int(rate * seconds) if rate else GETPID_CALLS
        return bpftrace_getpid(self.work, calls, rate)

    def source_getpid(self):
        print("samples pipeline, source 2: tracepoint sys_enter_getpid, a getpid() loop "
              "paced in batches each millisecond")
        print(f"  unpaced, {GETPID_CALLS} calls:")
        alone = getpid_workload(self.work, lambda pid: None)["ns_per_call"]
        bare = self.getpid_bare(0, 0)
        rate_line("getpid.bare", "(a) bare consumer, graind's way", bare)
        b, d = self.getpid_graind([self.quiet]), self.getpid_graind([self.quiet, self.agg])
        tb = b(0, 0)
        ours = rate_line("getpid.graind", "(b) graind (decode + SQLite)", tb)
        tc = self.getpid_bpftrace(0, 0)
        bt = rate_line("getpid.bpftrace", "(c) bpftrace printf", tc)
        td = d(0, 0)
        rate_line("getpid.graind_countby", "(d) graind, countBy pid", td)
        self.getpid_costs(alone, bare, tb, tc, td)
        print(f"  zero-loss throughput, all of {CONFIRM_SECONDS:.0f} s delivered:")
        hi = 0.95 * bare.kept
        zl_b = zero_loss_line("getpid.graind", "(b) graind (decode + SQLite)", b, ours / 8, hi)
        zl_c = zero_loss_line("getpid.bpftrace", "(c) bpftrace printf", self.getpid_bpftrace,
                              bt / 8, min(hi, 8 * bt))
        goal_line("getpid.zero_loss_graind_over_bpftrace",
                  "(b) >= 10 x (c), both on this tracepoint", zl_b, zl_c, 10)
        print("  (BCC is not measured: it compiles probes against kernel headers, "
              "which this kernel does not ship)")

    def getpid_costs(self, alone, bare, tb, tc, td):
        """What each consumer's probe costs the unpaced getpid() loop."""
        costs = {"alone": alone, "bare consumer": bare.ns_per_call, "graind": tb.ns_per_call,
                 "graind countBy": td.ns_per_call, "bpftrace": tc.ns_per_call}
        for what, ns in costs.items():
            report.record(f"samples.getpid.ns_per_call.{what.replace(' ', '_')}", ns, "ns")
        met = tb.held(0) and tb.ns_per_call < tc.ns_per_call
        report.record("samples.getpid.graind_all_and_cheaper_than_bpftrace", int(met), "bool",
                      goal="graind delivers all, slows less than bpftrace", met=met)
        print("  getpid() ns/call: " + ", ".join(f"{k} {v:.0f}" for k, v in costs.items()) +
              f" (goal: graind delivers all, slows less than bpftrace: {report.met_text(met)})")


def getpid_workload(work, attach, detach=None, calls=GETPID_CALLS, rate=0):
    """Start the getpid() loop, attach(pid) something to it, run it; its
    key=values (ns_per_call, rate)."""
    loop = subprocess.Popen([os.path.join(work, "ringbuf_bench"), "getpid-loop",
                             str(calls), str(rate)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    pid = int(loop.stdout.readline().split("=")[1])
    attach(pid)
    loop.stdin.write("go\n")
    loop.stdin.flush()
    line = loop.stdout.readline()
    loop.wait()
    if detach:
        detach()
    return key_values(line)


def settled(path, quiet=0.5, timeout=60):
    """Wait until the file stops growing for `quiet` seconds; how long it
    still grew."""
    size, t0 = -1, time.monotonic()
    changed, deadline = t0, t0 + timeout
    while time.monotonic() < deadline and time.monotonic() - changed <= quiet:
        now = os.path.getsize(path)
        if now != size:
            size, changed = now, time.monotonic()
        time.sleep(0.05)
    return changed - t0


def bpftrace_getpid(work, calls=GETPID_CALLS, rate=0):
    """The same fields printed by bpftrace for the same tracepoint, into a
    tmpfs file (so that the lines can be counted); a Trial."""
    out_file = tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="graind-bench-bt-",
                                           delete=False).name
    bt, lag = None, None

    def attach(pid):
        nonlocal bt
        prog = ("tracepoint:syscalls:sys_enter_getpid /pid == %d/ "
                "{ printf(\"%%d %%s %%llu %%d %%d %%d %%d\\n\", pid, comm, nsecs, "
                "cpu, 7, 21, 42); }" % pid)
        bt = subprocess.Popen(["bpftrace", "-o", out_file, "-e", prog],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while "Attaching" not in open(out_file).read(100):
            if bt.poll() is not None or time.monotonic() > deadline:
                sys.exit("bpftrace did not attach")
            time.sleep(0.05)
        time.sleep(0.2)

    def detach():
        nonlocal lag
        lag = settled(out_file)     # what its perf buffer still holds, printed
        bt.send_signal(signal.SIGINT)
        try:
            bt.wait(timeout=15)
        except subprocess.TimeoutExpired:
            bt.kill()
            bt.wait()

    t0 = time.monotonic()
    out = getpid_workload(work, attach, detach, calls, rate)
    seconds = time.monotonic() - t0
    delivered = lost = 0
    with open(out_file) as f:
        for line in f:
            if line[:1].isdigit():
                delivered += 1
            elif line.startswith("Lost"):
                lost += int(line.split()[1])
    os.unlink(out_file)
    return Trial(calls, delivered, lost, 0, out["rate"], seconds, out["ns_per_call"], lag)


def bench_samples_sources(url, auth, work):
    s = Samples(url, auth, work)
    # XDP goes on an interface of its own, where no other traffic runs it.
    s.ifname = f"gbench{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", s.ifname, "type", "veth", "peer", "name",
                    s.ifname + "p"], check=True)
    try:
        s.source_xdp()
    finally:
        subprocess.run(["ip", "link", "del", s.ifname], check=True)
    s.source_getpid()


def bench_samples_idle(work, probes=10, seconds=10):
    """RSS and CPU of an agent that only polls 10 probes' metric maps every second."""
    proc, url, token = start_agent(os.path.join(work, "idle"))
    auth = {"Authorization": f"Bearer {token}"}
    try:
        obj = os.path.join(os.environ["GRAIND_TEST_BPF"], "bench_events.bpf.o")
        sha = requests.post(url + "/v1/objects", data=open(obj, "rb").read(), headers={
            **auth, "Content-Type": "application/octet-stream"}).json()["sha256"]
        for i in range(probes):
            put_probe(url, auth, f"idle{i}", {
                "objectSha256": sha,
                "programs": [{"program": "emit_getpid", "attach": {
                    "tracepoint": {"category": "syscalls", "name": "sys_enter_getpid"}}}],
                "constants": [{"name": "target_pid", "value": "1"}],
                # Only polling: a drained ring buffer is mapped whole
                # into the agent (8 MiB here, twice), which RSS counts.
                "outputs": [{"map": "counts", "metric": {"pollIntervalMs": 1000}},
                            {"map": "events", "none": True}]})
        time.sleep(2)
        tick = os.sysconf("SC_CLK_TCK")

        def cpu():
            fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick
        c0, t0 = cpu(), time.monotonic()
        time.sleep(seconds)
        used = (cpu() - c0) / (time.monotonic() - t0)
        rss = rss_kib(proc.pid)
        rss_met, cpu_met = rss / 1024 < 10, 100 * used < 1
        print(f"idle with {probes} probes polled every second: RSS {rss / 1024:.1f} MiB "
              f"(goal < 10: {report.met_text(rss_met)}), CPU {100 * used:.2f} % over "
              f"{seconds} s (goal < 1: {report.met_text(cpu_met)})")
        report.record("samples.idle.rss", rss / 1024, "MiB", goal="< 10", met=rss_met)
        report.record("samples.idle.cpu", 100 * used, "%", goal="< 1", met=cpu_met)
        for i in range(probes):
            requests.delete(url + f"/v1/probes/idle{i}", headers=auth)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()


def bench_syscalls_overhead(url, auth, work):
    """The syscalls built-in's cost per getpid() call, measured like
    ebpf_exporter's benchmark: the same loop without and with the probe
    (counting every process's syscalls, as deployed)."""
    tool = os.path.join(work, "ringbuf_bench")
    if not os.path.exists(tool):
        return
    alone = getpid_workload(work, lambda pid: None)["ns_per_call"]

    def attach(pid):
        put_probe(url, auth, "bench-syscalls", {"builtin": "syscalls"})

    def detach():
        requests.delete(url + "/v1/probes/bench-syscalls", headers=auth)

    probed = getpid_workload(work, attach, detach)["ns_per_call"]
    report.record("syscalls.getpid_without", alone, "ns")
    report.record("syscalls.getpid_with", probed, "ns")
    print(f"syscalls built-in: getpid() {alone:.0f} ns/call without, {probed:.0f} ns/call with "
          f"the probe: +{probed - alone:.0f} ns per syscall, ratio {probed / alone:.2f}")


def bench_samples(work):
    """The samples pipeline end to end, on an agent of its own."""
    proc, url, token = start_agent(os.path.join(work, "samples"))
    try:
        bench_samples_sources(url, {"Authorization": f"Bearer {token}"}, work)
        bench_syscalls_overhead(url, {"Authorization": f"Bearer {token}"}, work)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    bench_samples_idle(work)


def with_agent(part):
    """Run part(url, auth, work) on an agent of its own."""
    def run(work):
        proc, url, token = start_agent(os.path.join(work, "state"))
        try:
            part(url, {"Authorization": f"Bearer {token}"}, work)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    return run


# run.py PART runs that part alone.
PARTS = {
    "samples": bench_samples,
    "objects": with_agent(bench_objects),
    "grpc": lambda work: bench_grpc.main(GRAIND_BIN, os.environ["GRAIND_TEST_BPF"], BUILD),
    "sinks": lambda work: bench_sinks.main(BUILD, GRAIND_BIN),
    "tls": lambda work: bench_tls.main(GRAIND_BIN),
    "console": lambda work: bench_console.main(GRAIND_BIN, os.environ["GRAIND_TEST_BPF"]),
    "fleet": lambda work: bench_fleet.main(GRAIND_BIN, GRAINCTL_BIN,
                                           os.environ["GRAIND_TEST_BPF"]),
}


def bench_all(work):
    proc, url, token = start_agent(os.path.join(work, "state"))
    auth = {"Authorization": f"Bearer {token}"}
    try:
        rss = report.record("agent.idle_rss", rss_kib(proc.pid), "KiB")
        print(f"idle RSS of graind: {rss} KiB")
        bench_dns(work)

        bench_objects(url, auth, work)
        rss = report.record("agent.rss_after_objects", rss_kib(proc.pid), "KiB")
        print(f"RSS of graind after the run: {rss} KiB")
        bench_probes(url, token, work)
        bench_reconcile(work)
        for part in ("samples", "sinks", "tls", "grpc", "console", "fleet"):
            PARTS[part](work)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()


def main():
    """The whole run, or one part (run.py PART); its figures go to
    $BUILD/bench.json, a part's alone to $BUILD/bench-PART.json, so that
    it does not take the place of a whole run's."""
    part = sys.argv[1] if len(sys.argv) == 2 else None
    if len(sys.argv) > 2 or (part and part not in PARTS):
        sys.exit(f"usage: run.py [{'|'.join(PARTS)}]")
    work = tempfile.mkdtemp(prefix="graind-bench-")
    try:
        (PARTS[part] if part else bench_all)(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        path = os.path.join(BUILD, f"bench-{part}.json" if part else "bench.json")
        report.write(path)
        print(f"figures written to {path}")


if __name__ == "__main__":
    main()
