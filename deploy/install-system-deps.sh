#!/usr/bin/env bash
# Installs the Debian packages the local sandbox backend needs, when they are missing:
# bubblewrap (the sandbox), libseccomp2 (its syscall filter is compiled with libseccomp.so.2,
# through the pyseccomp package), gcc (C), Node.js (JavaScript) and Debian's python3 with venv
# (the sandbox's Python runtime lives under /usr so that one read-only /usr mount carries it).
set -euo pipefail

# Whether the dynamic linker finds a shared library (ldconfig's cache, else the usual dirs).
have_library() {
    /sbin/ldconfig -p 2>/dev/null | grep -q "[[:space:]]$1 " && return 0
    compgen -G "/usr/lib/*/$1" >/dev/null || compgen -G "/lib/*/$1" >/dev/null ||
        [ -e "/usr/lib/$1" ] || [ -e "/lib/$1" ]
}

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
have_library libseccomp.so.2 || missing+=(libseccomp2)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
[ -x /usr/bin/node ] || missing+=(nodejs)
[ -x /usr/bin/python3 ] || missing+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# npm only for the tests' pinned clients (`make test`; Debian's nodejs does not include it).
if [ "${1:-}" = "--with-npm" ]; then command -v npm >/dev/null 2>&1 || missing+=(npm); fi
# The test VM's tools (`make test-vm`): an image built with debootstrap, booted with qemu.
if [ "${1:-}" = "--with-vm" ]; then
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
    command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
fi

[ ${#missing[@]} -eq 0 ] && exit 0

echo "code-exec: installing missing system packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "code-exec: cannot install ${missing[*]}: not root and no sudo." >&2
        echo "  Install them yourself (Debian/Ubuntu: apt-get install ${missing[*]}), then re-run make." >&2
        exit 1
    fi
else
    SUDO=
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "code-exec: cannot install ${missing[*]}: apt-get not found." >&2
    echo "  Install bubblewrap, libseccomp, gcc, nodejs and python3 with venv with your package manager." >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "code-exec: installed ${missing[*]}"
