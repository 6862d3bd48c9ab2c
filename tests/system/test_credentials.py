"""Principals of the credentials file, made with `graind token`: roles,
scopes over REST and gRPC, expiry, revocation on SIGHUP, the file's mode,
and the principal's name in the audit log."""

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import time

import grpc
import pytest

from conftest import GRAIND_BIN, PIN_ROOT, assert_error, bpf_object, start_module_agent

RUN = os.getpid()


def token(state_dir, *args, check=True):
    p = subprocess.run([GRAIND_BIN, "token", *args, "--state-dir", state_dir],
                       capture_output=True, text=True, timeout=30)
    assert "ERROR: AddressSanitizer" not in p.stderr, p.stderr
    if check:
        assert p.returncode == 0, p.stderr
    return p


def sighup(a, principals):
    """SIGHUP, and wait for the agent to log that it read the file."""
    mark = len(a.read_log())
    a.proc.send_signal(signal.SIGHUP)
    end = time.time() + 10
    while time.time() < end:
        if f"principals={principals}" in a.read_log()[mark:]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no reload with {principals} principals:\n{a.read_log()[-2000:]}")


@pytest.fixture(scope="module")
def a(request):
    return start_module_agent(request)


@pytest.fixture(scope="module")
def hooks_sha(a):
    r = a.upload(bpf_object("hooks.bpf.o"), name="hooks")
    assert r.status_code in (200, 201), r.text
    return r.json()["sha256"]


def tp_spec(sha):
    return {"objectSha256": sha, "desiredState": "DETACHED",
            "programs": [{"program": "count_getpid",
                          "attach": {"tracepoint": {"category": "syscalls",
                                                    "name": "sys_enter_getpid"}}}]}


@pytest.fixture(scope="module")
def principals(a):
    """An operator scoped to team-a-*, a reader, and their tokens."""
    made = {
        "ci-a": token(a.state_dir, "add", "ci-a", "--role", "operator",
                      "--scope", f"team-a-{RUN}-*").stdout.strip(),
        "dash": token(a.state_dir, "add", "dash", "--role", "reader").stdout.strip(),
    }
    sighup(a, 2)
    return made


@pytest.fixture(scope="module")
def probes(a, hooks_sha):
    names = {"a": f"team-a-{RUN}-x", "b": f"team-b-{RUN}-y"}
    r = a.request("PUT", f"/v1/probes/{names['b']}", json=tp_spec(hooks_sha))
    assert r.status_code == 201, r.text
    yield names
    for n in names.values():
        a.delete(f"/v1/probes/{n}")
        shutil.rmtree(os.path.join(PIN_ROOT, n), ignore_errors=True)


def test_a_new_token_is_printed_once_and_only_its_digest_is_kept(a, principals):
    secret = principals["ci-a"]
    assert len(secret) == 64 and int(secret, 16) >= 0, secret
    path = os.path.join(a.state_dir, "credentials")
    text = open(path).read()
    assert secret not in text
    assert f"token-sha256:{hashlib.sha256(secret.encode()).hexdigest()}" in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    listed = token(a.state_dir, "list").stdout
    assert "ci-a" in listed and "operator" in listed and f"team-a-{RUN}-*" in listed
    assert secret not in listed


