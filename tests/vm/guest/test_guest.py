"""What runs inside each test VM (tests/vm/): Debian 12's own kernel, with
the system tests' modules beside this one in the share.

The system tests that hold on any kernel are imported and so run here as
they are: status and features, the verifier's verdicts, XDP and TC with
traffic and exact counts (classic tc filters where the kernel has no
TCX), a ring buffer on a tracepoint with every field decoded, the exec
and dns built-ins, kill -9 with re-adoption without a counting gap, and
XDP programs sharing an interface through libxdp's dispatcher (with
xdp-filter) where the kernel runs it. Below them, what this host's own kernel cannot run: kprobes, kretprobes
and fentry with real hits, and a StatsD sink feeding a listener in the
guest. And the unit test programs built for the guest's architecture
(qemu-user passes no bpf(2) through, so they run here)."""

import json
import os
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import assert_error, bpf_object, sh
from test_builtins import (SYSCALLS_ATTACH, builtins, syscall_counts,  # noqa: F401
                           test_dns_queries_over_veth, test_exec_event_fields, wait_for)
from test_objects import (test_status, test_verify_accepts_accept,  # noqa: F401
                          test_verify_fentry, test_verify_rejects_out_of_bounds_read)
from test_probes import (Probes, a, count, hooks_sha, net, pin_dir, probes,  # noqa: F401
                         restart_dirs, test_restart_adopts_classic_tc_filter_by_its_place_and_program,
                         test_restart_adopts_xdp_probe_without_losing_counts,
                         test_tc_classic_filter_counts_and_detach_removes_it,
                         test_tc_classic_update_swaps_the_program_on_the_same_filter,
                         test_tc_egress_counts_packets,
                         test_tc_mode_follows_the_kernel_and_the_spec_can_choose,
                         test_xdp_counts_packets_and_detach_leaves_nothing,
                         test_xdp_update_swaps_program_in_place, only_program)
from test_samples import Caller, emit, emit_sha, test_ringbuf_events_every_field  # noqa: F401
from test_xdp_shared import (chain, test_a_program_attached_alone_is_409_naming_it,  # noqa: F401
                             test_drop_stops_the_chain_unless_proceed_on_says_go_on,
                             test_kill9_restart_keeps_all_three_and_delete_leaves_the_others,
                             test_three_programs_share_the_interface_in_priority_order,
                             test_two_programs_of_one_object_cannot_both_join, xfilter, xnet)

RUN = os.getpid() % 10000
SLEEPS = 40


def sleep_n(n):
    """n nanosleeps of this process: each one a call of do_nanosleep."""
    for _ in range(n):
        time.sleep(0.001)


def features(a):
    return a.get("/v1/status").json()["features"]


def require(a, feature):
    feats = features(a)
    if feats[feature] != "FEATURE_PRESENT":
        note = [n for n in feats["notes"] if n.startswith(feature + ":")]
        pytest.skip(f"this kernel lacks {feature}: {note}")


def test_xdp_dispatcher_runs_on_debians_kernel(a):
    """Debian 12's kernel runs libxdp's dispatcher, on amd64 and arm64: the
    feature probe must say so here, or the shared-XDP tests would skip for
    a wrong reason."""
    feats = features(a)
    assert feats["xdpDispatcher"] == "FEATURE_PRESENT", feats["notes"]


@pytest.mark.parametrize("kind", ["kprobe", "kretprobe"])
def test_kprobe_counts_real_calls(a, probes, kind):
    """A kprobe (and the same program as a kretprobe) on do_nanosleep
    counts at least the calls this test makes, and its pinned link is the
    kernel's kprobe link."""
    require(a, "kprobes")
    name = f"{kind}-{RUN}"
    p = probes.create(name, probes.spec("count_kprobe", {kind: {"function": "do_nanosleep"}}))
    st = only_program(p)
    assert st["state"] == "PROGRAM_ATTACHED", st
    before = count(name, "kprobe")
    sleep_n(SLEEPS)
    deadline = time.time() + 5
    while count(name, "kprobe") - before < SLEEPS and time.time() < deadline:
        time.sleep(0.05)
    assert count(name, "kprobe") - before >= SLEEPS
    assert a.delete(f"/v1/probes/{name}").status_code == 204
    assert not os.path.exists(pin_dir(name))


def test_kprobe_on_a_missing_function_is_404(a, probes):
    require(a, "kprobes")
    r = probes.put(f"kp404-{RUN}", probes.spec("count_kprobe", {
        "kprobe": {"function": "graind_no_such_function"}}))
    assert_error(r, 404, "graind_no_such_function")


