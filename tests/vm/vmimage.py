"""The virtual machines the VM tests boot: Debian 12's own kernel on amd64
and arm64, with a root file system made by debootstrap.

One image per architecture is built once and cached in CACHE_DIR (outside
the clone): a raw ext4 disk holding a minbase bookworm with the kernel
package, the libraries graind links (read off the built binary), python3
with pytest and requests, iproute2 and bpftool; beside it the kernel and
the initrd Debian made for it. A boot never writes to that disk: each VM
gets a copy-on-write overlay of its own. arm64 is bootstrapped through
qemu-user-static (binfmt_misc).

The guest runs /sbin/graind-vm-init as PID 1 (written here, part of the
image): it mounts what a host has, mounts the 9p share tagged `payload`
at /payload and runs /payload/guest.sh, then powers the VM off. What the
share holds is each run's business (vmrun.py).

`python3 tests/vm/vmimage.py amd64 arm64` builds the images ahead of time;
`--btf ARCH` prints where that image's kernel BTF is.
"""

import contextlib
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
from debian_host import SUITE, debian_sources, locked, remove_tree, run  # noqa: E402
import vmrun  # noqa: E402

CACHE_DIR = os.environ.get("GRAIND_VM_CACHE", "/var/cache/graind-vm")
# An image older than this is built again: the kernel package moves on
# with Debian's point releases, and so should the kernel under test.
IMAGE_MAX_AGE = 30 * 86400
DISK_SIZE = "3G"

ARCHES = {
    # Debian arch: (GNU triplet, kernel package, qemu-user binfmt name)
    "amd64": ("x86_64-linux-gnu", "linux-image-amd64", "qemu-x86_64"),
    "arm64": ("aarch64-linux-gnu", "linux-image-arm64", "qemu-aarch64"),
}

# What the guest needs besides graind's libraries: the kernel and modules
# (virtio, 9p, veth, sch_ingress, cls_bpf), the test runner and its tools:
# protoc and python3-protobuf for the tests' own protobuf classes.
GUEST_PACKAGES = [
    "initramfs-tools", "kmod", "iproute2", "procps", "python3", "python3-pytest",
    "python3-requests", "python3-protobuf", "python3-prometheus-client", "protobuf-compiler",
    "bpftool", "libcurl4", "xdp-tools",
]

INIT = r"""#!/bin/sh
# PID 1 of a graind test VM: what a host mounts, then the payload's script.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The initrd moved /proc, /sys and /dev over; the rest is for us to mount.
mnt() { mountpoint -q "$3" || mount -t "$1" "$2" "$3"; }
mnt proc proc /proc
mnt sysfs sys /sys
mnt devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mnt devpts devpts /dev/pts
mnt tmpfs tmpfs /dev/shm
mnt tmpfs tmpfs /run
mnt tmpfs tmpfs /tmp
mnt cgroup2 cgroup2 /sys/fs/cgroup
mnt debugfs debugfs /sys/kernel/debug
mnt tracefs tracefs /sys/kernel/tracing
hostname graind-vm
ip link set lo up
modprobe 9pnet_virtio
modprobe 9p
mkdir -p /payload
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 payload /payload; then
	echo "graind-vm: booted $(uname -r) $(uname -m)"
	sh /payload/guest.sh
else
	echo "graind-vm: cannot mount the payload share"
fi
sync
echo o > /proc/sysrq-trigger
sleep 60
"""


def host_arch():
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def runtime_packages(binary):
    """The Debian packages holding the shared libraries binary needs,
    found by their sonames in this machine's multiarch directories (the
    binary may be another architecture's: objdump reads any ELF)."""
    out = subprocess.run(["objdump", "-p", binary], capture_output=True, text=True,
                         check=True).stdout
    sonames = [line.split()[1] for line in out.splitlines() if line.strip().startswith("NEEDED")]
    triplet = ARCHES[host_arch()][0]
    packages = set()
    for so in sonames:
        found = subprocess.run(["dpkg", "-S", f"/usr/lib/{triplet}/{so}", f"/lib/{triplet}/{so}"],
                               capture_output=True, text=True).stdout
        names = {line.split(":", 1)[0] for line in found.splitlines() if ":" in line}
        assert names, f"no Debian package holds {so}, which {binary} needs"
        packages |= names
    return sorted(packages)


def binfmt_ready(arch):
    """Make sure this machine can run arch's binaries in a chroot: mount
    binfmt_misc and enable qemu-user-static's handler when needed."""
    if arch == host_arch():
        return
    name = ARCHES[arch][2]
    if not os.path.exists("/proc/sys/fs/binfmt_misc/register"):
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc",
                        "/proc/sys/fs/binfmt_misc"], check=True)
    if not os.path.exists(f"/proc/sys/fs/binfmt_misc/{name}"):
        subprocess.run(["update-binfmts", "--enable", name], check=True,
                       capture_output=True)
    assert os.path.exists(f"/proc/sys/fs/binfmt_misc/{name}"), \
        f"binfmt_misc has no {name} handler (is qemu-user-static installed?)"


