"""Budgets: what a probe may cost the host (spec.budget, --default-budget).

A costly program (tests/bpf/costly.bpf.c: a long loop on each system call
of one thread) under a syscall-heavy workload goes over maxCpuPercent and
is detached within its window, and stays detached until an operator
attaches it; an event flood (tests/bpf/emit.bpf.c) goes over
maxEventsPerSecond and is only flagged; maps bigger than maxMapBytes are
flagged at once. Each breach shows in the probe's status, /metrics, the
audit log and WatchProbes; the figures are the kernel's (bpftool)."""

import json
import os
import subprocess
import sys
import time

import grpc
import pytest

from conftest import assert_error, bpf_object, sh
from test_audit import audit_all, metric
from test_grainctl import Ctl
from test_samples import Caller, delete_probe, emit_spec, put_probe
from test_watch import curl_watch, read_events

WORKLOAD = r"""
import os, sys, time
print(os.getpid(), flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for _ in range(1000):
        os.getppid()
"""


class Workload:
    """A process whose main thread makes system calls for `seconds`."""

    def __init__(self, seconds):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(seconds)],
                                     stdout=subprocess.PIPE, text=True)
        self.tid = int(self.proc.stdout.readline())

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def wait_for(what, check, timeout=20):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)


def attached(p):
    progs = p.get("programs", [])
    return bool(progs) and all(pr["state"] == "PROGRAM_ATTACHED" for pr in progs)


