"""Signed objects against Debian's minisign tool, an implementation of its
own: keys and signatures (prehashed and legacy) are made by `minisign` at
test time. Under --require-signed only an object signed by a trusted key
reaches the kernel; every other case is refused with its reason, and the
verifier dry run stays open to any object."""

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

import grpc
import pytest

from conftest import GRAIND_BIN, PIN_ROOT, TEST_BPF, assert_error, bpf_object, start_module_agent

GRAINCTL = os.environ.get("GRAINCTL_BIN", os.path.abspath("build/asan/grainctl"))
RUN = os.getpid()
HOOKS = os.path.join(TEST_BPF, "hooks.bpf.o")


class Key:
    """A minisign key pair made by `minisign -G`, without a password."""

    def __init__(self, directory, name):
        self.pub = os.path.join(directory, f"{name}.pub")
        self.sec = os.path.join(directory, f"{name}.key")
        subprocess.run(["minisign", "-G", "-W", "-f", "-p", self.pub, "-s", self.sec],
                       check=True, capture_output=True)
        # minisign names the key in the comment line, "minisign public key
        # <ID>", without leading zeros; graind writes all 16 digits.
        self.id = open(self.pub).readline().split()[-1].upper().zfill(16)
        assert len(self.id) == 16, self.id

    def sign(self, path, comment="signed by the tests", legacy=False):
        """The text of a detached signature of the file at `path`."""
        out = path + ".minisig"
        subprocess.run(["minisign", "-S", *(["-l"] if legacy else []), "-s", self.sec,
                        "-m", path, "-x", out, "-t", comment], check=True, capture_output=True)
        with open(out) as f:
            return f.read()


@pytest.fixture(scope="module")
def keys():
    d = tempfile.mkdtemp(prefix="graind-keys-")
    trusted_dir = os.path.join(d, "trusted")
    os.mkdir(trusted_dir)
    k = {"dir": trusted_dir, "trusted": Key(trusted_dir, "release"),
         "other": Key(d, "stranger"), "tmp": d}
    yield k
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def a(request, keys):
    return start_module_agent(request, ["--trusted-keys", keys["dir"], "--require-signed"])


def signed_upload(a, data, signature, name=None):
    """The raw-body form: the bytes, and the signature file base64 in a header."""
    path = "/v1/objects" + (f"?name={name}" if name else "")
    return a.post(path, data=data, headers={
        "Content-Type": "application/octet-stream",
        "Graind-Signature": base64.b64encode(signature.encode()).decode()})


def copy_of(tmp, name):
    """A test object copied where its signature may be written."""
    path = os.path.join(tmp, f"{RUN}-{name}")
    shutil.copyfile(os.path.join(TEST_BPF, name), path)
    return path


def tp_spec(sha, state="ATTACHED"):
    return {"objectSha256": sha, "desiredState": state,
            "programs": [{"program": "count_getpid",
                          "attach": {"tracepoint": {"category": "syscalls",
                                                    "name": "sys_enter_getpid"}}}],
            "constants": [{"name": "target_pid", "value": "1"}]}


@pytest.fixture
def probe_name(a):
    names = []

    def make(prefix):
        names.append(f"{prefix}-{RUN}")
        return names[-1]

    yield make
    for n in names:
        a.delete(f"/v1/probes/{n}")
        shutil.rmtree(os.path.join(PIN_ROOT, n), ignore_errors=True)


def attached(probe):
    return probe.get("programs") and all(p["state"] == "PROGRAM_ATTACHED"
                                         for p in probe["programs"])


@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_an_object_signed_by_a_trusted_key_attaches(a, keys, probe_name, legacy):
    path = copy_of(keys["tmp"], "hooks.bpf.o")
    comment = f"release {RUN} legacy={legacy}"
    r = signed_upload(a, open(path, "rb").read(), keys["trusted"].sign(path, comment, legacy))
    assert r.status_code in (200, 201), r.text
    obj = r.json()
    signer = obj["signer"]
    assert signer["keyId"] == keys["trusted"].id
    assert signer["trustedComment"] == comment
    assert signer["trusted"] is True and not signer.get("reason"), signer
    assert signer["algorithm"] == ("Ed25519" if legacy else "Ed25519 (prehashed BLAKE2b-512)")
    # The list shows the signer too.
    listed = {o["sha256"]: o for o in a.get("/v1/objects").json()["objects"]}
    assert listed[obj["sha256"]]["signer"] == signer

    name = probe_name("signed")
    r = a.request("PUT", f"/v1/probes/{name}", json=tp_spec(obj["sha256"]))
    assert r.status_code == 201, r.text
    assert attached(r.json()), r.json()


