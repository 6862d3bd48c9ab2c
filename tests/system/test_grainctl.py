"""grainctl against real agents: every command, its table and JSON output
compared with what the REST API answers, errors and exit codes, several
hosts at once (one of them down), the unix socket."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import Agent, PIN_ROOT, bpf_object, start_module_agent, TEST_BPF, veth_namespace

GRAINCTL = os.environ.get("GRAINCTL_BIN", os.path.abspath("build/asan/grainctl"))
RUN = os.getpid() % 10000
HOOKS = os.path.join(TEST_BPF, "hooks.bpf.o")
REJECT = os.path.join(TEST_BPF, "reject_oob.bpf.o")


@pytest.fixture(scope="module")
def a(request):
    return start_module_agent(request)


@pytest.fixture
def home(tmp_path):
    """A HOME without ~/.config/graind/token, so only the flags count."""
    d = tmp_path / "home"
    d.mkdir()
    return str(d)


def token_file(tmp_path, token, name="token"):
    p = tmp_path / name
    p.write_text(token + "\n")
    p.chmod(0o600)
    return str(p)


class Ctl:
    """Runs grainctl with a clean environment: no GRAIND_* but what a test
    sets, HOME without a token, never a terminal."""

    def __init__(self, home, tmp_path):
        self.home, self.tmp = home, tmp_path

    def run(self, *args, env=None, timeout=60, stdin=None):
        e = {"PATH": os.environ["PATH"], "HOME": self.home,
             "ASAN_OPTIONS": "detect_leaks=1"}
        e.update(env or {})
        p = subprocess.run([GRAINCTL, *args], capture_output=True, text=True, env=e,
                           timeout=timeout, stdin=stdin)
        # The sanitizers make any finding a failure of its own.
        assert "ERROR: AddressSanitizer" not in p.stderr, p.stderr
        assert "runtime error" not in p.stderr, p.stderr
        return p

    def on(self, agent, *args, token=None, **kw):
        tf = token_file(self.tmp, token or agent.admin, f"tok-{agent.port}")
        return self.run("--host", agent.url, "--token-file", tf, *args, **kw)

    def ok(self, agent, *args, **kw):
        p = self.on(agent, *args, **kw)
        assert p.returncode == 0, f"{args}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def json(self, agent, *args, **kw):
        """The result of one host's -o json document."""
        p = self.ok(agent, "-o", "json", *args, **kw)
        doc = json.loads(p.stdout)
        assert doc["host"] == agent.url
        return doc["result"]


@pytest.fixture
def ctl(home, tmp_path):
    return Ctl(home, tmp_path)


def table(text):
    """An aligned table as a list of dicts by header. Columns start where the
    header's words start (headers may hold one space: "LOAD TIME")."""
    lines = [l for l in text.splitlines() if l.strip()]
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?:(?<=  )|^)\S", header)]
    names = [header[s:e].strip() for s, e in zip(starts, starts[1:] + [None])]
    rows = []
    for line in lines[1:]:
        cells = [line[s:e].strip() if s < len(line) else ""
                 for s, e in zip(starts, starts[1:] + [None])]
        rows.append(dict(zip(names, cells)))
    return rows


def tp_spec(sha, pid):
    return {"objectSha256": sha,
            "programs": [{"program": "count_getpid",
                          "attach": {"tracepoint": {"category": "syscalls",
                                                    "name": "sys_enter_getpid"}}}],
            "constants": [{"name": "target_pid", "value": str(pid)}]}


def spec_file(tmp_path, spec, name="spec.json"):
    p = tmp_path / name
    p.write_text(json.dumps(spec))
    return str(p)


def hooks_sha(a):
    r = a.upload(bpf_object("hooks.bpf.o"), name="hooks")
    assert r.status_code in (200, 201), r.text
    return r.json()["sha256"]


# ---------------------------------------------------------------- status

def test_status_table_and_json_match_the_api(a, ctl):
    rest = a.get("/v1/status").json()
    doc = ctl.json(a, "status")
    for k in ("version", "kernelRelease", "features", "started", "listen"):
        assert doc[k] == rest[k], k
    rows = table(ctl.ok(a, "status").stdout)
    assert len(rows) == 1
    row = rows[0]
    assert row["VERSION"] == rest["version"]
    assert row["KERNEL"] == rest["kernelRelease"]
    assert row["OBJECTS"] == rest.get("objectCount", "0")
    missing = sorted(k for k, v in rest["features"].items() if v == "FEATURE_MISSING")
    shown = [] if row["MISSING"] == "-" else row["MISSING"].split(",")
    camel = [re.sub(r"_(\w)", lambda m: m.group(1).upper(), f) for f in shown]
    assert sorted(camel) == missing, (shown, missing)
    # jsonl: the same document on one line.
    line = ctl.ok(a, "-o", "jsonl", "status").stdout
    assert line.count("\n") == 1
    assert json.loads(line)["result"]["version"] == rest["version"]


# ---------------------------------------------------------------- objects