class Image:
    """A cached image: disk (raw ext4), kernel, initrd, and the kernel's
    BTF (what a cross build compiles its BPF objects against)."""

    def __init__(self, base, disk=None):
        self.disk = disk or base + ".ext4"
        self.kernel = base + ".vmlinuz"
        self.initrd = base + ".initrd"
        self.btf = base + ".btf"
        with open(base + ".release") as f:
            self.release = f.read().strip()

    def overlay(self, path):
        """A copy-on-write qcow2 over the disk, for one boot."""
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        self.disk, path], check=True)
        return path


def read_btf(arch, base, work, deadline):
    """The kernel's BTF as the booted kernel shows it: no package ships it
    apart from the kernel (vmlinuz is no ELF), so a first boot copies
    /sys/kernel/btf/vmlinux into the share."""
    share = os.path.join(work, "share")
    os.makedirs(share)
    with open(os.path.join(share, "guest.sh"), "w") as f:
        f.write("cp /sys/kernel/btf/vmlinux /payload/vmlinux.btf\n")
    boot = vmrun.boot(arch, Image(base, disk=base + ".ext4.tmp"), share,
                      max(60, deadline - time.monotonic()))
    btf = os.path.join(share, "vmlinux.btf")
    assert os.path.exists(btf) and os.path.getsize(btf) > 0, \
        f"the first boot of the {arch} image gave no BTF:\n{boot.log()}"
    shutil.copyfile(btf, base + ".btf")


def build(arch, base, packages, mirror, deadline):
    """debootstrap a root for arch, take its kernel and initrd, and make
    the ext4 disk; every file lands beside base, the disk last."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f"build-{arch}-", dir=CACHE_DIR)
    try:
        root = os.path.join(work, "root")
        cmd = ["unshare", "--mount", "--propagation", "private", "debootstrap",
               "--variant=minbase", f"--arch={arch}", "--include=" + ",".join(packages)]
        if arch != host_arch():
            binfmt_ready(arch)
            cmd.append("--foreign")
        run(cmd + [SUITE, root, mirror], deadline)
        if arch != host_arch():
            run(["unshare", "--mount", "--propagation", "private", "chroot", root,
                 "/debootstrap/debootstrap", "--second-stage"], deadline)
        for deb in glob.glob(os.path.join(root, "var/cache/apt/archives/*.deb")):
            os.unlink(deb)
        init = os.path.join(root, "sbin/graind-vm-init")
        with open(init, "w") as f:
            f.write(INIT)
        os.chmod(init, 0o755)
        kernels = sorted(glob.glob(os.path.join(root, "boot/vmlinuz-*")))
        assert kernels, f"the {arch} root has no kernel in /boot"
        release = os.path.basename(kernels[-1])[len("vmlinuz-"):]
        initrd = os.path.join(root, f"boot/initrd.img-{release}")
        assert os.path.exists(initrd), f"no initrd for {release}"
        shutil.copyfile(kernels[-1], base + ".vmlinuz")
        shutil.copyfile(initrd, base + ".initrd")
        with open(base + ".release", "w") as f:
            f.write(release + "\n")
        run(["mkfs.ext4", "-q", "-F", "-L", "graindvm", "-d", root, base + ".ext4.tmp",
             DISK_SIZE], deadline)
        read_btf(arch, base, work, deadline)
        os.replace(base + ".ext4.tmp", base + ".ext4")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(base + ".ext4.tmp")
        remove_tree(work)


def image(arch, graind_binary, deadline):
    """The image of arch for this graind binary's libraries, built when
    it is missing or old. Waits for another run building the same one."""
    assert arch in ARCHES, f"unknown architecture {arch} (one of {', '.join(ARCHES)})"
    mirror, _ = debian_sources()
    assert mirror, f"this machine's apt sources name no {SUITE} main mirror for debootstrap"
    packages = sorted(set([ARCHES[arch][1], *GUEST_PACKAGES, *runtime_packages(graind_binary)]))
    key = hashlib.sha256(f"{SUITE} {arch} {mirror} {packages} {INIT}".encode()).hexdigest()[:12]
    base = os.path.join(CACHE_DIR, f"{SUITE}-{arch}-{key}")
    os.makedirs(CACHE_DIR, exist_ok=True)
    with locked(os.path.join(CACHE_DIR, f"{arch}.lock"), deadline):
        fresh = False
        with contextlib.suppress(OSError):
            fresh = (time.time() - os.stat(base + ".ext4").st_mtime < IMAGE_MAX_AGE and
                     os.path.exists(base + ".btf"))
        if not fresh:
            # Under the lock nothing else builds: what is there is stale,
            # a killed run's half-made root included.
            for old in glob.glob(os.path.join(CACHE_DIR, f"{SUITE}-{arch}-*")):
                os.unlink(old)
            for old in glob.glob(os.path.join(CACHE_DIR, f"build-{arch}-*")):
                remove_tree(old)
            build(arch, base, packages, mirror, deadline)
    return Image(base)


def main(argv):
    """vmimage.py [--btf] ARCH...: build the images; with --btf print only
    the path of each one's kernel BTF (for `make ARCH=... KERNEL_BTF=...`)."""
    binary = os.environ.get("GRAIND_BIN", "build/graind")
    btf_only = "--btf" in argv
    for arch in [a for a in argv if a != "--btf"] or [host_arch()]:
        started = time.monotonic()
        img = image(arch, binary, time.monotonic() + 3600)
        if btf_only:
            print(img.btf)
        else:
            print(f"{arch}: {img.release}, {img.disk} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
