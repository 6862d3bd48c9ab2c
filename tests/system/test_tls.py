"""TLS and mutual TLS on both transports, against certificates the test
makes with openssl: curl, python requests and grpcio as clients; a
certificate from the CA gets in, none, another CA's or an expired one
does not; plain HTTP and h2c to the TLS ports are refused; SIGHUP
rotates the certificate, key and CA while open connections carry on;
bad files stop the start with a message naming them."""

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import grpc
import pytest
import requests

from conftest import GRAIND_BIN, PIN_ROOT, Agent

SERVING, NOT_SERVING = b"\x08\x01", b"\x08\x02"     # grpc.health.v1.HealthCheckResponse

CA_CNF = """[ca]
default_ca = test
[test]
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
"""


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"


class Certs:
    """A CA, another CA, and the certificates the tests use, as files."""

    def __init__(self, d):
        self.d = d
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write(CA_CNF.format(dir=d))
        for ca, cn in (("ca", "graind-test-ca"), ("ca2", "another-ca")):
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "30",
                    "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        server = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        client = "extendedKeyUsage=clientAuth\n"
        self.make("server", "graind-server", server)
        self.make("rotated", "graind-rotated", server)
        self.make("good", "client-good",
                  "subjectAltName=DNS:client.example,IP:10.1.2.3,URI:spiffe://graind.test/ops\n"
                  + client)
        self.make("other", "client-other", client, ca="ca2")
        # Expired: `openssl ca` sets the dates (faketime is not at hand).
        self.make("expired", "client-expired", client, dates=("20200101000000Z", "20200201000000Z"))
        self.make("server-expired", "graind-server", server,
                  dates=("20200101000000Z", "20200201000000Z"))

    def path(self, name):
        return os.path.join(self.d, name)

    def make(self, name, cn, ext, ca="ca", dates=None):
        d = self.d
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext)
        if dates:
            openssl("ca", "-batch", "-config", "ca.cnf", "-cert", f"{ca}.pem", "-keyfile",
                    f"{ca}.key", "-in", f"{name}.csr", "-out", f"{name}.pem", "-notext",
                    "-startdate", dates[0], "-enddate", dates[1], "-extfile", f"{name}.ext",
                    cwd=d)
        else:
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
                    f"{ca}.key", "-CAcreateserial", "-days", "30", "-extfile", f"{name}.ext",
                    "-out", f"{name}.pem", cwd=d)

    def pair(self, name):
        return (self.path(f"{name}.pem"), self.path(f"{name}.key"))

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="graind-test-tls-")
    yield Certs(d)
    shutil.rmtree(d, ignore_errors=True)


class TlsAgent(Agent):
    scheme = "https"

    def __init__(self, state_dir, certs, extra_args=()):
        super().__init__(state_dir, ["--verbose", *extra_args])
        self.client_kw = {"verify": certs.path("ca.pem"), "cert": certs.pair("good")}


def start_tls_agent(certs, tls_dir, extra=()):
    """An agent whose TLS files are copies in tls_dir (so a test may
    replace them), with the CA's client certificates required."""
    for src, dst in (("server.pem", "cert.pem"), ("server.key", "key.pem"), ("ca.pem", "ca.pem")):
        shutil.copy(certs.path(src), os.path.join(tls_dir, dst))
    state = os.path.join(tls_dir, "state")
    os.makedirs(state, exist_ok=True)
    return TlsAgent(state, certs, ["--tls-cert", os.path.join(tls_dir, "cert.pem"),
                                   "--tls-key", os.path.join(tls_dir, "key.pem"),
                                   "--client-ca", os.path.join(tls_dir, "ca.pem"),
                                   *extra]).start()


@pytest.fixture(scope="module")
def a(certs):
    d = tempfile.mkdtemp(prefix="graind-test-tls-agent-")
    agent = start_tls_agent(certs, d)
    yield agent
    rc = agent.stop()
    log = agent.read_log()
    shutil.rmtree(d, ignore_errors=True)
    assert rc == 0, log[-4000:]


