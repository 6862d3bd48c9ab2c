"""graind on the kernels its users run: Debian 12's own kernel (bookworm's
linux-image packages), booted under QEMU with a debootstrap root
(vmimage.py, cached), for each architecture in GRAIND_VM_ARCHES.

Each VM gets a share holding what was built for its architecture (graind,
the test and built-in BPF objects, the unit test programs), the test
objects' sources, the proto, the system tests' modules and the guest
suite (guest/test_guest.py); the guest runs the
suite and writes a JUnit report into the share. Here every guest test is
one test: passed, failed with the guest's message, or skipped with the
guest's reason. A test that did not run at all (the VM did not boot, the
suite crashed) fails with the tail of the serial log.
"""

import ast
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import vmimage  # noqa: E402
import vmrun  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("BUILD", os.path.join(REPO, "build"))
ARCHES = os.environ.get("GRAIND_VM_ARCHES", vmimage.host_arch()).split()
BOOT_TIMEOUT = float(os.environ.get("GRAIND_VM_TIMEOUT", "1500"))
IMAGE_TIMEOUT = 3600


def guest_tests():
    """The names of the guest suite's tests as its JUnit report has them:
    the test functions it defines (once per parameter when parametrized)
    and the ones it imports from the system tests."""
    with open(os.path.join(HERE, "guest", "test_guest.py")) as f:
        tree = ast.parse(f.read())
    names = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names += [a.name for a in node.names if a.name.startswith("test_")]
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            values = [ast.literal_eval(d.args[1]) for d in node.decorator_list
                      if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "parametrize"]
            names += [f"{node.name}[{v}]" for v in values[0]] if values else [node.name]
    return sorted(names)


class Artifacts:
    """What the Makefile built for arch: the graind binary, the test BPF
    objects, the built-in probes' objects, the unit test programs (ASan,
    cmocka), and the compiler that built them. The host's own build for
    the host's architecture; build/<arch> (BUILD_<ARCH>) for another."""

    def __init__(self, arch):
        native = arch == vmimage.host_arch()
        build = BUILD if native else os.environ.get(f"BUILD_{arch.upper()}",
                                                    os.path.join(BUILD, arch))
        self.graind = os.path.join(build, "graind")
        self.test_bpf = os.path.join(build, "tests", "bpf")
        self.builtin_bpf = os.path.join(build, "bpf")
        self.unit = sorted(t for t in glob.glob(os.path.join(build, "asan", "tests", "test_*"))
                           if not t.endswith(".d"))
        self.cc = "cc" if native else f"{vmimage.ARCHES[arch][0]}-gcc"


# What the unit test programs link that the guest image does not hold.
UNIT_LIBS = ["libasan.so.8", "libubsan.so.1", "libcmocka.so.0"]


def library(cc, triplet, name):
    """Where arch's compiler (or multiarch) keeps a shared library."""
    found = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True,
                           text=True).stdout.strip()
    if os.path.isabs(found) and os.path.exists(found):
        return found
    path = f"/usr/lib/{triplet}/{name}"
    assert os.path.exists(path), f"{name} for {triplet} is not installed"
    return path


def make_payload(arch, art):
    """The share for one VM: guest.sh, graind, bpf/ (test objects and
    their sources), builtin/ (the built-in probes' objects), unit/ (the
    unit test programs) with lib/ (what they link that the guest lacks),
    graind.proto, system/ (the system tests' modules and the guest suite)."""
    payload = tempfile.mkdtemp(prefix=f"graind-vm-{arch}-")
    bpf_dir = art.test_bpf
    shutil.copy(os.path.join(HERE, "guest", "guest.sh"), payload)
    shutil.copy(art.graind, os.path.join(payload, "graind"))
    shutil.copytree(art.builtin_bpf, os.path.join(payload, "builtin"),
                    ignore=shutil.ignore_patterns("*.d"))
    os.makedirs(os.path.join(payload, "unit"))
    os.makedirs(os.path.join(payload, "lib"))
    for t in art.unit:
        shutil.copy(t, os.path.join(payload, "unit"))
    if art.unit:
        for name in UNIT_LIBS:
            shutil.copy(library(art.cc, vmimage.ARCHES[arch][0], name),
                        os.path.join(payload, "lib", name))
    shutil.copy(os.path.join(REPO, "proto", "graind.proto"), payload)
    os.makedirs(os.path.join(payload, "bpf"))
    for f in glob.glob(os.path.join(bpf_dir, "*.o")) + \
            glob.glob(os.path.join(REPO, "tests", "bpf", "*.c")):
        shutil.copy(f, os.path.join(payload, "bpf"))
    system = os.path.join(payload, "system")
    os.makedirs(system)
    for f in glob.glob(os.path.join(REPO, "tests", "system", "*.py")):
        shutil.copy(f, system)
    shutil.copy(os.path.join(HERE, "guest", "test_guest.py"), system)
    return payload


