"""A fresh Debian 12 host: a clean clone of the committed tree, in a
`debootstrap --variant=minbase bookworm` chroot that has nothing but make,
is built and started by one `make -j2 run`. That make must install what it
needs before it computes a flag or compiles anything; the agent it starts
must answer, hold the built-in probes it compiled against this kernel's
BTF, and exit 0 on SIGTERM, so that make exits 0.

The base system is bootstrapped once and kept as a tarball in CACHE_DIR,
beside the .debs apt downloaded, so a rerun pays only for installing and
building; what is installed in the chroot is fresh every time. The chroot
runs in a mount namespace of its own: its mounts of /proc, /sys and /dev
end with it, whatever happens to the test, and are never seen from here.
"""

import contextlib
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from debian_host import SUITE, debian_sources, locked, remove_tree, run  # noqa: E402

CACHE_DIR = os.environ.get("GRAIND_FRESH_CACHE", "/var/cache/graind-tests")
# A base older than this is bootstrapped again, so that the install in the
# chroot does not start by upgrading half of it.
BASE_MAX_AGE = 30 * 86400
# The whole test on 2 shared cores took about 4 minutes cold (3 of them
# debootstrap and the tarball) and 45 s warm, most of it apt installing
# the build packages; the bound leaves room for a loaded machine and stops
# a hung apt or build well inside `make test`'s 15 minutes.
DEADLINE = float(os.environ.get("GRAIND_FRESH_TIMEOUT", "600"))
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLONE = "/root/graind"            # where the clone lives inside the chroot


def base_tarball(mirror, deadline):
    """The cached tarball of a minbase SUITE with make, made once by
    debootstrap (in its own mount namespace, since it mounts /proc and
    /sys in the target)."""
    arch = run(["dpkg", "--print-architecture"], deadline).strip()
    key = hashlib.sha256(f"{SUITE} {arch} {mirror} minbase make".encode()).hexdigest()[:12]
    tarball = os.path.join(CACHE_DIR, f"base-{SUITE}-{arch}-{key}.tar.gz")
    with locked(os.path.join(CACHE_DIR, "base.lock"), deadline):
        with contextlib.suppress(OSError):
            if time.time() - os.stat(tarball).st_mtime < BASE_MAX_AGE:
                return tarball
        work = tempfile.mkdtemp(prefix="bootstrap-", dir=CACHE_DIR)
        try:
            root = os.path.join(work, "root")
            run(["unshare", "--mount", "--propagation", "private",
                 "debootstrap", "--variant=minbase", "--include=make", SUITE, root, mirror],
                deadline)
            # The base is installed: its .debs are of no more use, and the
            # cache starts again with it, so it holds one base's worth.
            for deb in glob.glob(os.path.join(root, "var/cache/apt/archives/*.deb")):
                os.unlink(deb)
            for deb in glob.glob(os.path.join(CACHE_DIR, "debs", "*.deb")):
                os.unlink(deb)
            run(["tar", "-czf", tarball + ".tmp", "--numeric-owner", "-C", root, "."], deadline)
            os.replace(tarball + ".tmp", tarball)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tarball + ".tmp")
            remove_tree(work)
    return tarball


def keep_deb(path):
    """Hard-link a .deb into the deb cache, atomically (other runs may be
    linking the same file at the same time)."""
    dest = os.path.join(CACHE_DIR, "debs", os.path.basename(path))
    if os.path.exists(dest):
        return
    tmp = f"{dest}.{os.getpid()}.tmp"
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, dest)


def configure(root, sources):
    """What a fresh host of this machine has besides its packages: its
    Debian sources, its resolver and its apt network settings (proxy,
    validity checks), and the .debs already fetched, hard-linked in."""
    with open(os.path.join(root, "etc/apt/sources.list"), "w") as f:
        for uri, suite, comps in sources:
            f.write(f"deb {uri} {suite} {' '.join(comps)}\n")
    shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
    for conf in ["/etc/apt/apt.conf", *sorted(glob.glob("/etc/apt/apt.conf.d/*"))]:
        with contextlib.suppress(OSError), open(conf, errors="replace") as f:
            if "acquire::" in f.read().lower():
                dest = "etc/apt/apt.conf.d/" + os.path.basename(conf)
                shutil.copyfile(conf, os.path.join(root, dest))
    archives = os.path.join(root, "var/cache/apt/archives")
    for deb in glob.glob(os.path.join(CACHE_DIR, "debs", "*.deb")):
        with contextlib.suppress(FileNotFoundError):     # a new base's run removed it
            os.link(deb, os.path.join(archives, os.path.basename(deb)))


def clone_head(dest, deadline):
    """A clone of the repository's HEAD: the committed tree, nothing else."""
    head = run(["git", "-C", REPO, "rev-parse", "HEAD"], deadline).strip()
    run(["git", "clone", "--quiet", "--no-hardlinks", "--no-checkout", REPO, dest], deadline)
    run(["git", "-C", dest, "checkout", "--quiet", "--detach", head], deadline)
    return head


