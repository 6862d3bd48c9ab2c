"""The command line, start-up, tokens, shutdown and refusing a bad database."""

import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess

import pytest

from conftest import GRAIND_BIN, bpf_object, free_port


def run_graind(*args, timeout=30):
    return subprocess.run([GRAIND_BIN, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_the_options():
    r = run_graind("--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--listen", "--state-dir", "--socket", "--max-object-size",
                 "--queue-bytes", "--audit-max-rows", "--audit-max-age", "--help", "--version"):
        assert flag in r.stdout, flag
    assert r.stdout.startswith("Usage: graind")
    assert r.stderr == ""


def test_version():
    r = run_graind("--version")
    assert r.returncode == 0
    assert re.fullmatch(r"graind \d+\.\d+\.\d+\n", r.stdout), r.stdout
    assert run_graind("-V").stdout == r.stdout


@pytest.mark.parametrize("args, message", [
    (["--no-such-flag"], "no-such-flag"),
    (["--listen", "nocolon"], "--listen wants HOST:PORT"),
    (["--listen", "127.0.0.1:70000"], "--listen wants HOST:PORT"),
    (["--max-object-size", "0"], "--max-object-size wants a positive size"),
    (["--max-object-size", "12Q"], "--max-object-size wants a positive size"),
    (["--threads", "0"], "--threads wants 1 to 256"),
    (["--queue-bytes", "0"], "--queue-bytes wants a positive number"),
    (["--audit-max-rows", "0"], "--audit-max-rows wants a positive number"),
    (["--audit-max-age", "3w"], "--audit-max-age wants an age such as 3600, 12h or 30d"),
    (["--audit-max-age", "3651d"], "--audit-max-age wants an age"),
    (["--audit-max-age", "-1"], "--audit-max-age wants an age"),
    (["stray-argument"], "unexpected argument 'stray-argument'"),
    (["--listen", "none", "--socket", "none"], "nothing to listen on"),
])
def test_bad_command_line_exits_2(args, message, tmp_path):
    r = run_graind("--state-dir", str(tmp_path / "state"), *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr, r.stderr
    assert r.stdout == ""
    # Nothing was started, so nothing was created.
    assert not (tmp_path / "state").exists()


def test_banner_names_address_and_token_files(agent):
    banner = agent.banner.decode()
    assert f"http://127.0.0.1:{agent.port}" in banner
    assert f"unix:{agent.socket_path}" in banner
    assert os.path.join(agent.state_dir, "admin.token") in banner
    assert os.path.join(agent.state_dir, "reader.token") in banner
    assert re.match(r"graind \d+\.\d+\.\d+ ready", banner), banner


def test_token_files(agent):
    tokens = []
    for name in ("admin.token", "reader.token"):
        path = os.path.join(agent.state_dir, name)
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        text = open(path).read()
        assert re.fullmatch(r"[0-9a-f]{64}\n?", text), text
        tokens.append(text.strip())
    assert tokens[0] != tokens[1]
    assert tokens == [agent.admin, agent.reader]
    # The database holds sink credentials: owner-only too.
    db = os.stat(os.path.join(agent.state_dir, "graind.db"))
    assert stat.S_IMODE(db.st_mode) == 0o600, oct(db.st_mode)


def test_restart_keeps_tokens_and_objects(make_agent):
    a = make_agent()
    admin, reader = a.admin, a.reader
    data = bpf_object("accept.bpf.o")
    r = a.upload(data, name="kept")
    assert r.status_code == 201, r.text
    sha = r.json()["sha256"]
    assert a.stop() == 0

    b = make_agent()
    assert (b.admin, b.reader) == (admin, reader)
    r = b.get(f"/v1/objects/{sha}/content")
    assert r.status_code == 200
    assert r.content == data
    assert b.get(f"/v1/objects/{sha}").json()["name"] == "kept"
    # The old tokens work against the new process.
    assert b.get("/v1/objects", token=reader).status_code == 200
    assert b.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0_and_removes_socket(make_agent, sig):
    a = make_agent()
    sock = a.socket_path
    assert os.path.exists(sock)
    assert a.stop(sig) == 0, a.read_log()[-2000:]
    assert not os.path.exists(sock)


def test_unix_socket_answers(agent):
    st = os.stat(agent.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    r = subprocess.run(["curl", "-sS", "--unix-socket", agent.socket_path,
                        "http://x/healthz"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"status": "ok"}

    r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "--unix-socket",
                        agent.socket_path, "-H", f"Authorization: Bearer {agent.reader}",
                        "http://x/v1/status"], capture_output=True, text=True, timeout=30)
    body, code = r.stdout.rsplit("\n", 1)
    assert code == "200"
    assert f"unix:{agent.socket_path}" in json.loads(body)["listen"]

    # Auth applies on the socket too.
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                        "--unix-socket", agent.socket_path, "http://x/v1/status"],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout == "401"


def test_socket_option_and_tcp_off(tmp_path):
    sock = str(tmp_path / "other.sock")
    state = str(tmp_path / "state")
    p = subprocess.Popen([GRAIND_BIN, "--listen", "none", "--state-dir", state,
                          "--socket", sock], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        banner = b""
        while b"reader token" not in banner:
            line = p.stdout.readline()
            assert line, p.stderr.read()
            banner += line
        assert f"unix:{sock}".encode() in banner
        assert b"http://" not in banner.split(b"try:")[0]
        r = subprocess.run(["curl", "-sS", "--unix-socket", sock, "http://x/healthz"],
                           capture_output=True, text=True, timeout=30)
        assert json.loads(r.stdout) == {"status": "ok"}
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        p.stdout.close()
        p.stderr.close()


def stopped_state_dir(make_agent):
    """A state directory with a database written by a cleanly stopped agent."""
    a = make_agent()
    assert a.upload(bpf_object("accept.bpf.o")).status_code == 201
    assert a.stop() == 0
    db = os.path.join(a.state_dir, "graind.db")
    # A clean stop checkpoints the WAL into the database and removes it.
    assert not os.path.exists(db + "-wal")
    return a.state_dir, db


def start_expecting_failure(state_dir):
    r = subprocess.run([GRAIND_BIN, "--listen", f"127.0.0.1:{free_port()}",
                        "--state-dir", state_dir], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0, r.stdout
    assert "ready" not in r.stdout
    return r.stderr


@pytest.mark.parametrize("how", ["all", "pages"])
def test_corrupt_database_is_refused_and_untouched(make_agent, how):
    state, db = stopped_state_dir(make_agent)
    data = bytearray(open(db, "rb").read())
    if how == "all":
        garbage = bytes((i * 37 + 11) % 256 for i in range(len(data)))
    else:
        # Keep the SQLite header, wreck every page after the first.
        garbage = bytes(data[:4096]) + b"\xa5" * (len(data) - 4096)
        assert len(data) > 4096
    with open(db, "wb") as f:
        f.write(garbage)

    err = start_expecting_failure(state)
    assert db in err, err
    assert "corrupt" in err, err
    with open(db, "rb") as f:
        assert f.read() == garbage


def test_newer_schema_is_refused_and_untouched(make_agent):
    state, db = stopped_state_dir(make_agent)
    con = sqlite3.connect(db)
    known = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    assert known >= 1
    con.execute("INSERT INTO schema_version (version, applied_ms) VALUES (?, 0)",
                (known + 1,))
    con.commit()
    con.close()
    before = open(db, "rb").read()

    err = start_expecting_failure(state)
    assert f"database schema version {known + 1} is newer" in err, err
    assert f"({known})" in err, err
    assert open(db, "rb").read() == before


def test_state_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    err = start_expecting_failure(str(f))
    assert str(f) in err
    assert "not a directory" in err


def test_unix_socket_has_its_mode_from_the_moment_it_exists(make_agent, tmp_path):
    # Started with umask 0, the socket file would be 0777 between bind() and
    # a later chmod(). strace (of the main thread, which binds) shows the
    # umask in force when bind() creates it.
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    trace = tmp_path / "strace.log"
    # LeakSanitizer cannot run under ptrace.
    a = make_agent(wrapper=["env", "ASAN_OPTIONS=detect_leaks=0", "strace", "-qq", "-e", "trace=umask,bind,chmod,fchmodat",
                            "-o", str(trace), "sh", "-c", 'umask 0; exec "$0" "$@"'])
    assert stat.S_IMODE(os.stat(a.socket_path).st_mode) == 0o660
    # strace does not pass SIGTERM on: stop graind, its child, directly.
    [child] = open(f"/proc/{a.proc.pid}/task/{a.proc.pid}/children").read().split()
    os.kill(int(child), signal.SIGTERM)
    assert a.stop() == 0
    calls = trace.read_text().splitlines()
    binds = [i for i, c in enumerate(calls) if c.startswith("bind(") and a.socket_path in c]
    assert len(binds) == 1, calls
    umasks = [c for c in calls[:binds[0]] if c.startswith("umask(")]
    assert umasks and umasks[-1].startswith("umask(0117)"), umasks
    assert not [c for c in calls if a.socket_path in c and "chmod" in c], calls
