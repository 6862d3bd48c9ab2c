"""Shared XDP: graind's probes and xdp-tools' xdp-filter on one interface,
through libxdp's multi-program dispatcher, in run-priority order.

Three programs share a veth: xdp-filter (priority 10, from its object),
the netstat built-in (priority 20, from the spec) and chain_count of
tests/bpf/xdp_chain.bpf.c (priority 40 from its own .xdp_run_config, or
what the spec says). Each counts what the test sends: xdp-filter in its
per-action stats map, netstat by protocol, chain_count the IPv4 UDP
datagrams to port 9. What the kernel runs is read as libxdp's protocol
pins it (test_probes.xdp_on) and as `xdp-loader status` prints it.

On a kernel that cannot run the dispatcher (no freplace), the agent says
so in its features and these tests skip with its words; the interface
then holds one program, and a second one is refused (409) naming the one
there: that test runs everywhere."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import TEST_BPF, Agent, assert_error, bpf_object, sh, veth_namespace
from test_probes import (Probes, bpftool, footprint, assert_gone, only_program, pin_dir,
                         restart_dirs, send_udp_from_ns, xdp_on)  # noqa: F401

RUN = os.getpid() % 10000
FILTER_PINS = "/sys/fs/bpf/xdp-filter"
XDP_PASS, XDP_DROP = 2, 1


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def a(module_agent):
    return module_agent


@pytest.fixture(scope="module")
def xnet():
    with veth_namespace("x", 17) as n:
        yield n


def require_dispatcher(agent):
    feats = agent.get("/v1/status").json()["features"]
    if feats.get("xdpDispatcher") != "FEATURE_PRESENT":
        note = [n for n in feats["notes"] if n.startswith("xdpDispatcher:")]
        pytest.skip(f"this kernel cannot run libxdp's dispatcher: {note}")


@pytest.fixture(scope="module")
def chain(a):
    """Probes of xdp_chain.bpf.o on the module's agent."""
    require_dispatcher(a)
    r = a.upload(bpf_object("xdp_chain.bpf.o"), name="xdp-chain")
    assert r.status_code in (200, 201), r.text
    p = Probes(a, r.json()["sha256"])
    yield p
    p.cleanup()


class XdpFilter:
    """xdp-filter from xdp-tools on one interface, allowing everything."""

    def __init__(self, ifname):
        self.ifname = ifname

    def load(self):
        sh("xdp-filter", "load", "--mode", "skb", self.ifname)

    def unload(self):
        sh("xdp-filter", "unload", self.ifname, check=False)

    def unload_everything(self):
        """What a failed test may have left in the dispatcher goes too."""
        self.unload()
        sh("xdp-loader", "unload", "--all", self.ifname, check=False)

    def passed(self):
        """The packets its stats map counted as XDP_PASS, over all CPUs: a
        per-CPU array by action of struct xdp_stats_record {packets,
        bytes} (xdp/xdp_stats_kern_user.h), read from its raw bytes."""
        entries = bpftool("map", "dump", "pinned", os.path.join(FILTER_PINS, "xdp_stats_map"))
        for e in entries:
            if int.from_bytes(bytes(int(b, 16) for b in e["key"]), "little") == XDP_PASS:
                return sum(int.from_bytes(bytes(int(b, 16) for b in v["value"][:8]), "little")
                           for v in e["values"])
        raise AssertionError(f"no XDP_PASS entry in xdp-filter's stats: {entries}")

    def prog_id(self):
        return [i for i, name in loader_status(self.ifname) if name.startswith("xdpfilt_")][0]


def loader_status(ifname):
    """What `xdp-loader status` lists in the interface's dispatcher: [(id,
    name)] in run order."""
    out = sh("xdp-loader", "status", ifname).stdout
    rows = []
    for line in out.splitlines():
        cols = line.split()
        if line.lstrip().startswith("=>") and len(cols) >= 4:
            rows.append((int(cols[3]), cols[2]))
    return rows


@pytest.fixture
def xfilter(xnet):
    f = XdpFilter(xnet.host_if)
    yield f
    f.unload_everything()


def chain_count(probe):
    entries = bpftool("map", "dump", "pinned", os.path.join(pin_dir(probe), "map_counts"))
    e = entries[0].get("formatted", entries[0])
    value = e["value"]
    return value if isinstance(value, int) else int.from_bytes(
        bytes(int(b, 16) for b in value), "little")


