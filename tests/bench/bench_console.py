"""The web console benchmark, in Debian's Chromium driven by
playwright-core (tests/bench/console_bench.mjs):

  1. Time to first render (performance.now() of the page when its content
     is there, from navigation start) of the Overview and of Live with
     10 000 events buffered, each against a reference page that does the
     least such a view can: fetch /v1/status (or open the samples watch)
     and put the answer in the DOM, served from the same origin.
  2. The agent's CPU while one console follows a stream of 10 000
     events/s on Live, against the same stream followed by curl -N (the
     cheapest follower there is), and with no follower.

The events come from tests/bpf/bench_events.bpf.o on the getpid()
tracepoint, called 10 000 times a second by a paced loop.
run.py calls main(graind_bin, test_bpf); alone:
  python3 tests/bench/bench_console.py GRAIND_BIN TEST_BPF_DIR"""

import ctypes
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PIN_ROOT = "/sys/fs/bpf/graind-consolebench"
RATE = 10000                # events a second
SECONDS = 10                # each CPU measurement
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

PACER = f"""
import ctypes, sys, time
getpid = ctypes.CDLL(None).getpid       # glibc does not cache it: a syscall each
print(__import__('os').getpid(), flush=True)
sys.stdin.readline()
per_tick, tick = {RATE // 100}, 0.01
next_t = time.monotonic()
while True:
    for _ in range(per_tick):
        getpid()
    next_t += tick
    delay = next_t - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid, seconds=SECONDS):
    start = cpu_seconds(pid)
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - start) / seconds


def main(graind_bin, test_bpf):
    if not os.path.exists(CHROMIUM):
        print("console benchmark: skipped, chromium is not installed (make deps-test)")
        return
    work = tempfile.mkdtemp(prefix="graind-consolebench-")
    port = free_port()
    agent = subprocess.Popen([graind_bin, "--listen", f"127.0.0.1:{port}", "--grpc-listen", "none",
                              "--state-dir", work, "--pin-root", PIN_ROOT],
                             stdout=subprocess.PIPE, stderr=open(os.path.join(work, "log"), "ab"))
    pacer = subprocess.Popen([sys.executable, "-c", PACER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    follower = None
    try:
        while b"reader token" not in agent.stdout.readline():
            if agent.poll() is not None:
                sys.exit("graind did not start")
        url = f"http://127.0.0.1:{port}"
        token = open(os.path.join(work, "admin.token")).read().strip()
        auth = {"Authorization": f"Bearer {token}"}
        with open(os.path.join(test_bpf, "bench_events.bpf.o"), "rb") as f:
            up = requests.post(url + "/v1/objects?name=bench_events", data=f.read(),
                               headers={**auth, "Content-Type": "application/octet-stream"})
        up.raise_for_status()
        pid = pacer.stdout.readline().strip()
        spec = {"objectSha256": up.json()["sha256"],
                "programs": [{"program": "emit_getpid", "attach": {
                    "tracepoint": {"category": "syscalls", "name": "sys_enter_getpid"}}}],
                "outputs": [{"map": "counts", "none": True}],
                "constants": [{"name": "target_pid", "value": pid}]}
        requests.put(url + "/v1/probes/stream", json=spec, headers=auth).raise_for_status()
        pacer.stdin.write("go\n")
        pacer.stdin.flush()
        def buffered():
            return int(requests.get(url + "/v1/status", headers=auth).json().get("sampleCount", 0))
        deadline = time.time() + 30
        while buffered() < 10000:
            if time.time() > deadline:
                sys.exit("the stream did not fill the buffer with 10 000 events in 30 s")
            time.sleep(0.2)
        buffered = buffered()
        print(f"console: {buffered} events buffered, a stream of {RATE}/s running")

        env = {**os.environ, "CONSOLE_BENCH": json.dumps(
            {"url": url, "token": token, "chromium": CHROMIUM, "seconds": SECONDS})}
        p = subprocess.run(["node", os.path.join(HERE, "console_bench.mjs"), "render"], env=env,
                           capture_output=True, text=True, timeout=300)
        if p.returncode:
            sys.exit(f"console_bench.mjs render failed: {p.stderr[-3000:]}")
        render = json.loads(p.stdout)
        for view in ("overview", "live"):
            ours, ref = render[view], render[f"{view}_ref"]
            print(f"  first render of {view.capitalize()}: {ours:.0f} ms, reference page "
                  f"{ref:.0f} ms, ratio {ours / ref:.2f} (goal: under 1000 ms)")

        idle = cpu_share(agent.pid)
        follower = subprocess.Popen(["curl", "-sN", "-H", f"Authorization: Bearer {token}",
                                     f"{url}/v1/samples:watch?after={buffered}"],
                                    stdout=subprocess.DEVNULL)
        time.sleep(1)
        with_curl = cpu_share(agent.pid)
        follower.terminate()
        follower.wait()
        browser = subprocess.Popen(["node", os.path.join(HERE, "console_bench.mjs"), "follow"],
                                   env=env, stdout=subprocess.PIPE, text=True)
        ready = browser.stdout.readline()       # "following"
        if "following" not in ready:
            sys.exit("console_bench.mjs follow did not start")
        with_console = cpu_share(agent.pid)
        shown = float(browser.stdout.readline() or 0)
        browser.wait()
        print(f"  agent CPU with a {RATE}/s stream: no follower {idle:.1f}%, curl -N following "
              f"{with_curl:.1f}%, a console on Live following {with_console:.1f}% "
              f"(it received {shown:.0f} events/s); console/curl {with_console / with_curl:.2f} "
              f"(goal <= 1.5, and the console keeps up: >= {0.95 * RATE:.0f}/s)")
    finally:
        pacer.kill()
        if follower and follower.poll() is None:
            follower.kill()
        agent.send_signal(signal.SIGTERM)
        agent.wait()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(PIN_ROOT, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
