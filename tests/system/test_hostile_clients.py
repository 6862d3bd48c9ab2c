"""Clients that hog or probe the agent: floods and slowloris from one
address while another client measures from a network namespace of its
own (198.18.0.0/15), request deadlines, per-address connection limits on
both transports, and the rate of failed authentications per address.
Every refusal is counted in /metrics."""

import resource
import socket
import subprocess
import time

import pytest
import requests

from conftest import Agent, start_module_agent, veth_namespace


@pytest.fixture(scope="module")
def a(request):
    return start_module_agent(request)


def metric(a, family, labels=""):
    """The value of one series of /metrics ({labels} as printed)."""
    text = requests.get(a.url + "/metrics", headers=a.headers("reader"), timeout=10).text
    want = f"{family}{{{labels}}}" if labels else family
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{want} not in /metrics")


def connect_from(source, port, blocking=True):
    s = socket.socket()
    s.bind((source, 0))
    if blocking:
        s.settimeout(30)
        s.connect(("127.0.0.1", port))
    else:
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
    return s


def closed_by_peer(s):
    """True once the agent has closed s (end of stream or reset)."""
    s.setblocking(False)
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def read_answer(s):
    data = b""
    s.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
              if l.lower().startswith(b"content-length:")]
    while length and len(body) < length[0]:
        body += s.recv(4096)
    return int(head.split()[1])


