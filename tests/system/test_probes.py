"""Probes on the real kernel: every hook kind counts real packets, syscalls
and function calls; every attach, detach and delete is checked against what
the kernel holds (bpftool), not only against the API's answer; generations,
If-Match, errors, the audit log, restarts and concurrent clients.

Counters come from tests/bpf/hooks.bpf.c: one program per hook kind, each
adding to its slot of the array map `counts`, pinned by graind at
/sys/fs/bpf/graind/<probe>/map.counts. Packet programs count only IPv4 UDP
to port 9; task programs only the process named by the constant
`target_pid`."""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import hashlib
import random
import threading
import time
from dataclasses import dataclass, field

import pytest

from conftest import (GRAIND_BIN, PIN_ROOT, TEST_BPF, Agent, assert_error, bpf_object, raw_http, sh,
                      veth_namespace)

COUNT_PORT = 9          # hooks.bpf.c counts UDP to this port only
NOISE_PORT = 10         # sent alongside, must not be counted
SLOT = {"xdp": 0, "tc": 1, "tracepoint": 2, "raw_tracepoint": 3, "uprobe": 4,
        "cgroup_skb": 5, "perf_event": 6, "kprobe": 7}
ZERO_SHA = "0" * 64
RUN = os.getpid() % 10000   # keeps names of this run apart from another's


# ---------------------------------------------------------------- kernel side

def bpftool(*args):
    """bpftool's JSON answer, or None when the object does not exist."""
    out = sh("bpftool", "-j", *args, check=False)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout) if out.stdout.strip() else None


def kernel_ids():
    """Every program, map and link id the kernel holds right now."""
    return {kind: {o["id"] for o in (bpftool(kind, "show") or [])}
            for kind in ("prog", "map", "link")}


@dataclass
class Footprint:
    """What one probe owns in the kernel, read from its pins."""
    files: list
    links: dict = field(default_factory=dict)    # link id -> bpftool link info
    progs: set = field(default_factory=set)
    maps: set = field(default_factory=set)
    tc_records: list = field(default_factory=list)
    xdp_slots: dict = field(default_factory=dict)   # record file -> program id


# The pin layout (server/probe/internal.h): bpffs refuses '.' in names, so
# a probe's directory writes '.' as ':'; links are link_<prog> (per CPU:
# link_<prog>-<cpu>), maps map_<map>, plus the single-entry map `meta`.
LINK = "link_"
COUNTS_PIN = "map_counts"


def pin_dir(probe):
    return os.path.join(PIN_ROOT, probe.replace(".", ":"))


def is_link_of(file, prog):
    return file == LINK + prog or file.startswith(f"{LINK}{prog}-")


def footprint(probe):
    d = pin_dir(probe)
    fp = Footprint(files=sorted(os.listdir(d)))
    for f in fp.files:
        path = os.path.join(d, f)
        record = f.startswith(LINK) and bpftool("map", "show", "pinned", path)
        if record and record.get("name") == "graind_xdp":
            # An XDP program in libxdp's dispatcher has no link either: its
            # record (server/probe/xdpslot.c) names the program.
            fp.maps.add(record["id"])
            fp.xdp_slots[f] = xdp_record_prog(path)
            fp.progs.add(fp.xdp_slots[f])
        elif record:
            # A classic tc filter is no link: its record, a map, is pinned
            # in the link's place; what the filter runs, tc tells.
            fp.maps.add(record["id"])
            fp.tc_records.append(f)
        elif f.startswith(LINK):
            info = bpftool("link", "show", "pinned", path)
            assert info, f"pinned link {path} cannot be opened"
            fp.links[info["id"]] = info
            fp.progs.add(info["prog_id"])
        else:
            info = bpftool("map", "show", "pinned", path)
            assert info, f"pinned map {path} cannot be opened"
            fp.maps.add(info["id"])
    for prog_id in fp.progs:
        info = bpftool("prog", "show", "id", str(prog_id))
        assert info, f"program {prog_id} of {probe} is not loaded"
        fp.maps |= set(info.get("map_ids", []))
    return fp


def xdp_record_prog(path):
    """The program id an XDP dispatcher record holds: struct xdp_record
    {magic, ifindex, prog_id, mode}, four __u32."""
    entry = bpftool("map", "dump", "pinned", path)[0]
    value = bytes(int(b, 16) for b in entry["value"])
    return int.from_bytes(value[8:12], "little")


def assert_gone(probe, fp, timeout=None):
    """Nothing of the probe is left: no pin dir (unless probe is None: an
    earlier generation), and none of fp's links, programs or maps. An
    extension program (an XDP program in libxdp's dispatcher) is freed only
    after its trampoline's grace period: seconds on an emulated CPU."""
    if timeout is None:
        timeout = 30 if fp.xdp_slots else 3
    deadline = time.time() + timeout
    while True:
        ids = kernel_ids()
        left = {"pins": probe is not None and os.path.exists(pin_dir(probe)),
                "links": set(fp.links) & ids["link"],
                "progs": fp.progs & ids["prog"],
                "maps": fp.maps & ids["map"]}
        if not any(left.values()):
            return
        if time.time() > deadline:
            raise AssertionError(f"probe {probe} left kernel state behind: {left}")
        time.sleep(0.05)


def map_values(path):
    """{key: value} of a pinned array map of __u64, summed over CPUs."""
    entries = bpftool("map", "dump", "pinned", path)
    assert entries is not None, f"cannot dump {path}"
    out = {}
    for e in entries:
        e = e.get("formatted", e)
        key, value = e["key"], e.get("value", e.get("values"))
        if isinstance(key, list):
            key = int.from_bytes(bytes(int(b, 16) for b in key), "little")
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = sum(v["value"] if not isinstance(v["value"], list) else
                        int.from_bytes(bytes(int(b, 16) for b in v["value"]), "little")
                        for v in value)
        elif isinstance(value, list):
            value = int.from_bytes(bytes(int(b, 16) for b in value), "little")
        out[int(key)] = int(value)
    return out


def count(probe, slot):
    return map_values(os.path.join(pin_dir(probe), COUNTS_PIN))[SLOT[slot]]


def wait_count(probe, slot, want, timeout=3):
    """The counter once it reaches `want` (or whatever it is at the timeout);
    a short settle afterwards catches counting more than sent."""
    deadline = time.time() + timeout
    got = count(probe, slot)
    while got < want and time.time() < deadline:
        time.sleep(0.02)
        got = count(probe, slot)
    time.sleep(0.1)
    return count(probe, slot)


LIBXDP_PINS = "/sys/fs/bpf/xdp"


def xdp_on(ifname):
    """The XDP programs the kernel runs on ifname: [(prog id, mode)]. Where
    that is libxdp's dispatcher, the programs in it, in run order, found
    where libxdp's protocol pins them: <bpffs>/xdp/dispatch-<ifindex>-<id>/
    prog<n>-prog."""
    net = bpftool("net", "show", "dev", ifname)
    out = []
    for x in net[0].get("xdp", []):
        prog = bpftool("prog", "show", "id", str(x["id"])) or {}
        pins = os.path.join(LIBXDP_PINS, f"dispatch-{socket.if_nametoindex(ifname)}-{x['id']}")
        if prog.get("name") != "xdp_dispatcher" or not os.path.isdir(pins):
            out.append((x["id"], x.get("mode")))
            continue
        slots = sorted((f for f in os.listdir(pins) if f.endswith("-prog")),
                       key=lambda f: int(f[4:-5]))
        out += [(bpftool("prog", "show", "pinned", os.path.join(pins, f))["id"], x.get("mode"))
                for f in slots]
    return out


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def a(module_agent):
    return module_agent


@pytest.fixture(scope="module")
def hooks_sha(a):
    r = a.upload(bpf_object("hooks.bpf.o"), name="hooks")
    assert r.status_code in (200, 201), r.text
    return r.json()["sha256"]


@pytest.fixture(scope="module")
def net():
    with veth_namespace("t", 0) as n:
        yield n


def send_udp_from_ns(n, dst, count, port=COUNT_PORT, noise=3):
    """count datagrams to dst:port sent from inside the namespace, plus
    `noise` to NOISE_PORT that no counter may see."""
    code = ("import socket\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for i in range({count}): s.sendto(b'graind', ('{dst}', {port}))\n"
            f"for i in range({noise}): s.sendto(b'noise', ('{dst}', {NOISE_PORT}))\n")
    sh("ip", "netns", "exec", n.ns, "/usr/bin/python3", "-c", code)