def netstat_udp(probe, ifindex):
    """IPv4 UDP packets the netstat probe counted arriving on ifindex."""
    entries = bpftool("map", "dump", "pinned", os.path.join(pin_dir(probe), "map_traffic"))
    total = 0
    for e in entries or []:
        f = e["formatted"]
        k = f["key"]
        if k["ifindex"] == ifindex and k["direction"] == "INGRESS" and "UDP" in str(k["l4_proto"]):
            total += sum(v["value"]["packets"] for v in f["values"])
    return total


def wait_until(what, check, timeout=5):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got or time.time() > deadline:
            return got
        time.sleep(0.05)


def netstat_spec(ifname, priority):
    return {"builtin": "netstat",
            "programs": [{"program": "netstat_xdp",
                          "attach": {"xdp": {"ifname": ifname, "mode": "XDP_MODE_SKB",
                                             "priority": priority}}}]}


def chain_spec(chain, ifname, priority=0, proceed_on=None, verdict=XDP_PASS):
    xdp = {"ifname": ifname, "mode": "XDP_MODE_SKB"}
    if priority:
        xdp["priority"] = priority
    if proceed_on:
        xdp["proceedOn"] = proceed_on
    return chain.spec("chain_count", {"xdp": xdp}, constants={"verdict": verdict})


def put(agent, name, spec):
    r = agent.request("PUT", f"/v1/probes/{name}", json=spec)
    assert r.status_code in (200, 201), r.text
    st = only_program(r.json())
    assert st["state"] == "PROGRAM_ATTACHED", st
    return st


# ---------------------------------------------------------------- tests

ORDERS = ["filter,netstat,chain", "filter,chain,netstat", "netstat,filter,chain",
          "netstat,chain,filter", "chain,filter,netstat", "chain,netstat,filter"]


def test_three_programs_share_the_interface_in_priority_order(a, chain, xnet, xfilter):
    """Whatever the order of loading, the dispatcher runs xdp-filter (10),
    netstat (20) and chain_count (40, its object's own priority) in that
    order, xdp-loader lists all three, and each counts every datagram."""
    for order in ORDERS:
        share_in_order(a, chain, xnet, xfilter, order)


def share_in_order(a, chain, xnet, xfilter, order):
    ifindex = socket.if_nametoindex(xnet.host_if)
    ns, ch = f"xs-ns-{RUN}", f"xs-ch-{RUN}"
    status = {}
    for who in order.split(","):
        if who == "filter":
            xfilter.load()
        elif who == "netstat":
            status["netstat"] = put(a, ns, netstat_spec(xnet.host_if, 20))
        else:
            status["chain"] = put(a, ch, chain_spec(chain, xnet.host_if))
    try:
        assert status["netstat"]["xdpSlot"]["priority"] == 20, (order, status)
        assert status["chain"]["xdpSlot"]["priority"] == 40, (order, status)  # .xdp_run_config
        assert status["chain"]["xdpSlot"]["proceedOn"] == ["XDP_PASS"], (order, status)
        want = [xfilter.prog_id(), status["netstat"]["progId"], status["chain"]["progId"]]
        assert [i for i, _ in xdp_on(xnet.host_if)] == want, order
        assert [i for i, _ in loader_status(xnet.host_if)] == want, order
        # The status names the dispatcher the interface runs now.
        running = bpftool("net", "show", "dev", xnet.host_if)[0]["xdp"][0]["id"]
        for name in (ns, ch):
            st = only_program(a.get(f"/v1/probes/{name}").json())
            assert st["xdpSlot"]["dispatcherId"] == running, (order, st)

        before = (xfilter.passed(), netstat_udp(ns, ifindex), chain_count(ch))
        send_udp_from_ns(xnet, xnet.host_ip, 20, noise=0)
        assert wait_until("chain", lambda: chain_count(ch) - before[2] >= 20) is True, order
        time.sleep(0.1)
        assert chain_count(ch) - before[2] == 20, order
        assert netstat_udp(ns, ifindex) - before[1] == 20, order
        assert xfilter.passed() - before[0] >= 20, order    # and whatever else arrived
    finally:
        for name in (ns, ch):
            a.delete(f"/v1/probes/{name}")
        xfilter.unload()
    assert xdp_on(xnet.host_if) == [], order