def test_requests_that_do_not_arrive_in_time_are_cut(a):
    """Headers that never end, a body that never comes, and the second
    request of a keep-alive connection that never ends are each cut about
    10 s after they began; a keep-alive connection that waits between
    requests is left alone."""
    header_deadline = metric(a, "graind_connections_closed_total",
                             'transport="rest",reason="header_deadline"')
    body_deadline = metric(a, "graind_connections_closed_total",
                           'transport="rest",reason="body_deadline"')
    slow_headers = connect_from("127.0.0.1", a.port)
    slow_headers.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
    slow_body = connect_from("127.0.0.1", a.port)
    slow_body.sendall(b"POST /v1/objects HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + a.admin.encode() + b"\r\n"
                      b"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\nab")
    waiting = connect_from("127.0.0.1", a.port)
    second = connect_from("127.0.0.1", a.port)
    for s in (waiting, second):
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(s) == 200
    time.sleep(1)
    second.sendall(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()
    closed = {}
    while time.monotonic() - started < 16 and len(closed) < 3:
        for name, s in (("headers", slow_headers), ("body", slow_body), ("second", second)):
            if name not in closed:
                if closed_by_peer(s):
                    closed[name] = time.monotonic() - started
                else:
                    try:
                        s.send(b"X")     # a byte now and then keeps no deadline away
                    except OSError:
                        closed[name] = time.monotonic() - started
        time.sleep(0.5)
    assert set(closed) == {"headers", "body", "second"}, closed
    for name, t in closed.items():
        assert 8 <= t <= 13, (name, t, closed)
    # The connection that only waited between requests is open and serves.
    waiting.setblocking(True)
    waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(waiting) == 200
    for s in (slow_headers, slow_body, waiting, second):
        s.close()
    assert metric(a, "graind_connections_closed_total",
                  'transport="rest",reason="header_deadline"') >= header_deadline + 2
    assert metric(a, "graind_connections_closed_total",
                  'transport="rest",reason="body_deadline"') >= body_deadline + 1


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_one_address_holds_64_connections_and_the_rest_are_counted(a, transport):
    port = a.port if transport == "rest" else int(a.grpc_target.rsplit(":", 1)[1])
    before = metric(a, "graind_connections_refused_total",
                    f'transport="{transport}",reason="per_address"')
    held = [connect_from("127.0.0.3", port) for _ in range(80)]
    try:
        time.sleep(0.5)
        alive = [s for s in held if not closed_by_peer(s)]
        assert len(alive) == 64, len(alive)
        assert metric(a, "graind_connections_refused_total",
                      f'transport="{transport}",reason="per_address"') == before + 16
        # Another address is not held back.
        assert requests.get(a.url + "/healthz", timeout=5).status_code == 200
    finally:
        for s in held:
            s.close()


def raw_get_from(source, port, token):
    s = connect_from(source, port)
    try:
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  + (b"Authorization: Bearer " + token.encode() + b"\r\n" if token else b"")
                  + b"\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    headers = dict(l.decode().lower().split(": ", 1) for l in head.split(b"\r\n")[1:])
    return int(head.split()[1]), headers, body.decode()


def test_failed_authentications_from_one_address_are_slowed_down(a):
    before = metric(a, "graind_auth_failures_limited_total")
    statuses = [raw_get_from("127.0.0.4", a.port, "wrong" if i % 2 else None)[0]
                for i in range(30)]
    # The first ones are 401s (a burst of 20), then 429s.
    assert statuses[:20] == [401] * 20, statuses
    assert set(statuses[20:]) == {429}, statuses
    status, headers, body = raw_get_from("127.0.0.4", a.port, "wrong")
    assert status == 429 and int(headers["retry-after"]) >= 1, (status, headers)
    assert "too many requests without a valid token from 127.0.0.4" in body, body
    # The right token from that address, and a wrong one from another, are
    # judged as ever.
    assert raw_get_from("127.0.0.4", a.port, a.admin)[0] == 200
    assert raw_get_from("127.0.0.5", a.port, "wrong")[0] == 401
    assert metric(a, "graind_auth_failures_limited_total") >= before + 11


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def exposed(request, tmp_path_factory):
    """An agent that listens on every address, and a namespace of its own
    from which a client reaches it over a veth pair."""
    with veth_namespace("h", 12) as net:
        agent = Agent(str(tmp_path_factory.mktemp("exposed")), host="0.0.0.0").start()
        try:
            yield agent, net
        finally:
            assert agent.stop() == 0, agent.read_log()[-3000:]


MEASURE = r"""
import socket, sys, time
host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def get(path, auth):
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n".encode())
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    return int(data.split()[1])
worst = 0
for _ in range(5):
    t0 = time.monotonic()
    assert get("/healthz", "") == 200
    assert get("/v1/objects", f"Authorization: Bearer {token}\r\n") == 200
    worst = max(worst, time.monotonic() - t0)
    time.sleep(0.2)
print(f"{worst * 1000:.1f}")
"""


def agent_connections_from(agent, address):
    """TCP connections the agent process holds open from `address` (those
    the kernel queues before the agent accepts them are not its)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{agent.port} )"],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines()
               if f"pid={agent.proc.pid}," in line and line.split()[-2].startswith(address + ":"))


@pytest.mark.parametrize("kind", ["idle", "dripping"])
def test_2000_connections_from_one_address_leave_others_served(exposed, kind):
    """2,000 connections from 127.0.0.1, idle or dripping a header byte
    every 5 s: a client in another namespace gets /healthz and an
    authenticated GET within 100 ms, and the agent's memory stays bounded."""
    agent, net = exposed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    rss_before = rss_kib(agent.proc.pid)
    flood = []
    try:
        for _ in range(2000):
            flood.append(connect_from("127.0.0.1", agent.port, blocking=False))
        time.sleep(0.5)
        if kind == "dripping":
            for s in flood:
                try:
                    s.send(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                except OSError:
                    pass        # refused: closed by the agent already
        worst = subprocess.run(
            ["ip", "netns", "exec", net.ns, "/usr/bin/python3", "-c", MEASURE, net.host_ip,
             str(agent.port), agent.reader], capture_output=True, text=True, timeout=60)
        assert worst.returncode == 0, worst.stderr
        assert float(worst.stdout) < 100, f"{worst.stdout.strip()} ms for two requests"
        assert rss_kib(agent.proc.pid) - rss_before < 32 * 1024, \
            (rss_before, rss_kib(agent.proc.pid))
        assert agent_connections_from(agent, "127.0.0.1") == 64
    finally:
        for s in flood:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
