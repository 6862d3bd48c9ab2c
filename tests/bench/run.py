"""graind benchmarks. Figures are ratios against a reference measured in
the same run, since the machines are noisy. Run with `make bench`."""

import hashlib
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
    print(f"probe attach+detach cycle: graind API {1000 * ours:.1f} ms, "
          f"bpftool {1000 * ref:.1f} ms, ratio {ours / ref:.2f} (goal <= 0.5)")
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
    print(f"GET /v1/objects ({len(listing)} B): graind {ours:.0f} req/s, "
          f"bare libmicrohttpd {ref:.0f} req/s, ratio {ours / ref:.2f} (goal >= 0.8)")


# ---------------------------------------------------------------- samples

XDP_SECONDS = 2.0       # source 1: how long BPF_PROG_TEST_RUN runs
GETPID_CALLS = 300000   # source 2: getpid() calls of the workload


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


def aggregated_count(url, auth, probe, produced, timeout=5):
    """The last events.count the probe's aggregate reported (flushed every
    second), once it stops growing or reaches what was produced."""
    count, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        after = 0
        while True:
            r = requests.get(url + "/v1/samples", params={
                "probe": probe, "after": after, "limit": 1000}, headers=auth).json()
            for s in r.get("samples", []):
                if s.get("name") == "events.count":
                    count = max(count, s.get("value", 0))
                after = int(s.get("id", after))
            if len(r.get("samples", [])) < 1000:
                break
        if count >= produced:
            break
        time.sleep(0.5)
    return int(count)


def rate_line(what, delivered, produced, full, dropped, seconds):
    lost = produced - delivered
    print(f"  {what:<28} {delivered / seconds / 1e6:6.2f} M events/s delivered, "
          f"{delivered}/{produced} ({lost} lost: {full} ring full, {dropped} agent queue)")
    return delivered / seconds


def graind_run(url, auth, work, name, spec, trigger, aggregate):
    """Attach `spec` as probe `name`, run trigger() (it returns the
    workload's key=values), measure what graind delivered."""
    pin_dir = os.path.join(PIN_ROOT, name)
    put_probe(url, auth, name, spec)
    before = metrics(url, auth)
    t0 = time.monotonic()
    out = trigger()
    t_trigger = time.monotonic() - t0
    counts = key_values(subprocess.run([os.path.join(work, "ringbuf_bench"), "counts", pin_dir],
                                       capture_output=True, text=True, check=True).stdout)
    produced, full = int(counts["produced"]), int(counts["full"])
    if aggregate:
        delivered = aggregated_count(url, auth, name, produced)
        seconds, dropped = t_trigger, 0
    else:
        delivered, t_last, dropped = drained(url, auth, before)
        delivered = int(delivered)
        seconds = max(t_last, t0 + t_trigger) - t0
    requests.delete(url + f"/v1/probes/{name}", headers=auth).raise_for_status()
    return out, delivered, produced, full, int(dropped), seconds


