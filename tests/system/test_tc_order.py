"""Ordered TC: TCX links placed first, last, before or after another
probe's program run in that order, in the kernel's list and for the
packets, and keep it over updates, kill -9 and a restart that has to
attach everything again.

tests/bpf/tc_order.bpf.c stamps each counted packet's mark with mark * 10
+ its `stamp`, and counts packets by the mark they arrived with: which
marks a program saw tells which programs ran before it. Debian 12's
bpftool (7.1) does not list TCX links (7.3 does), so the kernel's order
is read with BPF_PROG_QUERY here."""

import ctypes
import os
import platform
import shutil
import signal
import socket
import struct
import time

import grpc
import pytest

from conftest import Agent, assert_error, bpf_object, veth_namespace
from test_probes import RUN, pin_dir, restart_dirs, send_udp_from_ns  # noqa: F401 (fixture)

SYS_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]
BPF_PROG_QUERY = 16
TCX_INGRESS = 46
PACKETS = 7


def tcx_programs(ifname, attach_type=TCX_INGRESS):
    """The program ids of ifname's TCX hook, in the order they run."""
    libc = ctypes.CDLL(None, use_errno=True)
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(64)
    struct.pack_into("II", attr, 0, socket.if_nametoindex(ifname), attach_type)
    struct.pack_into("QI", attr, 16, ctypes.addressof(ids), 64)
    assert libc.syscall(SYS_BPF, BPF_PROG_QUERY, attr, 64) == 0, \
        os.strerror(ctypes.get_errno())
    return list(ids[:struct.unpack_from("I", attr, 24)[0]])


@pytest.fixture(scope="module")
def net():
    with veth_namespace("o", 16) as n:
        yield n


@pytest.fixture
def start_agent():
    agents = []

    def start(state_dir):
        ag = Agent(state_dir).start()
        agents.append(ag)
        if ag.get("/v1/status").json()["features"].get("tcx") != "FEATURE_PRESENT":
            pytest.skip("this kernel has no TCX links (6.6 has them)")
        return ag
    yield start
    for ag in agents:
        if ag.proc and ag.proc.poll() is None:
            for p in ag.get("/v1/probes").json().get("probes", []):
                ag.delete(f"/v1/probes/{p['name']}")
            ag.stop()


def upload(ag):
    r = ag.upload(bpf_object("tc_order.bpf.o"))
    assert r.status_code in (200, 201), r.text
    return r.json()["sha256"]


def put(ag, sha, name, stamp, ifname, place=None, if_match=None):
    tc = {"ifname": ifname, **(place or {})}
    spec = {"objectSha256": sha, "programs": [{"program": "order_tc", "attach": {"tc": tc}}],
            "constants": [{"name": "stamp", "value": str(stamp)}]}
    headers = {"If-Match": str(if_match)} if if_match else {}
    return ag.request("PUT", f"/v1/probes/{name}", json=spec, headers=headers)


def prog_id(ag, name):
    r = ag.get(f"/v1/probes/{name}")
    assert r.status_code == 200, r.text
    st = r.json()["programs"][0]
    assert st["state"] == "PROGRAM_ATTACHED", st
    return st["progId"]


def marks_seen(ag, name):
    """{mark: packets} the probe's program saw arrive."""
    r = ag.get(f"/v1/probes/{name}/maps/marks")
    assert r.status_code == 200, r.text
    return {int(e["key"][0]["uint"]): int(e["value"][0]["uint"])
            for e in r.json().get("entries", [])}


def names(tag):
    """d (first), b (before a), a, c (after a), e (last), with stamps 4, 2,
    1, 3, 5; a's name sorts last, after the probes placed against it."""
    return {k: f"ord{tag}-{'z' if k == 'a' else k}-{RUN}" for k in "abcde"}


def place_all(ag, sha, n, ifname):
    assert put(ag, sha, n["a"], 1, ifname).status_code == 201
    for key, stamp, place in (("b", 2, {"before": f"{n['a']}/order_tc"}),
                              ("c", 3, {"after": f"{n['a']}/order_tc"}),
                              ("d", 4, {"first": True}),
                              ("e", 5, {"last": True})):
        r = put(ag, sha, n[key], stamp, ifname, place)
        assert r.status_code == 201, r.text


def assert_order(ag, n, ifname, keys="dbace"):
    ids = [prog_id(ag, n[k]) for k in keys]
    assert tcx_programs(ifname) == ids, (tcx_programs(ifname), dict(zip(keys, ids)))
    return ids


def test_links_run_where_they_are_placed(start_agent, restart_dirs, net):
    ag = start_agent(restart_dirs())
    sha = upload(ag)
    n = names("p")
    place_all(ag, sha, n, net.host_if)
    assert_order(ag, n, net.host_if)
    send_udp_from_ns(net, net.host_ip, PACKETS)
    # d runs first and sees nothing stamped; each later one, the stamps of
    # all before it.
    assert {k: marks_seen(ag, n[k]) for k in "dbace"} == {
        "d": {0: PACKETS}, "b": {4: PACKETS}, "a": {42: PACKETS}, "c": {421: PACKETS},
        "e": {4213: PACKETS}}

    # An update swaps the program on the same link: its place stays.
    r = put(ag, sha, n["a"], 6, net.host_if, if_match=1)
    assert r.status_code == 200, r.text
    ids = assert_order(ag, n, net.host_if)
    send_udp_from_ns(net, net.host_ip, PACKETS)
    assert marks_seen(ag, n["c"]) == {421: PACKETS, 426: PACKETS}

    # Deleting one leaves the others in their order.
    assert ag.delete(f"/v1/probes/{n['a']}").status_code == 204
    assert tcx_programs(net.host_if) == [i for k, i in zip("dbace", ids) if k != "a"]