def test_a_scoped_operator_sees_and_changes_only_its_probes(a, principals, probes, hooks_sha):
    ci = principals["ci-a"]
    r = a.request("PUT", f"/v1/probes/{probes['a']}", token=ci, json=tp_spec(hooks_sha))
    assert r.status_code == 201, r.text
    r = a.request("PUT", f"/v1/probes/{probes['b']}", token=ci, json=tp_spec(hooks_sha))
    assert_error(r, 403, "principal ci-a may only see and change probes matching "
                 f"team-a-{RUN}-*, not {probes['b']}")
    assert_error(a.get(f"/v1/probes/{probes['b']}", token=ci), 403, "principal ci-a")
    assert_error(a.post(f"/v1/probes/{probes['b']}:attach", token=ci), 403, "principal ci-a")
    assert_error(a.delete(f"/v1/probes/{probes['b']}", token=ci), 403, "principal ci-a")
    assert_error(a.get("/v1/samples", token=ci, params={"probe": probes["b"]}), 403,
                 "principal ci-a")
    assert a.get(f"/v1/probes/{probes['b']}").status_code == 200     # still there

    listed = {p["name"] for p in a.get("/v1/probes", token=ci,
                                        params={"page_size": 1000}).json()["probes"]}
    assert probes["a"] in listed and probes["b"] not in listed
    assert all(n.startswith(f"team-a-{RUN}-") for n in listed), listed
    # The admin sees both.
    everything = {p["name"] for p in a.get("/v1/probes", params={"page_size": 1000})
                  .json()["probes"]}
    assert {probes["a"], probes["b"]} <= everything
    # A page of only out-of-scope probes still leads on to the next.
    seen, page = set(), ""
    for _ in range(1000):
        body = a.get("/v1/probes", token=ci, params={"page_size": 1, "page_token": page}).json()
        seen |= {p["name"] for p in body.get("probes", [])}
        page = body.get("nextPageToken", "")
        if not page:
            break
    assert probes["a"] in seen and probes["b"] not in seen

    # What is about every probe is for unscoped principals; objects are the admin's.
    assert_error(a.request("PUT", "/v1/sinks/x", token=ci,
                           json={"statsd": {"host": "127.0.0.1", "port": 9}}),
                 403, "PutSink is for principals without a scope")
    assert_error(a.get("/v1/audit", token=ci), 403, "for principals without a scope")
    assert_error(a.get("/metrics", token=ci), 403, "for principals without a scope")
    assert_error(a.upload(bpf_object("accept.bpf.o"), token=ci), 403,
                 "principal ci-a (role operator)", "needs the admin role")


def test_the_audit_log_names_the_principal(a, principals, probes, hooks_sha):
    r = a.request("PUT", f"/v1/probes/{probes['a']}", token=principals["ci-a"],
                  json={**tp_spec(hooks_sha), "desiredState": "ATTACHED"})
    assert r.status_code == 200, r.text
    a.request("PUT", f"/v1/probes/{probes['b']}", token=principals["ci-a"],
              json=tp_spec(hooks_sha))
    entries = a.get("/v1/audit", params={"page_size": 1000}).json()["entries"]
    mine = [e for e in entries if e.get("principal") == "ci-a"]
    assert [(e["role"], e["action"], e["target"], e["result"]) for e in mine[-2:]] == [
        ("operator", "PutProbe", probes["a"], 200),
        ("operator", "PutProbe", probes["b"], 403)], mine


def test_a_reader_principal_reads_only(a, principals, probes):
    dash = principals["dash"]
    assert a.get(f"/v1/probes/{probes['b']}", token=dash).status_code == 200
    assert_error(a.post(f"/v1/probes/{probes['b']}:detach", token=dash), 403,
                 "principal dash (role reader)", "needs the operator role")


