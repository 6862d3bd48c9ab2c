"""Boot one test VM (vmimage.py) with a payload and bring back what it did.

The payload is a directory shared with the guest over 9p (tag `payload`):
the guest's PID 1 runs its guest.sh and powers off. The guest writes its
results into the share (out/); everything it prints goes to the serial
console, kept as the run's log. The guest has no network device at all:
only its loopback and the veth pairs its tests make.
"""

import os
import re
import shutil
import subprocess
import threading
import time

QEMU = {
    # arch: (qemu binary, machine arguments, console device)
    "amd64": ("qemu-system-x86_64", ["-machine", "q35"], "ttyS0"),
    "arm64": ("qemu-system-aarch64", ["-machine", "virt", "-cpu", "max"], "ttyAMA0"),
}
MEMORY = "1536M"


def kvm_usable(arch):
    """KVM only for the host's own architecture, and only when /dev/kvm
    opens (a nested or locked-down host may list it and refuse it)."""
    if arch != {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine):
        return False
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


class Boot:
    """One boot: the serial log, how long the boot and the tests took, and
    whether the guest finished on its own."""

    def __init__(self):
        self.lines = []
        self.booted_s = None        # from start to the guest's "booted" line
        self.finished_s = None      # from start to power-off
        self.timed_out = False
        self.accel = None
        self.release = None

    def log(self, n=80):
        return "\n".join(self.lines[-n:])


# A KVM guest boots in seconds; one that has said nothing by then never
# will (nested KVM that lists /dev/kvm and cannot run the guest).
KVM_BOOT_WAIT = 30


def boot(arch, image, payload, timeout, smp=2):
    """Boot image (vmimage.Image) with payload shared; return a Boot once
    the guest has powered off, or after timeout seconds (then killed).
    KVM when it works here (GRAIND_VM_ACCEL=kvm|tcg forces one), else TCG."""
    accel = os.environ.get("GRAIND_VM_ACCEL") or ("kvm" if kvm_usable(arch) else "tcg")
    result = _boot(arch, image, payload, timeout, smp, accel,
                   KVM_BOOT_WAIT if accel == "kvm" and "GRAIND_VM_ACCEL" not in os.environ
                   else None)
    if result.booted_s is None and accel == "kvm" and "GRAIND_VM_ACCEL" not in os.environ:
        result = _boot(arch, image, payload, timeout, smp, "tcg", None)
        result.accel = f"tcg (KVM did not boot the guest in {KVM_BOOT_WAIT} s)"
    return result


def _boot(arch, image, payload, timeout, smp, accel, boot_wait):
    binary, machine, console = QEMU[arch]
    result = Boot()
    result.accel = accel
    work = os.path.join(payload, ".vm")
    os.makedirs(work, exist_ok=True)
    overlay = image.overlay(os.path.join(work, "overlay.qcow2"))
    cmd = [binary, *machine, "-accel", accel, "-m", MEMORY, "-smp", str(smp),
           "-nographic", "-no-reboot", "-nic", "none",
           "-kernel", image.kernel, "-initrd", image.initrd,
           "-append", f"root=/dev/vda rw console={console} init=/sbin/graind-vm-init "
                      "panic=-1 quiet loglevel=4 net.ifnames=0",
           "-drive", f"file={overlay},if=virtio,format=qcow2",
           "-virtfs", f"local,path={payload},mount_tag=payload,security_model=none,id=payload"]
    started = time.monotonic()
    booted = threading.Event()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)

    def read():
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            result.lines.append(line)
            m = re.search(r"graind-vm: booted (\S+)", line)
            if m and result.booted_s is None:
                result.booted_s = time.monotonic() - started
                result.release = m.group(1)
                booted.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if boot_wait and not booted.wait(boot_wait):
            raise subprocess.TimeoutExpired(cmd, boot_wait)
        proc.wait(timeout=max(1, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        result.timed_out = True
        proc.kill()
        proc.wait()
    reader.join(timeout=5)
    result.finished_s = time.monotonic() - started
    shutil.rmtree(work, ignore_errors=True)
    return result