def test_order_survives_kill_and_a_restart_that_attaches_again(start_agent, restart_dirs, net):
    d = restart_dirs()
    ag = start_agent(d)
    sha = upload(ag)
    n = names("r")
    place_all(ag, sha, n, net.host_if)
    ids = assert_order(ag, n, net.host_if)

    ag.stop(signal.SIGKILL)
    ag = start_agent(d)
    assert assert_order(ag, n, net.host_if) == ids, "kill -9 and restart moved the links"

    # As after a reboot: nothing pinned, everything attached afresh. In
    # name order b and c come before a, which they are placed against:
    # they attach once a has.
    ag.stop(signal.SIGKILL)
    for name in n.values():
        shutil.rmtree(pin_dir(name))
    deadline = time.time() + 5      # the kernel frees the links a moment later
    while tcx_programs(net.host_if) and time.time() < deadline:
        time.sleep(0.05)
    assert tcx_programs(net.host_if) == []
    ag = start_agent(d)
    assert_order(ag, n, net.host_if)
    send_udp_from_ns(net, net.host_ip, PACKETS)
    assert marks_seen(ag, n["e"]) == {4213: PACKETS}


def test_places_that_cannot_be_refused_clearly(start_agent, restart_dirs, net):
    ag = start_agent(restart_dirs())
    sha = upload(ag)
    n = names("x")
    assert_error(put(ag, sha, n["a"], 1, net.host_if, {"before": f"nosuch-{RUN}/order_tc"}),
                 409, f"probe nosuch-{RUN} has no attached program order_tc")
    assert_error(put(ag, sha, n["a"], 1, net.host_if, {"after": "order_tc"}),
                 400, "<probe>/<program>")
    assert_error(put(ag, sha, n["a"], 1, net.host_if, {"first": True, "mode": "TC_MODE_CLASSIC"}),
                 422, "classic tc filters run in the order of tc.priority")
    # A place on another hook: the egress link is no neighbour of ingress.
    assert put(ag, sha, n["b"], 2, net.host_if, {"direction": "TC_EGRESS"}).status_code == 201
    assert_error(put(ag, sha, n["a"], 1, net.host_if, {"after": f"{n['b']}/order_tc"}),
                 409, "runs on another interface or direction")
    # A program of the same probe must be listed before the one placed
    # against it.
    spec = {"objectSha256": sha, "programs": [{"program": "order_tc", "attach": {"tc": {
        "ifname": net.host_if, "before": f"{n['a']}/order_tc"}}}]}
    assert_error(ag.request("PUT", f"/v1/probes/{n['a']}", json=spec), 400,
                 f"{n['a']}/order_tc is not a program listed before it in this probe")
    # Only a TCX link is a neighbour: not an XDP link.
    hooks = ag.upload(bpf_object("hooks.bpf.o")).json()["sha256"]
    xdp = {"objectSha256": hooks, "programs": [{"program": "count_xdp", "attach": {"xdp": {
        "ifname": net.host_if, "mode": "XDP_MODE_SKB"}}}]}
    r = ag.request("PUT", f"/v1/probes/{n['c']}", json=xdp)
    assert r.status_code == 201, r.text
    assert_error(put(ag, sha, n["a"], 1, net.host_if, {"after": f"{n['c']}/count_xdp"}),
                 409, f"{n['c']}/count_xdp is not a TCX link to place against")
    # Nothing was left behind by the refusals.
    assert tcx_programs(net.host_if) == []
    assert not os.path.exists(pin_dir(n["a"]))


def test_refusals_carry_their_grpc_codes(start_agent, restart_dirs, net, pb):
    ag = start_agent(restart_dirs())
    sha = upload(ag)
    ch = grpc.insecure_channel(ag.grpc_target)
    put_probe = ch.unary_unary("/graind.Graind/PutProbe",
                               request_serializer=pb.PutProbeRequest.SerializeToString,
                               response_deserializer=pb.Probe.FromString)

    def refused(**tc):
        spec = pb.ProbeSpec(object_sha256=sha)
        spec.programs.add(program="order_tc").attach.tc.CopyFrom(
            pb.TcAttach(ifname=net.host_if, **tc))
        with pytest.raises(grpc.RpcError) as e:
            put_probe(pb.PutProbeRequest(name=f"ordg-{RUN}", spec=spec),
                      metadata=[("authorization", f"Bearer {ag.admin}")], timeout=10)
        return e.value.code(), e.value.details()
    try:
        C = grpc.StatusCode
        code, msg = refused(before=f"nosuch-{RUN}/order_tc")
        assert code == C.FAILED_PRECONDITION and "has no attached program" in msg, msg
        code, msg = refused(after="order_tc")
        assert code == C.INVALID_ARGUMENT and "<probe>/<program>" in msg, msg
        code, msg = refused(first=True, mode=pb.TC_MODE_CLASSIC)
        assert code == C.FAILED_PRECONDITION and "order of tc.priority" in msg, msg
    finally:
        ch.close()
