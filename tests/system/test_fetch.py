"""POST /v1/objects:fetch against real web servers the test starts: an
https one (python's http.server under ssl, with a certificate of a CA
made by openssl) and a plain http one.

The bytes are kept only when they hash to the sha256 asked for; a body
over --max-object-size is 413 (with a Content-Length and without one), a
redirect loop 502, plain http refused unless --fetch-allow-http, https
checked against --fetch-ca. An object stored already is not downloaded
again. Nothing refused is stored, and the agent serves on."""

import hashlib
import http.server
import os
import shutil
import ssl
import tempfile
import threading

import pytest

from conftest import Agent, assert_error, bpf_object
from test_tls import Certs

ACCEPT = bpf_object("accept.bpf.o")
ACCEPT_SHA = hashlib.sha256(ACCEPT).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """/accept.bpf.o, /big (with a Content-Length), /big-chunked
    (without), /loop (redirects to itself), /hop (to /accept.bpf.o),
    /to-http (an https page redirecting to plain http), /text."""

    def log_message(self, *args):
        pass

    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k == "Transfer-Encoding" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.server.paths.append(self.path)
        path = self.path.split("?")[0]
        if path == "/accept.bpf.o":
            self.send(200, ACCEPT)
        elif path == "/big":
            self.send(200, b"\x7fELF" + b"\0" * 40000)
        elif path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(40):
                chunk = b"\0" * 1000
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/loop":
            self.send(302, headers=[("Location", "/loop")])
        elif path == "/hop":
            self.send(302, headers=[("Location", "/accept.bpf.o")])
        elif path == "/to-http":
            self.send(302, headers=[("Location", self.server.http_url + "/accept.bpf.o")])
        elif path == "/text":
            self.send(200, b"not an ELF file\n")
        else:
            self.send(404, b"no such file\n")


