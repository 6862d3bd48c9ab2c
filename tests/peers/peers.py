"""The real peers of graind's sinks, run from tests/peers/node_modules
(installed by `make peers`): the Etsy StatsD daemon, read back through its
management interface, and s3rver behind the SigV4-verifying proxy, read
back with botocore."""

import gzip
import json
import os
import re
import socket
import subprocess
import time

import botocore.session
from botocore.config import Config

from s3_verify_proxy import S3VerifyProxy

PEERS = os.path.dirname(os.path.abspath(__file__))
MODULES = os.path.join(PEERS, "node_modules")
STATSD_JS = os.path.join(MODULES, "statsd", "stats.js")
S3RVER_JS = os.path.join(MODULES, "s3rver", "bin", "s3rver.js")
NODE = os.environ.get("NODE", "node")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port, proc, log_path, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {open(log_path).read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}: {open(log_path).read()[-2000:]}")


def stop_process(proc):
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- StatsD

# util.inspect of the daemon's table: { 'a.b;k=v': 3, 'statsd.x': 0 }
_INSPECT_ENTRY = re.compile(r"(?:'((?:[^'\\]|\\.)*)'|([A-Za-z_$][\w$]*))\s*:\s*"
                            r"(-?(?:\d+\.?\d*(?:e[-+]?\d+)?|NaN|Infinity)|\[[^\]]*\])")


class StatsdDaemon:
    """statsd 0.9 on fixed free ports (UDP `port`, management `mgmt_port`),
    no backends and a flush interval of an hour so that counters keep what
    they received until the test reads them."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port(socket.SOCK_DGRAM)
        self.mgmt_port = free_port()
        self.proc = None
        self.config_path = os.path.join(workdir, "statsd.json")
        self.log_path = os.path.join(workdir, "statsd.log")
        with open(self.config_path, "w") as f:
            json.dump({"address": "127.0.0.1", "port": self.port,
                       "mgmt_address": "127.0.0.1", "mgmt_port": self.mgmt_port,
                       "backends": [], "flushInterval": 3600 * 1000,
                       "automaticConfigReload": False}, f)

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([NODE, STATSD_JS, self.config_path], cwd=self.workdir,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_tcp(self.mgmt_port, self.proc, self.log_path)
        return self

    def stop(self):
        stop_process(self.proc)
        self.proc = None

    def admin(self, command):
        """The raw answer of a management command, up to its END line."""
        with socket.create_connection(("127.0.0.1", self.mgmt_port), timeout=5) as s:
            s.sendall(command.encode() + b"\n")
            data = b""
            while not re.search(rb"(^|\n)END\n", data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.sendall(b"quit\n")
        return data.decode()

    def table(self, which):
        """{name: value} of "counters", "gauges" or "timers" (a list each)."""
        out = {}
        for quoted, bare, value in _INSPECT_ENTRY.findall(self.admin(which).split("END")[0]):
            name = quoted.replace("\\'", "'") if quoted else bare
            if value.startswith("["):
                out[name] = [float(v) for v in value[1:-1].replace("\n", " ").split(",")
                             if v.strip()]
            else:
                out[name] = float(value)
        return out

    def counters(self):
        return self.table("counters")

    def gauges(self):
        return self.table("gauges")

    def timers(self):
        return self.table("timers")


# ---------------------------------------------------------------- S3

class S3Peer:
    """s3rver with bucket `bucket` on `s3rver_port`, behind the verifying
    proxy on `port` that knows `access_key`/`secret`. Both keep their
    ports across stop()/start() so an endpoint can go away and come back."""

    def __init__(self, workdir, access_key, secret, bucket="graind", region="us-east-1"):
        self.workdir = workdir
        self.access_key, self.secret = access_key, secret
        self.bucket, self.region = bucket, region
        self.data = os.path.join(workdir, "s3rver-data")
        self.log_path = os.path.join(workdir, "s3rver.log")
        self.s3rver_port = free_port()
        self.port = free_port()
        self.proc = None
        self.proxy = None
        self.log = []           # the proxy's entries, kept across restarts
        self.delay = 0.0        # seconds the proxy holds each good request
        self._clients = {}

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        os.makedirs(self.data, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [NODE, S3RVER_JS, "-d", self.data, "-a", "127.0.0.1", "-p", str(self.s3rver_port),
             "--silent", "--configure-bucket", self.bucket],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_tcp(self.s3rver_port, self.proc, self.log_path)
        self.proxy = S3VerifyProxy(self.s3rver_port, {self.access_key: self.secret},
                                   self.region, port=self.port)
        self.proxy.log = self.log
        self.proxy.delay = self.delay
        self.proxy.start()
        return self

    def stop(self):
        if self.proxy:
            self.proxy.stop()
            self.proxy = None
        stop_process(self.proc)
        self.proc = None

    def set_delay(self, seconds):
        self.delay = seconds
        if self.proxy:
            self.proxy.delay = seconds

    def entries(self, verdict=None, method=None):
        return [e for e in list(self.log)
                if (verdict is None or e.verdict == verdict) and
                (method is None or e.method == method)]

    def client(self, through_proxy=False):
        """A botocore S3 client, path-style: straight to s3rver (its own
        key S3RVER) or through the proxy with the test's key. Made once:
        creating one loads the whole S3 model."""
        if through_proxy not in self._clients:
            self._clients[through_proxy] = self._make_client(through_proxy)
        return self._clients[through_proxy]

    def _make_client(self, through_proxy):
        session = botocore.session.get_session()
        if through_proxy:
            url, key, secret = self.endpoint, self.access_key, self.secret
        else:
            url, key, secret = f"http://127.0.0.1:{self.s3rver_port}", "S3RVER", "S3RVER"
        return session.create_client(
            "s3", region_name=self.region, endpoint_url=url,
            aws_access_key_id=key, aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                          retries={"max_attempts": 1}))

    def keys(self, prefix=""):
        c = self.client()
        out, token = [], None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            r = c.list_objects_v2(**kw)
            out += [o["Key"] for o in r.get("Contents", [])]
            if not r.get("IsTruncated"):
                return out
            token = r["NextContinuationToken"]

    def get(self, key):
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def ndjson(self, key):
        """The samples of one gzip NDJSON object, parsed."""
        text = gzip.decompress(self.get(key)).decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]