def test_an_unsigned_object_is_stored_verified_but_never_attached(a, probe_name):
    data = bpf_object("accept.bpf.o")
    r = a.upload(data, name="unsigned")
    assert r.status_code in (200, 201), r.text
    sha = r.json()["sha256"]
    assert "signer" not in r.json(), r.json()
    # The verifier dry run stays allowed.
    r = a.post(f"/v1/objects/{sha}:verify")
    assert r.status_code == 200, r.text
    assert r.json()["programs"], r.json()

    name = probe_name("unsigned")
    spec = {"objectSha256": sha, "programs": [{"program": "xdp_accept",
                                              "attach": {"xdp": {"ifname": "lo"}}}]}
    r = a.request("PUT", f"/v1/probes/{name}", json=spec)
    assert_error(r, 422, f"object {sha} is not signed", "--require-signed")
    assert a.get(f"/v1/probes/{name}").status_code == 404
    assert not os.path.exists(os.path.join(PIN_ROOT, name))


def test_tampered_bytes_are_refused_at_upload(a, keys):
    path = copy_of(keys["tmp"], "hooks.bpf.o")
    signature = keys["trusted"].sign(path)
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0x01
    r = signed_upload(a, bytes(data), signature)
    assert_error(r, 422, f"signature by key {keys['trusted'].id} does not verify",
                 "not the bytes that were signed")
    sha = hashlib.sha256(bytes(data)).hexdigest()
    assert a.get(f"/v1/objects/{sha}").status_code == 404


def test_a_changed_trusted_comment_is_refused(a, keys):
    path = copy_of(keys["tmp"], "hooks.bpf.o")
    lines = keys["trusted"].sign(path, "version 1").split("\n")
    assert lines[2] == "trusted comment: version 1", lines
    lines[2] = "trusted comment: version 2"
    r = signed_upload(a, open(path, "rb").read(), "\n".join(lines))
    assert_error(r, 422, "trusted comment", "changed after signing")


def test_a_signature_by_an_untrusted_key_is_kept_but_never_attached(a, keys, probe_name):
    path = copy_of(keys["tmp"], "reject_helper.bpf.o")
    r = signed_upload(a, open(path, "rb").read(), keys["other"].sign(path, "stranger"))
    assert r.status_code in (200, 201), r.text
    signer = r.json()["signer"]
    assert signer["keyId"] == keys["other"].id and not signer.get("trusted")
    assert f"key {keys['other'].id} is not a trusted key" in signer["reason"], signer

    # Its own key's signature and a hook it has: the refusal names the key.
    sha = r.json()["sha256"]
    prog = r.json()["programs"][0]["name"]
    name = probe_name("stranger")
    r = a.request("PUT", f"/v1/probes/{name}", json={"objectSha256": sha,
                                                    "programs": [{"program": prog}]})
    assert_error(r, 422, f"object {sha} is signed by key {keys['other'].id}",
                 "not a trusted key", keys["dir"])


@pytest.mark.parametrize("damage,reason", [
    (lambda t: "\n".join(t.split("\n")[:2]) + "\n", "no \"trusted comment"),
    (lambda t: t.split("\n")[0] + "\n" + t.split("\n")[1][:40] + "\n", "truncated"),
    (lambda t: wrong_algorithm(t), "algorithm is \"Xy\""),
    (lambda t: "untrusted comment: x\n", "second line"),
    (lambda t: "not a signature", "neither a minisign signature file"),
    (lambda t: t + "extra line\n", "text after its fourth line"),
], ids=["no-comment", "cut-short", "algorithm", "one-line", "junk", "trailing"])
def test_a_malformed_signature_is_400_and_stores_nothing(a, keys, damage, reason):
    path = copy_of(keys["tmp"], "reject_oob.bpf.o")
    data = open(path, "rb").read()
    r = signed_upload(a, data, damage(keys["trusted"].sign(path)))
    assert_error(r, 400, reason)
    assert a.get(f"/v1/objects/{hashlib.sha256(data).hexdigest()}").status_code == 404


def wrong_algorithm(text):
    lines = text.split("\n")
    raw = bytearray(base64.b64decode(lines[1]))
    raw[0:2] = b"Xy"
    lines[1] = base64.b64encode(bytes(raw)).decode()
    return "\n".join(lines)