def test_drop_stops_the_chain_unless_proceed_on_says_go_on(a, chain, xnet):
    """An early program's XDP_DROP ends the chain: the later one sees
    nothing, until the early one's proceedOn lists XDP_DROP too. An update
    of one program leaves the other where it runs."""
    early, late = f"xs-early-{RUN}", f"xs-late-{RUN}"
    try:
        st_late = put(a, late, chain_spec(chain, xnet.host_if, priority=25))
        put(a, early, chain_spec(chain, xnet.host_if, priority=15, verdict=XDP_DROP))
        send_udp_from_ns(xnet, xnet.host_ip, 10, noise=0)
        assert wait_until("early", lambda: chain_count(early) >= 10) is True
        time.sleep(0.1)
        assert (chain_count(early), chain_count(late)) == (10, 0)

        st = put(a, early, chain_spec(chain, xnet.host_if, priority=15, verdict=XDP_DROP,
                                      proceed_on=["XDP_PASS", "XDP_DROP"]))
        assert st["xdpSlot"]["proceedOn"] == ["XDP_DROP", "XDP_PASS"], st
        assert st["xdpSlot"]["priority"] == 15, st
        ids = [i for i, _ in xdp_on(xnet.host_if)]
        assert ids == [st["progId"], st_late["progId"]], ids     # the old early one left
        send_udp_from_ns(xnet, xnet.host_ip, 10, noise=0)
        assert wait_until("late", lambda: chain_count(late) >= 10) is True
        time.sleep(0.1)
        # The new generation counts in maps of its own.
        assert (chain_count(early), chain_count(late)) == (10, 10)
    finally:
        for name in (early, late):
            a.delete(f"/v1/probes/{name}")
    assert xdp_on(xnet.host_if) == []


def test_kill9_restart_keeps_all_three_and_delete_leaves_the_others(xnet, xfilter,
                                                                   restart_dirs):
    """kill -9 of the agent stops nothing; the restarted agent adopts its
    two probes; deleting one leaves the other two running and counting."""
    d = restart_dirs()
    ifindex = socket.if_nametoindex(xnet.host_if)
    ns, ch = f"xk-ns-{RUN}", f"xk-ch-{RUN}"
    a1 = Agent(d).start()
    a2 = None
    try:
        require_dispatcher(a1)
        sha = a1.upload(bpf_object("xdp_chain.bpf.o")).json()["sha256"]
        p = Probes(a1, sha)
        xfilter.load()
        put(a1, ns, netstat_spec(xnet.host_if, 20))
        st_ch = put(a1, ch, chain_spec(p, xnet.host_if, priority=30))
        three = [i for i, _ in xdp_on(xnet.host_if)]
        assert len(three) == 3, three
        fp = footprint(ch)

        a1.stop(signal.SIGKILL)
        assert [i for i, _ in xdp_on(xnet.host_if)] == three
        send_udp_from_ns(xnet, xnet.host_ip, 7, noise=0)
        assert wait_until("chain", lambda: chain_count(ch) >= 7) is True

        a2 = Agent(d).start()
        log = a2.read_log()
        for name in (ns, ch):
            assert f'msg="probe adopted" probe={name}' in log, log[-3000:]
        st = only_program(a2.get(f"/v1/probes/{ch}").json())
        assert (st["state"], st["progId"]) == ("PROGRAM_ATTACHED", st_ch["progId"]), st
        assert [i for i, _ in xdp_on(xnet.host_if)] == three

        assert a2.delete(f"/v1/probes/{ch}").status_code == 204
        assert_gone(ch, fp)
        assert [i for i, _ in xdp_on(xnet.host_if)] == [three[0], three[1]]
        before = (xfilter.passed(), netstat_udp(ns, ifindex))
        send_udp_from_ns(xnet, xnet.host_ip, 5, noise=0)
        assert wait_until("netstat", lambda: netstat_udp(ns, ifindex) - before[1] >= 5) is True
        assert xfilter.passed() - before[0] >= 5

        assert a2.delete(f"/v1/probes/{ns}").status_code == 204
        assert [i for i, _ in xdp_on(xnet.host_if)] == [three[0]]
        assert a2.stop() == 0, a2.read_log()[-3000:]
        a2 = None
    finally:
        for agent in (a1, a2):
            if agent and agent.proc and agent.proc.poll() is None:
                agent.stop(signal.SIGKILL)
        for name in (ns, ch):
            shutil.rmtree(pin_dir(name), ignore_errors=True)