def send_udp_from_host(dst, count, port=COUNT_PORT, noise=3):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(b"graind", (dst, port))
        for _ in range(noise):
            s.sendto(b"noise", (dst, NOISE_PORT))


MARK_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The uprobe target: kept out of line and not folded away. */
__attribute__((noinline, used)) int graind_test_mark(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

/* mark N [wait]: with "wait", print the pid and wait for a byte on stdin
 * first; then call getpid and graind_test_mark N times each. */
int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 0, sum = 0;
	char go;

	if (argc > 2 && strcmp(argv[2], "wait") == 0) {
		printf("%d\n", (int)getpid());
		fflush(stdout);
		if (read(0, &go, 1) != 1)
			return 2;
	}
	for (int i = 0; i < n; i++) {
		syscall(SYS_getpid);
		sum = graind_test_mark(sum);
	}
	return sum == n ? 0 : 1;
}
"""


@pytest.fixture(scope="module")
def mark_bin():
    d = tempfile.mkdtemp(prefix="graind-mark-")
    src, binary = os.path.join(d, "mark.c"), os.path.join(d, "mark")
    with open(src, "w") as f:
        f.write(MARK_C)
    sh("gcc", "-O0", "-g", "-o", binary, src)
    yield binary
    shutil.rmtree(d, ignore_errors=True)


class Waiting:
    """A program that prints its pid and waits for a byte on stdin before it
    makes the calls the probes count (the mark binary with "wait", say):
    its pid is known before; go() lets it run to the end."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = int(self.proc.stdout.readline())

    def go(self):
        self.proc.stdin.write(b"g")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=20) == 0
        self.proc.stdout.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Probes:
    """PUTs probes for one test and remembers their names: cleanup() deletes
    them, and removes their pins should the agent have failed to."""

    def __init__(self, agent, sha):
        self.a, self.sha, self.names = agent, sha, []

    def spec(self, program, attach=None, state="ATTACHED", constants=None, sha=None):
        s = {"objectSha256": sha or self.sha,
             "programs": [{"program": program, **({"attach": attach} if attach else {})}],
             "desiredState": state}
        if constants:
            s["constants"] = [{"name": k, "value": str(v)} for k, v in constants.items()]
        return s

    def put(self, name, spec, if_match=None, agent=None):
        if name not in self.names:
            self.names.append(name)
        headers = {"Content-Type": "application/json"}
        if if_match is not None:
            headers["If-Match"] = str(if_match)
        return (agent or self.a).request("PUT", f"/v1/probes/{name}", json=spec,
                                         headers=headers)

    def create(self, name, spec, **kw):
        """PUT that must succeed; returns the Probe."""
        r = self.put(name, spec, **kw)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def get(self, name):
        r = self.a.get(f"/v1/probes/{name}")
        assert r.status_code == 200, r.text
        return r.json()

    def cleanup(self):
        for name in self.names:
            self.a.delete(f"/v1/probes/{name}")
        for name in self.names:
            shutil.rmtree(pin_dir(name), ignore_errors=True)


@pytest.fixture
def probes(a, hooks_sha):
    p = Probes(a, hooks_sha)
    yield p
    p.cleanup()


def only_program(probe):
    progs = probe.get("programs", [])
    assert len(progs) == 1, probe
    return progs[0]


def assert_attached(probe, prog_name, link_type):
    """The API says the program is attached and the kernel agrees: its link
    is pinned, alive, of the right type and runs the program the API names.
    Returns the probe's footprint."""
    st = only_program(probe)
    assert st["program"] == prog_name, st
    assert st["state"] == "PROGRAM_ATTACHED", st
    fp = footprint(probe["name"])
    assert "meta" in fp.files and COUNTS_PIN in fp.files, fp.files
    assert any(is_link_of(f, prog_name) for f in fp.files), fp.files
    if "xdpSlot" in st:
        # In libxdp's dispatcher: recorded, not linked, and running there.
        assert link_type == "xdp" and not st.get("linkId"), st
        assert fp.xdp_slots[LINK + prog_name] == st["progId"], (fp.xdp_slots, st)
        assert st["progId"] in [i for i, _ in xdp_on(st["xdpSlot"]["ifname"])], st
        prog = bpftool("prog", "show", "id", str(st["progId"]))
        assert prog and prog_name.startswith(prog["name"]) and prog["type"] == "ext", prog
        return fp
    assert st["linkId"] in fp.links, (st, fp.links)
    link = fp.links[st["linkId"]]
    assert link["prog_id"] == st["progId"], (link, st)
    # bpftool 7.1 does not know TCX links by name: it shows their number.
    assert link["type"] in (link_type, {"tcx": 11}.get(link_type)), link
    prog = bpftool("prog", "show", "id", str(st["progId"]))
    assert prog and prog_name.startswith(prog["name"]), prog
    return fp


def delete_and_check(probes, name):
    """DELETE the probe; the kernel must hold nothing of it afterwards."""
    fp = footprint(name)
    r = probes.a.delete(f"/v1/probes/{name}")
    assert r.status_code == 204, r.text
    assert_gone(name, fp)
    assert_error(probes.a.get(f"/v1/probes/{name}"), 404)


# ---------------------------------------------------------------- hooks

def test_xdp_counts_packets_and_detach_leaves_nothing(a, probes, net):
    name = f"xdp-{RUN}"
    before = xdp_on(net.host_if)
    assert before == [], before
    p = probes.create(name, probes.spec("count_xdp", {"xdp": {"ifname": net.host_if,
                                                               "mode": "XDP_MODE_SKB"}}))
    assert p["name"] == name and int(p["generation"]) == 1
    fp = assert_attached(p, "count_xdp", "xdp")
    st = only_program(p)
    assert xdp_on(net.host_if) == [(st["progId"], "generic")]

    send_udp_from_ns(net, net.host_ip, 25)
    assert wait_count(name, "xdp", 25) == 25

    # Detach: the interface runs nothing, and nothing of the probe remains.
    r = a.post(f"/v1/probes/{name}:detach")
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["desiredState"] == "DETACHED"
    assert all(s["state"] != "PROGRAM_ATTACHED" for s in r.json().get("programs", [])), r.json()
    assert_gone(name, fp)
    assert xdp_on(net.host_if) == []

    # Attach again: a fresh program and link, counting from zero.
    r = a.post(f"/v1/probes/{name}:attach")
    assert r.status_code == 200, r.text
    fp2 = assert_attached(r.json(), "count_xdp", "xdp")
    assert not set(fp2.links) & set(fp.links)
    send_udp_from_ns(net, net.host_ip, 4)
    assert wait_count(name, "xdp", 4) == 4

    delete_and_check(probes, name)
    assert xdp_on(net.host_if) == []


def test_tc_egress_counts_packets(a, probes, net):
    """The TC mode the agent chose for this kernel (a TCX link where it has
    them, a classic tc filter where not) counts outgoing packets."""
    name = f"tc-{RUN}"
    p = probes.create(name, probes.spec("count_tc", {"tc": {"ifname": net.host_if,
                                                             "direction": "TC_EGRESS"}}))
    if a.get("/v1/status").json()["features"]["tcMode"] == "TC_MODE_TCX":
        assert_attached(p, "count_tc", "tcx")
    else:
        assert_filter(only_program(p), net.host_if, "TC_EGRESS", 0)
    send_udp_from_host(net.ns_ip, 17)
    assert wait_count(name, "tc", 17) == 17
    assert count(name, "xdp") == 0
    delete_and_check(probes, name)


# Classic tc filters: what kernels without TCX (6.1) get, asked for here
# by mode on a kernel that has both.