def test_fentry_counts_real_calls(a):
    """fentry where the kernel has BPF trampolines: the program's global
    `calls` (its .bss map) grows by at least the calls made."""
    require(a, "fentry")
    r = a.upload(bpf_object("fentry.bpf.o"), name="fentry")
    assert r.status_code in (200, 201), r.text
    p = Probes(a, r.json()["sha256"])
    name = f"fentry-{RUN}"
    try:
        st = only_program(p.create(name, p.spec("on_nanosleep")))
        assert st["state"] == "PROGRAM_ATTACHED", st
        bss = [f for f in os.listdir(pin_dir(name)) if f.endswith("-bss")]
        assert len(bss) == 1, os.listdir(pin_dir(name))

        def calls():
            # The raw value: BTF's formatted view nests it under its section.
            [entry] = json.loads(sh("bpftool", "-j", "map", "dump", "pinned",
                                    os.path.join(pin_dir(name), bss[0])).stdout)
            return int.from_bytes(bytes(int(b, 16) for b in entry["value"]), "little")
        before = calls()
        sleep_n(SLEEPS)
        time.sleep(0.2)
        assert calls() - before >= SLEEPS
    finally:
        p.cleanup()


def test_statsd_sink_feeds_a_listener_in_the_guest(a, hooks_sha):
    """A tracepoint probe's counts map as gauges, sent by a StatsD sink
    to a UDP listener here: StatsD lines whose tracepoint slot is exactly
    the getpid calls a caller made."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(10)
        port = listener.getsockname()[1]
        caller = Caller()
        p = Probes(a, hooks_sha)
        name, sink = f"sd-{RUN}", f"statsd-{RUN}"
        try:
            spec = p.spec("count_getpid", {"tracepoint": {"category": "syscalls",
                                                          "name": "sys_enter_getpid"}},
                          constants={"target_pid": caller.tid})
            spec["outputs"] = [{"map": "counts",
                                "metric": {"pollIntervalMs": 100, "kind": "GAUGE"}}]
            p.create(name, spec)
            r = a.request("PUT", f"/v1/sinks/{sink}", json={
                "statsd": {"host": "127.0.0.1", "port": port, "prefix": "vm",
                           "flushIntervalMs": 100},
                "selector": {"probes": [name]}})
            assert r.status_code in (200, 201), r.text
            caller.call(7)
            lines, deadline = [], time.time() + 15
            while time.time() < deadline and not any(":7|" in l for l in lines):
                lines += listener.recv(65536).decode().splitlines()
            assert [l for l in lines if ":7|" in l], lines
            assert all(l.startswith("vm.") and "|" in l for l in lines), lines
        finally:
            caller.stop()
            p.cleanup()
            a.delete(f"/v1/sinks/{sink}")


def test_syscalls_builtin_names_this_architectures_calls(a, pb, builtins):
    """The syscalls built-in reads the call number the way this CPU passes
    it (CO-RE on its pt_regs), and the agent names it by this
    architecture's table: exactly the getpid calls a caller made."""
    caller = Caller()
    try:
        name = f"sys-{RUN}"
        builtins.put(name, "syscalls", programs=SYSCALLS_ATTACH,
                     constants={"target_pid": caller.tid})
        time.sleep(0.3)
        caller.call(333)
        got = wait_for(lambda: (lambda g: g if g.get("getpid") == 333 else None)(
            syscall_counts(a, pb, name)), timeout=15, what="333 getpid calls by name")
        assert all(not k.isdigit() for k in got), got
    finally:
        caller.stop()


UNIT = "/payload/unit"


def test_unit_test_programs_pass():
    """Every cmocka program exits 0 on this kernel and CPU (they read the
    test objects' sources and the proto from tests/bpf/ and proto/ under
    their working directory)."""
    programs = sorted(os.listdir(UNIT)) if os.path.isdir(UNIT) else []
    if not programs:
        pytest.skip("no unit test programs in the share")
    env = dict(os.environ, LD_LIBRARY_PATH="/payload/lib", GRAIND_TEST_BPF="/payload/bpf",
               GRAIND_BUILTIN_BPF="/payload/builtin")
    failed = []
    with tempfile.TemporaryDirectory() as cwd:
        os.makedirs(os.path.join(cwd, "tests"))
        os.makedirs(os.path.join(cwd, "proto"))
        os.symlink("/payload/bpf", os.path.join(cwd, "tests", "bpf"))
        os.symlink("/payload/graind.proto", os.path.join(cwd, "proto", "graind.proto"))
        for name in programs:
            r = subprocess.run([os.path.join(UNIT, name)], cwd=cwd, env=env,
                               capture_output=True, text=True, timeout=1200)
            if r.returncode != 0:
                out = r.stdout + r.stderr
                verdicts = [l for l in out.splitlines()
                            if "FAILED" in l or "LINE" in l or "ERROR" in l]
                failed.append(f"{name} exited {r.returncode}:\n" + "\n".join(verdicts[:40]) +
                              f"\n...\n{out[-1500:]}")
    assert not failed, "\n".join(failed)