def curl(a, certs, path, cert=None, token=None):
    cmd = ["curl", "-sS", "-m", "10", "--cacert", certs.path("ca.pem"),
           "-o", "-", "-w", "\n%{http_code}"]
    if cert:
        cmd += ["--cert", certs.path(f"{cert}.pem"), "--key", certs.path(f"{cert}.key")]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    return subprocess.run(cmd + [a.url + path], capture_output=True, text=True)


def grpc_creds(certs, cert=None, ca="ca.pem"):
    if cert is None:
        return grpc.ssl_channel_credentials(certs.read(ca))
    return grpc.ssl_channel_credentials(certs.read(ca), certs.read(f"{cert}.key"),
                                        certs.read(f"{cert}.pem"))


def health_check(channel, timeout=5):
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return check(b"", timeout=timeout)


def grpc_status(a, channel, pb):
    get = channel.unary_unary("/graind.Graind/GetStatus",
                              request_serializer=pb.GetStatusRequest.SerializeToString,
                              response_deserializer=pb.AgentStatus.FromString)
    return get(pb.GetStatusRequest(), metadata=[("authorization", f"Bearer {a.reader}")],
               timeout=10)


def peer_cn(a, certs, cert="good"):
    """The CN of the certificate a new connection to the REST port gets."""
    ctx = ssl.create_default_context(cafile=certs.path("ca.pem"))
    ctx.load_cert_chain(*certs.pair(cert))
    with socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            subject = dict(x[0] for x in t.getpeercert()["subject"])
    return subject["commonName"]


