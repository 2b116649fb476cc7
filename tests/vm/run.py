"""`make test-vm`: the local backend's isolation, limit and escape tests in a real Debian VM
booted with cgroup v2 only, as root and as an ordinary user with a delegated cgroup subtree.

This host is cgroup v1 and root; most of our users' hosts are cgroup v2. The VM is Debian 12
(systemd 252, Linux 6.1), built with debootstrap from Debian's mirror (tests/vm/image.sh) and
cached in CODE_EXEC_VM_DIR (default ~/.cache/code-exec/vm), keyed by the image script's
contents; the wheels the guest installs are downloaded here with pip, keyed by the project's
requirements. qemu boots it with KVM and no network card: the checkout, the wheels and a
results folder are shared with 9p. The guest (tests/vm/guest.sh) installs the project, runs
the tests of tests/vm/guest-tests.txt twice and powers off; this prints what it reported and
exits non-zero unless both runs passed.

Usage: python -m tests.vm.run [--rebuild] [--timeout SECONDS] [--keep]
                              [--phases root,rootless] [--tests PYTEST ARGS]
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
PHASES = ("root", "rootless")


def _digest(*parts: Path | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.read_bytes() if isinstance(part, Path) else part.encode())
    return h.hexdigest()[:16]


def _dependencies() -> str:
    """The project's own requirements, what the guest installs (not its extras, nor the rest
    of pyproject.toml, which change often)."""
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    return json.dumps(project["dependencies"])


def _image(vm_dir: Path, wheels: Path, rebuild: bool) -> Path:
    """The cached image folder for this image script and these requirements, built when
    missing (the project's dependencies are installed in it, the project itself at boot)."""
    key = _digest(
        HERE / "image.sh",
        _dependencies(),
        PROJECT / "executor/backends/local/runtime-requirements.txt",
    )
    image = vm_dir / f"image-{key}"
    if rebuild and image.exists():
        shutil.rmtree(image / "root", ignore_errors=True)
        (image / "rootfs.img").unlink(missing_ok=True)
    if not (image / "rootfs.img").exists():
        print(f"test-vm: building the Debian image in {image} (debootstrap; some minutes)")
        # Reuse the tree of an older image script when there is one: only its set-up changed.
        older = sorted(vm_dir.glob("image-*/root/.debootstrap-done"))
        if older and not (image / "root").exists() and not rebuild:
            image.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", str(older[-1].parent), str(image / "root")], check=True)
        subprocess.run(
            ["bash", str(HERE / "image.sh"), str(image), str(wheels), str(PROJECT)], check=True
        )
    for stale in vm_dir.glob("image-*"):
        if stale != image:
            shutil.rmtree(stale, ignore_errors=True)
    return image


def _debian_python() -> Path:
    """A Python of this host's /usr/bin/python3 with pip: the sandbox runtime's (make setup)."""
    runtime = Path(
        os.environ.get("CODE_EXEC_RUNTIME_DIR", PROJECT / ".venv/share/code-exec/runtime")
    )
    python = runtime / "python" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"test-vm: no sandbox runtime at {runtime}: run `make setup` first")
    return python


def _wheels(vm_dir: Path) -> Path:
    """Every wheel the guest installs, downloaded once per set of requirements."""
    requirements = PROJECT / "executor/backends/local/runtime-requirements.txt"
    key = _digest(_dependencies(), requirements)
    wheels = vm_dir / f"wheels-{key}"
    if not (wheels / ".complete").exists():
        print(f"test-vm: downloading the guest's wheels into {wheels}")
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                # Debian 12's Python, as the guest has it (3.11.2: some packages' newest
                # versions want a later 3.11), through the sandbox runtime made from it.
                str(_debian_python()),
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--only-binary",
                ":all:",
                "-d",
                str(wheels),
                str(PROJECT),
                "pytest",
                "hypothesis",
                "pyyaml",
                "setuptools",
                "wheel",
                "pip",
                "-r",
                str(requirements),
            ],
            check=True,
            stderr=subprocess.DEVNULL,  # pip's warnings about this host's own index settings
        )
        (wheels / ".complete").touch()
    for stale in vm_dir.glob("wheels-*"):
        if stale != wheels:
            shutil.rmtree(stale, ignore_errors=True)
    return wheels


def accelerator() -> tuple[str, str]:
    """KVM where it can boot a stock kernel, else qemu's own emulation (TCG); and why.

    A /dev/kvm whose only hypervisor module is kvm_pvm (a PVM host, as this project's own
    machines are: a nested, software-assisted KVM) runs PVM-enabled guest kernels only; a
    Debian kernel hangs there right after decompression, with no output.
    """
    chosen = os.environ.get("CODE_EXEC_VM_ACCEL")
    if chosen:
        return chosen, "CODE_EXEC_VM_ACCEL"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    modules = Path("/sys/module")
    if (modules / "kvm_intel").exists() or (modules / "kvm_amd").exists():
        return "kvm", "/dev/kvm (kvm_intel or kvm_amd)"
    if (modules / "kvm_pvm").exists():
        return "tcg", "/dev/kvm is kvm_pvm only, which boots no stock kernel"
    return "kvm", "/dev/kvm"


