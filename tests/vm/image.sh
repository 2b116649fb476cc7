#!/bin/bash
# Build the test VM's Debian image into $1 (a folder of the caller's; see tests/vm/run.py), with
# the project's dependencies installed from the wheels in $2 and the checkout in $3:
#   $1/root        the debootstrap tree (kept, to rebuild the image without downloading again)
#   $1/rootfs.img  an ext4 image of it, which qemu boots read-write as a snapshot (discarded)
#   $1/vmlinuz, $1/initrd.img   the Debian kernel and initramfs from the tree
# Debian 12 (bookworm): systemd 252, Linux 6.1, Python 3.11, bubblewrap 0.8, cgroup v2 only.
# Needs root (debootstrap, chroot) and Debian's package mirror; nothing else from outside.
set -euo pipefail
dir=$1 wheels=$2 project=$3
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=(
    systemd systemd-sysv udev dbus kmod linux-image-amd64 procps util-linux iproute2
    # what the local backend needs, as deploy/install-system-deps.sh installs it on a host
    bubblewrap libseccomp2 python3 python3-venv python3-dev gcc libc6-dev nodejs
)
mkdir -p "$dir"
if [ ! -e "$dir/root/.debootstrap-done" ]; then
    rm -rf "$dir/root"
    debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
        bookworm "$dir/root" "$mirror"
    touch "$dir/root/.debootstrap-done"
fi
root=$dir/root
# A tree made from an older list gets what the list has gained since.
chroot "$root" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo code-exec-vm > "$root/etc/hostname"
cat > "$root/etc/fstab" <<'EOF'
/dev/vda / ext4 rw,relatime 0 1
project /mnt/project 9p trans=virtio,version=9p2000.L,ro,nofail 0 0
wheels /mnt/wheels 9p trans=virtio,version=9p2000.L,ro,nofail 0 0
results /mnt/results 9p trans=virtio,version=9p2000.L,rw,nofail 0 0
EOF
mkdir -p "$root/mnt/project" "$root/mnt/wheels" "$root/mnt/results"
# An ordinary user, for the rootless runs (a cgroup subtree delegated by systemd).
chroot "$root" id tester >/dev/null 2>&1 || chroot "$root" useradd --create-home --uid 1000 tester
# The guest runs tests/vm/guest.sh from the shared checkout once booted, then powers off.
cat > "$root/etc/systemd/system/code-exec-vm-test.service" <<'EOF'
[Unit]
Description=code-exec tests in the VM
After=local-fs.target mnt-project.mount mnt-results.mount mnt-wheels.mount
Requires=mnt-project.mount mnt-results.mount mnt-wheels.mount

[Service]
Type=oneshot
ExecStart=/bin/bash /mnt/project/tests/vm/guest.sh
ExecStopPost=/bin/systemctl poweroff --no-block
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable code-exec-vm-test.service >/dev/null 2>&1
# No login prompts, no network configuration to wait for: the guest has no network card.
chroot "$root" systemctl mask getty@tty1.service serial-getty@ttyS0.service \
    systemd-networkd-wait-online.service >/dev/null 2>&1 || true
# The project's dependencies and the sandbox runtime, installed here at the host's speed (the
# guest may be emulated): /opt/venv, as the guest's copy of the checkout will use it.
mkdir -p "$root/mnt/wheels" "$root/mnt/project" "$root/proc" "$root/dev"
mount --bind "$wheels" "$root/mnt/wheels"
mount --bind -o ro "$project" "$root/mnt/project"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
trap 'umount "$root/dev" "$root/proc" "$root/mnt/project" "$root/mnt/wheels" 2>/dev/null || true' EXIT
chroot "$root" env PIP_NO_INDEX=1 PIP_FIND_LINKS=/mnt/wheels PIP_DISABLE_PIP_VERSION_CHECK=1 \
    bash -euc '
        python3 -m venv --clear /opt/venv
        /opt/venv/bin/pip install -q setuptools wheel
        python3 -c "import tomllib; print(*tomllib.load(open(\"/mnt/project/pyproject.toml\", \"rb\"))[\"project\"][\"dependencies\"], sep=\"\\n\")" > /tmp/requirements.txt
        /opt/venv/bin/pip install -q -r /tmp/requirements.txt pytest hypothesis pyyaml
        /opt/venv/bin/python -c "
import sys; sys.path.insert(0, \"/mnt/project\")
from pathlib import Path
from executor.backends.local.runtime import build_runtime
build_runtime(Path(\"/opt/venv/share/code-exec/runtime\"))
"
    '
umount "$root/dev" "$root/proc" "$root/mnt/project" "$root/mnt/wheels"
trap - EXIT
cp -L "$root/vmlinuz" "$dir/vmlinuz"
cp -L "$root/initrd.img" "$dir/initrd.img"
rm -f "$dir/rootfs.img.tmp"
truncate -s 6G "$dir/rootfs.img.tmp"
mkfs.ext4 -q -F -d "$root" "$dir/rootfs.img.tmp"
mv "$dir/rootfs.img.tmp" "$dir/rootfs.img"
