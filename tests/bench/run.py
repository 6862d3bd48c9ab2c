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

BUILD = os.environ.get("BUILD", "build")
GRAIND_BIN = os.environ["GRAIND_BIN"]
THREADS = 4  # graind's default --threads
HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_agent(state_dir):
    port = free_port()
    os.makedirs(state_dir, exist_ok=True)
    proc = subprocess.Popen([GRAIND_BIN, "--listen", f"127.0.0.1:{port}",
                             "--state-dir", state_dir, "--threads", str(THREADS)],
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
    for i in range(sha_probes):
        r = requests.put(url + f"/v1/probes/rc{i}", json=specs[i % 2], headers=auth)
        if r.status_code >= 300:
            sys.exit(f"PUT rc{i}: {r.status_code} {r.text}")
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


def main():
    work = tempfile.mkdtemp(prefix="graind-bench-")
    proc, url, token = start_agent(os.path.join(work, "state"))
    auth = {"Authorization": f"Bearer {token}"}
    try:
        print(f"idle RSS of graind: {rss_kib(proc.pid)} KiB")
        bench_dns(work)

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
            ours = wrk(url + "/v1/objects", token)
        finally:
            bare.send_signal(signal.SIGTERM)
            bare.wait()
        print(f"GET /v1/objects ({len(listing)} B): graind {ours:.0f} req/s, "
              f"bare libmicrohttpd {ref:.0f} req/s, ratio {ours / ref:.2f} (goal >= 0.8)")
        print(f"RSS of graind after the run: {rss_kib(proc.pid)} KiB")
        bench_probes(url, token, work)
        bench_reconcile(work)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