def _boot(image: Path, wheels: Path, results: Path, timeout_s: float, accel: str) -> int:
    """Boot the guest until it powers off (or the timeout); qemu's exit status."""
    console = results / "console.log"
    # Under KVM the host's CPU but for the MSR that nested KVM refuses to set; under TCG the
    # most qemu emulates, one host thread per virtual CPU.
    cpu = "host,-arch-capabilities" if accel == "kvm" else "max"
    command = [
        "qemu-system-x86_64",
        "-machine",
        f"q35,accel={accel}",
        "-cpu",
        cpu,
        "-smp",
        str(min(os.cpu_count() or 2, 2)),
        "-m",
        "4096",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",  # no network at all: the guest gets what the shares hold
        "-kernel",
        str(image / "vmlinuz"),
        "-initrd",
        str(image / "initrd.img"),
        "-append",
        "root=/dev/vda rw console=ttyS0 panic=-1 systemd.unified_cgroup_hierarchy=1 "
        "cgroup_no_v1=all systemd.show_status=0 quiet",
        "-drive",
        f"file={image / 'rootfs.img'},if=virtio,format=raw,snapshot=on",
        "-virtfs",
        f"local,path={PROJECT},mount_tag=project,security_model=none,readonly=on",
        "-virtfs",
        f"local,path={wheels},mount_tag=wheels,security_model=none,readonly=on",
        "-virtfs",
        f"local,path={results},mount_tag=results,security_model=none",
    ]
    with console.open("wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            print(f"test-vm: the guest did not power off within {timeout_s:g} s")
            return -1


def _summary(results: Path, phase: str) -> tuple[bool, str]:
    rc = results / f"{phase}.rc"
    report = results / f"{phase}.xml"
    if not rc.exists() or not report.exists():
        return False, "did not run"
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    text = (
        f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
        f"{counts['skipped']} skipped (pytest exit {rc.read_text().strip()})"
    )
    return rc.read_text().strip() == "0", text


def main() -> int:
    """Build or reuse the image, boot it, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="debootstrap the image anew")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds for the guest")
    parser.add_argument("--keep", action="store_true", help="keep the results folder")
    parser.add_argument("--phases", default=",".join(PHASES), help="root, rootless or both")
    parser.add_argument("--tests", help="what pytest runs (default: tests/vm/guest-tests.txt)")
    args = parser.parse_args()
    phases = [phase for phase in args.phases.split(",") if phase]
    if not phases or not set(phases) <= set(PHASES):
        parser.error(f"--phases: some of {', '.join(PHASES)}")
    if os.geteuid() != 0:
        print("test-vm: needs root (debootstrap, chroot)")
        return 2
    for tool in ("debootstrap", "qemu-system-x86_64", "mkfs.ext4"):
        if shutil.which(tool) is None:
            print(f"test-vm: {tool} is missing: run `make test-vm` (it installs it)")
            return 2
    vm_dir = Path(os.environ.get("CODE_EXEC_VM_DIR", Path.home() / ".cache/code-exec/vm"))
    began = time.monotonic()
    wheels = _wheels(vm_dir)
    image = _image(vm_dir, wheels, args.rebuild)
    results = Path(tempfile.mkdtemp(prefix="code-exec-vm-"))
    os.chmod(results, 0o777)
    (results / "phases.txt").write_text(" ".join(phases))
    if args.tests:
        (results / "tests.txt").write_text(args.tests)
    accel, why = accelerator()
    print(f"test-vm: booting the guest with {accel} ({why}); results in {results}")
    booted = time.monotonic()
    status = _boot(image, wheels, results, args.timeout, accel)
    print(f"test-vm: the guest ran {time.monotonic() - booted:.0f} s (qemu exit {status})")
    ok = status == 0 and (results / "done").exists()
    guest_log = results / "guest.log"
    if guest_log.exists():
        print(guest_log.read_text(), end="")
    for phase in phases:
        passed, text = _summary(results, phase)
        ok = ok and passed
        print(f"test-vm: as {phase}: {text}")
        log = results / f"{phase}.log"
        if not passed and log.exists():
            print("".join(log.read_text().splitlines(keepends=True)[-60:]), end="")
    if not (results / "done").exists():
        for name in ("install.log", "console.log"):
            path = results / name
            if path.exists():
                print(f"--- {name} (last lines)")
                print("".join(path.read_text(errors="replace").splitlines(True)[-40:]), end="")
    print(f"test-vm: {'passed' if ok else 'FAILED'} in {time.monotonic() - began:.0f} s")
    if ok and not args.keep:
        shutil.rmtree(results, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