def test_objects_push_ls_get_rm(a, ctl, tmp_path):
    data = open(REJECT, "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    name = f"oob-{RUN}"
    pushed = ctl.json(a, "objects", "push", REJECT, "--name", name)
    assert pushed["sha256"] == sha and pushed["name"] == name
    assert pushed == a.get(f"/v1/objects/{sha}").json()

    # The table of a push: one row with the sha and the name.
    row, = table(ctl.ok(a, "objects", "push", REJECT, "--name", name).stdout)
    assert (row["SHA256"], row["NAME"], row["SIZE"]) == (sha, name, str(len(data)))

    listed = ctl.json(a, "objects", "ls")
    assert listed["objects"] == a.get("/v1/objects?page_size=1000").json()["objects"]
    rows = {r["SHA256"]: r for r in table(ctl.ok(a, "objects", "ls").stdout)}
    assert set(rows) == {o["sha256"] for o in listed["objects"]}
    assert rows[sha]["NAME"] == name and rows[sha]["BUILTIN"] == "no"
    assert rows[sha]["PROGRAMS"] == str(len(pushed["programs"]))
    assert any(r["BUILTIN"] == "yes" for r in rows.values())

    assert ctl.json(a, "objects", "get", sha) == pushed
    out = ctl.ok(a, "objects", "get", sha).stdout
    assert f"sha256:       {sha}" in out
    progs = table(out.split("\n\n")[1])
    assert [p["PROGRAM"] for p in progs] == [p["name"] for p in pushed["programs"]]
    maps = table(out.split("\n\n")[2])
    assert "counters" in [m["MAP"] for m in maps]

    assert ctl.ok(a, "objects", "rm", sha).stdout.strip() == "deleted"
    assert a.get(f"/v1/objects/{sha}").status_code == 404
    p = ctl.on(a, "objects", "rm", sha)
    assert p.returncode == 1
    assert a.get(f"/v1/objects/{sha}").json()["message"] in p.stderr
    assert "(404)" in p.stderr


def test_objects_verify_marks_the_failing_source_line(a, ctl):
    sha = a.upload(open(REJECT, "rb").read()).json()["sha256"]
    rest = a.post(f"/v1/objects/{sha}:verify").json()
    assert rest.get("accepted", False) is False
    verdict = rest["programs"][0]

    p = ctl.on(a, "objects", "verify", sha)
    assert p.returncode == 1, p.stderr     # a refused program is a failure
    out = p.stdout
    assert "REJECTED" in out
    row, = table(out.split("\n\n")[1])
    assert row["PROGRAM"] == verdict["program"] and row["VERDICT"] == "rejected"
    assert f"program {verdict['program']}: {verdict['error']}" in out
    assert f"at {verdict['sourceLine']}: {verdict['sourceText']}" in out
    marked = [l for l in out.splitlines() if l.startswith(">> ")]
    assert len(marked) == 1, out
    assert verdict["sourceText"] in marked[0] and marked[0][3:].startswith(";")
    # The marked line is the last source line before the refused instruction.
    log = verdict["verifierLog"].splitlines()
    assert marked[0][3:] == [l for l in log if l.startswith(";") and
                             verdict["sourceText"] in l][-1]

    doc = json.loads(ctl.on(a, "-o", "json", "objects", "verify", sha).stdout)
    result = doc["result"]
    # Each run loads anew: its time and the map's kernel address differ.
    for v in (result["programs"][0], verdict):
        v.pop("loadTimeUs", None)
        v["verifierLog"] = re.sub(r"0x[0-9a-f]{8,}", "ADDR", v["verifierLog"])
    assert result == rest

    # An object the verifier accepts: exit 0, every program accepted.
    sha = hooks_sha(a)
    p = ctl.ok(a, "objects", "verify", sha)
    rows = table(p.stdout.split("\n\n")[1])
    assert rows and all(r["VERDICT"] == "accepted" for r in rows)
    assert ">> " not in p.stdout


# ---------------------------------------------------------------- probes

def test_probes_put_get_ls_detach_attach_rm(a, ctl, tmp_path):
    sha = hooks_sha(a)
    name = f"ctl-tp-{RUN}"
    spec = spec_file(tmp_path, tp_spec(sha, os.getpid()))
    try:
        put = ctl.json(a, "probes", "put", name, "-f", spec)
        rest = a.get(f"/v1/probes/{name}").json()
        assert put["spec"] == rest["spec"] and put["generation"] == rest["generation"] == "1"
        assert rest["programs"][0]["state"] == "PROGRAM_ATTACHED"

        # The same spec again changes nothing; a stale If-Match is refused.
        assert ctl.json(a, "probes", "put", name, "-f", spec)["generation"] == "1"
        p = ctl.on(a, "probes", "put", name, "-f", spec, "--if-match", "7")
        assert p.returncode == 1
        assert "(412)" in p.stderr
        assert a.get(f"/v1/probes/{name}").json()["generation"] == "1"

        rows = {r["NAME"]: r for r in table(ctl.ok(a, "probes", "ls").stdout)}
        assert rows[name]["GENERATION"] == "1"
        assert rows[name]["ATTACHED"] == "1/1"
        assert rows[name]["OBJECT"] == sha[:12]
        listed = ctl.json(a, "probes", "ls")["probes"]
        assert [p["name"] for p in listed] == \
            [p["name"] for p in a.get("/v1/probes").json()["probes"]]

        out = ctl.ok(a, "probes", "get", name).stdout
        prog, = table(out.split("\n\n")[1])
        rest_prog = a.get(f"/v1/probes/{name}").json()["programs"][0]
        assert prog["PROGRAM"] == "count_getpid" and prog["STATE"] == "attached"
        assert prog["PROG ID"] == str(rest_prog["progId"])
        assert prog["LINK ID"] == str(rest_prog["linkId"])

        det = ctl.json(a, "probes", "detach", name)
        assert det["programs"][0]["state"] == "PROGRAM_DETACHED"
        assert a.get(f"/v1/probes/{name}").json()["programs"][0]["state"] == "PROGRAM_DETACHED"
        row, = [r for r in table(ctl.ok(a, "probes", "ls").stdout) if r["NAME"] == name]
        assert row["ATTACHED"] == "0/1"
        att = ctl.json(a, "probes", "attach", name)
        assert att["programs"][0]["state"] == "PROGRAM_ATTACHED"

        # maps dump: the getpid() calls of this process are counted in slot 2.
        for _ in range(5):
            os.getpid()
        dumped = ctl.json(a, "maps", "dump", name, "counts")
        assert dumped == a.get(f"/v1/probes/{name}/maps/counts").json()
        rows = table(ctl.ok(a, "maps", "dump", name, "counts").stdout)
        assert len(rows) == len(dumped["entries"])
        by_key = {r["KEY"]: r["VALUE"] for r in rows}
        rest_dump = a.get(f"/v1/probes/{name}/maps/counts").json()
        for e in rest_dump["entries"]:
            key = str(list(e["key"][0].values())[-1])
            val = list(e["value"][0].values())[-1]
            assert int(by_key[key]) <= int(val)   # counts only grow
        p = ctl.on(a, "maps", "dump", name, "nosuchmap")
        assert p.returncode == 1 and "(404)" in p.stderr

        assert ctl.ok(a, "probes", "rm", name).stdout.strip() == "deleted"
        assert a.get(f"/v1/probes/{name}").status_code == 404
    finally:
        a.delete(f"/v1/probes/{name}")


def test_samples_ls_matches_the_api(a, ctl, tmp_path):
    sha = hooks_sha(a)
    name = f"ctl-smp-{RUN}"
    r = a.request("PUT", f"/v1/probes/{name}", json=tp_spec(sha, os.getpid()))
    assert r.status_code in (200, 201), r.text
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            os.getpid()
            got = a.get(f"/v1/samples?probe={name}&limit=5").json().get("samples", [])
            if len(got) >= 3:
                break
            time.sleep(0.3)
        assert len(got) >= 3, "no samples polled"
        doc = ctl.json(a, "samples", "ls", "--probe", name, "--limit", "3")
        rest = a.get(f"/v1/samples?probe={name}&limit=3").json()
        assert doc == rest
        first = doc["samples"][0]["id"]
        doc = ctl.json(a, "samples", "ls", "--probe", name, "--map", "counts",
                       "--after", first, "--limit", "2")
        assert doc == a.get(f"/v1/samples?probe={name}&map=counts&after={first}&limit=2").json()
        assert all(int(s["id"]) > int(first) for s in doc["samples"])

        p = ctl.ok(a, "samples", "ls", "--probe", name, "--limit", "3")
        rows = table(p.stdout)
        assert [r["ID"] for r in rows] == [s["id"] for s in rest["samples"]]
        for row, s in zip(rows, rest["samples"]):
            assert (row["PROBE"], row["MAP"], row["KIND"]) == (name, "counts", "metric")
            assert float(row["VALUE"]) == s.get("value", 0)
        assert f"--after {rest['nextPageToken']}" in p.stderr
    finally:
        a.delete(f"/v1/probes/{name}")


# ---------------------------------------------------------------- sinks

def test_sinks_apply_ls_get_rm(a, ctl, tmp_path):
    name = f"ctl-sink-{RUN}"
    sink = {"statsd": {"host": "127.0.0.1", "port": 9, "prefix": "ctl",
                       "dialect": "TAG_DIALECT_INFLUX"},
            "selector": {"probes": ["none-such"]}}
    f = spec_file(tmp_path, sink, "sink.json")
    try:
        applied = ctl.json(a, "sinks", "apply", name, "-f", f)
        rest = a.get(f"/v1/sinks/{name}").json()
        assert applied["statsd"] == rest["statsd"] == {**sink["statsd"]}
        assert applied["selector"] == rest["selector"]
        got = ctl.json(a, "sinks", "get", name)
        assert got["name"] == name and got["statsd"] == rest["statsd"]

        row, = [r for r in table(ctl.ok(a, "sinks", "ls").stdout) if r["NAME"] == name]
        assert row["KIND"] == "statsd" and row["TARGET"] == "127.0.0.1:9"
        names = [s["name"] for s in ctl.json(a, "sinks", "ls")["sinks"]]
        assert names == [s["name"] for s in a.get("/v1/sinks").json()["sinks"]]

        assert ctl.ok(a, "sinks", "rm", name).stdout.strip() == "deleted"
        assert a.get(f"/v1/sinks/{name}").status_code == 404
        p = ctl.on(a, "sinks", "get", name)
        assert p.returncode == 1 and "(404)" in p.stderr
    finally:
        a.delete(f"/v1/sinks/{name}")


# ---------------------------------------------------------------- errors

def test_bad_token_exits_1_with_the_agents_message(a, ctl, tmp_path):
    rest = a.get("/v1/status", token="x" * 43)
    assert rest.status_code == 401
    p = ctl.on(a, "status", token="x" * 43)
    assert p.returncode == 1
    assert rest.json()["message"] in p.stderr and "(401)" in p.stderr
    assert p.stdout == ""
    doc = json.loads(ctl.on(a, "-o", "json", "status", token="x" * 43).stdout)
    assert doc == {"host": a.url, "error": rest.json()}

    # The reader may read, not write: 403 from the agent.
    assert ctl.on(a, "probes", "ls", token=a.reader).returncode == 0
    p = ctl.on(a, "probes", "rm", "whatever", token=a.reader)
    assert p.returncode == 1 and "(403)" in p.stderr

    # No token at all: the agent's 401; the token from GRAIND_TOKEN_FILE and
    # from ~/.config/graind/token.
    p = ctl.run("--host", a.url, "status")
    assert p.returncode == 1 and "(401)" in p.stderr
    tf = token_file(tmp_path, a.reader, "env-token")
    assert ctl.run("--host", a.url, "status", env={"GRAIND_TOKEN_FILE": tf}).returncode == 0
    cfg = os.path.join(ctl.home, ".config", "graind")
    os.makedirs(cfg)
    token_file_path = os.path.join(cfg, "token")
    with open(token_file_path, "w") as fh:
        fh.write(a.reader + "\n")
    assert ctl.run("--host", a.url, "status").returncode == 0


@pytest.mark.parametrize("args,says", [
    ((), "usage: grainctl"),
    (("frobnicate",), "unknown command frobnicate"),
    (("probes",), "probes needs a verb"),
    (("probes", "zap"), "probes has no verb zap"),
    (("probes", "get"), "missing arguments"),
    (("probes", "get", "a", "b"), "too many arguments"),
    (("status", "--bogus"), "unknown option --bogus"),
    (("-o", "yaml", "status"), "-o yaml"),
    (("--timeout", "soon", "status"), "--timeout soon"),
    (("--parallel", "0", "status"), "--parallel 0"),
    (("--host", "ftp://x", "status"), "ftp://x"),
    (("probes", "put", "p"), "-f SPEC.json is needed"),
    (("samples", "ls", "--limit", "ten"), "--limit ten"),
    (("objects", "push", "/nonexistent/x.o"), "/nonexistent/x.o"),
    (("--token-file", "/nonexistent/token", "status"), "/nonexistent/token"),
])
def test_usage_errors_exit_2(ctl, args, says):
    # No agent listens on port 1: a usage error must stop before any request.
    p = ctl.run("--host", "http://127.0.0.1:1", *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert says in p.stderr, p.stderr
    assert "Couldn't connect" not in p.stderr


def test_spec_that_does_not_parse_exits_2_naming_the_field(ctl, tmp_path):
    f = spec_file(tmp_path, {"builtin": "dns", "programs": [{"program": "x", "atach": {}}]})
    p = ctl.run("--host", "http://127.0.0.1:1", "probes", "put", "p", "-f", f)
    assert p.returncode == 2
    assert "graind.ProbeSpec" in p.stderr and "programs[0]" in p.stderr and "atach" in p.stderr
    f = spec_file(tmp_path, {"statsd": {"port": "many"}}, "sink.json")
    p = ctl.run("--host", "http://127.0.0.1:1", "sinks", "apply", "s", "-f", f)
    assert p.returncode == 2 and "statsd.port" in p.stderr


def test_help_on_every_command(ctl):
    main = ctl.run("--help")
    assert main.returncode == 0
    for code in ("0  every host", "1  a host failed", "2  usage"):
        assert code in main.stdout
    commands = re.findall(r"^  (status|plan|apply|(?:objects|probes|maps|samples|sinks) \w+)",
                          main.stdout, re.M)
    assert len(commands) == 21, commands
    for c in commands:
        p = ctl.run(*c.split(), "--help")
        assert p.returncode == 0, c
        assert p.stdout.startswith(f"usage: grainctl {c}"), p.stdout
    for fam in ("objects", "probes", "sinks"):
        p = ctl.run(fam, "--help")
        assert p.returncode == 0 and f"usage: grainctl {fam} VERB" in p.stdout
    assert ctl.run("--version").stdout.startswith("grainctl ")


def test_bash_completion_script(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "..", "server", "grainctl",
                          "grainctl.bash")

    def complete(line):
        words = line.split(" ")
        prog = (f"source {script}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
                f"COMP_CWORD={len(words) - 1}; _grainctl; echo \"${{COMPREPLY[@]}}\"")
        return subprocess.run(["bash", "-c", prog], capture_output=True, text=True,
                              check=True).stdout.split()

    assert "objects" in complete("grainctl ob") and "probes" not in complete("grainctl ob")
    assert sorted(complete("grainctl probes ")) == \
        ["attach", "detach", "get", "ls", "put", "rm"]
    assert complete("grainctl -o j") == ["json", "jsonl"]
    assert "--if-match" in complete("grainctl probes put x --")
    assert "--prune" in complete("grainctl apply -f d --p")


# ---------------------------------------------------------------- many hosts

def test_unix_socket_host(a, ctl, tmp_path):
    tf = token_file(tmp_path, a.admin, "unix-token")
    p = ctl.run("--host", f"unix:{a.socket_path}", "--token-file", tf, "-o", "json", "status")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["host"] == f"unix:{a.socket_path}"
    assert doc["result"]["started"] == a.get("/v1/status").json()["started"]


@pytest.fixture
def fleet(tmp_path):
    """Three agents sharing one admin token (written before their first
    start), each with its own state directory and pin root."""
    token = "fleet-" + os.urandom(24).hex()
    agents = []
    for i in range(3):
        d = tmp_path / f"agent{i}"
        d.mkdir()
        (d / "admin.token").write_text(token + "\n")
        (d / "admin.token").chmod(0o600)
        agents.append(Agent(str(d), ["--pin-root", f"{PIN_ROOT}-fleet{i}"]).start())
    yield agents, token
    for i, ag in enumerate(agents):
        if ag.alive():
            assert ag.stop() == 0, ag.read_log()[-3000:]
        shutil.rmtree(f"{PIN_ROOT}-fleet{i}", ignore_errors=True)


def test_several_hosts_one_stopped(fleet, ctl, tmp_path):
    agents, token = fleet
    tf = token_file(tmp_path, token, "fleet-token")
    down = agents[1]
    down_url = down.url
    assert down.stop() == 0
    urls = [ag.url for ag in agents]
    hosts = [x for u in urls for x in ("--host", u)]

    p = ctl.run(*hosts, "--token-file", tf, "status")
    assert p.returncode == 1
    rows = table(p.stdout)
    assert [r["HOST"] for r in rows] == [agents[0].url, agents[2].url]
    for r, ag in zip(rows, (agents[0], agents[2])):
        assert r["VERSION"] == ag.get("/v1/status", token=token).json()["version"]
    summary = {l.split()[0]: l.split()[1] for l in p.stderr.splitlines()
               if l.split() and l.split()[0] in urls and l.split()[1] in ("ok", "failed")}
    assert summary == {agents[0].url: "ok", down_url: "failed", agents[2].url: "ok"}

    # jsonl: one line per host, in the order given; the stopped one an error.
    p = ctl.run(*hosts, "--token-file", tf, "-o", "jsonl", "objects", "ls")
    assert p.returncode == 1
    docs = [json.loads(l) for l in p.stdout.splitlines()]
    assert [d["host"] for d in docs] == urls
    assert "error" in docs[1] and "result" not in docs[1]
    assert docs[1]["error"]["message"]
    for d, ag in ((docs[0], agents[0]), (docs[2], agents[2])):
        assert d["result"] == ag.get("/v1/objects?page_size=1000", token=token).json()

    # The same hosts from GRAIND_HOST and from a hosts file; one request per
    # host at a time changes nothing but the time.
    env = {"GRAIND_HOST": ",".join(urls), "GRAIND_TOKEN_FILE": tf}
    p2 = ctl.run("-o", "jsonl", "--parallel", "1", "objects", "ls", env=env)
    assert p2.returncode == 1
    assert [json.loads(l)["host"] for l in p2.stdout.splitlines()] == urls
    hf = tmp_path / "hosts"
    hf.write_text("# the fleet\n" + "\n".join(urls) + "\n\n")
    p3 = ctl.run("--hosts-file", str(hf), "--token-file", tf, "-o", "jsonl", "status")
    assert p3.returncode == 1
    assert [json.loads(l)["host"] for l in p3.stdout.splitlines()] == urls

    # A change to every live host; all succeed → 0 once the stopped one goes.
    live = [x for u in (agents[0].url, agents[2].url) for x in ("--host", u)]
    p = ctl.run(*live, "--token-file", tf, "objects", "push", HOOKS, "--name", "fleet")
    assert p.returncode == 0, p.stderr
    sha = hashlib.sha256(open(HOOKS, "rb").read()).hexdigest()
    rows = table(p.stdout)
    assert sorted(r["HOST"] for r in rows) == sorted([agents[0].url, agents[2].url])
    for ag in (agents[0], agents[2]):
        assert ag.get(f"/v1/objects/{sha}", token=token).json()["name"] == "fleet"


def test_timeout_per_host(a, ctl, tmp_path):
    """A host that accepts the connection and never answers costs --timeout,
    and the other host's answer is still printed."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        tf = token_file(tmp_path, a.admin, "t-token")
        t0 = time.time()
        p = ctl.run("--host", url, "--host", a.url, "--token-file", tf, "--timeout", "1",
                    "-o", "jsonl", "status")
        took = time.time() - t0
    assert p.returncode == 1
    assert 0.9 < took < 8, took
    docs = {d["host"]: d for d in map(json.loads, p.stdout.splitlines())}
    assert "timed out" in docs[url]["error"]["message"].lower()
    assert docs[a.url]["result"]["version"]


def test_parallel_bounds_the_requests_in_flight(ctl, tmp_path):
    """Two hosts that never answer: with --parallel 1 the second starts when
    the first has timed out, with --parallel 2 both wait at once."""
    with socket.socket() as s1, socket.socket() as s2:
        for s in (s1, s2):
            s.bind(("127.0.0.1", 0))
            s.listen(8)
        hosts = [x for s in (s1, s2)
                 for x in ("--host", f"http://127.0.0.1:{s.getsockname()[1]}")]
        took = {}
        for n in ("1", "2"):
            t0 = time.time()
            p = ctl.run(*hosts, "--timeout", "1.5", "--parallel", n, "status")
            took[n] = time.time() - t0
            assert p.returncode == 1
            assert p.stderr.count("failed") == 2, p.stderr
    assert took["1"] >= 3.0, took
    assert took["2"] < 2.9, took


def test_colours_only_on_a_terminal(a, ctl, tmp_path):
    import pty
    tf = token_file(tmp_path, a.admin, "c-token")

    def on_tty(env):
        master, slave = pty.openpty()
        try:
            e = {"PATH": os.environ["PATH"], "HOME": ctl.home, **env}
            proc = subprocess.Popen([GRAINCTL, "--host", a.url, "--token-file", tf,
                                     "probes", "ls"], stdout=slave, stderr=slave, env=e)
            os.close(slave)
            slave = None
            out = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            assert proc.wait(timeout=30) == 0
            return out.decode()
        finally:
            os.close(master)
            if slave is not None:
                os.close(slave)

    assert "\033[1mNAME" in on_tty({})
    plain = on_tty({"NO_COLOR": "1"})
    assert "NAME" in plain and "\033[" not in plain
    # Not a terminal: no escape codes either.
    assert "\033[" not in ctl.ok(a, "probes", "ls").stdout


# ---------------------------------------------------------------- plan, apply

def write_docs(d, pid_a=1, with_sink=True):
    d.mkdir(exist_ok=True)
    shutil.copy(HOOKS, d / "hooks.bpf.o")
    spec = tp_spec("x", pid_a)
    del spec["objectSha256"]
    probes = [{"kind": "Probe", "name": "tp-a", "objectFile": "hooks.bpf.o", "spec": spec},
              {"kind": "Probe", "name": "tp-b", "objectFile": "hooks.bpf.o",
               "spec": {**spec, "desiredState": "DETACHED"}}]
    (d / "probes.json").write_text(json.dumps(probes))
    sink = d / "sink.json"
    if with_sink:
        sink.write_text(json.dumps({"kind": "Sink", "name": "stats", "spec": {
            "statsd": {"host": "127.0.0.1", "port": 9, "prefix": "fleet"}}}))
    elif sink.exists():
        sink.unlink()
    return str(d)


def audit_writes(ag, token):
    time.sleep(0.5)    # records are written within about 100 ms
    return len(ag.get("/v1/audit?page_size=1000", token=token).json().get("entries", []))


def jsonl(p):
    return {d["host"]: d for d in map(json.loads, p.stdout.splitlines())}


def test_plan_apply_converge_repair_drift_and_prune(fleet, ctl, tmp_path):
    agents, token = fleet
    tf = token_file(tmp_path, token, "fleet-token")
    hosts = [x for ag in agents for x in ("--host", ag.url)]
    docs = write_docs(tmp_path / "docs")
    sha = hashlib.sha256(open(HOOKS, "rb").read()).hexdigest()

    def run(*args):
        return ctl.run(*hosts, "--token-file", tf, *args)

    # plan changes nothing and says what apply will do.
    p = run("-o", "jsonl", "plan", "-f", docs)
    assert p.returncode == 0, p.stderr
    for ag in agents:
        changes = jsonl(p)[ag.url]["result"]["changes"]
        assert [(c["action"], c["kind"], c["name"]) for c in changes] == [
            ("push", "Object", sha), ("create", "Probe", "tp-a"), ("create", "Probe", "tp-b"),
            ("create", "Sink", "stats")]
        assert ag.get("/v1/probes", token=token).json().get("probes", []) == []

    p = run("apply", "-f", docs)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr.count("converged") == 3
    for ag in agents:
        a_ = ag.get("/v1/probes/tp-a", token=token).json()
        assert a_["spec"]["objectSha256"] == sha
        assert a_["programs"][0]["state"] == "PROGRAM_ATTACHED"
        b_ = ag.get("/v1/probes/tp-b", token=token).json()
        assert b_["programs"][0]["state"] == "PROGRAM_DETACHED"
        assert ag.get("/v1/sinks/stats", token=token).json()["statsd"]["prefix"] == "fleet"

    # A second apply writes nothing: no audit record, generations as they were.
    gens = [{p_["name"]: p_["generation"] for p_ in ag.get("/v1/probes", token=token).json()["probes"]}
            for ag in agents]
    writes = [audit_writes(ag, token) for ag in agents]
    p = run("-o", "jsonl", "apply", "-f", docs)
    assert p.returncode == 0
    for ag in agents:
        r = jsonl(p)[ag.url]["result"]
        assert r["changes"] == [] and r["unchanged"] == 3
    assert [audit_writes(ag, token) for ag in agents] == writes
    assert [{p_["name"]: p_["generation"] for p_ in ag.get("/v1/probes", token=token).json()["probes"]}
            for ag in agents] == gens

    # Drift: a probe deleted on one host, a constant changed on another.
    assert agents[0].delete("/v1/probes/tp-a", token=token).status_code == 204
    drifted = tp_spec(sha, 4242)
    r = agents[2].request("PUT", "/v1/probes/tp-a", token=token, json=drifted)
    assert r.status_code == 200, r.text
    p = run("-o", "jsonl", "plan", "-f", docs)
    assert p.returncode == 0
    plan = jsonl(p)
    assert [(c["action"], c["name"]) for c in plan[agents[0].url]["result"]["changes"]] == \
        [("create", "tp-a")]
    assert plan[agents[1].url]["result"]["changes"] == []
    change, = plan[agents[2].url]["result"]["changes"]
    assert change["action"] == "change"
    assert change["diff"] == [{"path": "spec.constants[0].value", "from": "4242", "to": "1"}]
    text = run("plan", "-f", docs).stdout
    assert 'spec.constants[0].value: "4242" -> "1"' in text
    p = run("apply", "-f", docs)
    assert p.returncode == 0, p.stdout + p.stderr
    for ag in (agents[0], agents[2]):
        assert ag.get("/v1/probes/tp-a", token=token).json()["spec"]["constants"] == \
            [{"name": "target_pid", "value": "1"}]

    # One host down: reported, exit 1; the others converge on a change.
    assert agents[1].stop() == 0
    docs = write_docs(tmp_path / "docs", pid_a=7, with_sink=False)
    p = run("-o", "jsonl", "apply", "-f", docs)
    assert p.returncode == 1
    out = jsonl(p)
    assert "error" in out[agents[1].url]
    for ag in (agents[0], agents[2]):
        assert [c["action"] for c in out[ag.url]["result"]["changes"]] == ["change", "change"]
        assert all(c["done"] for c in out[ag.url]["result"]["changes"])
        assert out[ag.url]["result"]["notInFiles"] == 1     # the sink, kept
        assert ag.get("/v1/probes/tp-a", token=token).json()["spec"]["constants"][0]["value"] == "7"
        assert ag.get("/v1/sinks/stats", token=token).status_code == 200

    # --prune removes what the files no longer name.
    live = [x for ag in (agents[0], agents[2]) for x in ("--host", ag.url)]
    p = ctl.run(*live, "--token-file", tf, "apply", "-f", docs, "--prune")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "- sink stats: removed" in p.stdout
    for ag in (agents[0], agents[2]):
        assert ag.get("/v1/sinks/stats", token=token).status_code == 404
        assert ag.get("/v1/probes/tp-a", token=token).status_code == 200


@pytest.mark.parametrize("doc,says", [
    ({"kind": "Probe", "name": "p", "spec": {"builtin": "dns", "programz": []}}, "programz"),
    ({"kind": "Thing", "name": "p", "spec": {}}, "kind: Probe, Sink or ObjectSource"),
    ({"kind": "ObjectSource", "name": "o", "spec": {"url": "https://h/o.o"}}, "spec.sha256"),
    ({"kind": "ObjectSource", "name": "o", "spec": {"sha256": "ab" * 32}}, "spec.url or spec.image"),
    ({"kind": "ObjectSource", "name": "o", "spec": {"url": "https://h/o", "sha256": "ab" * 32,
                                                    "name": "x"}}, "spec.name"),
    ({"kind": "Probe", "spec": {}}, "name"),
    ({"kind": "Probe", "name": "p", "spec": {}, "extra": 1}, "extra: unknown field"),
    ({"kind": "Sink", "name": "s", "spec": {"name": "s"}}, "spec.name"),
    ({"kind": "Probe", "name": "p", "objectFile": "missing.o", "spec": {}}, "missing.o"),
    ([{"kind": "Sink", "name": "s", "spec": {}}, {"kind": "Sink", "name": "s", "spec": {}}],
     "already in"),
])
def test_documents_that_do_not_parse_exit_2(ctl, tmp_path, doc, says):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "x.json").write_text(json.dumps(doc))
    p = ctl.run("--host", "http://127.0.0.1:1", "plan", "-f", str(d))
    assert p.returncode == 2, p.stderr
    assert says in p.stderr and "x.json" in p.stderr, p.stderr
    assert "Couldn't connect" not in p.stderr


YAML_DOCS = """\
# the same documents as write_docs(), in YAML
kind: Probe
name: tp-a
objectFile: hooks.bpf.o
spec:
  programs:
    - program: count_getpid
      attach:
        tracepoint: {category: syscalls, name: sys_enter_getpid}
  constants:
    - name: target_pid
      value: "1"
---
kind: Probe
name: tp-b
objectFile: hooks.bpf.o
spec:
  programs:
  - program: count_getpid
    attach: {tracepoint: {category: syscalls, name: sys_enter_getpid}}
  constants: [{name: target_pid, value: '1'}]
  desiredState: DETACHED
"""

YAML_SINK = """\
kind: Sink
name: stats
spec:
  statsd:
    host: 127.0.0.1
    port: 9
    prefix: fleet
"""


def test_yaml_documents_are_the_json_ones(a, ctl, tmp_path):
    tf = token_file(tmp_path, a.admin, "y-token")
    base = ("--host", a.url, "--token-file", tf)
    jdocs = write_docs(tmp_path / "json")
    ydir = tmp_path / "yaml"
    ydir.mkdir()
    shutil.copy(HOOKS, ydir / "hooks.bpf.o")
    (ydir / "probes.yaml").write_text(YAML_DOCS)
    (ydir / "sink.yml").write_text(YAML_SINK)
    try:
        p = ctl.run(*base, "-o", "jsonl", "plan", "-f", str(ydir))
        assert p.returncode == 0, p.stderr
        # (the object may be there from an earlier test: then it is not pushed)
        assert [(c["action"], c["name"]) for c in json.loads(p.stdout)["result"]["changes"]
                if c["kind"] != "Object"] == \
            [("create", "tp-a"), ("create", "tp-b"), ("create", "stats")]
        assert ctl.run(*base, "apply", "-f", jdocs).returncode == 0
        # Applied from JSON, planned from YAML: nothing differs.
        p = ctl.run(*base, "-o", "jsonl", "plan", "-f", str(ydir))
        assert p.returncode == 0, p.stderr
        r = json.loads(p.stdout)["result"]
        assert r["changes"] == [] and r["unchanged"] == 3, r

        (ydir / "sink.yml").write_text(YAML_SINK + "  bad: [unclosed\n")
        p = ctl.run(*base, "plan", "-f", str(ydir))
        assert p.returncode == 2 and "sink.yml:" in p.stderr, p.stderr
        (ydir / "sink.yml").write_text(YAML_SINK.replace("port: 9", "port: nine"))
        p = ctl.run(*base, "plan", "-f", str(ydir))
        assert p.returncode == 2 and "statsd.port" in p.stderr, p.stderr
    finally:
        for n in ("tp-a", "tp-b"):
            a.delete(f"/v1/probes/{n}")
        a.delete("/v1/sinks/stats")


@pytest.fixture
def artifact_server(tmp_path):
    """A plain http server on loopback with hooks.bpf.o (and a copy that is
    not what its name says) and the paths it was asked for."""
    import functools
    import http.server
    import threading
    root = tmp_path / "artifacts"
    root.mkdir()
    shutil.copy(HOOKS, root / "hooks.bpf.o")
    (root / "other.bpf.o").write_bytes(open(REJECT, "rb").read())
    asked = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            asked.append(self.path)

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", asked
    httpd.shutdown()
    httpd.server_close()


def test_object_sources_are_fetched_by_the_hosts_before_their_probes(ctl, tmp_path,
                                                                     artifact_server):
    """An ObjectSource document: plan says the host will fetch it, apply has
    the agent fetch it (no bytes through grainctl) before the probe that
    names its digest; a second apply fetches nothing; a digest the bytes
    do not have fails that host (exit 1) and puts no probe after it. The
    agent's --config-dir takes the same documents."""
    base_url, asked = artifact_server
    sha = hashlib.sha256(open(HOOKS, "rb").read()).hexdigest()
    d = tmp_path / "state"
    d.mkdir()
    ag = Agent(str(d), ["--fetch-allow-http"]).start()
    try:
        tf = token_file(tmp_path, ag.admin, "src-token")
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "objects.yaml").write_text(
            f"kind: ObjectSource\nname: hooks\nspec:\n  url: {base_url}/hooks.bpf.o\n"
            f"  sha256: {sha.upper()}\n")
        (docs / "probes.json").write_text(json.dumps(
            {"kind": "Probe", "name": "fetched", "spec": tp_spec(sha, 3)}))
        run = lambda *a: ctl.run("--host", ag.url, "--token-file", tf, *a)

        p = run("-o", "jsonl", "plan", "-f", str(docs))
        assert p.returncode == 0, p.stderr
        changes = json.loads(p.stdout)["result"]["changes"]
        assert [(c["action"], c["kind"], c["name"]) for c in changes] == [
            ("fetch", "ObjectSource", "hooks"), ("create", "Probe", "fetched")]
        assert changes[0]["sha256"] == sha
        assert "1 to fetch" in run("plan", "-f", str(docs)).stdout
        assert asked == []

        p = run("apply", "-f", str(docs))
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"+ object hooks ({sha[:12]}): fetched" in p.stdout, p.stdout
        assert asked == ["/hooks.bpf.o"]
        obj = ag.get(f"/v1/objects/{sha}").json()
        assert obj["name"] == "hooks"
        assert ag.get("/v1/probes/fetched").json()["programs"][0]["state"] == "PROGRAM_ATTACHED"

        p = run("-o", "jsonl", "apply", "-f", str(docs))
        r = json.loads(p.stdout)["result"]
        assert r["changes"] == [] and r["unchanged"] == 2, r
        assert asked == ["/hooks.bpf.o"]

        # The digest of hooks.bpf.o, the bytes of another file.
        (docs / "objects.yaml").write_text(
            f"kind: ObjectSource\nname: other\nspec:\n  url: {base_url}/other.bpf.o\n"
            f"  sha256: {'0' * 64}\n")
        (docs / "probes.json").write_text(json.dumps(
            {"kind": "Probe", "name": "fetched-2", "spec": tp_spec("0" * 64, 3)}))
        p = run("apply", "-f", str(docs))
        assert p.returncode == 1, p.stdout + p.stderr
        assert "nothing was stored (422)" in p.stdout, p.stdout
        assert "- probe fetched-2" not in p.stdout
        assert ag.get("/v1/probes/fetched-2").status_code == 404
        assert ag.delete("/v1/probes/fetched").status_code == 204
    finally:
        ag.stop()

    # The same documents in --config-dir: fetched by the agent at start.
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "objects.yaml").write_text(
        f"kind: ObjectSource\nname: from-conf\nspec:\n  url: {base_url}/hooks.bpf.o\n"
        f"  sha256: {sha}\n")
    (conf / "probes.json").write_text(json.dumps(
        {"kind": "Probe", "name": "conf-probe", "spec": tp_spec(sha, 3)}))
    d2 = tmp_path / "state2"
    d2.mkdir()
    ag2 = Agent(str(d2), ["--fetch-allow-http", "--config-dir", str(conf)]).start()
    try:
        probe = ag2.get("/v1/probes/conf-probe").json()
        assert probe["programs"][0]["state"] == "PROGRAM_ATTACHED", probe
        assert ag2.get(f"/v1/objects/{sha}").json()["name"] == "from-conf"
        assert asked[-1] == "/hooks.bpf.o" and len(asked) == 3
        status = ag2.get("/v1/status").json()
        assert not status.get("configDir", {}).get("errors"), status
        assert ag2.delete("/v1/probes/conf-probe").status_code == 409
        (conf / "probes.json").unlink()         # the probe goes with its file
        wait_for_gone = time.time() + 10
        while ag2.get("/v1/probes/conf-probe").status_code != 404:
            assert time.time() < wait_for_gone, "the probe outlived its file"
            time.sleep(0.05)
    finally:
        ag2.stop()
        for n in ("fetched", "conf-probe"):
            shutil.rmtree(os.path.join(PIN_ROOT, n), ignore_errors=True)