def test_built_in_objects_attach_under_require_signed(a, probe_name):
    name = probe_name("builtin")
    r = a.request("PUT", f"/v1/probes/{name}", json={"builtin": "exec"})
    assert r.status_code == 201, r.text
    assert attached(r.json()), r.json()


def test_status_shows_the_policy(a, keys):
    policy = a.get("/v1/status").json()["signatures"]
    assert policy == {"requireSigned": True, "trustedKeysDir": keys["dir"],
                      "trustedKeyIds": [keys["trusted"].id]}, policy


def test_grpc_upload_carries_the_signature(a, keys, pb):
    path = copy_of(keys["tmp"], "hooks.bpf.o")
    signature = keys["trusted"].sign(path, "over gRPC")
    with grpc.insecure_channel(a.grpc_target) as ch:
        stub = ch.unary_unary("/graind.Graind/UploadObject",
                              request_serializer=pb.UploadObjectRequest.SerializeToString,
                              response_deserializer=pb.Object.FromString)
        md = [("authorization", f"Bearer {a.admin}")]
        obj = stub(pb.UploadObjectRequest(content=open(path, "rb").read(), name="grpc-signed",
                                          signature=signature), metadata=md, timeout=30)
        assert obj.signer.key_id == keys["trusted"].id and obj.signer.trusted
        assert obj.signer.trusted_comment == "over gRPC"
        with pytest.raises(grpc.RpcError) as e:
            stub(pb.UploadObjectRequest(content=b"\x7fELF" + b"\0" * 60, signature=signature),
                 metadata=md, timeout=30)
        assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.FAILED_PRECONDITION), e.value


