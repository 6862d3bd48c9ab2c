"""Storage faults (README "Storage faults"): a full disk and failing writes
are seen (/healthz 503 with the reason, /v1/status storage, /metrics, one
log line), survived (probes keep running, samples wait in memory within the
queue bound) and recovered from by themselves once the fault goes away,
without needing much room: a 20 MB tmpfs state dir freed by 2 MB, and
writes failed on purpose by the faultfs LD_PRELOAD shim (tests/faultfs/)."""

import contextlib
import datetime
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import Agent, PIN_ROOT, bpf_object  # noqa: F401

FAULTFS = os.environ.get("GRAIND_FAULTFS", os.path.abspath("build/tests/faultfs.so"))
RUN = os.getpid()


def wait_for(fn, timeout=20, what="condition", every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def status(a):
    r = a.get("/v1/status", token="reader")
    assert r.status_code == 200, r.text
    return r.json()


def health(a):
    return a.request("GET", "/healthz", token=None)


def metric(text, name):
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def put_exec(a, name):
    r = a.request("PUT", f"/v1/probes/{name}", json={
        "builtin": "exec",
        "programs": [{"program": "trace_exec",
                      "attach": {"tracepoint": {"category": "sched",
                                                "name": "sched_process_exec"}}}]})
    assert r.status_code in (200, 201), r.text
    return r.json()


class ExecPids:
    """Pids of the exec events stored for a probe, read incrementally: the
    probe sees every exec of the host."""

    def __init__(self, a, probe):
        self.a, self.probe, self.cursor, self.pids = a, probe, 0, set()

    def __call__(self):
        while True:
            r = self.a.get(f"/v1/samples?probe={self.probe}&after={self.cursor}&limit=1000",
                           token="reader")
            assert r.status_code == 200, r.text
            body = r.json()
            if not body.get("samples"):
                return self.pids
            for s in body["samples"]:
                assert int(s["id"]) > self.cursor, "ids only increase"
                self.cursor = int(s["id"])
                for f in s.get("fields", []):
                    if f.get("name") == "pid":
                        self.pids.add(int(next(v for k, v in f.items() if k != "name")))


def spawn_execs(n, tag):
    procs = [subprocess.Popen(["/bin/true", f"graind-storage-{tag}-{i}"]) for i in range(n)]
    for p in procs:
        p.wait()
    return {p.pid for p in procs}


def storage_lines(log):
    return [line for line in log.splitlines() if 'msg="storage failing' in line
            or 'msg="storage still failing' in line]


def assert_probe_running(name):
    pins = os.listdir(os.path.join(PIN_ROOT, name))
    assert any(p.startswith("link_") for p in pins), pins


@contextlib.contextmanager
def tmpfs(size):
    d = tempfile.mkdtemp(prefix=f"graind-tmpfs-{RUN}-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d])
        shutil.rmtree(d, ignore_errors=True)


class Filler:
    """Files of 256 KiB written into dir until the file system is full,
    and again whenever something frees room, as a runaway writer would."""

    CHUNK = 256 << 10

    def __init__(self, directory):
        self.dir = directory
        self.files = []

    def top_up(self):
        block = b"\0" * self.CHUNK
        while True:
            path = os.path.join(self.dir, f"filler-{len(self.files)}")
            try:
                with open(path, "wb") as f:
                    f.write(block)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                return
            self.files.append(path)

    def free(self, nbytes):
        while nbytes > 0 and self.files:
            path = self.files.pop()
            nbytes -= os.path.getsize(path)
            os.unlink(path)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_full_tmpfs_is_seen_survived_and_recovered(tmp_path):
    with tmpfs("20m") as state:
        a = Agent(state, ["--queue-bytes", "8M"], log_path=str(tmp_path / "graind.log")).start()
        try:
            run_full_disk(a, state)
        finally:
            a.request("DELETE", f"/v1/probes/sf-exec-{RUN}")
            a.request("DELETE", f"/v1/probes/sf-sys-{RUN}")
            rc = a.stop()
        assert rc == 0, a.read_log()[-3000:]


def run_full_disk(a, state):
    ex, sysc = f"sf-exec-{RUN}", f"sf-sys-{RUN}"
    put_exec(a, ex)
    exec_pids = ExecPids(a, ex)
    # a steady load besides: every syscall on the host, counted each second
    r = a.request("PUT", f"/v1/probes/{sysc}", json={"builtin": "syscalls"})
    assert r.status_code in (200, 201), r.text
    before = spawn_execs(5, "before")
    wait_for(lambda: before <= exec_pids(), what="exec samples before the fault")
    st = status(a)["storage"]
    assert st["state"] == "ok" and int(st.get("reserveBytes", 0)) > 0, st

    # Fill the disk, and keep it full as graind frees its reserve.
    filler = Filler(state)
    t_fill = time.time()

    def failing_while_full():
        filler.top_up()
        return health(a).status_code == 503 and free_bytes(state) < (256 << 10)

    wait_for(failing_while_full, timeout=90, what="/healthz 503 on a full disk", every=0.2)
    # stays failing: the disk is still full
    for _ in range(10):
        filler.top_up()
        time.sleep(0.2)
    r = health(a)
    assert r.status_code == 503, r.text
    msg = r.json()["message"]
    assert "storage failing since" in msg and "full" in msg, msg

    st = status(a)["storage"]
    assert st["state"] == "failing", st
    assert "full" in st["error"], st
    since = datetime.datetime.fromisoformat(st["since"].replace("Z", "+00:00"))
    assert abs(since.timestamp() - time.time()) < 60, st
    assert int(st["failedWrites"]) > 0 and int(st["faults"]) >= 1, st
    assert int(st.get("reserveBytes", 0)) == 0, f"the reserve was not released: {st}"
    text = a.get("/metrics", token="reader").text
    assert metric(text, "graind_storage_failing") == 1, text
    assert metric(text, "graind_storage_failing_since_seconds") > 0
    assert re.search(r'^graind_storage_error_info\{error=".*full.*"\} 1$', text, re.M), text

    # The probes run on in the kernel, and what they see waits in memory.
    assert_probe_running(ex)
    assert_probe_running(sysc)
    during = spawn_execs(20, "during")
    time.sleep(1.5)
    filler.top_up()
    assert health(a).status_code == 503
    waiting = int(status(a)["storage"].get("samplesWaiting", 0))
    assert waiting > 0, status(a)["storage"]

    # Free 2 MB: writes resume within seconds.
    filler.free(2 << 20)
    t_free = time.time()
    wait_for(lambda: health(a).status_code == 200, timeout=10, what="/healthz 200 after 2 MB freed")
    recovered_in = time.time() - t_free
    assert recovered_in < 10
    st = status(a)["storage"]
    assert st["state"] == "ok" and st.get("recovered"), st
    # every sample taken during the fault is stored, none dropped
    wait_for(lambda: during <= exec_pids(), timeout=10, what="exec samples of the fault")
    text = a.get("/metrics", token="reader").text
    dropped = re.search(rf'^graind_queue_dropped_total\{{probe="{ex}"\}} (\S+)$', text, re.M)
    assert dropped and float(dropped.group(1)) == 0, text
    assert int(metric(text, "graind_sample_write_retries_total")) > 0

    # One line told of the fault (then at most one a minute), not one per write.
    lines = storage_lines(a.read_log())
    assert time.time() - t_fill < 60
    assert len(lines) == 1, lines


# ---------------------------------------------------------------- faultfs

def faultfs_agent(state_dir, ctl, log_path, rule=None):
    if not os.path.exists(FAULTFS):
        pytest.skip(f"{FAULTFS} not built (make {os.path.relpath(FAULTFS)})")
    env = ["env", f"LD_PRELOAD={FAULTFS}", f"FAULTFS_CTL={ctl}", "FAULTFS_MATCH=graind.db",
           # the ASan runtime need not come first: the shim only wraps writes
           "ASAN_OPTIONS=verify_asan_link_order=0"]
    if rule:
        env.append(f"FAULTFS_RULE={rule}")
    return Agent(state_dir, wrapper=env, log_path=log_path)


def set_rule(ctl, rule):
    tmp = ctl + ".tmp"
    with open(tmp, "w") as f:
        f.write(rule + "\n")
    os.replace(tmp, ctl)


def injected(ctl):
    try:
        return int(open(ctl + ".count").read())
    except (OSError, ValueError):
        return 0


def test_failing_writes_503_then_recover(tmp_path, pb):
    import grpc

    state = tempfile.mkdtemp(prefix="graind-test-")
    ctl = str(tmp_path / "faultfs.ctl")
    a = faultfs_agent(state, ctl, str(tmp_path / "graind.log")).start()
    try:
        name = f"sf-probe-{RUN}"
        p = put_exec(a, name)
        exec_pids = ExecPids(a, name)
        gen, prog = p["generation"], p["programs"][0]["progId"]

        # Every write to the database fails: ENOSPC.
        set_rule(ctl, "write ENOSPC 1 0")
        spawn_execs(3, "eio")
        body = wait_for(lambda: (lambda r: r.json() if r.status_code == 503 else None)(health(a)),
                        timeout=10, what="/healthz 503")
        assert "storage failing since" in body["message"], body
        assert injected(ctl) > 0

        # A change is refused with 503 naming the storage error ...
        r = a.request("PUT", f"/v1/sinks/sf-{RUN}",
                      json={"statsd": {"host": "127.0.0.1", "port": 8125}})
        assert r.status_code == 503, r.text
        assert "storage failing" in r.json()["message"] and "full" in r.json()["message"], r.text
        # ... over gRPC as UNAVAILABLE, with the same message
        ch = grpc.insecure_channel(a.grpc_target)
        put_sink = ch.unary_unary("/graind.Graind/PutSink",
                                  request_serializer=pb.PutSinkRequest.SerializeToString,
                                  response_deserializer=pb.Sink.FromString)
        with pytest.raises(grpc.RpcError) as e:
            put_sink(pb.PutSinkRequest(name=f"sf-{RUN}", sink=pb.Sink(
                statsd=pb.StatsdSink(host="127.0.0.1", port=8125))),
                metadata=[("authorization", f"Bearer {a.admin}")], timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert "storage failing" in e.value.details()
        # gRPC health says NOT_SERVING (2) while the storage fails
        check = ch.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
        assert check(b"", timeout=5) == b"\x08\x02"
        # ... and a probe change leaves the kernel as it was.
        r = a.request("PUT", f"/v1/probes/{name}", json={
            "builtin": "exec", "desiredState": "DETACHED"})
        assert r.status_code == 503, r.text
        got = a.get(f"/v1/probes/{name}").json()
        assert got["generation"] == gen and got["programs"][0]["progId"] == prog, got
        assert got["programs"][0]["state"] == "PROGRAM_ATTACHED", got
        assert_probe_running(name)

        # The disk mends: writes resume by themselves, samples of the fault kept.
        during = spawn_execs(10, "eio-during")
        time.sleep(0.5)
        set_rule(ctl, "off")
        wait_for(lambda: health(a).status_code == 200, timeout=10, what="/healthz 200 again")
        assert check(b"", timeout=5) == b"\x08\x01"        # SERVING
        ch.close()
        wait_for(lambda: during <= exec_pids(), timeout=10, what="samples of the fault")
        r = a.request("PUT", f"/v1/sinks/sf-{RUN}",
                      json={"statsd": {"host": "127.0.0.1", "port": 8125}})
        assert r.status_code in (200, 201), r.text

        # An I/O error on a few writes only: seen, then gone without help.
        faults = int(status(a)["storage"]["faults"])
        set_rule(ctl, "write EIO 1 3")
        spawn_execs(3, "eio-3")
        wait_for(lambda: int(status(a)["storage"]["faults"]) > faults, timeout=10,
                 what="the EIO fault counted")
        wait_for(lambda: health(a).status_code == 200, timeout=10, what="recovery after EIO")
        assert len(storage_lines(a.read_log())) == 1, storage_lines(a.read_log())
    finally:
        set_rule(ctl, "off")
        a.request("DELETE", f"/v1/sinks/sf-{RUN}")
        a.request("DELETE", f"/v1/probes/sf-probe-{RUN}")
        rc = a.stop()
        shutil.rmtree(state, ignore_errors=True)
    assert rc == 0, a.read_log()[-3000:]


def test_probe_update_with_the_nth_write_failing(tmp_path):
    """A probe update whose Nth database write fails (EIO, once) either
    commits whole or leaves the previous generation running: the store and
    the kernel agree either way, and the next update goes through."""
    state = tempfile.mkdtemp(prefix="graind-test-")
    ctl = str(tmp_path / "faultfs.ctl")
    a = faultfs_agent(state, ctl, str(tmp_path / "graind.log")).start()
    name = f"sf-nth-{RUN}"
    try:
        spec = lambda poll: {"builtin": "syscalls",  # noqa: E731
                             "outputs": [{"map": "counts", "metric": {"pollIntervalMs": poll}}]}
        r = a.request("PUT", f"/v1/probes/{name}", json=spec(1000))
        assert r.status_code in (200, 201), r.text
        outcomes = set()
        for n in (1, 2, 3, 4, 6, 8):
            before = a.get(f"/v1/probes/{name}").json()
            set_rule(ctl, f"write EIO {n} 1")
            time.sleep(0.05)        # the shim looks at its rule every 20 ms
            r = a.request("PUT", f"/v1/probes/{name}",
                          json=spec(1000 + 100 * n))
            assert r.status_code in (200, 503), r.text
            outcomes.add(r.status_code)
            got = a.get(f"/v1/probes/{name}").json()
            if r.status_code == 200:
                assert got["generation"] == r.json()["generation"] != before["generation"]
                assert got["programs"][0]["progId"] == r.json()["programs"][0]["progId"]
            else:
                assert "storage failing" in r.json()["message"], r.text
                assert got["generation"] == before["generation"], (got, before)
                assert got["programs"][0]["progId"] == before["programs"][0]["progId"]
            assert got["programs"][0]["state"] == "PROGRAM_ATTACHED", got
            assert_probe_running(name)
            assert sorted(os.listdir(PIN_ROOT)) == [name], os.listdir(PIN_ROOT)
            set_rule(ctl, "off")
            wait_for(lambda: health(a).status_code == 200 or
                     a.request("PUT", f"/v1/sinks/sf-nth-{RUN}", json={
                         "statsd": {"host": "127.0.0.1", "port": 8125}}).status_code < 300,
                     timeout=10, what="writable again")
        assert 503 in outcomes, outcomes
    finally:
        set_rule(ctl, "off")
        a.request("DELETE", f"/v1/sinks/sf-nth-{RUN}")
        a.request("DELETE", f"/v1/probes/{name}")
        rc = a.stop()
        shutil.rmtree(state, ignore_errors=True)
    assert rc == 0, a.read_log()[-3000:]