def write_fleet_docs(d, pid_a=1, probes=4, sinks=2):
    """`probes` probes (tp-1.. on one object file, the second detached) and
    `sinks` StatsD sinks, in two files of each kind."""
    d.mkdir(exist_ok=True)
    shutil.copy(HOOKS, d / "hooks.bpf.o")
    spec = tp_spec("x", pid_a)
    del spec["objectSha256"]
    docs = [{"kind": "Probe", "name": f"tp-{i}", "objectFile": "hooks.bpf.o",
             "spec": {**spec, **({"desiredState": "DETACHED"} if i == 2 else {}),
                      "constants": [{"name": "target_pid", "value": str(pid_a + i - 1)}]}}
            for i in range(1, probes + 1)]
    docs += [{"kind": "Sink", "name": f"stats-{i}", "spec": {
        "statsd": {"host": "127.0.0.1", "port": 9, "prefix": f"fleet{i}"}}}
        for i in range(1, sinks + 1)]
    for f in d.glob("*.json"):
        f.unlink()
    (d / "a.json").write_text(json.dumps(docs[: len(docs) // 2]))
    (d / "b.json").write_text(json.dumps(docs[len(docs) // 2:]))
    return str(d)


def probe_names(ag, token):
    return [x["name"] for x in ag.get("/v1/probes", token=token).json().get("probes", [])]


def sink_names(ag, token):
    return [x["name"] for x in ag.get("/v1/sinks", token=token).json().get("sinks", [])]


def generations(ag, token):
    return {x["name"]: x["generation"]
            for x in ag.get("/v1/probes", token=token).json().get("probes", [])}


def test_fleet_in_network_namespaces(ctl, tmp_path):
    """Five agents, each in a network namespace of its own with its own
    state directory and pin root, reached over veth addresses of
    198.18.0.0/15, and a directory of 4 probes and 2 sinks: apply converges
    all 5; a second apply writes nothing (generations unchanged, no audit
    record); drift on one host (a probe deleted through the API) is shown
    by plan and repaired by apply; one host down is reported (exit 1) and
    the other 4 converge; --prune removes what the files no longer name."""
    token = "ns-fleet-" + os.urandom(24).hex()
    agents = []
    with contextlib.ExitStack() as stack:
        for i in range(5):
            n = stack.enter_context(veth_namespace("cdefg"[i], i))
            d = tmp_path / f"ns{i}"
            d.mkdir()
            (d / "admin.token").write_text(token + "\n")
            (d / "admin.token").chmod(0o600)
            ag = Agent(str(d), ["--pin-root", f"{PIN_ROOT}-ns{i}"],
                       wrapper=["ip", "netns", "exec", n.ns], host=n.ns_ip)
            stack.callback(shutil.rmtree, f"{PIN_ROOT}-ns{i}", True)
            stack.callback(lambda ag=ag: ag.alive() and ag.stop())
            agents.append(ag.start())
        assert len({ag.url for ag in agents}) == 5
        assert all(ag.url.startswith("http://198.1") for ag in agents)
        tf = token_file(tmp_path, token, "ns-token")
        hf = tmp_path / "fleet.txt"
        hf.write_text("".join(ag.url + "\n" for ag in agents))
        docs = write_fleet_docs(tmp_path / "docs")
        run = lambda *a: ctl.run("--hosts-file", str(hf), "--token-file", tf, *a)
        want_probes = ["tp-1", "tp-2", "tp-3", "tp-4"]

        p = run("apply", "-f", docs)
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stderr.count("converged") == 5
        for ag in agents:
            assert probe_names(ag, token) == want_probes
            assert sink_names(ag, token) == ["stats-1", "stats-2"]
            states = {x["name"]: x["programs"][0]["state"]
                      for x in ag.get("/v1/probes", token=token).json()["probes"]}
            assert states == {"tp-1": "PROGRAM_ATTACHED", "tp-2": "PROGRAM_DETACHED",
                              "tp-3": "PROGRAM_ATTACHED", "tp-4": "PROGRAM_ATTACHED"}

        # A second apply: nothing written anywhere.
        gens = [generations(ag, token) for ag in agents]
        writes = [audit_writes(ag, token) for ag in agents]
        p = run("-o", "jsonl", "apply", "-f", docs)
        assert p.returncode == 0
        for d_ in jsonl(p).values():
            assert d_["result"]["changes"] == [] and d_["result"]["unchanged"] == 6, d_
        assert [audit_writes(ag, token) for ag in agents] == writes
        assert [generations(ag, token) for ag in agents] == gens

        # Drift on one host: shown by plan there only, repaired by apply.
        assert agents[1].delete("/v1/probes/tp-3", token=token).status_code == 204
        p = run("-o", "jsonl", "plan", "-f", docs)
        assert p.returncode == 0
        plan = jsonl(p)
        for i, ag in enumerate(agents):
            changes = [(c["action"], c["name"]) for c in plan[ag.url]["result"]["changes"]]
            assert changes == ([("create", "tp-3")] if i == 1 else []), (i, changes)
        p = run("apply", "-f", docs)
        assert p.returncode == 0, p.stdout + p.stderr
        assert probe_names(agents[1], token) == want_probes
        assert [generations(ag, token) for i, ag in enumerate(agents) if i != 1] == \
            [g for i, g in enumerate(gens) if i != 1]

        # One host down: exit 1 and its error; the other 4 converge.
        assert agents[4].stop() == 0
        docs = write_fleet_docs(tmp_path / "docs", pid_a=9)
        p = run("-o", "jsonl", "--timeout", "3", "apply", "-f", docs)
        assert p.returncode == 1
        out = jsonl(p)
        assert "error" in out[agents[4].url]
        for ag in agents[:4]:
            changes = out[ag.url]["result"]["changes"]
            assert [c["action"] for c in changes] == ["change"] * 4, changes
            assert all(c["done"] for c in changes)
            spec = ag.get("/v1/probes/tp-1", token=token).json()["spec"]
            assert spec["constants"][0]["value"] == "9"

        # --prune: the files name 3 probes and 1 sink now.
        docs = write_fleet_docs(tmp_path / "docs", pid_a=9, probes=3, sinks=1)
        live = tmp_path / "live.txt"
        live.write_text("".join(ag.url + "\n" for ag in agents[:4]))
        p = run("-o", "jsonl", "apply", "-f", docs)
        assert p.returncode == 1                  # the stopped host again
        for ag in agents[:4]:
            assert jsonl(p)[ag.url]["result"]["notInFiles"] == 2
            assert probe_names(ag, token) == want_probes
        p = ctl.run("--hosts-file", str(live), "--token-file", tf, "apply", "-f", docs, "--prune")
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stdout.count("- probe tp-4: removed") == 4, p.stdout
        assert p.stdout.count("- sink stats-2: removed") == 4, p.stdout
        for ag in agents[:4]:
            assert probe_names(ag, token) == want_probes[:3]
            assert sink_names(ag, token) == ["stats-1"]
        for ag in agents[:4]:
            assert ag.stop() == 0, ag.read_log()[-3000:]


def test_probe_the_verifier_refuses_shows_its_report(a, ctl, tmp_path):
    sha = a.upload(open(REJECT, "rb").read()).json()["sha256"]
    spec = {"objectSha256": sha, "programs": [{"program": "read_past_end",
                                               "attach": {"xdp": {"ifname": "lo"}}}]}
    name = f"ctl-rej-{RUN}"
    rest = a.request("PUT", f"/v1/probes/{name}-rest", json=spec)
    assert rest.status_code == 422, rest.text
    p = ctl.on(a, "probes", "put", name, "-f", spec_file(tmp_path, spec))
    assert p.returncode == 1
    assert rest.json()["message"] in p.stderr and "(422)" in p.stderr
    verdict = rest.json()["verifyReport"]["programs"][0]
    assert f"at {verdict['sourceLine']}: {verdict['sourceText']}" in p.stderr
    assert [l for l in p.stderr.splitlines() if l.startswith(">> ")]
    assert a.get(f"/v1/probes/{name}").status_code == 404