def test_grainctl_push_sends_file_minisig(a, keys, tmp_path):
    path = copy_of(keys["tmp"], "hooks.bpf.o")
    keys["trusted"].sign(path, "pushed by grainctl")
    token = tmp_path / "token"
    token.write_text(a.admin)
    env = dict(os.environ, HOME=str(tmp_path))
    p = subprocess.run([GRAINCTL, "--host", a.url, "--token-file", str(token),
                        "objects", "push", path], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    signer = a.get(f"/v1/objects/{sha}").json()["signer"]
    assert signer["trustedComment"] == "pushed by grainctl" and signer["trusted"], signer
    p = subprocess.run([GRAINCTL, "--host", a.url, "--token-file", str(token),
                        "objects", "get", sha], capture_output=True, text=True, env=env,
                       timeout=60)
    assert f"key {keys['trusted'].id}, trusted" in p.stdout, p.stdout
    # A --signature that is not there is the user's mistake, said so.
    p = subprocess.run([GRAINCTL, "--host", a.url, "--token-file", str(token),
                        "objects", "push", path, "--signature", path + ".nope"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode != 0 and path + ".nope" in p.stderr, p.stderr


# ---------------------------------------------------------------- own agents

def test_require_signed_needs_trusted_keys(tmp_path):
    p = subprocess.run([GRAIND_BIN, "--state-dir", str(tmp_path), "--require-signed"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "--require-signed needs --trusted-keys" in p.stderr, p.stderr


def test_a_directory_without_keys_is_refused_at_start(tmp_path):
    empty = tmp_path / "keys"
    empty.mkdir()
    p = subprocess.run([GRAIND_BIN, "--state-dir", str(tmp_path), "--trusted-keys", str(empty)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "holds no minisign public key" in p.stderr, p.stderr


def wait_for_log(agent, text, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if text in agent.read_log():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{agent.read_log()[-2000:]}")


def test_sighup_reads_the_keys_again_and_a_restart_keeps_signatures(make_agent, tmp_path):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    first = Key(str(trusted), "first")
    later = Key(str(tmp_path), "later")
    args = ["--trusted-keys", str(trusted), "--require-signed"]
    a = make_agent(args)
    path = str(tmp_path / "hooks.bpf.o")
    shutil.copyfile(HOOKS, path)
    r = signed_upload(a, open(path, "rb").read(), later.sign(path, "later"))
    assert r.status_code == 201, r.text
    sha = r.json()["sha256"]
    name = f"reload-{RUN}"
    r = a.request("PUT", f"/v1/probes/{name}", json=tp_spec(sha))
    assert_error(r, 422, f"signed by key {later.id}", "not a trusted key")

    # The key is trusted from the next SIGHUP on; the signature kept at
    # upload is checked again at attach.
    shutil.copyfile(later.pub, trusted / "later.pub")
    a.proc.send_signal(signal.SIGHUP)
    wait_for_log(a, "keys=2")
    signer = a.get(f"/v1/objects/{sha}").json()["signer"]
    assert not signer.get("trusted") and "attaching checks it again" in signer["reason"], signer
    r = a.request("PUT", f"/v1/probes/{name}", json=tp_spec(sha))
    assert r.status_code == 201, r.text
    assert attached(r.json()), r.json()
    assert sorted(a.get("/v1/status").json()["signatures"]["trustedKeyIds"]) == \
        sorted([first.id, later.id])

    # A restart on a host whose bpffs was emptied (a reboot) loads the
    # stored probe again from its signed object.
    assert a.stop() == 0
    shutil.rmtree(os.path.join(PIN_ROOT, name))
    a = make_agent(args)
    probe = a.get(f"/v1/probes/{name}").json()
    assert attached(probe), probe
    assert a.get(f"/v1/objects/{sha}").json()["signer"]["keyId"] == later.id

    # Once the key is gone, a running probe keeps running (nothing new
    # is loaded), but loading it again is refused naming the key: after a
    # reboot, and when attached by hand.
    os.unlink(trusted / "later.pub")
    a.proc.send_signal(signal.SIGHUP)
    wait_for_log(a, "keys=1")
    assert attached(a.get(f"/v1/probes/{name}").json())
    assert a.stop() == 0
    shutil.rmtree(os.path.join(PIN_ROOT, name))
    a = make_agent(args)
    assert not attached(a.get(f"/v1/probes/{name}").json())
    assert f"signed by key {later.id}" in a.read_log()
    assert_error(a.post(f"/v1/probes/{name}:attach"), 422, f"signed by key {later.id}")
    a.delete(f"/v1/probes/{name}")
    shutil.rmtree(os.path.join(PIN_ROOT, name), ignore_errors=True)


def test_a_fetched_object_is_held_to_the_same_signatures(keys, tmp_path):
    """objects:fetch takes the signature as an upload does: with a trusted
    one the fetched object attaches under --require-signed, without one it
    is stored and never attached, and a signature of other bytes is
    refused with nothing stored."""
    import functools
    import http.server
    import threading
    from conftest import Agent
    root = tmp_path / "www"
    root.mkdir()
    path = copy_of(str(root), "hooks.bpf.o")
    signature = keys["trusted"].sign(path, f"fetched {RUN}")
    other = copy_of(str(root), "accept.bpf.o")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(root)))
    httpd.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    state = tmp_path / "state"
    state.mkdir()
    ag = Agent(str(state), ["--trusted-keys", keys["dir"], "--require-signed",
                            "--fetch-allow-http"]).start()
    name = f"fetched-{RUN}"
    try:
        sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
        url = f"{base}/{os.path.basename(path)}"
        # Another object's bytes under this signature: refused, nothing kept.
        other_sha = hashlib.sha256(open(other, "rb").read()).hexdigest()
        r = ag.post("/v1/objects:fetch", json={"url": f"{base}/{os.path.basename(other)}",
                                               "sha256": other_sha, "signature": signature})
        assert r.status_code in (400, 422), r.text
        assert ag.get(f"/v1/objects/{other_sha}").status_code == 404
        # Unsigned: stored, not attached.
        r = ag.post("/v1/objects:fetch", json={"url": url, "sha256": sha})
        assert r.status_code == 201, r.text
        assert "signer" not in r.json()
        assert_error(ag.request("PUT", f"/v1/probes/{name}", json=tp_spec(sha)), 422,
                     "is not signed")
        # The signature sent along with a fetch of the stored object is kept.
        r = ag.post("/v1/objects:fetch", json={"url": url, "sha256": sha,
                                               "signature": signature})
        assert r.status_code == 200, r.text
        assert r.json()["signer"]["trusted"] is True, r.json()
        r = ag.request("PUT", f"/v1/probes/{name}", json=tp_spec(sha))
        assert r.status_code == 201, r.text
        assert attached(r.json()), r.json()
        assert ag.delete(f"/v1/probes/{name}").status_code == 204
    finally:
        ag.stop()
        httpd.shutdown()
        httpd.server_close()
        shutil.rmtree(os.path.join(PIN_ROOT, name), ignore_errors=True)