def test_grpc_checks_the_same_scope(a, principals, probes, hooks_sha, pb):
    service = pb.DESCRIPTOR.services_by_name["Graind"]
    md = [("authorization", f"Bearer {principals['ci-a']}")]

    def stub(rpc):
        m = service.methods_by_name[rpc]
        return ch.unary_unary(f"/graind.Graind/{rpc}",
                              request_serializer=getattr(pb, m.input_type.name).SerializeToString,
                              response_deserializer=getattr(pb, m.output_type.name).FromString)

    with grpc.insecure_channel(a.grpc_target) as ch:
        names = {p.name for p in stub("ListProbes")(pb.ListProbesRequest(page_size=1000),
                                                     metadata=md, timeout=30).probes}
        assert probes["a"] in names and probes["b"] not in names
        with pytest.raises(grpc.RpcError) as e:
            stub("GetProbe")(pb.GetProbeRequest(name=probes["b"]), metadata=md, timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "may only see and change probes matching" in e.value.details()
        # A watch from the start lists only the probes in scope.
        watch = ch.unary_stream("/graind.Graind/WatchProbes",
                                request_serializer=pb.WatchProbesRequest.SerializeToString,
                                response_deserializer=pb.ProbeEvent.FromString)
        seen = set()
        for ev in watch(pb.WatchProbesRequest(), metadata=md, timeout=5):
            if ev.kind != pb.PROBE_CURRENT:
                break
            seen.add(ev.probe.name)
            if probes["a"] in seen:
                break
        assert probes["a"] in seen and probes["b"] not in seen, seen


def test_expired_and_revoked_tokens_are_refused(a, principals):
    old = token(a.state_dir, "add", f"old-{RUN}", "--role", "reader",
                "--expires", "2001-02-03").stdout.strip()
    gone = token(a.state_dir, "add", f"gone-{RUN}", "--role", "reader").stdout.strip()
    sighup(a, 4)
    assert_error(a.get("/v1/status", token=old), 401,
                 f"the token of principal old-{RUN} expired at 2001-02-03T00:00:00")
    assert a.get("/v1/status", token=gone).status_code == 200
    token(a.state_dir, "revoke", f"gone-{RUN}")
    token(a.state_dir, "revoke", f"old-{RUN}")
    sighup(a, 2)
    assert_error(a.get("/v1/status", token=gone), 401, "invalid token")
    assert token(a.state_dir, "revoke", f"gone-{RUN}", check=False).returncode == 1
    # The principals left are untouched.
    assert a.get("/v1/status", token=principals["dash"]).status_code == 200


def test_grpc_connection_hears_of_a_revocation_at_its_next_call(a, principals, pb):
    """A connection identifies its caller once per token, until a reload."""
    tok = token(a.state_dir, "add", f"chan-{RUN}", "--role", "reader",
                "--scope", f"chan-{RUN}-*").stdout.strip()
    sighup(a, 3)
    md = [("authorization", f"Bearer {tok}")]
    with grpc.insecure_channel(a.grpc_target) as ch:
        status = ch.unary_unary("/graind.Graind/GetStatus",
                                request_serializer=pb.GetStatusRequest.SerializeToString,
                                response_deserializer=pb.AgentStatus.FromString)
        for _ in range(3):
            st = status(pb.GetStatusRequest(), metadata=md, timeout=30)
            assert st.caller.principal == f"chan-{RUN}" and list(st.caller.scopes) == \
                [f"chan-{RUN}-*"], st.caller
        # Another caller on the same connection is told apart.
        st = status(pb.GetStatusRequest(), metadata=[("authorization", f"Bearer {a.admin}")],
                    timeout=30)
        assert st.caller.principal == "admin" and st.caller.role == "admin", st.caller
        token(a.state_dir, "revoke", f"chan-{RUN}")
        sighup(a, 2)
        with pytest.raises(grpc.RpcError) as e:
            status(pb.GetStatusRequest(), metadata=md, timeout=30)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value
        assert "invalid token" in e.value.details()


def test_a_file_others_may_read_is_refused(a, principals, tmp_path):
    path = os.path.join(a.state_dir, "credentials")
    os.chmod(path, 0o644)
    try:
        mark = len(a.read_log())
        a.proc.send_signal(signal.SIGHUP)
        end = time.time() + 10
        while "credentials not reloaded" not in a.read_log()[mark:] and time.time() < end:
            time.sleep(0.05)
        assert "chmod 600 it" in a.read_log()[mark:]
        # The principals in use are kept.
        assert a.get("/v1/status", token=principals["dash"]).status_code == 200
        # A start with it stops with the reason.
        bad = tmp_path / "bad"
        shutil.copy(path, bad)
        os.chmod(bad, 0o640)
        p = subprocess.run([GRAIND_BIN, "--state-dir", str(tmp_path), "--auth-file", str(bad)],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "mode 0640" in p.stderr and "chmod 600" in p.stderr, \
            p.stderr
    finally:
        os.chmod(path, 0o600)


@pytest.mark.parametrize("line,reason", [
    ("x operator token-sha256:abc", "64 hex digits"),
    ("x superuser cert:CN=a", "the role must be admin, operator or reader"),
    ("admin admin cert:CN=a", "principals of admin.token"),
    ("x reader cert:CN=a scope=", "scope= with no pattern"),
    ("x reader cert:CN=a expires=tomorrow", "expires= wants"),
    ("x reader cert:\"CN=a", "a quote that does not close"),
])
def test_mistakes_in_the_file_name_their_line(tmp_path, line, reason):
    path = tmp_path / "credentials"
    path.write_text("# ok\nfine reader cert:CN=fine\n" + line + "\n")
    os.chmod(path, 0o600)
    p = subprocess.run([GRAIND_BIN, "--state-dir", str(tmp_path), "--auth-file", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert f"{path}:3: " in p.stderr and reason in p.stderr, p.stderr


def test_token_add_refuses_what_it_cannot_write(tmp_path):
    d = str(tmp_path)
    assert token(d, "add", "admin", "--role", "admin", check=False).returncode == 2
    assert token(d, "add", "x", "--role", "root", check=False).returncode == 2
    assert token(d, "add", "x", check=False).returncode == 2
    token(d, "add", "x", "--role", "reader")
    p = token(d, "add", "x", "--role", "reader", check=False)
    assert p.returncode == 1 and "has principal x already" in p.stderr