def getpid_workload(work, attach, detach=None):
    """Start the getpid() loop, attach(pid) something to it, run it; its ns
    per call."""
    loop = subprocess.Popen([os.path.join(work, "ringbuf_bench"), "getpid-loop",
                             str(GETPID_CALLS)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    pid = int(loop.stdout.readline().split("=")[1])
    attach(pid)
    loop.stdin.write("go\n")
    loop.stdin.flush()
    line = loop.stdout.readline()
    loop.wait()
    if detach:
        detach()
    return key_values(line)["ns_per_call"]


def bpftrace_getpid(work):
    """The same fields printed by bpftrace for the same tracepoint, into a
    tmpfs file (so that the lines can be counted)."""
    out_file = tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="graind-bench-bt-",
                                           delete=False).name
    bt = None

    def attach(pid):
        nonlocal bt
        prog = ("tracepoint:syscalls:sys_enter_getpid /pid == %d/ "
                "{ printf(\"%%d %%s %%llu %%d %%d %%d %%d\\n\", pid, comm, nsecs, "
                "cpu, 7, 21, 42); }" % pid)
        bt = subprocess.Popen(["bpftrace", "-o", out_file, "-e", prog],
                              stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while "Attaching" not in open(out_file).read(100):
            if bt.poll() is not None or time.monotonic() > deadline:
                sys.exit("bpftrace did not attach")
            time.sleep(0.05)
        time.sleep(0.2)

    def detach():
        time.sleep(0.5)     # what its perf buffer still holds
        bt.send_signal(signal.SIGINT)
        try:
            bt.wait(timeout=15)
        except subprocess.TimeoutExpired:
            bt.kill()
            bt.wait()

    t0 = time.monotonic()
    ns = getpid_workload(work, attach, detach)
    seconds = time.monotonic() - t0
    delivered = lost = 0
    with open(out_file) as f:
        for line in f:
            if line[:1].isdigit():
                delivered += 1
            elif line.startswith("Lost"):
                lost += int(line.split()[1])
    os.unlink(out_file)
    return ns, delivered, lost, seconds


def bench_samples_sources(url, auth, work):
    obj = os.path.join(os.environ["GRAIND_TEST_BPF"], "bench_events.bpf.o")
    tool = os.path.join(work, "ringbuf_bench")
    libbpf = subprocess.run(["pkg-config", "--cflags", "--libs", "libbpf"],
                            capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", "-O2", "-o", tool, os.path.join(HERE, "ringbuf_bench.c")] + libbpf +
                   ["-lpthread"], check=True)
    sha = requests.post(url + "/v1/objects?name=bench_events", data=open(obj, "rb").read(),
                        headers={**auth, "Content-Type": "application/octet-stream"}
                        ).json()["sha256"]
    quiet = {"map": "counts", "none": True}
    agg = {"map": "events", "events": {"countBy": ["pid"]}}
    # XDP goes on an interface of its own, where no other traffic runs it.
    ifname = f"gbench{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", ifname, "type", "veth", "peer", "name", ifname + "p"],
                   check=True)
    try:
        bench_source_xdp(url, auth, work, tool, obj, sha, ifname, quiet, agg)
    finally:
        subprocess.run(["ip", "link", "del", ifname], check=True)
    bench_source_getpid(url, auth, work, tool, obj, sha, quiet, agg)


def bench_source_xdp(url, auth, work, tool, obj, sha, ifname, quiet, agg):
    print(f"samples pipeline, source 1: 64-byte records from BPF_PROG_TEST_RUN "
          f"(XDP, repeat), {XDP_SECONDS:.0f} s")
    bare = key_values(subprocess.run([tool, "xdp-bare", obj, str(XDP_SECONDS)],
                                     capture_output=True, text=True, check=True).stdout)
    ref = rate_line("(a) bare ring_buffer__poll", int(bare["delivered"]), int(bare["produced"]),
                    int(bare["full"]), 0, bare["seconds"])

    def xdp_trigger(name):
        return lambda: subprocess.run([tool, "xdp-trigger", os.path.join(PIN_ROOT, name),
                                       str(XDP_SECONDS)], capture_output=True, check=True)
    xdp = {"programs": [{"program": "emit_xdp",
                         "attach": {"xdp": {"ifname": ifname, "mode": "XDP_MODE_SKB"}}}]}
    _, d, p, full, dropped, s = graind_run(url, auth, work, "rb-xdp",
                                           {"objectSha256": sha, **xdp, "outputs": [quiet]},
                                           xdp_trigger("rb-xdp"), False)
    ours = rate_line("(b) graind (decode + SQLite)", d, p, full, dropped, s)
    _, d, p, full, dropped, s = graind_run(url, auth, work, "rb-xdp-agg",
                                           {"objectSha256": sha, **xdp, "outputs": [quiet, agg]},
                                           xdp_trigger("rb-xdp-agg"), True)
    agg_rate = rate_line("(d) graind, countBy pid", d, p, full, dropped, s)
    print(f"  ratio graind/bare {ours / ref:.2f} (goal >= 0.5), graind "
          f"{ours / 1e6:.2f} M events/s (goal >= 1), aggregated/bare {agg_rate / ref:.2f}")


