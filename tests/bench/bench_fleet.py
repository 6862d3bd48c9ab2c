"""grainctl against five agents on loopback:

  1. `grainctl apply -f DIR` of 50 probes (one object file) to 5 agents:
     wall time, against a reference that writes the same: curl uploading
     the object and PUTting the 50 specs to each host, every request over
     keep-alive connections, hosts in parallel (curl --parallel), without
     reading anything first. Then the no-op re-apply, against the reads
     that finding nothing differs (and what the files do not name) takes:
     curl GETting each host's probes, sinks and objects, in parallel.
  2. `grainctl samples tail -f -o jsonl` (what scripts read) replaying
     100 000 buffered events, in events/s, against curl -N reading the
     same watch stream (it only copies the bytes, the ceiling for any
     follower); and the table people read, without a goal.

run.py calls main(graind_bin, grainctl_bin, test_bpf); alone:
  python3 tests/bench/bench_fleet.py GRAIND_BIN GRAINCTL_BIN TEST_BPF_DIR"""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

PIN_ROOT = "/sys/fs/bpf/graind-fleetbench"
AGENTS = 5
PROBES = 50
EVENTS = 100000

BURST = """
import ctypes, sys
getpid = ctypes.CDLL(None).getpid       # glibc does not cache it: a syscall each
print(__import__('os').getpid(), flush=True)
for line in sys.stdin:
    for _ in range(int(line)):
        getpid()
    print("done", flush=True)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(graind_bin, d, i, token):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "admin.token"), "w") as f:
        f.write(token + "\n")
    os.chmod(os.path.join(d, "admin.token"), 0o600)
    port = free_port()
    p = subprocess.Popen([graind_bin, "--listen", f"127.0.0.1:{port}", "--grpc-listen", "none",
                          "--state-dir", d, "--pin-root", f"{PIN_ROOT}-{i}",
                          "--buffer-rows", str(2 * EVENTS)],
                         stdout=subprocess.PIPE, stderr=open(os.path.join(d, "log"), "ab"))
    while b"reader token" not in p.stdout.readline():
        if p.poll() is not None:
            sys.exit(f"graind {i} did not start")
    return p, f"http://127.0.0.1:{port}"


# A tracepoint runs at most 64 BPF programs (the kernel's bound): the
# probes of all agents are spread over five.
HOOKS = ("sys_enter_getpid", "sys_enter_getppid", "sys_enter_getuid", "sys_enter_getgid",
         "sys_enter_gettid")


def spec(i):
    return {"programs": [{"program": "count_getpid", "attach": {
        "tracepoint": {"category": "syscalls", "name": HOOKS[i % len(HOOKS)]}}}],
        "constants": [{"name": "target_pid", "value": str(100000 + i)}]}


def timed(cmd, **kw):
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode:
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {p.stdout[-2000:]}{p.stderr[-2000:]}")
    return time.monotonic() - t0


def curl_config(path, requests_):
    """A curl --config file: one block per request, `next` between."""
    with open(path, "w") as f:
        for i, r in enumerate(requests_):
            if i:
                f.write("next\n")
            for line in r:
                f.write(line + "\n")


def clear(urls, auth):
    for url in urls:
        for p in requests.get(url + "/v1/probes?page_size=1000", headers=auth).json().get(
                "probes", []):
            requests.delete(f"{url}/v1/probes/{p['name']}", headers=auth).raise_for_status()


def bench_apply(work, grainctl_bin, hooks, urls, token):
    auth = {"Authorization": f"Bearer {token}"}
    sha = hashlib.sha256(open(hooks, "rb").read()).hexdigest()
    docs = os.path.join(work, "docs")
    os.makedirs(docs)
    shutil.copy(hooks, os.path.join(docs, "hooks.bpf.o"))
    with open(os.path.join(docs, "probes.json"), "w") as f:
        json.dump([{"kind": "Probe", "name": f"p-{i:02d}", "objectFile": "hooks.bpf.o",
                    "spec": spec(i)} for i in range(PROBES)], f)
    token_file = os.path.join(work, "token")
    with open(token_file, "w") as f:
        f.write(token + "\n")
    hosts = os.path.join(work, "hosts")
    with open(hosts, "w") as f:
        f.write("".join(u + "\n" for u in urls))
    # The reference: the same writes, no reads.
    writes, bodies = [], os.path.join(work, "bodies")
    os.makedirs(bodies)
    for i in range(PROBES):
        with open(os.path.join(bodies, f"{i}.json"), "w") as f:
            json.dump({**spec(i), "objectSha256": sha}, f)
    for url in urls:
        writes.append(["-s", "-o /dev/null", "-f", f'-H "Authorization: Bearer {token}"',
                       '-H "Content-Type: application/octet-stream"',
                       f'--data-binary "@{hooks}"', f'url = "{url}/v1/objects"'])
    puts = []
    for url in urls:
        for i in range(PROBES):
            puts.append(["-s", "-o /dev/null", "-f", "-X PUT", f'-H "Authorization: Bearer {token}"',
                         '-H "Content-Type: application/json"',
                         f'--data-binary "@{bodies}/{i}.json"',
                         f'url = "{url}/v1/probes/p-{i:02d}"'])
    curl_config(os.path.join(work, "uploads.curl"), writes)
    curl_config(os.path.join(work, "puts.curl"), puts)
    reads = [["-s", "-o /dev/null", "-f", f'-H "Authorization: Bearer {token}"',
              f'url = "{url}{path}"'] for url in urls
             for path in ("/v1/probes?page_size=1000", "/v1/sinks",
                          "/v1/objects?page_size=1000")]
    curl_config(os.path.join(work, "reads.curl"), reads)
    curl = ["curl", "--parallel", "--parallel-max", "16"]

    ref = timed(curl + ["--config", os.path.join(work, "uploads.curl")]) + \
        timed(curl + ["--config", os.path.join(work, "puts.curl")])
    clear(urls, auth)
    ctl = [grainctl_bin, "--hosts-file", hosts, "--token-file", token_file, "--timeout", "60"]
    ours = timed(ctl + ["apply", "-f", docs])
    for url in urls:
        n = len(requests.get(url + "/v1/probes?page_size=1000", headers=auth).json()["probes"])
        if n != PROBES:
            sys.exit(f"apply left {n} probes on {url}, not {PROBES}")
    noop = timed(ctl + ["apply", "-f", docs])
    noop_ref = timed(curl + ["--config", os.path.join(work, "reads.curl")])
    print(f"grainctl apply of {PROBES} probes to {AGENTS} agents: {ours:.2f} s; the same "
          f"writes by curl --parallel {ref:.2f} s; ratio {ours / ref:.2f} (goal <= 1.5)")
    print(f"grainctl no-op re-apply: {1000 * noop:.0f} ms; the same reads by curl --parallel "
          f"{1000 * noop_ref:.0f} ms; ratio {noop / noop_ref:.2f} (goal <= 2)")
    clear(urls, auth)


def count_lines(cmd, want, prefix=None, timeout=120):
    """Seconds until cmd printed `want` lines (starting with prefix)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    n = 0
    try:
        for line in p.stdout:
            if prefix is None or line.startswith(prefix):
                n += 1
                if n == want:
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                break
        sys.exit(f"{cmd[0]} gave {n} of {want} lines")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait()
    return None