def refused_bytes(port, payload):
    """What a TLS port answers to plain bytes, until it closes (it must)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
    return got


# ---------------------------------------------------------------- REST


def test_rest_client_certificates_with_curl(a, certs):
    r = curl(a, certs, "/v1/status", cert="good", token=a.reader)
    assert r.returncode == 0 and r.stdout.endswith("\n200"), r.stderr
    assert '"version"' in r.stdout
    # A valid client certificate alone grants no role: the token decides.
    r = curl(a, certs, "/v1/status", cert="good")
    assert r.returncode == 0 and r.stdout.endswith("\n401"), r.stdout
    for cert in (None, "other", "expired"):
        r = curl(a, certs, "/healthz", cert=cert)
        assert r.returncode != 0, f"{cert}: {r.stdout}"
        assert not r.stdout.strip("\n0"), f"{cert}: an answer came: {r.stdout}"


def test_rest_client_certificates_with_requests(a, certs):
    ca = certs.path("ca.pem")
    r = requests.get(a.url + "/v1/probes", headers=a.headers("reader"), verify=ca,
                     cert=certs.pair("good"), timeout=10)
    assert r.status_code == 200, r.text
    for cert in (None, certs.pair("other"), certs.pair("expired")):
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(a.url + "/healthz", verify=ca, cert=cert, timeout=10)
    # The server's certificate is for 127.0.0.1, from the CA: verification
    # against another CA fails on the client side.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(a.url + "/healthz", verify=certs.path("ca2.pem"), cert=certs.pair("good"),
                     timeout=10)


def test_client_identity_reaches_the_agent(a, certs):
    r = curl(a, certs, "/healthz", cert="good")
    assert r.stdout.endswith("\n200")
    deadline = time.time() + 5
    want = ('identity="CN=client-good,DNS:client.example,IP:10.1.2.3,'
            'URI:spiffe://graind.test/ops"')
    while want not in a.read_log() and time.time() < deadline:
        time.sleep(0.05)
    assert want in a.read_log()


def test_a_certificate_the_credentials_file_names_is_a_principal(certs, pb, tmp_path):
    """A client certificate name listed in the credentials file is the
    caller when no token comes; a token, when sent, decides."""
    creds = tmp_path / "credentials"
    creds.write_text("ops admin cert:DNS:client.example\n")
    os.chmod(creds, 0o600)
    agent = start_tls_agent(certs, str(tmp_path), ["--auth-file", str(creds)])
    try:
        zero = "0" * 64
        r = curl(agent, certs, f"/v1/objects/{zero}", cert="good")
        assert r.stdout.endswith("\n404"), r.stdout      # known and allowed: not found
        r = requests.delete(agent.url + f"/v1/objects/{zero}", verify=certs.path("ca.pem"),
                            cert=certs.pair("good"), timeout=10)
        assert r.status_code == 404, r.text
        r = requests.delete(agent.url + f"/v1/objects/{zero}", verify=certs.path("ca.pem"),
                            cert=certs.pair("good"), headers=agent.headers("reader"),
                            timeout=10)
        assert r.status_code == 403 and "principal reader" in r.text, r.text
        audit = requests.get(agent.url + "/v1/audit", verify=certs.path("ca.pem"),
                             cert=certs.pair("good"), timeout=10).json()["entries"]
        assert [(e["principal"], e["role"], e["result"]) for e in audit] == [
            ("ops", "admin", 404), ("reader", "reader", 403)], audit
        # The same over gRPC, the certificate alone.
        with grpc.secure_channel(agent.grpc_target, grpc_creds(certs, "good")) as ch:
            status = ch.unary_unary("/graind.Graind/GetStatus",
                                    request_serializer=pb.GetStatusRequest.SerializeToString,
                                    response_deserializer=pb.AgentStatus.FromString)
            assert status(pb.GetStatusRequest(), timeout=10).version
    finally:
        assert agent.stop() == 0, agent.read_log()[-3000:]


def test_grainctl_over_mutual_tls(a, certs):
    grainctl = os.environ.get("GRAINCTL_BIN", os.path.abspath("build/asan/grainctl"))
    base = [grainctl, "--host", a.url, "--token-file", os.path.join(a.state_dir, "reader.token"),
            "--cacert", certs.path("ca.pem"), "-o", "json"]
    r = subprocess.run(base + ["--cert", certs.path("good.pem"), "--key", certs.path("good.key"),
                               "status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '"version"' in r.stdout
    r = subprocess.run(base + ["status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    r = subprocess.run(base + ["--cert", certs.path("good.pem"), "status"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "--cert and --key go together" in r.stderr


def test_plain_http_to_the_tls_port_is_refused(a, certs):
    got = refused_bytes(a.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"HTTP/" not in got and b"ok" not in got, got
    r = subprocess.run(["curl", "-sS", "-m", "10", f"http://127.0.0.1:{a.port}/healthz"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "ok" not in r.stdout


def test_protocol_versions_and_ciphers(a, certs):
    def s_client(*args):
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{a.port}",
                            "-CAfile", certs.path("ca.pem"), "-cert", certs.path("good.pem"),
                            "-key", certs.path("good.key"), *args],
                           input="", capture_output=True, text=True, timeout=20)
        return next((line for line in r.stdout.splitlines() if line.startswith("New,")), "")

    assert "TLSv1.3" in s_client("-tls1_3")
    assert "TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM" in s_client("-tls1_2")
    assert "(NONE)" in s_client("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert "(NONE)" in s_client("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")


def test_unix_sockets_stay_plain(a):
    r = subprocess.run(["curl", "-sS", "-m", "10", "--unix-socket", a.socket_path,
                        "http://localhost/healthz"], capture_output=True, text=True)
    assert r.returncode == 0 and '"ok"' in r.stdout, r.stderr
    with grpc.insecure_channel("unix:" + os.path.join(a.state_dir, "graind-grpc.sock")) as ch:
        assert health_check(ch) == SERVING


# ---------------------------------------------------------------- gRPC


def test_grpc_client_certificates(a, certs, pb):
    with grpc.secure_channel(a.grpc_target, grpc_creds(certs, "good")) as ch:
        assert grpc_status(a, ch, pb).version
        assert health_check(ch) == SERVING
    for cert in (None, "other", "expired"):
        with grpc.secure_channel(a.grpc_target, grpc_creds(certs, cert)) as ch:
            with pytest.raises(grpc.RpcError) as e:
                health_check(ch)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, cert


def test_h2c_to_the_tls_port_is_refused(a):
    with grpc.insecure_channel(a.grpc_target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            health_check(ch)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    host, port = a.grpc_target.rsplit(":", 1)
    got = refused_bytes(int(port), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9))
    # No HTTP/2 frame comes back (a SETTINGS frame would be type 4 at byte 3).
    assert len(got) < 9 or got[3] != 4, got


def test_grpc_without_alpn_h2_is_refused(a, certs):
    ctx = ssl.create_default_context(cafile=certs.path("ca.pem"))
    ctx.load_cert_chain(*certs.pair("good"))
    ctx.set_alpn_protocols(["http/1.1"])
    host, port = a.grpc_target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                if not t.recv(100):
                    raise ConnectionError("closed")


# ---------------------------------------------------------------- optional, rotation


def reloads(a, what):
    return a.read_log().count(what)


def sighup(a, what):
    before = reloads(a, what)
    a.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while reloads(a, what) == before and time.time() < deadline:
        time.sleep(0.05)
    assert reloads(a, what) > before, a.read_log()[-2000:]


def test_optional_client_certificates_and_rotation(certs, pb, tmp_path):
    a = start_tls_agent(certs, str(tmp_path), ["--client-cert", "optional"])
    try:
        ca = certs.path("ca.pem")
        # Optional: without a certificate the token alone is enough; a
        # certificate that does not verify is still refused.
        r = requests.get(a.url + "/v1/status", headers=a.headers("reader"), verify=ca,
                         timeout=10)
        assert r.status_code == 200, r.text
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(a.url + "/healthz", verify=ca, cert=certs.pair("other"), timeout=10)
        assert peer_cn(a, certs) == "graind-server"

        # Open before the rotation: a keep-alive REST connection, a gRPC
        # channel and a health Watch on it (a call that stays open).
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(*certs.pair("good"))
        keep = http.client.HTTPSConnection("127.0.0.1", a.port, context=ctx, timeout=10)
        keep.request("GET", "/healthz")
        assert keep.getresponse().read() == b'{"status":"ok"}'
        sock = keep.sock
        ch = grpc.secure_channel(a.grpc_target, grpc_creds(certs, "good"))
        watch = ch.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)(b"", timeout=60)
        assert next(watch) == SERVING

        # Rotate: another server certificate, and client certificates of
        # the other CA only from now on.
        shutil.copy(certs.path("rotated.pem"), tmp_path / "cert.pem")
        shutil.copy(certs.path("rotated.key"), tmp_path / "key.pem")
        shutil.copy(certs.path("ca2.pem"), tmp_path / "ca.pem")
        sighup(a, "TLS credentials reloaded")

        # New connections: the new certificate, the new CA.
        assert peer_cn(a, certs, cert="other") == "graind-rotated"
        r = requests.get(a.url + "/v1/status", headers=a.headers("reader"), verify=ca,
                         cert=certs.pair("other"), timeout=10)
        assert r.status_code == 200, r.text
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(a.url + "/healthz", verify=ca, cert=certs.pair("good"), timeout=10)
        with grpc.secure_channel(a.grpc_target, grpc_creds(certs, "good")) as refused:
            with pytest.raises(grpc.RpcError) as e:
                health_check(refused)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.secure_channel(a.grpc_target, grpc_creds(certs, "other")) as fresh:
            assert grpc_status(a, fresh, pb).version

        # Open before: undisturbed. The same socket, the old certificate;
        # the old channel's connection (a new one would be refused now).
        keep.request("GET", "/healthz")
        assert keep.getresponse().read() == b'{"status":"ok"}'
        assert keep.sock is sock
        assert dict(x[0] for x in keep.sock.getpeercert()["subject"])["commonName"] == \
            "graind-server"
        assert grpc_status(a, ch, pb).version
        assert watch.running()

        # A failed reload keeps the credentials in use, and says why.
        (tmp_path / "key.pem").write_text("not a key\n")
        sighup(a, "TLS reload failed")
        assert "--tls-key" in a.read_log().split("TLS reload failed")[-1].splitlines()[0]
        assert peer_cn(a, certs, cert="other") == "graind-rotated"

        # The watch was open all along: it hears NOT_SERVING at shutdown.
        keep.close()
        assert a.stop() == 0, a.read_log()[-4000:]
        assert next(watch) == NOT_SERVING
        ch.close()
    finally:
        if a.alive():
            a.stop()


# ---------------------------------------------------------------- start-up errors


def start_fails(certs, tmp_path, args, code=1):
    state = tmp_path / "state"
    r = subprocess.run([GRAIND_BIN, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                        "--state-dir", str(state), "--pin-root", PIN_ROOT, *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == code, r.stdout + r.stderr
    return r.stderr


def test_start_up_errors(certs, tmp_path):
    p = certs.path
    srv = ["--tls-cert", p("server.pem"), "--tls-key", p("server.key")]
    cases = [
        (["--tls-cert", p("missing.pem"), "--tls-key", p("server.key")],
         f"--tls-cert {p('missing.pem')}: No such file or directory"),
        (["--tls-cert", certs.d, "--tls-key", p("server.key")],
         f"--tls-cert {certs.d}: is a directory"),
        (["--tls-cert", p("server.ext"), "--tls-key", p("server.key")],
         "not a PEM certificate"),
        (["--tls-cert", p("server.pem"), "--tls-key", p("good.key")],
         f"--tls-key {p('good.key')} does not match the certificate in --tls-cert"),
        (["--tls-cert", p("server-expired.pem"), "--tls-key", p("server-expired.key")],
         "the certificate expired on 2020-02-01T00:00:00Z"),
        (["--tls-cert", p("server.pem"), "--tls-key", p("server.ext")],
         f"--tls-key {p('server.ext')}: not a usable PEM private key"),
        (srv + ["--client-ca", p("nope.pem")], f"--client-ca {p('nope.pem')}: No such file"),
        (srv + ["--client-ca", p("server.ext")], "no PEM certificate in it"),
    ]
    for args, want in cases:
        err = start_fails(certs, tmp_path, args)
        assert want in err, f"{args}: {err}"
    assert not (tmp_path / "state").exists(), "a TLS error must fail before the state is touched"
    # Unreadable: a key of mode 0000, for an agent without the capabilities
    # that let root read any file.
    if shutil.which("setpriv"):
        noread = tmp_path / "noread.key"
        shutil.copy(p("server.key"), noread)
        noread.chmod(0)
        r = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                            GRAIND_BIN, "--listen", "127.0.0.1:0", "--state-dir",
                            str(tmp_path / "state"), "--tls-cert", p("server.pem"),
                            "--tls-key", str(noread)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, r.stderr
        assert f"--tls-key {noread}: cannot read it: Permission denied" in r.stderr
    for args, want in [
        (["--tls-cert", p("server.pem")], "--tls-cert and --tls-key go together"),
        (["--client-ca", p("ca.pem")], "--client-ca needs TLS"),
        (srv + ["--client-cert", "optional"], "--client-cert needs --client-ca"),
        (srv + ["--client-ca", p("ca.pem"), "--client-cert", "maybe"],
         "--client-cert wants 'required' or 'optional'"),
    ]:
        err = start_fails(certs, tmp_path, args, code=2)
        assert want in err, f"{args}: {err}"
