"""Fixtures for system tests: a real graind process on a free port with a
temporary state directory, driven over HTTP with requests and curl."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from dataclasses import dataclass

import pytest
import requests

GRAIND_BIN = os.environ.get("GRAIND_BIN", os.path.abspath("build/asan/graind"))
TEST_BPF = os.environ.get("GRAIND_TEST_BPF", os.path.abspath("build/tests/bpf"))
PROTO = os.environ.get("GRAIND_PROTO", os.path.abspath("proto/graind.proto"))
# Where test agents pin probes: a root of this run's own, never the
# production /sys/fs/bpf/graind, so that concurrent runs (and a real agent
# on the host) never see each other's probes.
PIN_ROOT = os.environ.get("GRAIND_PIN_ROOT", f"/sys/fs/bpf/graind-test-{os.getpid()}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """A running graind. `url` is its base URL; `admin`/`reader` its tokens."""

    scheme = "http"
    client_kw = {}      # requests' arguments for the health check (TLS: verify, cert)

    def __init__(self, state_dir, extra_args=(), wrapper=(), host="127.0.0.1", log_path=None):
        self.state_dir = state_dir
        # where stderr goes: outside the state dir when the test fills it
        self.log_path = log_path or os.path.join(state_dir, "graind.log")
        self.extra_args = list(extra_args)
        self.wrapper = list(wrapper)    # a command that execs graind
        self.host = host                # where it listens: e.g. in a namespace
        self.proc = None
        self.port = None

    def start(self, timeout=30):
        self.port = free_port()
        self.socket_path = os.path.join(self.state_dir, "graind.sock")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, GRAIND_BIN, "--listen", f"{self.host}:{self.port}",
             "--grpc-listen", f"{self.host}:0", "--state-dir", self.state_dir,
             "--pin-root", PIN_ROOT, *self.extra_args],
            stdout=subprocess.PIPE, stderr=self.log)
        self.banner = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.banner += line
            if b"reader token" in line:
                break
        if self.proc.poll() is not None:
            raise RuntimeError(f"graind exited with {self.proc.returncode}: {self.read_log()}")
        # "  gRPC on        127.0.0.1:PORT": where the gRPC transport listens.
        self.grpc_target = next((line.split()[-1] for line in self.banner.decode().splitlines()
                                 if line.strip().startswith("gRPC on")
                                 and not line.split()[-1].startswith("unix:")), None)
        self.url = f"{self.scheme}://{self.host}:{self.port}"
        self.admin = open(os.path.join(self.state_dir, "admin.token")).read().strip()
        self.reader = open(os.path.join(self.state_dir, "reader.token")).read().strip()
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=2,
                                **self.client_kw).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("graind did not become healthy")

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stop graind; its exit status. One that does not stop in time is
        killed (and the timeout raised), so that no agent outlives a test."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        rc = self.proc.returncode if self.proc else None
        if self.proc:
            self.proc.stdout.close()
            self.log.close()
        self.proc = None
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def headers(self, token="admin", **extra):
        h = dict(extra)
        if token == "admin":
            h["Authorization"] = f"Bearer {self.admin}"
        elif token == "reader":
            h["Authorization"] = f"Bearer {self.reader}"
        elif token is not None:
            h["Authorization"] = f"Bearer {token}"
        return h

    def request(self, method, path, token="admin", headers=None, **kw):
        h = self.headers(token, **(headers or {}))
        return requests.request(method, self.url + path, headers=h, timeout=60, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def upload(self, data, name=None, token="admin"):
        path = "/v1/objects" + (f"?name={name}" if name else "")
        return self.post(path, token=token, data=data,
                         headers={"Content-Type": "application/octet-stream"})


@pytest.fixture
def state_dir():
    d = tempfile.mkdtemp(prefix="graind-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def agent(state_dir):
    a = Agent(state_dir).start()
    yield a
    rc = a.stop()
    # A clean shutdown is part of every test: SIGTERM must exit 0, and the
    # sanitizers must have found nothing (they make the exit code non-zero).
    assert rc == 0, f"graind exited with {rc}:\n{a.read_log()[-4000:]}"


@pytest.fixture
def make_agent(state_dir):
    """Start agents by hand (for restart tests); all are stopped at the end."""
    started = []

    def start(extra_args=(), directory=None, wrapper=()):
        a = Agent(directory or state_dir, extra_args, wrapper).start()
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()


def bpf_object(name):
    """Bytes of a test BPF object built by the Makefile (tests/bpf/)."""
    with open(os.path.join(TEST_BPF, name), "rb") as f:
        return f.read()


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """Python protobuf classes generated by protoc from proto/graind.proto at
    test time: an implementation independent of graind's codec."""
    out = tmp_path_factory.mktemp("pb")
    subprocess.run(["protoc", f"--proto_path={os.path.dirname(PROTO)}",
                    f"--python_out={out}", PROTO], check=True)
    sys.path.insert(0, str(out))
    import graind_pb2  # noqa: E402
    return graind_pb2


# ---------------------------------------------------------------- shared

def start_module_agent(request, extra_args=()):
    """A graind in its own temporary state directory for a whole module,
    stopped (and its clean exit checked) when the module is done."""
    d = tempfile.mkdtemp(prefix="graind-test-")
    a = Agent(d, extra_args).start()

    def stop():
        rc = a.stop()
        log = a.read_log()
        shutil.rmtree(d, ignore_errors=True)
        assert rc == 0, f"graind exited with {rc}:\n{log[-4000:]}"

    request.addfinalizer(stop)
    return a


