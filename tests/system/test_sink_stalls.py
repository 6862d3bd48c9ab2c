"""Sinks whose peer does not answer never hold up the agent: changing or
deleting such a sink answers within a second and SIGTERM ends the agent
within three, whatever the peer does (accepts and never answers, answers
a byte a second, answers no SYN, or sits behind a name server that never
answers). And an S3 batch cut short by kill -9 is sent again after the
restart with the same samples, under the same key.

The peers here are Python sockets on loopback; the name server is a UDP
socket on 127.0.0.2:53 that the agent's resolv.conf (bind-mounted in a
mount namespace of its own) names."""

import os
import signal
import socket
import threading
import time
from types import SimpleNamespace
from urllib.parse import unquote

import pytest

from test_sinks import (KEY_RE, Emit, check_objects, put_sink, s3_body, statsd_body, unique,
                        wait_delivered, wait_for)

API_S = 1.0         # a sink change or delete answers within this
SHUTDOWN_S = 3.0    # SIGTERM ends the agent within this


# ---------------------------------------------------------------- peers

def syn_sent_to(port):
    """Connections to 127.0.0.1:port that wait for an answer to their SYN."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "02" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    n += 1
    return n


class StallPeer:
    """An "S3 endpoint" on loopback that never finishes an answer:
    `blackhole` accepts and reads, and says nothing; `trickle` sends the
    start of an answer one byte a second; `closed` answers no SYN (its
    one-entry accept queue is kept full). `requests` has the request line
    of every request read."""

    bucket, region, secret = "graind", "us-east-1", "stall-secret"

    def __init__(self, mode, port=0):
        self.mode = mode
        self.requests = []
        self.conns = []
        self.closing = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        if mode == "closed":
            self.sock.listen(0)
            self.conns.append(socket.create_connection(("127.0.0.1", self.port)))
        else:
            self.sock.listen(16)
            threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def _accept(self):
        while not self.closing:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = c.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.requests.append(data.split(b"\r\n", 1)[0].decode())
            if self.mode == "trickle":
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n":
                    c.send(bytes([byte]))
                    time.sleep(1)
            while c.recv(65536):
                pass
        except OSError:
            pass

    def busy(self, seen):
        """Is a request past the first `seen` under way?"""
        if self.mode == "closed":
            return syn_sent_to(self.port) > 0
        return len(self.requests) > seen

    def seen(self):
        return len(self.requests)

    def close(self):
        # shutdown() first: a socket that a thread waits on is not
        # released by close() alone, and the port must be free after.
        self.closing = True
        for c in [*self.conns, self.sock]:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


class SilentNameServer:
    """A name server on 127.0.0.2:53 that reads queries and answers none;
    `resolv_conf` is a resolv.conf naming it, with one try of 30 s."""

    def __init__(self, workdir):
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.2", 53))
        self.resolv_conf = os.path.join(workdir, "resolv.conf")
        with open(self.resolv_conf, "w") as f:
            f.write("nameserver 127.0.0.2\noptions timeout:30 attempts:1\n")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                self.sock.recv(4096)
            except OSError:
                return
            self.queries += 1

    def busy(self, seen):
        return self.queries > seen

    def seen(self):
        return self.queries

    def wrapper(self):
        """Runs the agent with this name server in its resolv.conf."""
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', self.resolv_conf]

    def close(self):
        try:
            # Wakes the reader (and says ENOTCONN), so close() frees the port.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------- checks

def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def never_held_up(a, emit, peer, body, change):
    """With the sink's delivery stuck on `peer`: a change and a delete
    each answer within API_S, and SIGTERM ends the agent within
    SHUTDOWN_S with status 0."""
    name = unique("stall")

    def stuck(seen):
        wait_for(lambda: peer.busy(seen), timeout=20, what="a delivery stuck on the peer")

    put_sink(a, name, body)
    emit.caller.call(5)
    stuck(0)
    seen = peer.seen()
    r, took = timed(lambda: a.request("PUT", f"/v1/sinks/{name}", json=change))
    assert r.status_code == 200, r.text
    assert took < API_S, f"PUT of a stuck sink took {took:.1f} s"
    r = a.get(f"/v1/sinks/{name}")
    assert r.status_code == 200, r.text
    stuck(seen)
    r, took = timed(lambda: a.delete(f"/v1/sinks/{name}"))
    assert r.status_code in (200, 204), r.text
    assert took < API_S, f"DELETE of a stuck sink took {took:.1f} s"

    seen = peer.seen()
    put_sink(a, name, body)
    emit.caller.call(5)
    stuck(seen)
    rc, took = timed(lambda: a.stop(timeout=30))
    assert rc == 0, a.read_log()[-3000:]
    assert took < SHUTDOWN_S, f"SIGTERM took {took:.1f} s with a stuck sink"


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("mode", ["blackhole", "trickle", "closed"])
def test_s3_peer_that_never_answers_holds_up_nothing(make_agent, pb, mode):
    peer = StallPeer(mode)
    a = make_agent()
    emit = Emit(a, pb)
    try:
        body = s3_body(peer, emit.name, rows=1000, age_ms=100)
        change = s3_body(peer, emit.name, rows=999, age_ms=100)
        never_held_up(a, emit, peer, body, change)
    finally:
        peer.close()
        emit.caller.stop()


@pytest.mark.parametrize("kind", ["statsd", "s3"])
def test_name_server_that_never_answers_holds_up_nothing(make_agent, pb, tmp_path, kind):
    """StatsD's UDP sends never block, but looking its host up may; so
    may libcurl's lookup of an S3 endpoint."""
    dns = SilentNameServer(str(tmp_path))
    a = make_agent(wrapper=dns.wrapper())
    emit = Emit(a, pb)
    host = "sink.graind-test.invalid"
    try:
        if kind == "statsd":
            body = statsd_body(8125, "a", "TAG_DIALECT_NONE", emit.name)
            body["statsd"]["host"] = host
            change = statsd_body(8125, "b", "TAG_DIALECT_NONE", emit.name)
            change["statsd"]["host"] = host
        else:
            peer = SimpleNamespace(endpoint=f"http://{host}:9000", bucket="graind",
                                   region="us-east-1", secret="x")
            body = s3_body(peer, emit.name, rows=1000, age_ms=100)
            change = s3_body(peer, emit.name, rows=999, age_ms=100)
        never_held_up(a, emit, dns, body, change)
    finally:
        dns.close()
        emit.caller.stop()