def tc_filters(ifname, direction="ingress"):
    """The bpf filters of ifname's clsact `direction`, as tc lists them:
    [(priority, handle, program id, direct action)]."""
    out = sh("tc", "-j", "filter", "show", "dev", ifname, direction, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    return [(f["pref"], int(f["options"]["handle"], 16), f["options"]["prog"]["id"],
             f["options"].get("direct-action", False))
            for f in json.loads(out.stdout) if f.get("kind") == "bpf" and "options" in f]


def classic_tc(ifname, direction="TC_INGRESS", priority=0):
    return {"tc": {"ifname": ifname, "direction": direction, "priority": priority,
                   "mode": "TC_MODE_CLASSIC"}}


def assert_filter(st, ifname, direction, priority):
    """The program is attached as a tc filter at priority, and tc agrees."""
    assert st["state"] == "PROGRAM_ATTACHED", st
    assert "linkId" not in st, st
    tf = st["tcFilter"]
    assert (tf["ifname"], tf.get("direction", "TC_INGRESS")) == (ifname, direction), tf
    if priority:
        assert tf["priority"] == priority, tf
    where = "egress" if direction == "TC_EGRESS" else "ingress"
    assert tc_filters(ifname, where) == [(tf["priority"], tf["handle"], st["progId"], True)]
    return tf


def test_tc_classic_filter_counts_and_detach_removes_it(a, probes, net):
    name = f"tcc-{RUN}"
    st = only_program(probes.create(name, probes.spec("count_tc", classic_tc(net.host_if,
                                                                              priority=7))))
    assert_filter(st, net.host_if, "TC_INGRESS", 7)
    fp = footprint(name)
    assert fp.tc_records == ["link_count_tc"] and not fp.links, fp
    send_udp_from_ns(net, net.host_ip, 13)
    assert wait_count(name, "tc", 13) == 13

    # Unpinning alone would leave the filter running: detach removes it.
    r = a.post(f"/v1/probes/{name}:detach")
    assert r.status_code == 200, r.text
    assert tc_filters(net.host_if) == []
    assert_gone(name, Footprint(files=[], progs={st["progId"]}, maps=fp.maps))

    r = a.post(f"/v1/probes/{name}:attach")
    assert r.status_code == 200, r.text
    st2 = only_program(r.json())
    assert_filter(st2, net.host_if, "TC_INGRESS", 7)
    assert st2["progId"] != st["progId"]
    send_udp_from_ns(net, net.host_ip, 2)
    assert wait_count(name, "tc", 2) == 2
    fp2 = footprint(name)
    fp2.progs.add(st2["progId"])
    delete_and_check(probes, name)
    assert_gone(name, fp2)
    assert tc_filters(net.host_if) == []


def test_tc_classic_update_swaps_the_program_on_the_same_filter(a, probes, net):
    name = f"tcu-{RUN}"
    tc = classic_tc(net.host_if, "TC_EGRESS", priority=3)
    st1 = only_program(probes.create(name, probes.spec("count_tc", tc)))
    tf1 = assert_filter(st1, net.host_if, "TC_EGRESS", 3)
    r = probes.put(name, probes.spec("count_tc", tc, constants={"label": "v2"}), if_match=1)
    assert r.status_code == 200, r.text
    st2 = only_program(r.json())
    assert st2["progId"] != st1["progId"]
    # The same filter, handle and priority, now runs the new program.
    assert assert_filter(st2, net.host_if, "TC_EGRESS", 3) == tf1
    assert_gone(None, Footprint(files=[], progs={st1["progId"]}))
    send_udp_from_host(net.ns_ip, 6)
    assert wait_count(name, "tc", 6) == 6
    delete_and_check(probes, name)
    assert tc_filters(net.host_if, "egress") == []


def test_tc_classic_priority_held_by_another_kind_of_filter_is_409(a, probes, net):
    """A priority that holds another tool's filter of another kind is a
    conflict named as such, and that filter is left as it was."""
    name = f"tco-{RUN}"
    sh("tc", "qdisc", "add", "dev", net.host_if, "clsact", check=False)
    sh("tc", "filter", "add", "dev", net.host_if, "ingress", "pref", "9", "u32", "match",
       "u32", "0", "0")
    try:
        r = probes.put(name, probes.spec("count_tc", classic_tc(net.host_if, priority=9)))
        assert_error(r, 409, net.host_if, "priority 9")
        out = sh("tc", "-j", "filter", "show", "dev", net.host_if, "ingress").stdout
        assert {f["kind"] for f in json.loads(out)} == {"u32"}, out
        # With the other filter gone (it matched every packet first), the
        # priority is free.
        sh("tc", "filter", "del", "dev", net.host_if, "ingress", "pref", "9")
        st = only_program(probes.create(name, probes.spec("count_tc",
                                                          classic_tc(net.host_if, priority=9))))
        assert_filter(st, net.host_if, "TC_INGRESS", 9)
        send_udp_from_ns(net, net.host_ip, 3)
        assert wait_count(name, "tc", 3) == 3
        delete_and_check(probes, name)
    finally:
        sh("tc", "filter", "del", "dev", net.host_if, "ingress", "pref", "9", check=False)


def test_tc_mode_follows_the_kernel_and_the_spec_can_choose(a, probes, net):
    """AUTO is TCX where the kernel has it and a classic filter where not;
    asking for TCX where it is missing is refused, naming the kernel that
    has it."""
    feats = a.get("/v1/status").json()["features"]
    name = f"tcx-{RUN}"
    tc = {"tc": {"ifname": net.host_if, "mode": "TC_MODE_TCX"}}
    if feats["tcx"] == "FEATURE_PRESENT":
        assert feats["tcMode"] == "TC_MODE_TCX", feats
        p = probes.create(name, probes.spec("count_tc", tc))
        assert "tcFilter" not in only_program(p)
        assert_attached(p, "count_tc", "tcx")
        assert tc_filters(net.host_if) == []
        delete_and_check(probes, name)
    else:
        assert feats["tcMode"] == "TC_MODE_CLASSIC", feats
        assert_error(probes.put(name, probes.spec("count_tc", tc)), 422, "TCX", "6.6")
        st = only_program(probes.create(name, probes.spec("count_tc", {"tc": {
            "ifname": net.host_if}})))
        assert_filter(st, net.host_if, "TC_INGRESS", 0)
        delete_and_check(probes, name)
        assert tc_filters(net.host_if) == []
    assert_error(probes.put(name, probes.spec("count_tc", {"tc": {"ifname": net.host_if,
                                                                    "mode": 77}})), 400)


def test_tracepoint_counts_syscalls_of_one_process(a, probes, mark_bin):
    name = f"tp-{RUN}"
    proc = Waiting([mark_bin, "37", "wait"])
    try:
        p = probes.create(name, probes.spec(
            "count_getpid", {"tracepoint": {"category": "syscalls", "name": "sys_enter_getpid"}},
            constants={"target_pid": proc.pid}))
        assert_attached(p, "count_getpid", "perf_event")
        os.getpid(), os.getpid()        # another process: not counted
        proc.go()
    finally:
        proc.kill()
    assert wait_count(name, "tracepoint", 37) == 37
    # The kernel ran the program for every getpid on the machine.
    st = only_program(probes.get(name))
    assert int(st.get("runCount", "0")) >= 37, st
    delete_and_check(probes, name)


def test_raw_tracepoint_counts_syscalls(a, probes, mark_bin):
    name = f"rawtp-{RUN}"
    n = 50
    proc = Waiting([mark_bin, str(n), "wait"])
    try:
        p = probes.create(name, probes.spec("count_sys_enter",
                                            {"rawTracepoint": {"name": "sys_enter"}},
                                            constants={"target_pid": proc.pid}))
        assert_attached(p, "count_sys_enter", "raw_tracepoint")
        proc.go()
    finally:
        proc.kill()
    # n getpid, then a handful to exit (the read that was waiting entered
    # the kernel before the attach).
    got = wait_count(name, "raw_tracepoint", n)
    assert n <= got <= n + 10, got
    delete_and_check(probes, name)


def test_uprobe_counts_function_calls(a, probes, mark_bin):
    name = f"uprobe-{RUN}"
    p = probes.create(name, probes.spec("count_uprobe", {"uprobe": {
        "binary": mark_bin, "symbol": "graind_test_mark"}}))
    assert_attached(p, "count_uprobe", "perf_event")
    assert subprocess.run([mark_bin, "13"], timeout=20).returncode == 0
    assert subprocess.run([mark_bin, "8"], timeout=20).returncode == 0
    assert wait_count(name, "uprobe", 21) == 21
    delete_and_check(probes, name)
    # Detached: calls are no longer counted anywhere (the map is gone too).
    assert subprocess.run([mark_bin, "3"], timeout=20).returncode == 0


def cgroup2_root():
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return mnt
    pytest.skip("no cgroup v2 hierarchy mounted")


@pytest.fixture
def cgroup():
    path = os.path.join(cgroup2_root(), f"graind-test-{os.getpid()}")
    os.mkdir(path)
    yield path
    # Move anything left back to the root before removing the cgroup.
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            for pid in f.read().split():
                with open(os.path.join(os.path.dirname(path), "cgroup.procs"), "w") as r:
                    r.write(pid)
    except OSError:
        pass
    for _ in range(50):
        try:
            os.rmdir(path)
            break
        except OSError:
            time.sleep(0.05)


def test_cgroup_skb_counts_ingress_of_cgroup(a, probes, net, cgroup):
    name = f"cgroup-{RUN}"
    p = probes.create(name, probes.spec("count_cgroup_skb", {"cgroup": {
        "path": cgroup, "attachType": "cgroup_inet_ingress"}}))
    assert_attached(p, "count_cgroup_skb", "cgroup")

    # A receiver in the namespace: moved into the cgroup before it opens
    # its socket (a socket belongs to the cgroup it was created in).
    n = 11
    code = ("import socket, sys\n"
            "print('ready', flush=True); sys.stdin.readline()\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('{net.ns_ip}', {COUNT_PORT})); s.settimeout(5)\n"
            "print('bound', flush=True)\n"
            "got=0\n"
            f"while got < {n}:\n"
            "    s.recv(100); got += 1\n"
            "print(got, flush=True)\n")
    recv = subprocess.Popen(["ip", "netns", "exec", net.ns, "/usr/bin/python3", "-c", code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert recv.stdout.readline().strip() == "ready"
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(recv.pid))
        recv.stdin.write("go\n")
        recv.stdin.flush()
        line = recv.stdout.readline().strip()
        assert line == "bound", (line, recv.poll() is not None and recv.stderr.read())
        # The noise to NOISE_PORT (no socket there) must not be counted.
        send_udp_from_host(net.ns_ip, n, noise=2)
        assert recv.stdout.readline().strip() == str(n)
        assert recv.wait(timeout=10) == 0
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    assert wait_count(name, "cgroup_skb", n) == n
    delete_and_check(probes, name)


def test_perf_event_runs(a, probes):
    name = f"perf-{RUN}"
    p = probes.create(name, probes.spec("count_perf_event", {"perfEvent": {
        "type": 1, "config": "0", "sampleFreq": "1000"}}))    # PERF_TYPE_SOFTWARE, CPU_CLOCK
    st = only_program(p)
    assert st["state"] == "PROGRAM_ATTACHED", st
    fp = footprint(name)
    cpus = os.cpu_count()
    perf_links = [f for f in fp.files if is_link_of(f, "count_perf_event")]
    assert len(perf_links) == cpus, fp.files
    assert len(fp.links) == cpus and all(l["type"] == "perf_event" for l in fp.links.values())
    assert st["linkId"] in fp.links
    first = 0
    deadline = time.time() + 5
    while first == 0 and time.time() < deadline:
        sum(range(200000))      # keep a CPU busy
        first = count(name, "perf_event")
    assert first > 0
    time.sleep(0.2)
    assert count(name, "perf_event") > first
    delete_and_check(probes, name)


def test_kprobe_needs_config_kprobes(a, probes):
    if os.path.exists("/sys/bus/event_source/devices/kprobe"):
        pytest.skip("this kernel has kprobes; the CONFIG_KPROBES refusal cannot be tested")
    name = f"kprobe-{RUN}"
    before = kernel_ids()
    r = probes.put(name, probes.spec("count_kprobe", {"kprobe": {"function": "do_nanosleep"}}))
    assert_error(r, 422, "CONFIG_KPROBES")
    # The section alone says kprobe too.
    r = probes.put(name, probes.spec("count_kprobe"))
    assert_error(r, 422, "CONFIG_KPROBES")
    assert not os.path.exists(pin_dir(name))
    assert_error(a.get(f"/v1/probes/{name}"), 404)
    assert_no_new_programs(before, "count_kprobe")


def test_tracepoint_program_limit_is_409(a, probes):
    """The kernel runs at most 64 programs on one tracepoint (E2BIG): the
    probe past the limit gets a 409 naming it, leaves nothing behind, and
    fits once another probe there is gone."""
    hook = {"tracepoint": {"category": "syscalls", "name": "sys_enter_getppid"}}
    before = kernel_ids()
    refused = None
    for i in range(70):
        r = probes.put(f"e2big-{RUN}-{i}", probes.spec("count_getpid", hook))
        if r.status_code != 201:
            refused = i
            break
    assert refused is not None, "70 programs attached to one tracepoint"
    assert refused <= 64, f"probe {refused} was refused, past the kernel's limit of 64"
    name = f"e2big-{RUN}-{refused}"
    assert_error(r, 409, "as many BPF programs as the kernel allows (E2BIG)",
                 "tracepoint syscalls:sys_enter_getppid")
    assert_error(a.get(f"/v1/probes/{name}"), 404)
    assert not os.path.exists(pin_dir(name))
    attached = len([p for p in bpftool("prog", "show") or []
                    if p["id"] not in before["prog"] and "count_getpid".startswith(p.get("name", "\0"))])
    assert attached == refused, (attached, refused)
    assert a.delete(f"/v1/probes/e2big-{RUN}-0").status_code == 204
    probes.create(name, probes.spec("count_getpid", hook))


def assert_no_new_programs(before, prog_name, timeout=2):
    deadline = time.time() + timeout
    while True:
        new = [p for p in bpftool("prog", "show") or []
               if p["id"] not in before["prog"] and prog_name.startswith(p.get("name", "\0"))]
        if not new or time.time() > deadline:
            break
        time.sleep(0.05)
    assert not new, f"a refused probe left programs loaded: {new}"


# ---------------------------------------------------------------- generations

def tp_spec(probes, pid=1, state="ATTACHED"):
    return probes.spec("count_getpid", {"tracepoint": {"category": "syscalls",
                                                       "name": "sys_enter_getpid"}},
                       state=state, constants={"target_pid": pid})


def test_put_is_idempotent_and_generations_count_changes(a, probes):
    name = f"gen-{RUN}"
    r = probes.put(name, tp_spec(probes, pid=1))
    assert r.status_code == 201, r.text
    p1 = r.json()
    assert int(p1["generation"]) == 1
    fp1 = assert_attached(p1, "count_getpid", "perf_event")

    # The same spec again: 200, same generation, the kernel untouched.
    r = probes.put(name, tp_spec(probes, pid=1))
    assert r.status_code == 200, r.text
    p2 = r.json()
    assert int(p2["generation"]) == 1
    assert only_program(p2)["linkId"] == only_program(p1)["linkId"]
    assert only_program(p2)["progId"] == only_program(p1)["progId"]
    assert set(footprint(name).links) == set(fp1.links)

    # A changed spec: the next generation, the old program replaced.
    r = probes.put(name, tp_spec(probes, pid=2))
    assert r.status_code == 200, r.text
    p3 = r.json()
    assert int(p3["generation"]) == 2
    fp3 = assert_attached(p3, "count_getpid", "perf_event")
    assert only_program(p3)["progId"] != only_program(p1)["progId"]
    assert_gone(None, Footprint(files=[], links=fp1.links, progs=fp1.progs,
                                maps=fp1.maps - fp3.maps))

    # If-Match: a stale generation is refused and changes nothing.
    r = probes.put(name, tp_spec(probes, pid=3), if_match=1)
    assert_error(r, 412, "generation")
    assert int(probes.get(name)["generation"]) == 2
    assert set(footprint(name).links) == set(fp3.links)
    r = probes.put(name, tp_spec(probes, pid=3), if_match='"2"')
    assert r.status_code == 200, r.text
    assert int(r.json()["generation"]) == 3
    assert r.json()["spec"]["constants"] == [{"name": "target_pid", "value": "3"}]
    r = probes.put(f"nothere-{RUN}", tp_spec(probes), if_match=1)
    assert_error(r, 404)

    # Desired state is not part of the spec: detaching keeps the generation.
    fp = footprint(name)
    r = probes.put(name, tp_spec(probes, pid=3, state="DETACHED"))
    assert r.status_code == 200, r.text
    assert int(r.json()["generation"]) == 3
    assert r.json()["spec"]["desiredState"] == "DETACHED"
    assert_gone(name, fp)
    r = probes.put(name, tp_spec(probes, pid=3, state="ATTACHED"))
    assert r.status_code == 200, r.text
    assert int(r.json()["generation"]) == 3
    assert_attached(r.json(), "count_getpid", "perf_event")
    delete_and_check(probes, name)
    assert_error(a.delete(f"/v1/probes/{name}"), 404)


def test_xdp_update_swaps_program_in_place(a, probes, net):
    """A new generation of an XDP probe replaces the program under the same
    link: the interface never runs nothing, the old program is unloaded."""
    name = f"swap-{RUN}"
    xdp = {"xdp": {"ifname": net.host_if, "mode": "XDP_MODE_SKB"}}
    st1 = only_program(probes.create(name, probes.spec("count_xdp", xdp)))
    fp1 = footprint(name)
    r = probes.put(name, probes.spec("count_xdp", xdp, constants={"label": "v2"}), if_match=1)
    assert r.status_code == 200, r.text
    assert int(r.json()["generation"]) == 2
    st2 = only_program(r.json())
    assert st2.get("linkId") == st1.get("linkId")
    assert st2["progId"] != st1["progId"]
    fp2 = assert_attached(r.json(), "count_xdp", "xdp")
    assert xdp_on(net.host_if) == [(st2["progId"], "generic")]
    assert_gone(None, Footprint(files=[], progs=fp1.progs, maps=fp1.maps - fp2.maps,
                                xdp_slots=fp1.xdp_slots))
    send_udp_from_ns(net, net.host_ip, 6)
    assert wait_count(name, "xdp", 6) == 6
    delete_and_check(probes, name)
    assert xdp_on(net.host_if) == []


def test_failed_update_keeps_previous_generation(a, probes, net):
    """All or nothing: a new generation that cannot attach leaves the
    running one as it was, in the kernel and in the store."""
    name = f"keep-{RUN}"
    xdp = {"xdp": {"ifname": net.host_if, "mode": "XDP_MODE_SKB"}}
    st1 = only_program(probes.create(name, probes.spec("count_xdp", xdp)))
    fp1 = footprint(name)
    send_udp_from_ns(net, net.host_ip, 2)
    assert wait_count(name, "xdp", 2) == 2
    bad = [(probes.spec("count_xdp", {"xdp": {"ifname": "nosuchif0"}}), 404),
           (probes.spec("no_such_prog", xdp), 400),
           (probes.spec("count_xdp", {"tracepoint": {"category": "syscalls",
                                                     "name": "sys_enter_getpid"}}), 400)]
    for spec, code in bad:
        assert_error(probes.put(name, spec), code)
        p = probes.get(name)
        assert int(p["generation"]) == 1, p
        assert p["spec"]["programs"][0]["attach"] == xdp
        st = only_program(p)
        assert (st.get("linkId"), st["progId"]) == (st1.get("linkId"), st1["progId"]), st
        assert st["state"] == "PROGRAM_ATTACHED", st
        fp = footprint(name)
        assert set(fp.links) == set(fp1.links) and fp.maps == fp1.maps
        assert xdp_on(net.host_if) == [(st1["progId"], "generic")]
    send_udp_from_ns(net, net.host_ip, 3)
    assert wait_count(name, "xdp", 5) == 5
    delete_and_check(probes, name)


class StoreRefuses:
    """Makes the agent's store refuse every write to the probes table, as a
    full disk or an I/O error would: triggers that abort the statement."""

    def __init__(self, agent):
        self.db = sqlite3.connect(os.path.join(agent.state_dir, "graind.db"),
                                  isolation_level=None, timeout=10)

    def __enter__(self):
        for op in ("INSERT", "UPDATE", "DELETE"):
            self.db.execute(f"CREATE TRIGGER test_refuse_{op.lower()} BEFORE {op} ON probes "
                            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        return self

    def __exit__(self, *exc):
        for op in ("insert", "update", "delete"):
            self.db.execute(f"DROP TRIGGER test_refuse_{op}")
        self.db.close()


def test_store_failure_puts_the_kernel_back(a, probes, net):
    """The kernel changes first and the store then records it: when the
    store cannot, the kernel goes back to what the store says. A new
    generation leaves the old one running with its counts, a new probe
    leaves nothing, a delete or a detach leaves the probe attached."""
    name, new = f"storefail-{RUN}", f"storefail-new-{RUN}"
    xdp = {"xdp": {"ifname": net.host_if, "mode": "XDP_MODE_SKB"}}
    st1 = only_program(probes.create(name, probes.spec("count_xdp", xdp)))
    fp1 = footprint(name)
    send_udp_from_ns(net, net.host_ip, 2)
    assert wait_count(name, "xdp", 2) == 2
    before = kernel_ids()
    with StoreRefuses(a):
        r = probes.put(name, probes.spec("count_xdp", xdp, constants={"label": "v2"}))
        assert r.status_code == 500, r.text
        r = probes.put(new, probes.spec("count_getpid", {"tracepoint": {
            "category": "syscalls", "name": "sys_enter_getpid"}}))
        assert r.status_code == 500, r.text
        assert a.delete(f"/v1/probes/{name}").status_code == 500
        r = a.request("POST", f"/v1/probes/{name}:detach")
        assert r.status_code == 500, r.text
    log = a.read_log()
    for n, times in ((name, 3), (new, 1)):     # the kernel changed, and went back
        assert log.count(f'msg="probe change rolled back" probe={n}\n') == times, log[-3000:]
    p = probes.get(name)
    assert int(p["generation"]) == 1, p
    st = only_program(p)
    assert (st.get("linkId"), st["progId"], st["state"]) == \
        (st1.get("linkId"), st1["progId"], "PROGRAM_ATTACHED"), st
    fp = footprint(name)
    assert fp.files == fp1.files and set(fp.links) == set(fp1.links) and fp.maps == fp1.maps
    assert xdp_on(net.host_if) == [(st1["progId"], "generic")]
    send_udp_from_ns(net, net.host_ip, 3)
    assert wait_count(name, "xdp", 5) == 5
    assert_error(a.get(f"/v1/probes/{new}"), 404)
    assert not os.path.exists(pin_dir(new))
    assert not [d for d in os.listdir(PIN_ROOT) if d.startswith("_")], os.listdir(PIN_ROOT)
    assert_no_new_programs(before, "count_xdp")
    assert_no_new_programs(before, "count_getpid")
    delete_and_check(probes, name)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("bad", ["UPPER", "a" * 64, "-x", ".hidden", "a b", "a%00b", "x:y"])
def test_bad_probe_names(a, probes, bad):
    r = probes.put(bad, tp_spec(probes))
    assert_error(r, 400, "[a-z0-9][a-z0-9._-]{0,62}")


def put_raw(a, path, spec):
    """PUT sent as it is: a client library would resolve the dots itself."""
    body = json.dumps(spec).encode()
    req = (f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.admin}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
           "Connection: close\r\n\r\n").encode() + body
    status, _, reply = raw_http(a.port, req)
    return status, json.loads(reply)


def test_dot_names_slashes_and_empty_name(a, probes):
    for path in ("/v1/probes/..", "/v1/probes/%2E%2E", "/v1/probes/."):
        status, reply = put_raw(a, path, tp_spec(probes))
        assert (status, reply["code"]) == (400, 400), (path, reply)
        assert "[a-z0-9][a-z0-9._-]{0,62}" in reply["message"]
    # A name never holds '/': these paths name no probe at all.
    for path in ("/v1/probes/../x", "/v1/probes/..%2Fx", "/v1/probes/x%2F..%2Fy",
                 "/v1/probes/"):
        status, reply = put_raw(a, path, tp_spec(probes))
        assert (status, reply["code"]) == (404, 404), (path, reply)
        assert "no such endpoint" in reply["message"]
    assert not [d for d in os.listdir(PIN_ROOT) if d in ("x", "..", "y")]
    assert not os.path.exists("/sys/fs/bpf/x") and not os.path.exists("/sys/fs/x")

    # The longest name, and one with dots (bpffs pins it as ':').
    for name in ("a" * 63, f"dotted.name.{RUN}"):
        p = probes.create(name, tp_spec(probes))
        assert p["name"] == name
        assert os.path.isdir(pin_dir(name)), os.listdir(PIN_ROOT)
        assert_attached(p, "count_getpid", "perf_event")
        delete_and_check(probes, name)


def test_spec_errors(a, probes, net):
    name = f"err-{RUN}"
    before = kernel_ids()
    cases = [
        (probes.spec("count_xdp", {"xdp": {"ifname": net.host_if}}, sha=ZERO_SHA), 404, ZERO_SHA),
        (probes.spec("no_such_prog", {"xdp": {"ifname": net.host_if}}), 400, "no_such_prog"),
        (probes.spec("count_xdp", {"xdp": {"ifname": "nosuchif0"}}), 404, "nosuchif0"),
        (probes.spec("count_xdp", {"tracepoint": {"category": "syscalls",
                                                  "name": "sys_enter_getpid"}}), 400, "count_xdp"),
        (probes.spec("count_getpid", {"xdp": {"ifname": net.host_if}}), 400, "count_getpid"),
        (probes.spec("count_uprobe", {"uprobe": {"binary": "/nonexistent/bin",
                                                 "symbol": "f"}}), 404, "/nonexistent/bin"),
        (probes.spec("count_cgroup_skb", {"cgroup": {"path": "/sys/fs/cgroup/nonexistent-graind",
                                                     "attachType": "cgroup_inet_ingress"}}),
         404, "nonexistent-graind"),
    ]
    for spec, code, text in cases:
        r = probes.put(name, spec)
        assert_error(r, code, text)
        assert not os.path.exists(pin_dir(name)), spec
        assert_error(a.get(f"/v1/probes/{name}"), 404)
    assert xdp_on(net.host_if) == []
    assert_no_new_programs(before, "count_xdp")
    assert_no_new_programs(before, "count_getpid")


def test_foreign_xdp_program_is_409(a, probes, net):
    obj = os.path.join(TEST_BPF, "hooks.bpf.o")
    sh("ip", "link", "set", "dev", net.host_if, "xdpgeneric", "obj", obj, "sec", "xdp")
    try:
        foreign = xdp_on(net.host_if)
        assert len(foreign) == 1
        name = f"foreign-{RUN}"
        r = probes.put(name, probes.spec("count_xdp", {"xdp": {"ifname": net.host_if,
                                                               "mode": "XDP_MODE_SKB"}}))
        assert_error(r, 409, str(foreign[0][0]), net.host_if)
        assert xdp_on(net.host_if) == foreign
        assert not os.path.exists(pin_dir(name))
    finally:
        sh("ip", "link", "set", "dev", net.host_if, "xdpgeneric", "off", check=False)
    assert xdp_on(net.host_if) == []


def test_verifier_rejection_is_422_with_report(a, probes, net):
    r = a.upload(bpf_object("reject_oob.bpf.o"), name="reject-oob")
    assert r.status_code in (200, 201), r.text
    sha = r.json()["sha256"]
    name = f"oob-{RUN}"
    before = kernel_ids()
    r = probes.put(name, probes.spec("read_past_end", {"xdp": {"ifname": net.host_if}}, sha=sha))
    body = r.json()
    assert_error(r, 422, "read_past_end")
    rep = body["verifyReport"]
    assert rep.get("accepted", False) is False, rep
    verdicts = {v["program"]: v for v in rep["programs"]}
    v = verdicts["read_past_end"]
    assert v.get("accepted", False) is False
    assert v["verifierLog"] and v["error"], v
    assert not os.path.exists(pin_dir(name))
    assert xdp_on(net.host_if) == []
    assert_error(a.get(f"/v1/probes/{name}"), 404)
    assert_no_new_programs(before, "read_past_end")


def audit_all(a):
    entries, token = [], None
    while True:
        params = {"page_size": 100}
        if token:
            params["page_token"] = token
        r = a.get("/v1/audit", params=params, token="reader")
        assert r.status_code == 200, r.text
        entries += r.json().get("entries", [])
        token = r.json().get("nextPageToken")
        if not token:
            return entries


def test_audit_records_probe_changes(a, probes):
    name = f"audit-{RUN}"
    start = len(audit_all(a))
    assert probes.put(name, tp_spec(probes)).status_code == 201
    assert probes.put(name, tp_spec(probes)).status_code == 200
    assert probes.put(name, tp_spec(probes, pid=5), if_match=7).status_code == 412
    assert a.post(f"/v1/probes/{name}:detach").status_code == 200
    assert a.post(f"/v1/probes/{name}:attach", token="reader").status_code == 403
    assert a.post(f"/v1/probes/{name}:attach").status_code == 200
    assert a.get(f"/v1/probes/{name}").status_code == 200      # reads are not audited
    assert a.delete(f"/v1/probes/{name}").status_code == 204
    assert probes.put("BAD", tp_spec(probes)).status_code == 400
    new = audit_all(a)[start:]
    got = [(e["role"], e["action"], e["target"], e["result"]) for e in new]
    assert got == [
        ("admin", "PutProbe", name, 201),
        ("admin", "PutProbe", name, 200),
        ("admin", "PutProbe", name, 412),
        ("admin", "DetachProbe", name, 200),
        ("reader", "AttachProbe", name, 403),
        ("admin", "AttachProbe", name, 200),
        ("admin", "DeleteProbe", name, 204),
        ("admin", "PutProbe", "BAD", 400),
    ], got
    assert "generation" in new[2]["message"]
    assert "message" not in new[0]


def test_listing_shows_probes(a, probes):
    names = [f"list-{RUN}-{i}" for i in range(3)]
    for i, n in enumerate(names):
        probes.create(n, tp_spec(probes, state="ATTACHED" if i != 1 else "DETACHED"))
    r = a.get("/v1/probes", token="reader")
    assert r.status_code == 200, r.text
    listed = {p["name"]: p for p in r.json()["probes"]}
    assert set(names) <= set(listed)
    assert listed[names[1]]["spec"]["desiredState"] == "DETACHED"
    assert only_program(listed[names[0]])["state"] == "PROGRAM_ATTACHED"
    assert only_program(listed[names[0]])["linkId"] in footprint(names[0]).links
    assert not os.path.exists(pin_dir(names[1]))
    for n in names:
        assert a.delete(f"/v1/probes/{n}").status_code == 204
        assert not os.path.exists(pin_dir(n))


# ---------------------------------------------------------------- restarts

@pytest.fixture
def restart_dirs():
    dirs = []

    def make():
        d = tempfile.mkdtemp(prefix="graind-test-")
        dirs.append(d)
        return d

    yield make
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def agent_with_hooks(state_dir, agents):
    """An agent of its own on state_dir (added to agents, for the test to
    stop), hooks.bpf.o uploaded: (agent, Probes)."""
    a = Agent(state_dir).start()
    agents.append(a)
    r = a.upload(bpf_object("hooks.bpf.o"))
    assert r.status_code in (200, 201), r.text
    return a, Probes(a, r.json()["sha256"])


def test_restart_adopts_xdp_probe_without_losing_counts(net, restart_dirs):
    d = restart_dirs()
    name = f"restart-{RUN}"
    agents = []
    try:
        a1, p = agent_with_hooks(d, agents)
        spec = p.spec("count_xdp", {"xdp": {"ifname": net.host_if, "mode": "XDP_MODE_SKB"}})
        st1 = only_program(p.create(name, spec))
        fp1 = footprint(name)
        send_udp_from_ns(net, net.host_ip, 5)
        assert wait_count(name, "xdp", 5) == 5

        a1.stop(signal.SIGKILL)
        # The agent is gone; the pinned program keeps counting.
        assert xdp_on(net.host_if) == [(st1["progId"], "generic")]
        send_udp_from_ns(net, net.host_ip, 7)
        assert wait_count(name, "xdp", 12) == 12

        a2 = Agent(d).start()
        agents.append(a2)
        r = a2.get(f"/v1/probes/{name}")
        assert r.status_code == 200, r.text
        st2 = only_program(r.json())
        assert st2["state"] == "PROGRAM_ATTACHED", st2
        assert (st2.get("linkId"), st2["progId"]) == (st1.get("linkId"), st1["progId"])
        assert f'msg="probe adopted" probe={name}' in a2.read_log()
        fp2 = footprint(name)
        assert set(fp2.links) == set(fp1.links) and fp2.progs == fp1.progs
        assert fp2.maps == fp1.maps
        assert count(name, "xdp") == 12
        send_udp_from_ns(net, net.host_ip, 3)
        assert wait_count(name, "xdp", 15) == 15
        # The same spec again is a no-op on the adopted probe.
        r = p.put(name, spec, agent=a2)
        assert r.status_code == 200, r.text
        assert only_program(r.json()).get("linkId") == st1.get("linkId")

        assert a2.delete(f"/v1/probes/{name}").status_code == 204
        assert_gone(name, fp2)
        assert xdp_on(net.host_if) == []
        assert a2.stop() == 0, a2.read_log()[-3000:]
    finally:
        for ag in agents:
            ag.stop(signal.SIGKILL)
        shutil.rmtree(pin_dir(name), ignore_errors=True)
        sh("ip", "link", "set", "dev", net.host_if, "xdpgeneric", "off", check=False)


def test_restart_adopts_classic_tc_filter_by_its_place_and_program(net, restart_dirs):
    """A tc filter cannot be pinned: after kill -9 the new agent finds it by
    (ifindex, direction, handle, priority) and the program it runs."""
    d = restart_dirs()
    name = f"tcrestart-{RUN}"
    agents = []
    try:
        a1, p = agent_with_hooks(d, agents)
        spec = p.spec("count_tc", classic_tc(net.host_if, priority=5))
        st1 = only_program(p.create(name, spec))
        tf = assert_filter(st1, net.host_if, "TC_INGRESS", 5)
        send_udp_from_ns(net, net.host_ip, 4)
        assert wait_count(name, "tc", 4) == 4

        a1.stop(signal.SIGKILL)
        send_udp_from_ns(net, net.host_ip, 5)
        assert wait_count(name, "tc", 9) == 9

        a2 = Agent(d).start()
        agents.append(a2)
        st2 = only_program(a2.get(f"/v1/probes/{name}").json())
        assert st2["progId"] == st1["progId"] and assert_filter(
            st2, net.host_if, "TC_INGRESS", 5) == tf
        assert f'msg="probe adopted" probe={name}' in a2.read_log()
        send_udp_from_ns(net, net.host_ip, 1)
        assert wait_count(name, "tc", 10) == 10

        # Someone removes the filter: the probe says so.
        sh("tc", "filter", "del", "dev", net.host_if, "ingress", "pref", "5")
        st3 = only_program(a2.get(f"/v1/probes/{name}").json())
        assert st3["state"] == "PROGRAM_DETACHED" and "no longer hooks" in st3["error"], st3
        assert a2.delete(f"/v1/probes/{name}").status_code == 204
        assert tc_filters(net.host_if) == []
        assert a2.stop() == 0, a2.read_log()[-3000:]
    finally:
        for ag in agents:
            ag.stop(signal.SIGKILL)
        shutil.rmtree(pin_dir(name), ignore_errors=True)
        sh("tc", "filter", "del", "dev", net.host_if, "ingress", check=False)


def test_restart_settles_a_detach_killed_before_its_commit(net, restart_dirs):
    """An agent killed between moving a probe's pins aside (_old_<probe>)
    and removing them leaves the probe running there; the store still wants
    it attached, so the next start puts it back, counts and all."""
    d = restart_dirs()
    name = f"aside-{RUN}"
    aside = os.path.join(PIN_ROOT, "_old_" + name)
    agents = []
    try:
        a1 = Agent(d).start()
        agents.append(a1)
        r = a1.upload(bpf_object("hooks.bpf.o"))
        assert r.status_code in (200, 201), r.text
        p = Probes(a1, r.json()["sha256"])
        st1 = only_program(p.create(name, p.spec(
            "count_xdp", {"xdp": {"ifname": net.host_if, "mode": "XDP_MODE_SKB"}})))
        send_udp_from_ns(net, net.host_ip, 4)
        assert wait_count(name, "xdp", 4) == 4
        a1.stop(signal.SIGKILL)
        os.rename(pin_dir(name), aside)

        a2 = Agent(d).start()
        agents.append(a2)
        st2 = only_program(a2.get(f"/v1/probes/{name}").json())
        assert st2["state"] == "PROGRAM_ATTACHED", st2
        assert (st2.get("linkId"), st2["progId"]) == (st1.get("linkId"), st1["progId"])
        assert not os.path.exists(aside)
        assert "a detach was never committed" in a2.read_log()
        send_udp_from_ns(net, net.host_ip, 1)
        assert wait_count(name, "xdp", 5) == 5
        assert a2.delete(f"/v1/probes/{name}").status_code == 204
        assert xdp_on(net.host_if) == []
        assert a2.stop() == 0, a2.read_log()[-3000:]
    finally:
        for ag in agents:
            ag.stop(signal.SIGKILL)
        for path in (pin_dir(name), aside):
            shutil.rmtree(path, ignore_errors=True)
        sh("ip", "link", "set", "dev", net.host_if, "xdpgeneric", "off", check=False)


# "": the probe's own directory; "_new_", "_old_": all an agent killed in
# the middle of a first attach or of a detach leaves of it.
@pytest.mark.parametrize("left_as", ["", "_new_", "_old_"])
def test_reset_removes_pins_the_store_does_not_know(restart_dirs, left_as):
    name = f"stale-{RUN}"
    left = os.path.join(PIN_ROOT, left_as + name)
    agents = []
    try:
        a1 = Agent(restart_dirs()).start()
        agents.append(a1)
        r = a1.upload(bpf_object("hooks.bpf.o"))
        assert r.status_code in (200, 201), r.text
        p = Probes(a1, r.json()["sha256"])
        p.create(name, tp_spec(p))
        fp = footprint(name)
        a1.stop(signal.SIGKILL)
        assert footprint(name).links.keys() == fp.links.keys()   # still pinned
        if left_as:
            os.rename(pin_dir(name), left)

        # A fresh agent with an empty store, on the same bpffs root, told
        # to start afresh (a new store alone never removes pins).
        a2 = Agent(restart_dirs(), ["--reset"]).start()
        agents.append(a2)
        assert_gone(name, fp)
        assert not os.path.exists(left)
        log = a2.read_log()
        assert "store does not know" in log and f"probe={name}" in log, log[-2000:]
        assert a2.get("/v1/probes").json().get("probes", []) == []
        assert a2.stop() == 0, a2.read_log()[-3000:]
    finally:
        for ag in agents:
            ag.stop(signal.SIGKILL)
        shutil.rmtree(left, ignore_errors=True)


def test_agent_exits_cleanly_after_failed_attaches(restart_dirs):
    """Refused probes are remembered by the probe manager; shutting down
    must still be clean (exit 0, nothing for the sanitizers to find)."""
    ag = Agent(restart_dirs()).start()
    try:
        r = ag.upload(bpf_object("hooks.bpf.o"))
        assert r.status_code in (200, 201), r.text
        p = Probes(ag, r.json()["sha256"])
        for i in range(3):
            r = p.put(f"refused-{RUN}-{i}", p.spec("count_xdp", {"xdp": {"ifname": "nosuchif0"}}))
            assert_error(r, 404, "nosuchif0")
    finally:
        rc = ag.stop()
    assert rc == 0, ag.read_log()[-3000:]


# ---------------------------------------------------------------- concurrency

def test_concurrent_clients_leave_kernel_equal_to_store(a, probes):
    workers = 20
    prefix = f"conc-{RUN}-"
    shared = f"{prefix}shared"
    p0 = probes.create(shared, tp_spec(probes, pid=1))
    assert int(p0["generation"]) == 1
    names = [f"{prefix}{i}" for i in range(workers)]
    probes.names += names
    barrier = threading.Barrier(workers)
    errors, conflict = [], []

    def work(i):
        try:
            barrier.wait(timeout=30)
            name = names[i]
            steps = [("PUT", probes.put(name, tp_spec(probes, pid=100 + i)), (201,))]
            steps.append(("detach", a.post(f"/v1/probes/{name}:detach"), (200,)))
            # Everyone races to change the shared probe from generation 1.
            r = probes.put(shared, tp_spec(probes, pid=1000 + i), if_match=1)
            conflict.append((i, r.status_code, r.text))
            steps.append(("attach", a.post(f"/v1/probes/{name}:attach"), (200,)))
            if i % 2 == 0:
                steps.append(("delete", a.delete(f"/v1/probes/{name}"), (204,)))
            if i % 4 == 1:
                steps.append(("detach", a.post(f"/v1/probes/{name}:detach"), (200,)))
            for what, r, ok in steps:
                if r.status_code not in ok:
                    errors.append((i, what, r.status_code, r.text[:300]))
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append((i, "exception", repr(e)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    wins = [c for c in conflict if c[1] == 200]
    assert len(wins) == 1, conflict
    assert all(c[1] == 412 for c in conflict if c[1] != 200), conflict
    winner = wins[0][0]
    sp = probes.get(shared)
    assert int(sp["generation"]) == 2
    assert sp["spec"]["constants"] == [{"name": "target_pid", "value": str(1000 + winner)}]

    # The store and the kernel agree, probe by probe.
    listed, params = {}, {"page_size": 100}
    while True:
        r = a.get("/v1/probes", params=params)
        assert r.status_code == 200, r.text
        listed.update({p["name"]: p for p in r.json().get("probes", [])})
        params["page_token"] = r.json().get("nextPageToken")
        if not params["page_token"]:
            break
    mine = {n: p for n, p in listed.items() if n.startswith(prefix)}
    expect_attached = {shared} | {names[i] for i in range(workers) if i % 2 == 1 and i % 4 != 1}
    expect_detached = {names[i] for i in range(workers) if i % 4 == 1}
    assert set(mine) == expect_attached | expect_detached, sorted(mine)
    pinned = {d for d in os.listdir(PIN_ROOT) if prefix in d}
    assert pinned == expect_attached, (pinned ^ expect_attached)
    ids = kernel_ids()
    for n in expect_attached:
        assert mine[n]["spec"]["desiredState"] == "ATTACHED"
        fp = assert_attached(mine[n], "count_getpid", "perf_event")
        assert set(fp.links) <= ids["link"] and fp.progs <= ids["prog"]
    for n in expect_detached:
        assert mine[n]["spec"]["desiredState"] == "DETACHED"

    fps = {n: footprint(n) for n in expect_attached}
    for n in list(mine):
        assert a.delete(f"/v1/probes/{n}").status_code == 204
    for n, fp in fps.items():
        assert_gone(n, fp)
    assert not [d for d in os.listdir(PIN_ROOT) if prefix in d]


# ---------------------------------------------------------------- objects in use

def test_builtin_object_cannot_be_deleted(a, probes):
    name = f"inuse-{RUN}"
    objects = a.get("/v1/objects", params={"page_size": 1000}).json()["objects"]
    exec_sha = next(o["sha256"] for o in objects if o.get("builtin") and o["name"] == "exec")
    probes.create(name, {"builtin": "exec"})
    assert_error(a.delete(f"/v1/objects/{exec_sha}"), 409, "built-in 'exec'", "cannot be deleted")
    # The probe records the built-in object it runs.
    r = a.delete(f"/v1/probes/{name}")
    assert r.status_code == 204
    assert_error(a.delete(f"/v1/objects/{exec_sha}"), 409, "built-in 'exec'")
    probes.create(name, {"builtin": "exec"})
    # Still there, and the probe can still be re-attached.
    assert a.get(f"/v1/objects/{exec_sha}").status_code == 200
    assert a.post(f"/v1/probes/{name}:detach").status_code == 200
    r = a.post(f"/v1/probes/{name}:attach")
    assert r.status_code == 200, r.text
    assert only_program(r.json())["state"] == "PROGRAM_ATTACHED"


def test_object_delete_racing_probe_puts_leaves_no_unknown_probe(a, probes):
    """Deletes of an object race PUTs of probes that use it: whatever wins,
    every probe the kernel runs from that object is one the API lists."""
    data = bpf_object("hooks.bpf.o")
    sha = hashlib.sha256(data).hexdigest()
    names = [f"race{i}-{RUN}" for i in range(2)]
    stop = time.time() + 4
    results = {"put": set(), "delete": set()}

    def getpid_progs():
        return {p["id"] for p in bpftool("prog", "show") or [] if p.get("name") == "count_getpid"}

    before = getpid_progs()

    def putter(name):
        while time.time() < stop:
            r = probes.put(name, tp_spec(probes))
            results["put"].add(r.status_code)
            if r.status_code in (200, 201):
                a.delete(f"/v1/probes/{name}")
            time.sleep(random.uniform(0, 0.02))   # leaves the object unused at times

    def deleter():
        while time.time() < stop:
            results["delete"].add(a.delete(f"/v1/objects/{sha}").status_code)
            r = a.upload(data)
            while r.status_code == 429:       # --write-rate: back off as told
                time.sleep(float(r.headers["Retry-After"]))
                r = a.upload(data)
            assert r.status_code in (200, 201), r.text

    threads = [threading.Thread(target=putter, args=(n,)) for n in names]
    threads.append(threading.Thread(target=deleter))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a.upload(data).status_code in (200, 201)
    # Both sides won at times: the race was real.
    assert results["delete"] & {204} and results["delete"] & {409}, results
    assert results["put"] & {200, 201}, results

    listed = {p["name"]: p for p in a.get("/v1/probes", params={"page_size": 1000}).json()
              .get("probes", [])}
    pinned = {d.replace(":", ".") for d in os.listdir(PIN_ROOT) if d.startswith("race")}
    assert pinned <= set(listed), (pinned, set(listed))
    listed_progs = {s["progId"] for n in pinned for s in listed[n].get("programs", [])
                    if s.get("progId")}
    assert {prog for n in pinned for prog in footprint(n).progs} == listed_progs
    # Every program the race left in the kernel belongs to a listed probe.
    time.sleep(0.2)
    assert getpid_progs() - before <= listed_progs, (getpid_progs() - before, listed_progs)


def test_object_id_in_a_spec_may_be_upper_case(a, probes, hooks_sha):
    name = f"upper-{RUN}"
    spec = tp_spec(probes)
    spec["objectSha256"] = hooks_sha.upper()
    r = probes.put(name, spec)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["objectSha256"] == hooks_sha
    # The same spec in either case is the same generation.
    spec["objectSha256"] = hooks_sha
    assert probes.put(name, spec).json()["generation"] == r.json()["generation"]
    spec["objectSha256"] = "xyz"
    assert_error(probes.put(name, spec), 400, "objectSha256 must be")


def test_lost_database_is_not_taken_for_a_new_one(restart_dirs):
    """A state dir whose database is missing or empty beside the store's
    own files (the reserve) refuses to start, naming the pinned probes; --adopt-orphans starts and leaves
    them running, and a PUT of the name takes one over; a new state dir
    beside the pins starts and leaves them alone too."""
    d = restart_dirs()
    name = f"orphan-{RUN}"
    a1 = Agent(d).start()
    try:
        r = a1.upload(bpf_object("hooks.bpf.o"))
        assert r.status_code in (200, 201), r.text
        p = Probes(a1, r.json()["sha256"])
        p.create(name, tp_spec(p))
        fp = footprint(name)
        assert a1.stop() == 0
        db = os.path.join(d, "graind.db")
        for how in ("missing", "empty"):
            for f in (db, db + "-wal", db + "-shm"):
                if os.path.exists(f):
                    os.remove(f)
            if how == "empty":
                open(db, "w").close()
            r = subprocess.run([GRAIND_BIN, "--listen", "127.0.0.1:0", "--grpc-listen", "none",
                                "--state-dir", d, "--pin-root", PIN_ROOT],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 1, r.stdout
            for says in (f"graind.db is {how}", "no first start", f"the store's own files beside it in {d}",
                         name, "--adopt-orphans", "--reset"):
                assert says in r.stderr, (says, r.stderr)
            assert footprint(name).links.keys() == fp.links.keys()   # untouched

        a2 = Agent(d, ["--adopt-orphans"]).start()
        assert footprint(name).links.keys() == fp.links.keys()
        assert "left running" in a2.read_log()
        assert a2.get("/v1/probes").json().get("probes", []) == []
        r = a2.upload(bpf_object("hooks.bpf.o"))
        p2 = Probes(a2, r.json()["sha256"])
        r = p2.put(name, tp_spec(p2))
        assert r.status_code == 201, r.text
        assert all(g["state"] == "PROGRAM_ATTACHED" for g in r.json()["programs"])
        assert a2.stop() == 0

        # A new state dir of its own: starts, and the pins stay.
        a3 = Agent(restart_dirs()).start()
        assert os.path.isdir(pin_dir(name))
        assert a3.stop() == 0
    finally:
        a1.stop(signal.SIGKILL)
        subprocess.run(["rm", "-rf", pin_dir(name)])
