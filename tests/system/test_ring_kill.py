"""Ring buffers are consumed only after commit: kill -9 the agent 20 times
while processes start as fast as a loop can start them, and every exec the
kernel accepted into the exec probe's ring buffer is stored exactly once,
none lost, none twice (README "Samples over a crash")."""

import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from conftest import Agent

RUN = os.getpid()
KILLS = 20


def exec_pids(a, probe, marker):
    """The pids of the stored exec events of program `marker`, in id order."""
    pids, after = [], 0
    while True:
        r = a.get("/v1/samples", params={"probe": probe, "after": after, "limit": 10000},
                  token="reader")
        assert r.status_code == 200, r.text
        page = r.json().get("samples", [])
        if not page:
            return pids
        for s in page:
            fields = {f["name"]: f for f in s.get("fields", [])}
            if fields.get("filename", {}).get("text") == marker:
                pids.append(int(fields["pid"]["uint"]))
        after = page[-1]["id"]


def lost_in_kernel(a, probe):
    """What the exec probe's ring refused while full (its `lost` counter)."""
    dump = a.get(f"/v1/probes/{probe}/maps/lost").json()
    return sum(int(f.get("uint", 0)) for e in dump.get("entries", []) for f in e.get("value", []))


def test_kill9_loses_and_repeats_no_ring_buffer_event():
    state = tempfile.mkdtemp(prefix="graind-test-")
    progs = tempfile.mkdtemp(prefix="graind-ringkill-")
    marker = os.path.join(progs, f"graind-rk-{RUN}")
    shutil.copy("/bin/true", marker)
    os.chmod(progs, 0o755)
    probe = f"rk-exec-{RUN}"
    rng = random.Random(RUN)
    spawned, stop = [], threading.Event()

    def storm():
        while not stop.is_set():
            p = subprocess.Popen([marker])
            spawned.append(p.pid)
            p.wait()
            time.sleep(0.002)

    a = Agent(state).start()
    try:
        r = a.request("PUT", f"/v1/probes/{probe}", json={"builtin": "exec"})
        assert r.status_code == 201, r.text
        worker = threading.Thread(target=storm)
        worker.start()
        try:
            for _ in range(KILLS):
                time.sleep(rng.uniform(0.05, 0.5))
                a.proc.send_signal(signal.SIGKILL)
                a.proc.wait()
                a.stop()
                a = Agent(state).start()
        finally:
            stop.set()
            worker.join()
        # Everything the ring holds reaches the store: wait until nothing more comes.
        deadline, stored = time.time() + 30, []
        while time.time() < deadline:
            now = exec_pids(a, probe, marker)
            if len(now) >= len(spawned) or (now and now == stored):
                stored = now
                break
            stored = now
            time.sleep(0.5)
        stored = exec_pids(a, probe, marker)
        assert lost_in_kernel(a, probe) == 0, "the ring was full while the agent was down"
        twice = sorted(p for p in set(stored) if stored.count(p) > 1)
        missing = sorted(set(spawned) - set(stored))
        assert not twice, f"{len(twice)} execs stored twice, e.g. {twice[:5]}"
        assert not missing, f"{len(missing)} of {len(spawned)} execs lost, e.g. {missing[:5]}"
        assert len(stored) == len(spawned) > 200, (len(stored), len(spawned))
        print(f"{len(spawned)} execs over {KILLS} kill -9s, each stored once")
    finally:
        if a.alive():
            a.request("DELETE", f"/v1/probes/{probe}")
            a.stop()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(progs, ignore_errors=True)
