"""--config-dir: the agent applies Probe and Sink documents itself, at start
and when files change; what a file names only that file changes; a file
that does not parse is reported and changes nothing else."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import Agent, GRAIND_BIN, PIN_ROOT, TEST_BPF

HOOKS = os.path.join(TEST_BPF, "hooks.bpf.o")


def probe_doc(name, pid, desired=None):
    spec = {"programs": [{"program": "count_getpid",
                          "attach": {"tracepoint": {"category": "syscalls",
                                                    "name": "sys_enter_getpid"}}}],
            "constants": [{"name": "target_pid", "value": str(pid)}]}
    if desired:
        spec["desiredState"] = desired
    return {"kind": "Probe", "name": name, "objectFile": "hooks.bpf.o", "spec": spec}


SINK_YAML = """kind: Sink
name: stats
spec: {statsd: {host: 127.0.0.1, port: 9, prefix: confdir}}
"""


def write(path, text):
    """Replace a file the way editors and config managers do: a new file
    renamed over the old one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def wait_for(fn, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def probes(a):
    return {p["name"]: p for p in a.get("/v1/probes").json().get("probes", [])}


def config_status(a):
    return a.get("/v1/status").json()["configDir"]


def passes(a):
    m = re.search(r"^graind_config_dir_passes_total (\d+)$", a.get("/metrics").text, re.M)
    return int(m.group(1))


def audit_count(a):
    time.sleep(0.5)     # audit records are written in batches
    return len(a.get("/v1/audit?page_size=1000").json().get("entries", []))


@pytest.fixture
def conf(tmp_path):
    d = tmp_path / "conf"
    d.mkdir()
    shutil.copy(HOOKS, d / "hooks.bpf.o")
    (d / "probes.json").write_text(json.dumps([probe_doc("cd-a", 1)]))
    (d / "sinks.yaml").write_text(SINK_YAML)
    return d


@pytest.fixture
def agent_with(state_dir, conf):
    started = []

    def start():
        a = Agent(state_dir, ["--config-dir", str(conf)]).start()
        started.append(a)
        return a

    yield start
    for a in started:
        if a.alive():
            assert a.stop() == 0, a.read_log()[-3000:]


def test_applied_at_start_owned_by_their_file(agent_with, conf):
    a = agent_with()
    p = probes(a)["cd-a"]
    assert p["managedBy"] == f"file:{conf}/probes.json"
    assert p["programs"][0]["state"] == "PROGRAM_ATTACHED"
    sink = a.get("/v1/sinks/stats").json()
    assert sink["managedBy"] == f"file:{conf}/sinks.yaml"
    assert sink["statsd"]["prefix"] == "confdir"
    st = config_status(a)
    assert st["dir"] == str(conf) and st["files"] == "2" and st["managed"] == "2"
    assert "errors" not in st
    # The object file was pushed: the probe runs the file's bytes.
    sha = p["spec"]["objectSha256"]
    assert a.get(f"/v1/objects/{sha}/content").content == open(HOOKS, "rb").read()


def test_api_writes_to_owned_resources_are_409_naming_the_file(agent_with, conf):
    a = agent_with()
    spec = probes(a)["cd-a"]["spec"]
    for method, path, body in [("PUT", "/v1/probes/cd-a", spec),
                               ("POST", "/v1/probes/cd-a:detach", None),
                               ("DELETE", "/v1/probes/cd-a", None),
                               ("PUT", "/v1/sinks/stats", {"statsd": {"host": "127.0.0.1",
                                                                      "port": 9}}),
                               ("DELETE", "/v1/sinks/stats", None)]:
        r = a.request(method, path, json=body)
        assert r.status_code == 409, (method, path, r.text)
        assert "managed by file:" in r.json()["message"] and str(conf) in r.json()["message"]
    assert probes(a)["cd-a"]["generation"] == "1"
    assert a.get("/v1/sinks/stats").status_code == 200


def test_changes_follow_the_files(agent_with, conf):
    a = agent_with()
    writes = audit_count(a)
    # A file rewritten with the same documents changes nothing.
    write(conf / "probes.json", json.dumps([probe_doc("cd-a", 1)]))
    wait_for(lambda: passes(a) >= 2, what="a second pass")
    assert probes(a)["cd-a"]["generation"] == "1"
    assert audit_count(a) == writes

    # A changed spec is a new generation; a new document a new probe.
    write(conf / "probes.json", json.dumps([probe_doc("cd-a", 2),
                                            probe_doc("cd-b", 3, desired="DETACHED")]))
    got = wait_for(lambda: (lambda p: p if p.get("cd-a", {}).get("generation") == "2"
                            and "cd-b" in p else None)(probes(a)), what="the change")
    assert got["cd-a"]["spec"]["constants"][0]["value"] == "2"
    assert got["cd-b"]["spec"]["desiredState"] == "DETACHED"
    assert got["cd-b"]["managedBy"] == f"file:{conf}/probes.json"

    # A document dropped from its file, and a removed file, take theirs along.
    write(conf / "probes.json", json.dumps([probe_doc("cd-b", 3, desired="DETACHED")]))
    os.unlink(conf / "sinks.yaml")
    wait_for(lambda: set(probes(a)) == {"cd-b"} and
             a.get("/v1/sinks/stats").status_code == 404, what="the removals")
    assert config_status(a)["managed"] == "1"


def test_a_broken_file_is_reported_and_changes_nothing_else(agent_with, conf):
    a = agent_with()
    # Break the file that owns the sink, and add a good one at the same time.
    (conf / "sinks.yaml").write_text("kind: Sink\nname: stats\nspec: {statsd: [\n")
    (conf / "more.json").write_text(json.dumps(probe_doc("cd-c", 4)))
    st = wait_for(lambda: (lambda s: s if s.get("errors") and "cd-c" in probes(a) else None)(
        config_status(a)), what="the error and the new probe")
    [e] = st["errors"]
    assert e["file"] == str(conf / "sinks.yaml"), e
    assert re.search(r"sinks.yaml:\d+: did not find expected node content", e["message"]), e
    # What the broken file owns is left as it was.
    assert a.get("/v1/sinks/stats").json()["managedBy"] == f"file:{conf}/sinks.yaml"
    assert "graind_config_dir_errors 1" in a.get("/metrics").text
    # A document the agent refuses is reported against its file.
    (conf / "refused.json").write_text(json.dumps(
        {"kind": "Probe", "name": "cd-d", "spec": {"builtin": "no-such-builtin"}}))
    wait_for(lambda: any(x["file"].endswith("refused.json")
                         for x in config_status(a).get("errors", [])), what="the refusal")
    assert "cd-d" not in probes(a)
    # Once fixed, the errors go.
    (conf / "sinks.yaml").write_text(SINK_YAML)
    os.unlink(conf / "refused.json")
    wait_for(lambda: "errors" not in config_status(a), what="the errors to clear")
    assert "graind_config_dir_errors 0" in a.get("/metrics").text
    log = a.read_log()
    assert log.count("config file not applied") == 2, log[-3000:]


def test_ownership_survives_a_restart(agent_with, conf):
    a = agent_with()
    assert a.stop() == 0
    # While the agent is down the file goes: at start its probe goes too.
    write(conf / "probes.json", json.dumps([]))
    a = agent_with()
    assert "cd-a" not in probes(a)
    assert a.get("/v1/sinks/stats").status_code == 200


def test_a_config_dir_that_cannot_be_read_stops_the_start(state_dir, tmp_path):
    p = subprocess.run([GRAIND_BIN, "--listen", "127.0.0.1:0", "--grpc-listen", "none",
                        "--state-dir", state_dir, "--pin-root", PIN_ROOT,
                        "--config-dir", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stderr
    assert "--config-dir" in p.stderr and "No such file or directory" in p.stderr