# Inside the new mount namespace: mount what a host has (its root is a
# mount point too, or `ip netns` fails), then chroot with a clean
# environment (no MAKEFLAGS or jobserver of the make running this test).
IN_NAMESPACE = """set -e
root=$1; shift
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
exec chroot "$root" /usr/bin/env -i "$@"
"""


def descendants(pid):
    """Pids of every process below pid."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError), open(stat) as f:
            fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def comm(pid):
    with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


class Output:
    """The merged output of a process, read on a thread; waits for a line."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.done = False
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def wait_for(self, pattern, deadline):
        """The first match of pattern in a line; None if the output ended
        or the deadline passed first."""
        seen = 0
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    m = re.search(pattern, line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self.done or left <= 0:
                    return None
                self.cond.wait(min(left, 1))

    def tail(self, n=60):
        with self.cond:
            return "\n".join(self.lines[-n:])


def test_make_run_on_a_fresh_host():
    deadline = time.monotonic() + DEADLINE
    if os.geteuid() != 0:
        pytest.skip("debootstrap, chroot and mounts need root")
    if not shutil.which("debootstrap"):
        pytest.skip("debootstrap is not installed (`make deps-test` installs it)")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.strip()}")
    mirror, sources = debian_sources()
    if not mirror:
        pytest.skip(f"this machine's apt sources name no {SUITE} main mirror for debootstrap")

    os.makedirs(os.path.join(CACHE_DIR, "debs"), exist_ok=True)
    started = time.monotonic()
    tarball = base_tarball(mirror, deadline)
    bootstrapped = time.monotonic()

    pin_root = f"/sys/fs/bpf/graind-chroot-{os.getpid()}"
    root = tempfile.mkdtemp(prefix=f"root-{os.getpid()}-", dir=CACHE_DIR)
    proc = None
    try:
        run(["tar", "-xzf", tarball, "--numeric-owner", "-C", root], deadline)
        configure(root, sources)
        clone_head(root + CLONE, deadline)

        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME=/root", "LANG=C.UTF-8"]
        env += [f"{k}={v}" for k, v in os.environ.items()
                if k.lower() in ("http_proxy", "https_proxy", "no_proxy")]
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", IN_NAMESPACE,
             "sh", root, *env, "make", "-C", CLONE, "-j2", "run",
             f"RUN_ARGS=--listen 127.0.0.1:0 --pin-root {pin_root}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        out = Output(proc.stdout)

        ready = out.wait_for(r"^graind (\S+) ready$", deadline)
        assert ready, f"no banner from `make run` in time:\n{out.tail()}"
        listening = out.wait_for(r"^  listening on   http://127\.0\.0\.1:(\d+)$", deadline)
        assert listening, f"the banner names no TCP address:\n{out.tail()}"
        assert out.wait_for(r"^  reader token   ", deadline), out.tail()
        built = time.monotonic()

        url = f"http://127.0.0.1:{listening.group(1)}"
        assert requests.get(url + "/healthz", timeout=10).json() == {"status": "ok"}
        with open(os.path.join(root, "var/lib/graind/reader.token")) as f:
            auth = {"Authorization": f"Bearer {f.read().strip()}"}
        status = requests.get(url + "/v1/status", headers=auth, timeout=10).json()
        assert status["version"] == ready.group(1)
        assert status["kernelRelease"] == os.uname().release
        # The built-in probes were compiled in the chroot against this
        # kernel's BTF and embedded: each bpf/*.bpf.c is a stored object.
        objects = requests.get(url + "/v1/objects?page_size=100", headers=auth,
                               timeout=10).json()["objects"]
        expected = sorted(os.path.basename(p)[:-len(".bpf.c")]
                          for p in glob.glob(os.path.join(root + CLONE, "bpf", "*.bpf.c")))
        assert sorted(o["name"] for o in objects if o.get("builtin")) == expected

        agents = [p for p in descendants(proc.pid) if comm(p) == "graind"]
        assert len(agents) == 1, f"expected one graind under make, found {agents}"
        os.kill(agents[0], signal.SIGTERM)
        rc = proc.wait(timeout=max(1, min(60, deadline - time.monotonic())))
        assert rc == 0, f"`make run` exited {rc} after SIGTERM:\n{out.tail()}"
        assert out.wait_for(r'msg="shutting down" signal=Terminated', deadline), out.tail()
        # The .debs this run fetched serve the next one.
        for deb in glob.glob(os.path.join(root, "var/cache/apt/archives/*.deb")):
            keep_deb(deb)
        print(f"fresh host: bootstrap {bootstrapped - started:.0f} s, "
              f"make run to the banner {built - bootstrapped:.0f} s")
    finally:
        if proc and proc.poll() is None:
            for pid in [proc.pid, *descendants(proc.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(pin_root, ignore_errors=True)
        remove_tree(root)