def get_probe(a, name):
    r = a.get(f"/v1/probes/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def upload(a, obj):
    r = a.upload(bpf_object(obj), name=obj.split(".")[0])
    assert r.status_code in (200, 201), r.text
    return r.json()["sha256"]


def bpftool_run_time(prog_id):
    info = json.loads(sh("bpftool", "-j", "prog", "show", "id", str(prog_id)).stdout)
    return info.get("run_time_ns", 0)


def test_costly_probe_is_detached_and_stays_detached(agent, tmp_path):
    sha = upload(agent, "costly.bpf.o")
    work = Workload(60)
    name = "costly"
    try:
        spec = {"objectSha256": sha, "desiredState": "ATTACHED",
                "constants": [{"name": "target_tid", "value": str(work.tid)}],
                "budget": {"maxCpuPercent": 1, "windowSeconds": 2, "action": "BUDGET_DETACH"}}
        r = agent.request("PUT", f"/v1/probes/{name}", json=spec)
        assert r.status_code == 201, r.text
        c = curl_watch(agent, f"/v1/probes:watch?name={name}")
        try:
            first = read_events(c.stdout, 1)[0]
            assert json.loads(first["data"])["kind"] == "PROBE_CURRENT"
            t0 = time.time()
            p = wait_for("detach", lambda: (lambda p: p.get("budgetExceeded") and
                                            not attached(p) and p)(get_probe(agent, name)))
            # A window of samples, then the next tick: well within 2 windows.
            assert time.time() - t0 < 8, time.time() - t0
            kinds = [json.loads(e["data"])["kind"] for e in read_events(c.stdout, 2)]
        finally:
            c.kill()
            c.wait()
        assert kinds == ["PROBE_BUDGET_EXCEEDED", "PROBE_DETACHED"], kinds
        be = p["budgetExceeded"]
        assert be["limitName"] == "maxCpuPercent" and be["action"] == "BUDGET_DETACH", be
        assert be["figure"] > 1 and be["limit"] == 1, be
        assert "maxCpuPercent 1" in be["message"] and "detached" in be["message"], be
        assert p["spec"]["desiredState"] == "DETACHED", p["spec"]
        assert metric(agent, "graind_budget_exceeded",
                      f'{{probe="{name}",limit="maxCpuPercent"}}') == 1
        audit = [(e["principal"], e["action"], e["target"]) for e in audit_all(agent)]
        assert ("budget", "BudgetExceeded", name) in audit, audit
        assert ("budget", "DetachProbe", name) in audit, audit
        out = Ctl(str(tmp_path), tmp_path).ok(agent, "probes", "get", name).stdout
        assert f"over budget:  {be['message']} (since {be['since']})" in out, out

        # Detached it stays, the workload running on, until an operator says.
        time.sleep(3)
        p = get_probe(agent, name)
        assert not attached(p) and p["budgetExceeded"], p
        work.stop()
        r = agent.post(f"/v1/probes/{name}:attach")
        assert r.status_code == 200, r.text
        assert "budgetExceeded" not in r.json(), r.json()
        time.sleep(3.5)         # a window and more with no workload: under budget
        p = get_probe(agent, name)
        assert attached(p) and "budgetExceeded" not in p, p
        assert p["usage"]["cpuPercent"] < 1, p["usage"]
    finally:
        work.stop()
        delete_probe(agent, name)


def test_event_flood_is_flagged_not_detached(agent):
    sha = upload(agent, "emit.bpf.o")
    caller = Caller()
    name = "flood"
    try:
        spec = emit_spec(sha, caller.tid, outputs=[{"map": "events"}])
        spec["budget"] = {"maxEventsPerSecond": 200, "windowSeconds": 2}
        put_probe(agent, name, spec)
        t0 = time.time()
        while time.time() - t0 < 4 and "budgetExceeded" not in get_probe(agent, name):
            caller.call(2000)
        p = wait_for("breach", lambda: (lambda p: p.get("budgetExceeded") and p)(
            get_probe(agent, name)))
        be = p["budgetExceeded"]
        assert be["limitName"] == "maxEventsPerSecond" and be["figure"] > 200, be
        assert be.get("action", "BUDGET_ALERT") == "BUDGET_ALERT", be
        assert attached(p), p
        assert p["usage"]["eventsPerSecond"] > 200, p["usage"]
        audit = [(e["principal"], e["action"], e["target"]) for e in audit_all(agent)]
        assert ("budget", "BudgetExceeded", name) in audit, audit
        assert ("budget", "DetachProbe", name) not in audit, audit
        # Quiet again for a window: the flag goes, the probe never stopped.
        p = wait_for("the breach to end", lambda: (lambda p: "budgetExceeded" not in p and p)(
            get_probe(agent, name)), timeout=10)
        assert attached(p), p
        # The run time in the status is the kernel's.
        prog = p["programs"][0]
        kernel = bpftool_run_time(prog["progId"])
        ours = int(prog.get("runTimeNs", 0))
        assert 0 < ours <= kernel < ours + max(ours // 20, 1_000_000), (ours, kernel)
    finally:
        caller.stop()
        delete_probe(agent, name)


def test_default_budget_flags_big_maps(make_agent):
    a = make_agent(["--default-budget", "map-bytes=64K,action=alert"])
    sha = upload(a, "emit.bpf.o")
    caller = Caller()
    try:
        put_probe(a, "big", emit_spec(sha, caller.tid))
        # Its own budget replaces the default: no limit at all here.
        spec = emit_spec(sha, caller.tid)
        spec["budget"] = {"windowSeconds": 5}
        put_probe(a, "own", spec)
        p = wait_for("breach", lambda: (lambda p: p.get("budgetExceeded") and p)(
            get_probe(a, "big")), timeout=10)
        be = p["budgetExceeded"]
        # The ring buffer alone is 256 KiB.
        assert be["limitName"] == "maxMapBytes" and be["limit"] == 65536, be
        assert be["figure"] > 256 * 1024 and int(p["usage"]["mapBytes"]) == be["figure"], p
        assert metric(a, "graind_budget_map_bytes", '{probe="big"}') == be["figure"]
        own = get_probe(a, "own")
        assert "budgetExceeded" not in own and int(own["usage"]["mapBytes"]) > 65536, own
    finally:
        caller.stop()
        delete_probe(a, "big")
        delete_probe(a, "own")


@pytest.mark.parametrize("budget,words", [
    ({"maxCpuPercent": -1}, ["maxCpuPercent"]),
    ({"maxEventsPerSecond": -5}, ["maxEventsPerSecond"]),
    ({"windowSeconds": 7200}, ["windowSeconds", "3600"]),
    ({"action": 7}, ["budget.action", "unknown enum value 7"]),
])
def test_bad_budget_is_refused(agent, budget, words):
    sha = upload(agent, "emit.bpf.o")
    spec = emit_spec(sha, 1)
    spec["budget"] = budget
    r = agent.request("PUT", "/v1/probes/badbudget", json=spec)
    assert_error(r, 400, *words)
    assert agent.get("/v1/probes/badbudget").status_code == 404


def test_bad_budget_over_grpc_is_invalid_argument(agent, pb):
    """The same refusals over gRPC: the service layer's range checks, and
    the codec's refusal of an enum number the schema does not have."""
    sha = upload(agent, "emit.bpf.o")
    cases = [({"max_cpu_percent": float("nan")}, "maxCpuPercent"),
             ({"window_seconds": 3601}, "windowSeconds is at most 3600"),
             ({"action": 7}, "spec.budget.action: unknown enum value 7")]
    with grpc.insecure_channel(agent.grpc_target) as ch:
        put = ch.unary_unary("/graind.Graind/PutProbe",
                             request_serializer=pb.PutProbeRequest.SerializeToString,
                             response_deserializer=pb.Probe.FromString)
        for budget, words in cases:
            spec = pb.ProbeSpec(object_sha256=sha, budget=pb.Budget(**budget))
            with pytest.raises(grpc.RpcError) as e:
                put(pb.PutProbeRequest(name="badbudget", spec=spec),
                    metadata=[("authorization", f"Bearer {agent.admin}")], timeout=30)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
            assert words in e.value.details(), e.value.details()
    assert agent.get("/v1/probes/badbudget").status_code == 404


@pytest.mark.parametrize("flag,words", [
    ("cpu=lots", ["bad value 'lots' for cpu"]),
    ("speed=3", ["unknown key 'speed'"]),
    ("window=0", ["bad value '0' for window"]),
    ("action=explode", ["bad value 'explode' for action"]),
])
def test_bad_default_budget_flag(flag, words, tmp_path):
    out = subprocess.run([os.environ.get("GRAIND_BIN", "build/asan/graind"),
                          "--default-budget", flag, "--state-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out
    for w in words:
        assert w in out.stderr, out.stderr