def read_junit(path):
    """{test name: (outcome, text)} from the guest's JUnit report."""
    results = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, text = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                text = (node.get("message") or "") + "\n" + (node.text or "")
                break
        results[case.get("name")] = (outcome, text.strip())
    return results


class Run:
    def __init__(self, arch):
        self.arch, self.results, self.boot, self.problem = arch, {}, None, None
        self.timing = None


def timings():
    """A line per VM booted: its kernel, accelerator and times."""
    return [r.timing for r in _runs.values() if r.timing]


_runs = {}


def vm_run(arch):
    """The VM of arch, booted once for all of its tests."""
    if arch in _runs:
        return _runs[arch]
    run = _runs[arch] = Run(arch)
    art = Artifacts(arch)
    if os.geteuid() != 0:
        run.problem = "skip: the VM images need root (debootstrap, mkfs)"
        return run
    if not os.path.exists(art.graind):
        run.problem = f"skip: no graind built for {arch} at {art.graind} (`make test-vm` builds it)"
        return run
    if not shutil.which(vmrun.QEMU[arch][0]):
        run.problem = f"skip: {vmrun.QEMU[arch][0]} is not installed (`make deps-vm`)"
        return run
    started = time.monotonic()
    try:
        image = vmimage.image(arch, art.graind, started + IMAGE_TIMEOUT)
    except AssertionError as e:
        run.problem = f"the {arch} image could not be made: {e}"
        return run
    built = time.monotonic()
    payload = make_payload(arch, art)
    try:
        run.boot = vmrun.boot(arch, image, payload, BOOT_TIMEOUT)
        report = os.path.join(payload, "out", "junit.xml")
        if os.path.exists(report):
            run.results = read_junit(report)
        run.timing = (f"VM {arch}: {image.release}, {run.boot.accel}: image "
                      f"{built - started:.0f} s, boot {run.boot.booted_s or 0:.0f} s, tests "
                      f"{run.boot.finished_s - (run.boot.booted_s or 0):.0f} s"
                      f"{', timed out' if run.boot.timed_out else ''}")
        b = run.boot
        if not run.results:
            run.problem = ("the guest wrote no test report"
                           f"{' (timed out)' if b.timed_out else ''}:\n{b.log()}")
    finally:
        shutil.rmtree(payload, ignore_errors=True)
    return run


@pytest.mark.parametrize("arch,test", [(arch, t) for arch in ARCHES for t in guest_tests()])
def test_in_vm(arch, test):
    run = vm_run(arch)
    if run.problem and run.problem.startswith("skip: "):
        pytest.skip(run.problem[len("skip: "):])
    assert not run.problem, run.problem
    assert test in run.results, (f"{test} did not run in the {arch} VM; it ran "
                                 f"{sorted(run.results)}\n{run.boot.log(40)}")
    outcome, text = run.results[test]
    if outcome == "skipped":
        pytest.skip(f"{arch}: {text}")
    assert outcome == "passed", f"{arch}: {test}:\n{text}"


def test_guest_kernel_is_debian_12s_own():
    """Every VM ran bookworm's 6.1 kernel, and every test of the suite ran."""
    for arch in ARCHES:
        run = vm_run(arch)
        if run.problem and run.problem.startswith("skip: "):
            pytest.skip(run.problem[len("skip: "):])
        assert not run.problem, run.problem
        assert run.boot.release and run.boot.release.startswith("6.1."), run.boot.release
        assert set(run.results) == set(guest_tests()), (
            sorted(set(run.results) ^ set(guest_tests())))