class Server:
    def __init__(self, context=None):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.paths = []
        self.httpd.http_url = ""
        if context:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def paths(self):
        return self.httpd.paths

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="graind-test-fetch-")
    yield Certs(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def servers(certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certs.pair("server"))
    https, plain = Server(context), Server()
    https.httpd.http_url = plain.url
    yield https, plain
    https.close()
    plain.close()


@pytest.fixture(scope="module")
def a(certs):
    d = tempfile.mkdtemp(prefix="graind-test-fetch-agent-")
    ag = Agent(d, ["--fetch-ca", certs.path("ca.pem"), "--max-object-size", "32K"]).start()
    yield ag
    ag.stop()
    shutil.rmtree(d, ignore_errors=True)


def fetch(a, url, sha256=ACCEPT_SHA, token="admin", **more):
    return a.post("/v1/objects:fetch", token=token, json={"url": url, "sha256": sha256, **more})


def test_fetch_keeps_bytes_of_the_digest_and_not_twice(a, servers):
    https, _ = servers
    before = len(https.paths)
    r = fetch(a, https.url + "/accept.bpf.o?v=1")
    assert r.status_code == 201, r.text
    obj = r.json()
    assert obj["sha256"] == ACCEPT_SHA
    assert obj["name"] == "accept.bpf.o"            # the URL's last segment
    assert r.headers["Location"] == f"/v1/objects/{ACCEPT_SHA}"
    assert a.get(f"/v1/objects/{ACCEPT_SHA}/content").content == ACCEPT
    assert https.paths[before:] == ["/accept.bpf.o?v=1"]
    # Stored already: 200, and nothing is downloaded.
    r = fetch(a, https.url + "/accept.bpf.o", name="other-name")
    assert r.status_code == 200, r.text
    assert len(https.paths) == before + 1
    # The audit names what came from where.
    entries = a.get("/v1/audit", params={"newest_first": "true", "page_size": 5}).json()["entries"]
    fetched = [e for e in entries if e["action"] == "FetchObject"]
    assert fetched[0]["target"] == f"{ACCEPT_SHA} from {https.url}/accept.bpf.o"
    assert a.delete(f"/v1/objects/{ACCEPT_SHA}").status_code == 204


def test_redirects_are_followed_and_bounded(a, servers):
    https, _ = servers
    r = fetch(a, https.url + "/hop", name="hopped")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "hopped"
    assert a.delete(f"/v1/objects/{ACCEPT_SHA}").status_code == 204
    before = len(https.paths)
    assert_error(fetch(a, https.url + "/loop"), 502, f"{https.url}/loop", "more than 5 redirects")
    assert https.paths[before:] == ["/loop"] * 6
    # To plain http, which this agent does not allow.
    assert_error(fetch(a, https.url + "/to-http"), 502, "redirected to a scheme",
                 "--fetch-allow-http")
    assert a.get(f"/v1/objects/{ACCEPT_SHA}").status_code == 404


def test_wrong_digest_too_large_and_not_found_store_nothing(a, servers):
    https, _ = servers
    wrong = "ab" * 32
    r = fetch(a, https.url + "/accept.bpf.o", sha256=wrong)
    assert_error(r, 422, f"hash to {ACCEPT_SHA}", f"not to the sha256 asked for ({wrong})",
                 "nothing was stored")
    assert a.get(f"/v1/objects/{ACCEPT_SHA}").status_code == 404
    assert a.get(f"/v1/objects/{wrong}").status_code == 404
    for path in ("/big", "/big-chunked"):
        assert_error(fetch(a, https.url + path), 413, "over the 32768-byte limit",
                     "--max-object-size")
    assert_error(fetch(a, https.url + "/missing"), 502, "the server answered HTTP 404")
    # Bytes of the digest that are no object: the upload's own checks.
    text = b"not an ELF file\n"
    r = fetch(a, https.url + "/text", sha256=hashlib.sha256(text).hexdigest())
    assert r.status_code in (400, 422), r.text
    assert a.get(f"/v1/objects/{hashlib.sha256(text).hexdigest()}").status_code == 404
    assert a.get("/healthz").status_code == 200


def test_bad_requests_and_roles(a, servers):
    https, plain = servers
    assert_error(fetch(a, plain.url + "/accept.bpf.o"), 400, "plain http is refused",
                 "--fetch-allow-http")
    assert_error(fetch(a, "ftp://127.0.0.1/x.o"), 400, "url must be https://")
    assert_error(fetch(a, ""), 400, "one of url and image is needed")
    assert_error(fetch(a, https.url + "/x", image="127.0.0.1:1/x:1"), 400, "one of url and image")
    assert_error(fetch(a, https.url + "/accept.bpf.o", sha256=""), 400, "sha256 is required")
    assert_error(fetch(a, https.url + "/accept.bpf.o", sha256="xyz"), 400,
                 "sha256 must be 64 hex digits")
    assert_error(fetch(a, https.url + "/accept.bpf.o", name="../etc"), 400, "object name")
    assert_error(fetch(a, https.url + "/accept.bpf.o", token="reader"), 403)
    # A password in the URL is never repeated back.
    r = fetch(a, https.url.replace("https://", "https://user:s3cret@") + "/missing")
    assert_error(r, 502, f"{https.url}/missing")
    assert "s3cret" not in r.text
    assert "s3cret" not in a.read_log()


def test_https_needs_a_trusted_certificate_and_http_a_flag(servers, certs):
    https, plain = servers
    d = tempfile.mkdtemp(prefix="graind-test-fetch-plain-")
    ag = Agent(d, ["--fetch-allow-http"]).start()
    try:
        # The test CA is not the system's: the certificate is refused.
        r = fetch(ag, https.url + "/accept.bpf.o")
        assert_error(r, 502, https.url)
        assert "certificate" in r.json()["message"].lower(), r.text
        r = fetch(ag, plain.url + "/accept.bpf.o")
        assert r.status_code == 201, r.text
        assert ag.get(f"/v1/objects/{ACCEPT_SHA}/content").content == ACCEPT
    finally:
        ag.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_a_fetch_writes_over_damaged_bytes(servers, certs, tmp_path):
    """An object whose stored bytes were damaged is downloaded again by a
    fetch of its digest, not taken as stored."""
    import sqlite3
    https, _ = servers
    ag = Agent(str(tmp_path), ["--fetch-ca", certs.path("ca.pem")]).start()
    try:
        assert fetch(ag, https.url + "/accept.bpf.o").status_code == 201
        assert ag.stop() == 0
        db = sqlite3.connect(os.path.join(str(tmp_path), "graind.db"))
        bad = bytearray(ACCEPT)
        bad[100] ^= 1
        db.execute("UPDATE objects SET bytes = ? WHERE sha256 = ?", (bytes(bad), ACCEPT_SHA))
        db.commit()
        db.close()
        ag.start()
        assert ag.get(f"/v1/objects/{ACCEPT_SHA}/content").status_code == 500
        before = len(https.paths)
        r = fetch(ag, https.url + "/accept.bpf.o")
        assert r.status_code in (200, 201), r.text       # written over
        assert https.paths[before:] == ["/accept.bpf.o"]
        assert ag.get(f"/v1/objects/{ACCEPT_SHA}/content").content == ACCEPT
    finally:
        ag.stop()


def test_fetch_ca_that_cannot_be_read_stops_the_start(tmp_path):
    import subprocess
    from conftest import GRAIND_BIN
    p = subprocess.run([GRAIND_BIN, "--state-dir", str(tmp_path), "--fetch-ca",
                        str(tmp_path / "nope.pem")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "--fetch-ca" in p.stderr and "No such file" in p.stderr, p.stderr
