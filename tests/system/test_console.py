"""The web console end to end: Debian's Chromium driven by playwright-core
(tests/web/console.mjs, one scenario a test) against a real agent with
real probes. The tests run in order on one agent: what a scenario
creates, a later one uses."""

import base64
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import PIN_ROOT, TEST_BPF, Agent, bpf_object, sh, veth_namespace
from test_signing import Key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "web", "console.mjs")
SHOTS = os.path.join(ROOT, os.environ.get("BUILD", "build"), "console-shots")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
XSS_NAME = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def console():
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is missing: make deps-test installs it")
    state = tempfile.mkdtemp(prefix="graind-test-console-")
    progs = tempfile.mkdtemp(prefix="graind-console-progs-")
    os.chmod(progs, 0o755)
    a = Agent(state).start()
    with veth_namespace("w", 15) as net:
        try:
            reject = a.upload(bpf_object("reject_oob.bpf.o"), name="reject_oob")
            assert reject.status_code in (200, 201), reject.text
            # Object names cannot hold markup (the agent refuses them), but a
            # signature's trusted comment is any text the signer chose.
            named = a.post("/v1/objects", params={"name": XSS_NAME}, data=bpf_object("hooks.bpf.o"),
                           headers={"Content-Type": "application/octet-stream"})
            assert named.status_code == 400, named.text
            hooks = os.path.join(progs, "hooks.bpf.o")
            shutil.copy(os.path.join(TEST_BPF, "hooks.bpf.o"), hooks)
            signature = Key(progs, "markup").sign(hooks, comment=XSS_NAME)
            xss = a.post("/v1/objects", params={"name": "markup"}, data=bpf_object("hooks.bpf.o"),
                         headers={"Content-Type": "application/octet-stream",
                                  "Graind-Signature": base64.b64encode(signature.encode()).decode()})
            assert xss.status_code in (200, 201), xss.text
            assert xss.json()["signer"]["trustedComment"] == XSS_NAME
            r = a.request("PUT", "/v1/probes/ui-reader",
                          json={"builtin": "syscalls", "desiredState": "DETACHED"})
            assert r.status_code in (200, 201), r.text
            # Programs the test runs, named to be found among the events.
            marker = os.path.join(progs, f"graind-ui-{os.getpid()}")
            xss_program = os.path.join(progs, "<img src=x onerror=alert(2)>")
            for p in (marker, xss_program):
                shutil.copy("/bin/true", p)
                os.chmod(p, 0o755)
            status = a.get("/v1/status").json()
            cfg = {"url": a.url, "admin": a.admin, "reader": a.reader, "chromium": CHROMIUM,
                   "version": status["version"], "upload": os.path.join(TEST_BPF, "accept.bpf.o"),
                   "rejectSha": reject.json()["sha256"], "xssName": XSS_NAME,
                   "marker": marker, "xssProgram": xss_program, "ifname": net.host_if,
                   "netns": net.ns, "hostIp": net.host_ip, "shots": SHOTS}
            yield a, cfg
        finally:
            rc = a.stop()
            log = a.read_log()
            shutil.rmtree(state, ignore_errors=True)
            shutil.rmtree(progs, ignore_errors=True)
    assert rc == 0, log[-3000:]


def scenario(cfg, name, timeout=120):
    p = subprocess.run(["node", SCRIPT, name], env={**os.environ, "CONSOLE_TEST": json.dumps(cfg)},
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"scenario {name}:\n{p.stderr[-4000:]}\n{p.stdout[-2000:]}"
    return p.stdout


def test_sign_in_with_a_bad_then_a_good_token(console):
    scenario(console[1], "signin")


def test_upload_by_the_file_chooser_shows_the_programs(console):
    scenario(console[1], "upload")


def test_a_rejected_object_shows_its_failing_source_line(console):
    scenario(console[1], "verify")


def test_an_exec_probe_from_the_form_shows_events_live(console):
    out = scenario(console[1], "live")
    print(out.strip())


def test_a_netstat_chart_grows_with_traffic(console):
    scenario(console[1], "chart")


def test_detach_and_delete_from_the_console_leave_nothing_in_the_kernel(console):
    a, cfg = console
    ids = {name: [p["progId"] for p in a.get(f"/v1/probes/{name}").json()["programs"]]
           for name in ("ui-exec", "ui-netstat")}
    assert all(ids.values()), ids
    scenario(cfg, "remove")
    loaded = {p["id"] for p in json.loads(sh("bpftool", "-j", "prog", "show").stdout)}
    for name, progs in ids.items():
        assert not set(progs) & loaded, f"{name}'s programs {progs} are still in the kernel"
    for name in ids:
        assert not os.path.exists(os.path.join(PIN_ROOT, name)), f"{name} is still pinned"



def test_a_reader_has_no_write_control_and_a_forced_write_gets_403(console):
    scenario(console[1], "reader")


def test_names_and_events_from_the_agent_render_as_text(console):
    scenario(console[1], "escaping")


def test_every_view_at_375_and_1280_px_is_clean(console):
    scenario(console[1], "views", timeout=240)
    shots = os.listdir(SHOTS)
    assert any(s.endswith("-375.png") for s in shots) and any(s.endswith("-1280.png") for s in shots)


def test_the_console_files_are_served_with_etags_and_a_strict_policy(console):
    import requests
    a, _ = console
    page = requests.get(a.url + "/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert '<script type="module" src="/ui/app.js">' in page.text
    assert "<script>" not in page.text                     # nothing inline
    chart = requests.get(a.url + "/ui/chart.min.js")
    assert chart.status_code == 200 and "Chart.js v3" in chart.text[:200]
    assert chart.content == open("/usr/share/javascript/chart.js/chart.min.js", "rb").read()
    etag = chart.headers["ETag"]
    assert chart.headers["Cache-Control"] == "no-cache"
    again = requests.get(a.url + "/ui/chart.min.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    other = requests.get(a.url + "/ui/chart.min.js", headers={"If-None-Match": '"0000"'})
    assert other.status_code == 200 and len(other.content) == len(chart.content)
    assert "Expat" in requests.get(a.url + "/ui/chart.js-LICENSE.txt").text
    missing = requests.get(a.url + "/ui/nothing.js")
    assert missing.status_code == 404 and missing.json()["message"] == "the console has no file nothing.js"
    assert requests.get(a.url + "/ui/index.html").status_code == 404     # the page is /
