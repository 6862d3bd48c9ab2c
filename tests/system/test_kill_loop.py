"""kill -9 at random points of a probe update and of a sink delivery, 50
times over: after each restart the store and the kernel agree (probes
stored as attached have their pinned links, no stray pins under the pin
root), no sample seen committed before the kill is missing, ids only
increase, and the sink's cursor never moves back."""

import os
import random
import shutil
import signal
import socket
import tempfile
import threading
import time

import requests

from conftest import Agent, PIN_ROOT

RUN = os.getpid()
KILLS = 50


def probe_spec(poll_ms):
    return {"builtin": "syscalls",
            "outputs": [{"map": "counts", "metric": {"pollIntervalMs": poll_ms}}]}


def sample_ids(a, probe, after, upto=None):
    ids = []
    while True:
        r = a.get(f"/v1/samples?probe={probe}&after={after}&limit=1000", token="reader")
        assert r.status_code == 200, r.text
        page = [int(s["id"]) for s in r.json().get("samples", [])]
        if not page:
            return ids
        assert page == sorted(page) and page[0] > after, "ids only increase"
        ids += page
        after = page[-1]
        if upto is not None and after >= upto:
            return ids


def agree(a, names):
    """The store and the kernel agree: each stored probe that should run has
    its links pinned, and nothing else is pinned under the root."""
    probes = a.get("/v1/probes").json().get("probes", [])
    assert {p["name"] for p in probes} == set(names), probes
    for p in probes:
        if p["spec"].get("desiredState", "ATTACHED") == "ATTACHED":
            assert all(pr["state"] == "PROGRAM_ATTACHED" for pr in p["programs"]), p
            pins = os.listdir(os.path.join(PIN_ROOT, p["name"]))
            assert any(x.startswith("link_") for x in pins), (p["name"], pins)
    assert sorted(os.listdir(PIN_ROOT)) == sorted(names), os.listdir(PIN_ROOT)


def test_kill9_during_probe_updates_and_sink_delivery():
    state = tempfile.mkdtemp(prefix="graind-test-")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    rng = random.Random(RUN)
    probe, sink = f"kl-sys-{RUN}", f"kl-sink-{RUN}"
    a = Agent(state).start()
    try:
        r = a.request("PUT", f"/v1/probes/{probe}", json=probe_spec(100))
        assert r.status_code in (200, 201), r.text
        r = a.request("PUT", f"/v1/sinks/{sink}", json={
            "statsd": {"host": "127.0.0.1", "port": udp.getsockname()[1], "flushIntervalMs": 20}})
        assert r.status_code in (200, 201), r.text
        cursor, seen_max, generations = 0, 0, set()
        t0 = time.time()
        for i in range(KILLS):
            # what committed samples there are now, and the sink's cursor
            deadline = time.time() + 10
            while not (ids := sample_ids(a, probe, seen_max)) and time.time() < deadline:
                time.sleep(0.05)
            assert ids, "no new samples"
            assert ids[0] > seen_max
            seen_max = ids[-1]
            got = a.get(f"/v1/sinks/{sink}").json()
            cursor_before = int(got.get("health", {}).get("cursor", 0))
            assert cursor_before >= cursor, "the sink's cursor moved back"
            cursor = cursor_before

            # kill -9 at a random point: of a probe update, or of deliveries
            if i % 2 == 0:
                spec = probe_spec(100 + 50 * (i % 4 == 0))
                t = threading.Thread(target=lambda: _put_quietly(a, probe, spec))
                t.start()
                time.sleep(rng.uniform(0, 0.4))
            else:
                time.sleep(rng.uniform(0, 0.15))
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait()
            if i % 2 == 0:
                t.join()
            a.stop()
            a = Agent(state).start()

            agree(a, [probe])
            after = sample_ids(a, probe, ids[0] - 1, upto=seen_max)
            missing = set(ids) - set(after)
            assert not missing, f"kill {i}: committed samples lost: {sorted(missing)[:10]}"
            generations.add(a.get(f"/v1/probes/{probe}").json()["generation"])
        elapsed = time.time() - t0
        assert len(generations) > 1, "no probe update was ever committed"
        # the loop stays fast enough for make test
        assert elapsed < 120, elapsed
    finally:
        with_agent = a if a.alive() else None
        if with_agent:
            a.request("DELETE", f"/v1/sinks/{sink}")
            a.request("DELETE", f"/v1/probes/{probe}")
            rc = a.stop()
        udp.close()
        shutil.rmtree(state, ignore_errors=True)
    assert rc == 0


def _put_quietly(a, probe, spec):
    try:
        a.request("PUT", f"/v1/probes/{probe}", json=spec)
    except requests.RequestException:
        pass    # the agent was killed under it
