"""A fleet scraped by a real Prometheus: five agents in network namespaces
get a probe through `grainctl apply`; `grainctl prometheus-targets` writes
the file_sd targets; Debian's prometheus, started here, scrapes every agent
with the fleet's reader token and its HTTP API finds the probe's metric
from each host."""

import contextlib
import json
import os
import shutil
import subprocess
import time

import pytest
import requests

from conftest import Agent, PIN_ROOT, free_port, veth_namespace

GRAINCTL = os.environ.get("GRAINCTL_BIN", os.path.abspath("build/asan/grainctl"))
HOSTS = 5


def ctl(*args, home):
    p = subprocess.run([GRAINCTL, *args], capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ["PATH"], "HOME": home})
    assert "ERROR: AddressSanitizer" not in p.stderr, p.stderr
    return p


def write_secret(path, text):
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


@contextlib.contextmanager
def prometheus(tmp_path, targets, reader_token_file):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make deps-test` installs the Debian package"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    # JSON is YAML: the scrape config as the README shows it.
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "graind",
            "authorization": {"type": "Bearer", "credentials_file": reader_token_file},
            "file_sd_configs": [{"files": [targets], "refresh_interval": "1s"}],
        }],
    }))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def query(base, promql):
    try:
        r = requests.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    except requests.ConnectionError:
        return None     # still starting
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def test_prometheus_scrapes_every_agent_from_grainctl_targets(tmp_path):
    admin, reader = "fleet-admin-" + os.urandom(24).hex(), "fleet-reader-" + os.urandom(24).hex()
    home = tmp_path / "home"
    home.mkdir()
    agents = []
    with contextlib.ExitStack() as stack:
        for i in range(HOSTS):
            n = stack.enter_context(veth_namespace("pqrst"[i], 8 + i))
            d = tmp_path / f"ns{i}"
            d.mkdir()
            # The fleet's tokens, provisioned before the first start.
            write_secret(d / "admin.token", admin)
            write_secret(d / "reader.token", reader)
            ag = Agent(str(d), ["--pin-root", f"{PIN_ROOT}-prom{i}"],
                       wrapper=["ip", "netns", "exec", n.ns], host=n.ns_ip)
            stack.callback(shutil.rmtree, f"{PIN_ROOT}-prom{i}", True)
            stack.callback(lambda ag=ag: ag.alive() and ag.stop())
            agents.append(ag.start())
        hosts = tmp_path / "hosts.txt"
        hosts.write_text("".join(ag.url + "\n" for ag in agents))
        admin_file = write_secret(tmp_path / "admin", admin)
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "sys.json").write_text(json.dumps({"kind": "Probe", "name": "sys", "spec": {
            "builtin": "syscalls",
            "programs": [{"program": "count_syscalls",
                          "attach": {"rawTracepoint": {"name": "sys_enter"}}}]}}))
        p = ctl("--hosts-file", str(hosts), "--token-file", admin_file, "apply", "-f",
                str(docs), home=str(home))
        assert p.returncode == 0, p.stdout + p.stderr

        targets = tmp_path / "targets.json"
        p = ctl("--hosts-file", str(hosts), "prometheus-targets", "-f", str(targets),
                "--labels", "fleet=ci", home=str(home))
        assert p.returncode == 0, p.stderr
        groups = json.loads(targets.read_text())
        assert sorted(g["labels"]["graind_host"] for g in groups) == \
            sorted(ag.url for ag in agents)
        assert all(g["targets"] == [g["labels"]["graind_host"][len("http://"):]]
                   for g in groups), groups

        reader_file = write_secret(tmp_path / "reader", reader)
        with prometheus(tmp_path, str(targets), reader_file) as base:
            want = {ag.url for ag in agents}
            deadline = time.time() + 45
            seen = set()
            while time.time() < deadline:
                up = query(base, 'up{job="graind"} == 1') or []
                series = query(base, 'count by (graind_host, fleet) '
                                     '({__name__=~"graind_probe_.+", probe="sys"})') or []
                seen = {s["metric"]["graind_host"] for s in series
                        if s["metric"].get("fleet") == "ci"}
                if len(up) == HOSTS and seen == want:
                    break
                time.sleep(1)
            assert seen == want, (seen, (tmp_path / "prometheus.log").read_text()[-3000:])
            # A wrong token is a failed scrape, not an empty one.
            assert all(s["metric"]["graind_host"] in want for s in up)
        for ag in agents:
            assert ag.stop() == 0, ag.read_log()[-3000:]


def test_prometheus_targets_refuses_what_cannot_be_scraped(tmp_path):
    home = str(tmp_path)
    p = ctl("--host", "unix:/run/graind.sock", "prometheus-targets", home=home)
    assert p.returncode == 2 and "no http(s) host" in p.stderr, p.stderr
    p = ctl("--host", "http://127.0.0.1:9730", "prometheus-targets", "--labels", "__x=1",
            home=home)
    assert p.returncode == 2 and "Prometheus' own" in p.stderr, p.stderr
    p = ctl("--host", "http://127.0.0.1:9730", "prometheus-targets", "--labels", "novalue",
            home=home)
    assert p.returncode == 2 and "not NAME=VALUE" in p.stderr, p.stderr
    # A path prefix (a reverse proxy) moves the metrics path with it.
    p = ctl("--host", "https://graind.example:443/agent/", "prometheus-targets", home=home)
    assert p.returncode == 0, p.stderr
    [g] = json.loads(p.stdout)
    assert g["targets"] == ["graind.example:443"]
    assert g["labels"]["__scheme__"] == "https"
    assert g["labels"]["__metrics_path__"] == "/agent/metrics"