def bench_tail(work, grainctl_bin, test_bpf, url, token):
    auth = {"Authorization": f"Bearer {token}"}
    with open(os.path.join(test_bpf, "bench_events.bpf.o"), "rb") as f:
        up = requests.post(url + "/v1/objects?name=bench_events", data=f.read(),
                           headers={**auth, "Content-Type": "application/octet-stream"})
    up.raise_for_status()
    burst = subprocess.Popen([sys.executable, "-c", BURST], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    pid = burst.stdout.readline().strip()
    s = {"objectSha256": up.json()["sha256"],
         "programs": [{"program": "emit_getpid", "attach": {
             "tracepoint": {"category": "syscalls", "name": "sys_enter_getpid"}}}],
         "outputs": [{"map": "counts", "none": True}],
         "constants": [{"name": "target_pid", "value": pid}]}
    requests.put(url + "/v1/probes/tail", json=s, headers=auth).raise_for_status()
    # In bursts the ring can hold, until EVENTS are stored.
    deadline = time.time() + 120
    stored = 0
    while stored < EVENTS:
        burst.stdin.write("5000\n")
        burst.stdin.flush()
        burst.stdout.readline()
        time.sleep(0.02)
        stored = int(requests.get(url + "/v1/status", headers=auth).json().get("sampleCount", 0))
        if time.time() > deadline:
            sys.exit(f"only {stored} events stored in 120 s")
    burst.kill()
    token_file = os.path.join(work, "tail-token")
    with open(token_file, "w") as f:
        f.write(token + "\n")
    ours = count_lines([grainctl_bin, "--host", url, "--token-file", token_file, "-o", "jsonl",
                        "samples", "tail", "-f", "--after", "0"], EVENTS)
    table = count_lines([grainctl_bin, "--host", url, "--token-file", token_file,
                         "samples", "tail", "-f", "--after", "0"], EVENTS)
    ref = count_lines(["curl", "-sN", "-H", f"Authorization: Bearer {token}",
                       f"{url}/v1/samples:watch?after=0"], EVENTS, prefix=b"data:")
    print(f"grainctl samples tail -f -o jsonl of {EVENTS} buffered events: "
          f"{EVENTS / ours:.0f} events/s; curl -N of the same stream {EVENTS / ref:.0f} "
          f"events/s; ratio {ref / ours:.2f} (goal >= 0.5)")
    print(f"  the same as a table, for people: {EVENTS / table:.0f} events/s, ratio "
          f"{ref / table:.2f} (no goal: each sample is decoded to be laid out)")
    requests.delete(url + "/v1/probes/tail", headers=auth)


def main(graind_bin, grainctl_bin, test_bpf):
    work = tempfile.mkdtemp(prefix="graind-fleetbench-")
    token = "fleetbench-" + os.urandom(16).hex()
    agents = []
    try:
        for i in range(AGENTS):
            agents.append(start(graind_bin, os.path.join(work, f"a{i}"), i, token))
        urls = [u for _, u in agents]
        bench_apply(work, grainctl_bin, os.path.join(test_bpf, "hooks.bpf.o"), urls, token)
        bench_tail(work, grainctl_bin, test_bpf, urls[0], token)
    finally:
        for p, _ in agents:
            p.send_signal(signal.SIGTERM)
            p.wait()
        for i in range(AGENTS):
            shutil.rmtree(f"{PIN_ROOT}-{i}", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