def bench_source_getpid(url, auth, work, tool, obj, sha, quiet, agg):

    print(f"samples pipeline, source 2: tracepoint sys_enter_getpid, "
          f"{GETPID_CALLS} getpid() calls")
    alone = getpid_workload(work, lambda pid: None)
    bare = key_values(subprocess.run([tool, "getpid-bare", obj, str(GETPID_CALLS)],
                                     capture_output=True, text=True, check=True).stdout)
    ref = rate_line("(a) bare ring_buffer__poll", int(bare["delivered"]), int(bare["produced"]),
                    int(bare["full"]), 0, bare["seconds"])
    tp = {"programs": [{"program": "emit_getpid", "attach": {
        "tracepoint": {"category": "syscalls", "name": "sys_enter_getpid"}}}]}
    ns = {}

    def graind_getpid(name, outputs):
        # The workload's pid is a constant of the probe: the loop starts
        # first and waits for the word to go.
        loop = subprocess.Popen([tool, "getpid-loop", str(GETPID_CALLS)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        pid = int(loop.stdout.readline().split("=")[1])

        def run():
            loop.stdin.write("go\n")
            loop.stdin.flush()
            ns[name] = key_values(loop.stdout.readline())["ns_per_call"]
            loop.wait()
        spec = {"objectSha256": sha, **tp, "outputs": outputs,
                "constants": [{"name": "target_pid", "value": str(pid)}]}
        return graind_run(url, auth, work, name, spec, run, agg in outputs)

    _, d, p, full, dropped, s = graind_getpid("rb-getpid", [quiet])
    rate_line("(b) graind (decode + SQLite)", d, p, full, dropped, s)
    bt_ns, bt_delivered, bt_lost, bt_s = bpftrace_getpid(work)
    rate_line("(c) bpftrace printf", bt_delivered, GETPID_CALLS, bt_lost, 0, bt_s)
    _, d, p, full, dropped, s = graind_getpid("rb-getpid-agg", [quiet, agg])
    rate_line("(d) graind, countBy pid", d, p, full, dropped, s)
    print(f"  getpid() ns/call: alone {alone:.0f}, bare consumer {bare['ns_per_call']:.0f}, "
          f"graind {ns['rb-getpid']:.0f}, graind countBy {ns['rb-getpid-agg']:.0f}, "
          f"bpftrace {bt_ns:.0f} (goal: graind delivers all, slows less than bpftrace)")
    print("  (BCC is not measured: it compiles probes against kernel headers, "
          "which this kernel does not ship)")


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
        print(f"idle with {probes} probes polled every second: RSS {rss / 1024:.1f} MiB "
              f"(goal < 10), CPU {100 * used:.2f} % over {seconds} s (goal < 1)")
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
    alone = getpid_workload(work, lambda pid: None)

    def attach(pid):
        put_probe(url, auth, "bench-syscalls", {"builtin": "syscalls"})

    def detach():
        requests.delete(url + "/v1/probes/bench-syscalls", headers=auth)

    probed = getpid_workload(work, attach, detach)
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


def main():
    work = tempfile.mkdtemp(prefix="graind-bench-")
    if sys.argv[1:] == ["samples"]:     # only this one: run.py samples
        try:
            bench_samples(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    if sys.argv[1:] == ["grpc"]:        # run.py grpc
        shutil.rmtree(work, ignore_errors=True)
        bench_grpc.main(GRAIND_BIN, os.environ["GRAIND_TEST_BPF"], BUILD)
        return
    if sys.argv[1:] == ["objects"]:     # run.py objects
        proc, url, token = start_agent(os.path.join(work, "state"))
        try:
            bench_objects(url, {"Authorization": f"Bearer {token}"}, work)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            shutil.rmtree(work, ignore_errors=True)
        return
    if sys.argv[1:] == ["sinks"]:       # run.py sinks
        shutil.rmtree(work, ignore_errors=True)
        bench_sinks.main(BUILD, GRAIND_BIN)
        return
    if sys.argv[1:] == ["tls"]:         # run.py tls
        shutil.rmtree(work, ignore_errors=True)
        bench_tls.main(GRAIND_BIN)
        return
    if sys.argv[1:] == ["console"]:     # run.py console
        shutil.rmtree(work, ignore_errors=True)
        bench_console.main(GRAIND_BIN, os.environ["GRAIND_TEST_BPF"])
        return
    if sys.argv[1:] == ["fleet"]:       # run.py fleet
        shutil.rmtree(work, ignore_errors=True)
        bench_fleet.main(GRAIND_BIN, GRAINCTL_BIN, os.environ["GRAIND_TEST_BPF"])
        return
    proc, url, token = start_agent(os.path.join(work, "state"))
    auth = {"Authorization": f"Bearer {token}"}
    try:
        print(f"idle RSS of graind: {rss_kib(proc.pid)} KiB")
        bench_dns(work)

        bench_objects(url, auth, work)
        print(f"RSS of graind after the run: {rss_kib(proc.pid)} KiB")
        bench_probes(url, token, work)
        bench_reconcile(work)
        bench_samples(work)
        bench_sinks.main(BUILD, GRAIND_BIN)
        bench_tls.main(GRAIND_BIN)
        bench_grpc.main(GRAIND_BIN, os.environ["GRAIND_TEST_BPF"], BUILD)
        bench_console.main(GRAIND_BIN, os.environ["GRAIND_TEST_BPF"])
        bench_fleet.main(GRAIND_BIN, GRAINCTL_BIN, os.environ["GRAIND_TEST_BPF"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
