"""What tests that build Debian systems share: this machine's apt sources
(the mirror debootstrap uses), commands with a deadline, locks between
runs, and removing a tree that may have had mounts in it."""

import contextlib
import fcntl
import glob
import os
import re
import shutil
import signal
import subprocess
import time

SUITE = "bookworm"


def apt_sources():
    """(uri, suite, components) of each enabled `deb` source of this
    machine, one-line (.list) and deb822 (.sources) alike."""
    found = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    found.append((words[1], words[2], words[3:]))
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            text = f.read()
        for stanza in re.split(r"\n[ \t]*\n", text):
            fields, key = {}, None
            for line in stanza.splitlines():
                if line.startswith("#"):
                    continue
                if line[:1] in (" ", "\t") and key:
                    fields[key] += " " + line.strip()
                    continue
                name, sep, value = line.partition(":")
                if sep:
                    key = name.strip().lower()
                    fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split() or \
                    fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    found.append((uri, suite, fields.get("components", "").split()))
    return found


def debian_sources():
    """This machine's sources of SUITE (and its -updates, -security...);
    the first one of SUITE itself is the mirror debootstrap uses."""
    ours = [s for s in apt_sources() if s[1] == SUITE or s[1].startswith(SUITE + "-")]
    mirrors = [uri for uri, suite, comps in ours if suite == SUITE and "main" in comps]
    return (mirrors[0] if mirrors else None), ours


def mounts_under(path):
    """Mount points at or below path, as this process sees them."""
    path = os.path.realpath(path)
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == path or point.startswith(path + "/"):
                points.append(point)
    return points


def remove_tree(path):
    """rm -rf, but never through a mount (a bound /dev or /sys)."""
    if not os.path.lexists(path):
        return
    left = mounts_under(path)
    assert not left, f"not removing {path}: still mounted there: {left}"
    shutil.rmtree(path)


@contextlib.contextmanager
def locked(path, deadline):
    """An exclusive flock on path, waited for until the deadline."""
    with open(path, "a") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{path} stayed locked by another run"
                time.sleep(1)
        yield


def run(cmd, deadline):
    """Run a command that must succeed before the deadline; its stdout.
    One that runs out of time is killed with everything it started."""
    left = deadline - time.monotonic()
    assert left > 0, f"no time left for {cmd[0]}"
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise AssertionError(f"{' '.join(cmd)} did not finish in time:\n{(out + err)[-4000:]}")
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{(out + err)[-4000:]}"
    return out
