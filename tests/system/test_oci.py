"""Bytecode images from OCI registries: Debian's docker-registry started by
the test (anonymous, with htpasswd Basic auth, and with token auth from a
token service the test runs, its tokens signed with openssl), images built
by the test in an OCI layout in bpfman's format and pushed with skopeo.

POST /v1/objects:fetch {image} pulls by tag and by digest, OCI and Docker
v2 manifests and a multi-architecture index; checks every blob against its
digest (a corrupted layer is refused and nothing stored); names what is
missing (a label, a tag, the registry, credentials); and keeps where the
object came from, with the image's labels."""

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import warnings

import pytest

from conftest import GRAIND_BIN, Agent, assert_error, bpf_object, free_port

HOOKS = bpf_object("hooks.bpf.o")
ACCEPT = bpf_object("accept.bpf.o")
LABELS = {"io.ebpf.programs": json.dumps({"count_getpid": "tracepoint"}),
          "io.ebpf.maps": json.dumps({"counts": "array"})}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- images

class Layout:
    """An OCI image layout on disk, written as bpfman's format has it."""

    def __init__(self, d):
        self.d = d
        os.makedirs(f"{d}/blobs/sha256", exist_ok=True)
        with open(f"{d}/oci-layout", "w") as f:
            f.write('{"imageLayoutVersion": "1.0.0"}')
        self.index = []

    def blob(self, data):
        h = sha(data)
        with open(f"{self.d}/blobs/sha256/{h}", "wb") as f:
            f.write(data)
        return {"digest": f"sha256:{h}", "size": len(data)}

    def image(self, obj, filename, labels, arch="amd64", extra_files=()):
        """A manifest: one tar+gzip layer holding the object at its root."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for name, data in ((filename, obj), *extra_files):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0
                t.addfile(info, io.BytesIO(data))
        layer = self.blob(gzip.compress(buf.getvalue(), mtime=0))
        config = self.blob(json.dumps({
            "architecture": arch, "os": "linux", "config": {"Labels": labels},
            "rootfs": {"type": "layers",
                       "diff_ids": ["sha256:" + sha(buf.getvalue())]}}).encode())
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        **layer}]}).encode()
        return {"mediaType": OCI_MANIFEST, **self.blob(manifest),
                "platform": {"os": "linux", "architecture": arch}}

    def tag(self, name, descriptor):
        self.index.append({**descriptor,
                           "annotations": {"org.opencontainers.image.ref.name": name}})
        with open(f"{self.d}/index.json", "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.index}, f)

    def multi(self, name, manifests):
        idx = json.dumps({"schemaVersion": 2,
                          "mediaType": "application/vnd.oci.image.index.v1+json",
                          "manifests": manifests}).encode()
        self.tag(name, {"mediaType": "application/vnd.oci.image.index.v1+json",
                        **self.blob(idx)})


def skopeo(*args):
    p = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


# ---------------------------------------------------------------- registries

class Registry:
    """docker-registry on a free loopback port, with `auth` (its config's
    auth section) or none."""

    def __init__(self, d, auth=None):
        self.d, self.port = d, free_port()
        self.host = f"127.0.0.1:{self.port}"
        cfg = {"version": 0.1, "log": {"level": "error"},
               "storage": {"filesystem": {"rootdirectory": f"{d}/data"},
                           "delete": {"enabled": True}},
               "http": {"addr": self.host}}
        if auth:
            cfg["auth"] = auth
        with open(f"{d}/config.yml", "w") as f:
            json.dump(cfg, f)           # YAML takes JSON
        self.log = open(f"{d}/registry.log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", f"{d}/config.yml"],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(open(f"{d}/registry.log").read())

    def push(self, layout, tag, repo, *args):
        skopeo("copy", "--dest-tls-verify=false", *args, f"oci:{layout.d}:{tag}",
               f"docker://{self.host}/{repo}")

    def blob_file(self, digest):
        h = digest.split(":")[1]
        return f"{self.d}/data/docker/registry/v2/blobs/sha256/{h[:2]}/{h}/data"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def work():
    d = tempfile.mkdtemp(prefix="graind-test-oci-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def images(work):
    """The images, in one layout: v1 (hooks, OCI), multi (an index of
    amd64 → hooks and arm64 → accept), nolabel, twofiles."""
    lay = Layout(f"{work}/layout")
    v1 = lay.image(HOOKS, "hooks.bpf.o", LABELS)
    lay.tag("v1", v1)
    lay.multi("multi", [lay.image(HOOKS, "hooks.bpf.o", LABELS, "amd64"),
                        lay.image(ACCEPT, "accept.bpf.o", LABELS, "arm64")])
    lay.tag("nolabel", lay.image(HOOKS, "hooks.bpf.o", {"io.ebpf.maps": "{}"}))
    lay.tag("twofiles", lay.image(HOOKS, "a.bpf.o", LABELS,
                                  extra_files=(("b.bpf.o", ACCEPT),)))
    return lay, v1


@pytest.fixture(scope="module")
def registry(work, images):
    d = f"{work}/anon"
    os.makedirs(d)
    reg = Registry(d)
    lay, _ = images
    for tag in ("v1", "nolabel", "twofiles"):
        reg.push(lay, tag, f"bpf/hooks:{tag}")
    reg.push(lay, "v1", "bpf/docker:v1", "--format", "v2s2")
    reg.push(lay, "multi", "bpf/multi:1", "--all")
    reg.push(lay, "v1", "bpf/fragile:v1")
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def a(work, registry):
    d = f"{work}/agent"
    os.makedirs(d)
    ag = Agent(d, ["--insecure-registry", registry.host]).start()
    yield ag
    ag.stop()


def fetch(a, image, **more):
    return a.post("/v1/objects:fetch", json={"image": image, **more})


# ---------------------------------------------------------------- anonymous

def test_pull_by_tag_and_by_digest_keeps_the_origin(a, registry, images):
    _, v1 = images
    r = fetch(a, f"{registry.host}/bpf/hooks:v1")
    assert r.status_code == 201, r.text
    obj = r.json()
    assert obj["sha256"] == sha(HOOKS) and obj["name"] == "hooks.bpf.o"
    assert obj["origin"] == {
        "image": f"{registry.host}/bpf/hooks:v1", "imageDigest": v1["digest"],
        "programs": [{"name": "count_getpid", "type": "tracepoint"}],
        "maps": [{"name": "counts", "type": "array"}]}
    assert a.get(f"/v1/objects/{sha(HOOKS)}/content").content == HOOKS
    # By digest, with the object's digest asked for too: the same object.
    r = fetch(a, f"{registry.host}/bpf/hooks@{v1['digest']}", sha256=sha(HOOKS))
    assert r.status_code == 200, r.text
    assert r.json()["origin"]["image"] == f"{registry.host}/bpf/hooks:v1"   # the first says
    assert_error(fetch(a, f"{registry.host}/bpf/hooks:v1", sha256="ab" * 32), 422,
                 f"hash to {sha(HOOKS)}", "nothing was stored")
    assert a.delete(f"/v1/objects/{sha(HOOKS)}").status_code == 204


def test_docker_v2_manifests_and_indexes(a, registry):
    r = fetch(a, f"{registry.host}/bpf/docker:v1", name="from-docker")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "from-docker" and r.json()["sha256"] == sha(HOOKS)
    manifest = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                               f"docker://{registry.host}/bpf/docker:v1"],
                              capture_output=True, text=True).stdout
    assert "vnd.docker.distribution.manifest.v2" in manifest
    assert a.delete(f"/v1/objects/{sha(HOOKS)}").status_code == 204
    # The index's amd64 manifest holds hooks, the arm64 one accept.
    r = fetch(a, f"{registry.host}/bpf/multi:1")
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == sha(HOOKS if os.uname().machine == "x86_64" else ACCEPT)
    assert a.delete(f"/v1/objects/{r.json()['sha256']}").status_code == 204


def test_images_that_are_not_bytecode_images(a, registry):
    assert_error(fetch(a, f"{registry.host}/bpf/hooks:nolabel"), 422,
                 "not a bytecode image", "no label io.ebpf.programs")
    assert_error(fetch(a, f"{registry.host}/bpf/hooks:twofiles"), 422,
                 "holds 2 object files")
    assert_error(fetch(a, f"{registry.host}/bpf/hooks:nope"), 502, "HTTP 404",
                 "no such image")
    assert_error(fetch(a, "bpf/hooks:v1"), 400, "name the registry first")
    assert_error(fetch(a, f"{registry.host}/BPF/Hooks:v1"), 400, "lowercase")
    assert_error(fetch(a, f"{registry.host}/bpf/hooks@sha256:abc"), 400, "64 lowercase hex")
    assert a.get(f"/v1/objects/{sha(HOOKS)}").status_code == 404


def test_a_corrupted_blob_is_refused_and_nothing_stored(a, registry, images, work):
    manifest = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false",
         f"docker://{registry.host}/bpf/fragile:v1"], capture_output=True, text=True).stdout)
    layer = manifest["layers"][0]["digest"]
    # The layer's blob is shared with bpf/hooks; corrupt it for the test only.
    path = registry.blob_file(layer)
    good = open(path, "rb").read()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    try:
        with open(path, "wb") as f:
            f.write(bad)
        r = fetch(a, f"{registry.host}/bpf/fragile:v1")
        assert_error(r, 422, f"layer's {len(bad)} bytes hash to sha256:{sha(bytes(bad))}",
                     f"not to {layer}", "nothing was stored")
        assert a.get(f"/v1/objects/{sha(HOOKS)}").status_code == 404
    finally:
        with open(path, "wb") as f:
            f.write(good)
    assert fetch(a, f"{registry.host}/bpf/fragile:v1").status_code == 201
    assert a.delete(f"/v1/objects/{sha(HOOKS)}").status_code == 204


def test_a_registry_not_named_insecure_is_spoken_to_over_https(registry, work):
    d = f"{work}/strict"
    os.makedirs(d)
    ag = Agent(d).start()
    try:
        r = fetch(ag, f"{registry.host}/bpf/hooks:v1")
        assert_error(r, 502, f"https://{registry.host}")
    finally:
        ag.stop()


# ---------------------------------------------------------------- auth

def auth_file(path, host, user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    with open(path, "w") as f:
        json.dump({"auths": {host: {"auth": token}}}, f)
    return path


@pytest.fixture(scope="module")
def basic_registry(work, images):
    d = f"{work}/basic"
    os.makedirs(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
        hashed = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH))
    with open(f"{d}/htpasswd", "w") as f:
        f.write(f"ops:{hashed}\n")
    reg = Registry(d, {"htpasswd": {"realm": "graind-test", "path": f"{d}/htpasswd"}})
    lay, _ = images
    reg.push(lay, "v1", "bpf/hooks:v1", "--dest-creds", "ops:s3cret")
    yield reg
    reg.stop()


def test_basic_auth_from_the_auth_file(basic_registry, work):
    d = f"{work}/basic-agent"
    os.makedirs(d)
    creds = f"{work}/basic-auth.json"
    ag = Agent(d, ["--insecure-registry", basic_registry.host, "--registry-auth", creds]).start()
    image = f"{basic_registry.host}/bpf/hooks:v1"
    try:
        with open(creds, "w") as f:
            json.dump({"auths": {}}, f)
        assert_error(fetch(ag, image), 502, "asks for a user and password", "--registry-auth")
        auth_file(creds, basic_registry.host, "ops", "wrong")
        assert_error(fetch(ag, image), 502, "HTTP 401", "refused the credentials")
        # The file is read at each pull: no restart.
        auth_file(creds, basic_registry.host, "ops", "s3cret")
        r = fetch(ag, image)
        assert r.status_code == 201, r.text
        assert "s3cret" not in ag.read_log()
    finally:
        ag.stop()


class TokenService:
    """A registry token service: Basic credentials ops:s3cret may pull and
    push anything; anyone may pull public/*; tokens are JWTs signed RS256
    with a key whose certificate the registry trusts (x5c)."""

    def __init__(self, d):
        self.d = d
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=graind-test-token", "-keyout", f"{d}/token.key",
                        "-out", f"{d}/token.pem"], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", f"{d}/token.pem", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.asked = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                service.asked.append(self.path)
                status, body = service.answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, path, authorization):
        from urllib.parse import parse_qs, urlparse
        q = parse_qs(urlparse(path).query)
        user = None
        if authorization and authorization.startswith("Basic "):
            if base64.b64decode(authorization[6:]).decode() != "ops:s3cret":
                return 401, {"errors": [{"code": "UNAUTHORIZED"}]}
            user = "ops"
        access = []
        for scope in q.get("scope", []):
            kind, name, actions = scope.split(":")
            allowed = [x for x in actions.split(",")
                       if user or (x == "pull" and name.startswith("public/"))]
            if not allowed:
                return 401, {"errors": [{"code": "UNAUTHORIZED"}]}
            access.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        claims = {"iss": "graind-test-issuer", "sub": user or "", "aud": q["service"][0],
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(),
                  "access": access}
        return 200, {"token": self.jwt(claims), "expires_in": 300}

    def jwt(self, claims):
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
        head = b64(json.dumps({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}).encode())
        body = b64(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{self.d}/token.key"],
                             input=f"{head}.{body}".encode(), capture_output=True,
                             check=True).stdout
        return f"{head}.{body}.{b64(sig)}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def token_registry(work, images):
    d = f"{work}/token"
    os.makedirs(d)
    tokens = TokenService(d)
    reg = Registry(d, {"token": {"realm": tokens.realm, "service": "graind-test-registry",
                                 "issuer": "graind-test-issuer",
                                 "rootcertbundle": f"{d}/token.pem"}})
    lay, _ = images
    for repo in ("public/hooks:v1", "private/hooks:v1"):
        reg.push(lay, "v1", repo, "--dest-creds", "ops:s3cret")
    yield reg, tokens
    reg.stop()
    tokens.stop()


def test_bearer_tokens_anonymous_and_with_credentials(token_registry, work):
    reg, tokens = token_registry
    d = f"{work}/token-agent"
    os.makedirs(d)
    creds = f"{work}/token-auth.json"
    with open(creds, "w") as f:
        json.dump({"auths": {}}, f)
    ag = Agent(d, ["--insecure-registry", reg.host, "--registry-auth", creds]).start()
    try:
        # A public repository: an anonymous token, then the blobs with it.
        before = len(tokens.asked)
        r = fetch(ag, f"{reg.host}/public/hooks:v1")
        assert r.status_code == 201, r.text
        asked = tokens.asked[before:]
        assert len(asked) == 1, asked
        assert "service=graind-test-registry" in asked[0]
        assert "scope=repository:public/hooks:pull" in asked[0]
        assert ag.delete(f"/v1/objects/{sha(HOOKS)}").status_code == 204
        # A private one: no token without credentials, one with them.
        assert_error(fetch(ag, f"{reg.host}/private/hooks:v1"), 502, "token service",
                     "HTTP 401", "needs credentials", "--registry-auth")
        auth_file(creds, reg.host, "ops", "s3cret")
        r = fetch(ag, f"{reg.host}/private/hooks:v1")
        assert r.status_code == 201, r.text
        assert r.json()["origin"]["image"] == f"{reg.host}/private/hooks:v1"
    finally:
        ag.stop()


# ---------------------------------------------------------------- probes

def test_a_probe_names_its_image(work, images):
    """spec.image: the agent pulls the image at the PUT and runs its
    object; with IfNotPresent a later PUT, and a restart, need no
    registry; with PULL_ALWAYS every PUT pulls."""
    from test_probes import pin_dir
    d = f"{work}/probe-reg"
    os.makedirs(d)
    reg = Registry(d)
    lay, _ = images
    reg.push(lay, "v1", "bpf/probe:v1")
    reg.push(lay, "v1", "bpf/probe:v2")         # the same bytes under another tag
    ad = f"{work}/probe-agent"
    os.makedirs(ad)
    operator = subprocess.run([GRAIND_BIN, "token", "add", "ops", "--role", "operator",
                               "--state-dir", ad], capture_output=True, text=True,
                              check=True).stdout.strip()
    ag = Agent(ad, ["--insecure-registry", reg.host]).start()
    name = f"from-image-{os.getpid() % 10000}"
    spec = {"image": {"reference": f"{reg.host}/bpf/probe:v1"},
            "programs": [{"program": "count_getpid",
                          "attach": {"tracepoint": {"category": "syscalls",
                                                    "name": "sys_enter_getpid"}}}]}
    try:
        assert_error(ag.request("PUT", f"/v1/probes/{name}",
                                json={**spec, "objectSha256": sha(HOOKS)}), 400,
                     "spec.image names the object")
        # An operator may not have the agent store an object by pulling it.
        assert_error(ag.request("PUT", f"/v1/probes/{name}", json=spec, token=operator), 403,
                     "needs the admin role", "POST /v1/objects:fetch")
        r = ag.request("PUT", f"/v1/probes/{name}", json=spec)
        assert r.status_code == 201, r.text
        probe = r.json()
        assert probe["spec"]["objectSha256"] == sha(HOOKS)
        assert probe["spec"]["image"] == {"reference": f"{reg.host}/bpf/probe:v1"}
        assert probe["programs"][0]["state"] == "PROGRAM_ATTACHED"
        assert ag.get(f"/v1/objects/{sha(HOOKS)}").json()["origin"]["image"] == \
            f"{reg.host}/bpf/probe:v1"

        # An admin pulls the other tag: the object is there already, and
        # the reference now names it too.
        assert fetch(ag, f"{reg.host}/bpf/probe:v2").status_code == 200
        reg.stop()
        r = ag.request("PUT", f"/v1/probes/{name}-v2", token=operator, json={
            **spec, "image": {"reference": f"{reg.host}/bpf/probe:v2"}})
        assert r.status_code == 201, r.text
        assert r.json()["spec"]["objectSha256"] == sha(HOOKS)
        assert ag.delete(f"/v1/probes/{name}-v2").status_code == 204
        # IfNotPresent: the object of that image is stored, no registry asked.
        r = ag.request("PUT", f"/v1/probes/{name}", json=spec)
        assert r.status_code == 200, r.text
        assert r.json()["generation"] == "1"
        # Stored now: an operator's probe may name it too.
        r = ag.request("PUT", f"/v1/probes/{name}-op", json=spec, token=operator)
        assert r.status_code == 201, r.text
        assert ag.delete(f"/v1/probes/{name}-op").status_code == 204
        always = {**spec, "image": {**spec["image"], "pullPolicy": "PULL_ALWAYS"}}
        assert_error(ag.request("PUT", f"/v1/probes/{name}", json=always), 502,
                     f"{reg.host}/bpf/probe:v1")
        assert ag.get(f"/v1/probes/{name}").json()["generation"] == "1"

        # A restart adopts the probe from its stored digest: no pull.
        assert ag.stop() == 0
        ag.start()
        probe = ag.get(f"/v1/probes/{name}").json()
        assert probe["programs"][0]["state"] == "PROGRAM_ATTACHED", probe
        assert ag.delete(f"/v1/probes/{name}").status_code == 204
    finally:
        if ag.alive():
            ag.stop()
        if reg.proc.poll() is None:
            reg.stop()
        shutil.rmtree(pin_dir(name), ignore_errors=True)


@pytest.mark.parametrize("value", ["", "host/path"])
def test_a_bad_insecure_registry_is_a_usage_error(tmp_path, value):
    p = subprocess.run([GRAIND_BIN, "--state-dir", str(tmp_path), "--insecure-registry", value],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "--insecure-registry wants a HOST[:PORT], at most 8 times" in p.stderr, p.stderr


def test_an_unreadable_auth_file_is_a_500_naming_it(a, registry, work):
    d = f"{work}/badauth-agent"
    os.makedirs(d)
    creds = f"{work}/bad-auth.json"
    with open(creds, "w") as f:
        f.write("{not json")
    ag = Agent(d, ["--insecure-registry", registry.host, "--registry-auth", creds]).start()
    try:
        assert_error(fetch(ag, f"{registry.host}/bpf/hooks:v1"), 500, f"--registry-auth {creds}")
    finally:
        ag.stop()