def test_s3_partial_batch_keeps_its_key_across_kill9(make_agent, pb, s3_peer):
    """An age-triggered batch whose PUT is under way when the agent is
    killed is sent again after the restart, with the same samples under
    the same key, although more samples were stored after it: nothing is
    lost, nothing is in two objects."""
    s3_peer.stop()
    stall = StallPeer("blackhole", port=s3_peer.port)
    a = make_agent()
    emit = Emit(a, pb)
    name = unique("s3")
    try:
        put_sink(a, name, s3_body(s3_peer, emit.name, rows=1000, age_ms=300))
        emit.caller.call(10)
        emit.wait_events(20)
        wait_for(lambda: stall.requests, what="the batch's PUT")
        method, target, _ = stall.requests[0].split(" ")
        assert method == "PUT", stall.requests
        key = unquote(target).split("/", 2)[2]
        m = KEY_RE.match(key)
        assert m, key
        first, last = int(m["first"]), int(m["last"])
        # Stored before the kill, after the batch: a batch made anew
        # after the restart would take them in, under another key.
        emit.caller.call(10)
        later = emit.wait_events(40)
        assert max(later) > last
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        a.stop()
        stall.close()
        s3_peer.start()

        a = make_agent()
        emit.a = a
        want = emit.events()
        wait_delivered(s3_peer, pb, emit, want)
        objs = check_objects(s3_peer, pb, emit, want, exactly_once=True)
        assert key in objs, f"{key} not among {sorted(objs)}"
        assert [s.id for s in objs[key]] == sorted(i for i in want if first <= i <= last)
    finally:
        if a.alive():
            a.delete(f"/v1/sinks/{name}")
        emit.close()
        assert a.stop() == 0, a.read_log()[-3000:]