@pytest.fixture(scope="module")
def module_agent(request):
    """One graind shared by the tests of a module."""
    return start_module_agent(request)


def assert_error(resp, code, *substrings):
    """The response is a JSON Status with `code` whose message holds every
    substring (case-sensitive); returns the message."""
    assert resp.status_code == code, \
        f"expected {code}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), \
        resp.headers.get("Content-Type")
    body = resp.json()
    assert body["code"] == code, body
    msg = body.get("message", "")
    assert msg, f"empty error message: {body}"
    for s in substrings:
        assert s in msg, f"{s!r} not in message {msg!r}"
    return msg


def raw_http(port, request_bytes, timeout=10, read_all=True):
    """Send bytes as they are over a new TCP connection (no normalisation of
    the path, no Content-Length fix-up) and return the reply as
    (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request_bytes)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            if not read_all and b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = [int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def agent_fds(agent):
    """The anon-inode bpf objects (progs, maps, links) graind holds open."""
    kinds = []
    fd_dir = f"/proc/{agent.proc.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("anon_inode:bpf"):
            kinds.append(target)
    return kinds


# ---------------------------------------------------------------- sink peers
# The real StatsD daemon and s3rver (behind a SigV4-verifying proxy) from
# tests/peers, installed there by `make peers`.

PEERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers")
S3_ACCESS_KEY = "AKIAGRAINDTEST000001"


def _peers():
    if not os.path.isdir(os.path.join(PEERS_DIR, "node_modules")):
        pytest.fail("tests/peers/node_modules is missing: run `make peers`")
    if PEERS_DIR not in sys.path:
        sys.path.insert(0, PEERS_DIR)
    import peers  # noqa: E402
    return peers


@pytest.fixture
def statsd_daemon(tmp_path):
    """A StatsD daemon (statsd 0.9) on free ports: .port (UDP), .counters(),
    .gauges(), .timers() through its management port; stop()/start() keep
    the ports."""
    d = _peers().StatsdDaemon(str(tmp_path)).start()
    yield d
    d.stop()


@pytest.fixture
def s3_peer(tmp_path):
    """s3rver with one bucket behind the verifying proxy (.endpoint) that
    knows S3_ACCESS_KEY/.secret; .keys(), .ndjson(key), .entries() to read
    back; stop()/start() keep the ports and the stored objects."""
    secret = "graind-test-" + os.urandom(12).hex()
    p = _peers().S3Peer(str(tmp_path), S3_ACCESS_KEY, secret).start()
    yield p
    p.stop()


# ---------------------------------------------------------------- networks

def sh(*cmd, check=True, timeout=30):
    """Run a command; a failure is an AssertionError carrying its stderr."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr}")
    return out


@dataclass
class Net:
    ns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str


@contextlib.contextmanager
def veth_namespace(tag, block, index=None):
    """A network namespace joined to the host by a veth pair. The host side
    (where graind attaches) gets .1 and the namespace side .2 of a /30 of
    198.18.0.0/15 (the benchmarking range), chosen by pid and `block` (0 to
    31) so that namespaces open at once use different ones; `tag` (one
    letter) keeps the interface and namespace names apart. `index` sets the
    host side's ifindex (an AssertionError when it is taken)."""
    assert 0 <= block < 32, block
    run = os.getpid() % 10000
    idx = block * 1024 + os.getpid() % 1024
    base = (198 << 24) | (18 << 16) | (idx * 4)

    def quad(n):
        return ".".join(str(((base + n) >> s) & 255) for s in (24, 16, 8, 0))

    n = Net(ns=f"graind-{tag}{os.getpid()}", host_if=f"g{tag}{run}h", ns_if=f"g{tag}{run}n",
            host_ip=quad(1), ns_ip=quad(2))
    try:
        sh("ip", "netns", "add", n.ns)
        sh("ip", "link", "add", n.host_if, *(("index", str(index)) if index else ()),
           "type", "veth", "peer", "name", n.ns_if, "netns", n.ns)
        sh("ip", "addr", "add", f"{n.host_ip}/30", "dev", n.host_if)
        sh("ip", "link", "set", n.host_if, "up")
        sh("ip", "-n", n.ns, "addr", "add", f"{n.ns_ip}/30", "dev", n.ns_if)
        sh("ip", "-n", n.ns, "link", "set", n.ns_if, "up")
        sh("ip", "-n", n.ns, "link", "set", "lo", "up")
        # Static neighbours: the first datagram leaves without an ARP round trip.
        with open(f"/sys/class/net/{n.host_if}/address") as f:
            host_mac = f.read().strip()
        ns_mac = sh("ip", "netns", "exec", n.ns, "cat",
                    f"/sys/class/net/{n.ns_if}/address").stdout.strip()
        sh("ip", "neigh", "replace", n.ns_ip, "lladdr", ns_mac, "dev", n.host_if,
           "nud", "permanent")
        sh("ip", "-n", n.ns, "neigh", "replace", n.host_ip, "lladdr", host_mac,
           "dev", n.ns_if, "nud", "permanent")
        yield n
    finally:
        sh("ip", "link", "del", n.host_if, check=False)
        sh("ip", "netns", "del", n.ns, check=False)


@pytest.fixture(scope="session", autouse=True)
def pin_root_removed():
    """The run's pin root goes when the run ends; probes the tests left
    attached there are detached with it."""
    yield
    if PIN_ROOT.startswith("/sys/fs/bpf/graind-test-"):
        shutil.rmtree(PIN_ROOT, ignore_errors=True)