def test_the_feature_says_what_xdp_loader_finds(a, xnet):
    """The agent's own probe of the dispatcher agrees with libxdp's: where
    xdp-loader ends up with a dispatcher on the interface, the feature is
    present; where it falls back to a lone program, missing."""
    sh("xdp-loader", "load", "--mode", "skb", "--prog-name", "chain_pass", xnet.host_if,
       os.path.join(TEST_BPF, "xdp_chain.bpf.o"))
    try:
        out = sh("xdp-loader", "status", xnet.host_if).stdout
        row = [line.split() for line in out.splitlines() if line.startswith(xnet.host_if)][0]
        dispatched = row[1] == "xdp_dispatcher"
        feats = a.get("/v1/status").json()["features"]
        assert feats["xdpDispatcher"] == ("FEATURE_PRESENT" if dispatched else
                                          "FEATURE_MISSING"), (out, feats)
    finally:
        sh("xdp-loader", "unload", "--all", xnet.host_if, check=False)
    assert xdp_on(xnet.host_if) == []


def test_two_programs_of_one_object_cannot_both_join(a, chain, xnet):
    xdp = {"xdp": {"ifname": xnet.host_if, "mode": "XDP_MODE_SKB"}}
    spec = chain.spec("chain_count", xdp)
    spec["programs"].append({"program": "chain_pass", "attach": xdp})
    r = a.request("PUT", f"/v1/probes/xs-two-{RUN}", json=spec)
    assert_error(r, 400, "chain_count", "chain_pass", "probe of its own")
    assert xdp_on(xnet.host_if) == []


def test_a_program_attached_alone_is_409_naming_it(a, xnet):
    """A program attached without libxdp (here by iproute2) leaves no slot:
    the probe is refused with the program's id, and that program keeps
    running. Everywhere: without the dispatcher, any program there is one
    too many."""
    r = a.upload(bpf_object("xdp_chain.bpf.o"))
    p = Probes(a, r.json()["sha256"])
    sh("ip", "link", "set", "dev", xnet.host_if, "xdpgeneric", "obj",
       os.path.join(TEST_BPF, "xdp_chain.bpf.o"), "sec", "xdp")
    try:
        alone = xdp_on(xnet.host_if)
        assert len(alone) == 1, alone
        r = p.put(f"xs-alone-{RUN}", chain_spec(p, xnet.host_if))
        assert_error(r, 409, f"XDP program id {alone[0][0]}", xnet.host_if)
        assert xdp_on(xnet.host_if) == alone
    finally:
        sh("ip", "link", "set", "dev", xnet.host_if, "xdpgeneric", "off")
        p.cleanup()


@pytest.mark.parametrize("xdp, field", [
    ({"proceedOn": ["XDP_SOMETIMES"]}, "XDP_SOMETIMES"),
    ({"priority": -1}, "priority"),
    ({"priority": "high"}, "priority"),
])
def test_bad_run_config_is_400(a, xnet, xdp, field):
    r = a.upload(bpf_object("xdp_chain.bpf.o"))
    p = Probes(a, r.json()["sha256"])
    spec = p.spec("chain_count", {"xdp": {"ifname": xnet.host_if, **xdp}})
    assert_error(p.put(f"xs-bad-{RUN}", spec), 400, field)
    assert a.get(f"/v1/probes/xs-bad-{RUN}").status_code == 404


def test_bad_proceed_on_over_grpc_is_invalid_argument(a, pb, xnet):
    """An action number the schema does not have, as a gRPC client can
    send it, is refused by the codec before anything loads."""
    import grpc     # not in the test VMs, which do not import this test
    r = a.upload(bpf_object("xdp_chain.bpf.o"))
    sha = r.json()["sha256"]
    attach = pb.AttachSpec(xdp=pb.XdpAttach(ifname=xnet.host_if, proceed_on=[pb.XDP_PASS, 9]))
    spec = pb.ProbeSpec(object_sha256=sha,
                        programs=[pb.ProgramAttach(program="chain_count", attach=attach)])
    with grpc.insecure_channel(a.grpc_target) as ch:
        put = ch.unary_unary("/graind.Graind/PutProbe",
                             request_serializer=pb.PutProbeRequest.SerializeToString,
                             response_deserializer=pb.Probe.FromString)
        with pytest.raises(grpc.RpcError) as e:
            put(pb.PutProbeRequest(name=f"xs-grpc-{RUN}", spec=spec),
                metadata=[("authorization", f"Bearer {a.admin}")], timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert "unknown enum value 9" in e.value.details(), e.value.details()
    assert a.get(f"/v1/probes/xs-grpc-{RUN}").status_code == 404
