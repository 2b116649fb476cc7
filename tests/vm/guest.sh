#!/bin/bash
# Runs inside the test VM at boot (code-exec-vm-test.service, see tests/vm/image.sh): installs
# the project from the shared checkout (/mnt/project, read-only) with the wheels the host
# downloaded (/mnt/wheels: the guest has no network), then runs the local backend's isolation,
# limit and escape tests as root and as an ordinary user with a delegated cgroup subtree.
# Everything it reports goes to /mnt/results, which tests/vm/run.py reads once it powers off.
set -uo pipefail
results=/mnt/results
# What to run: tests/vm/guest-tests.txt and both phases, unless run.py wrote a narrower choice.
tests=$(cat "$results/tests.txt" 2>/dev/null || cat /mnt/project/tests/vm/guest-tests.txt)
phases=$(cat "$results/phases.txt" 2>/dev/null || echo "root rootless")
export PIP_NO_INDEX=1 PIP_FIND_LINKS=/mnt/wheels PIP_DISABLE_PIP_VERSION_CHECK=1
# Under qemu's emulation (no KVM) everything takes several times longer: the tests' run
# timeouts are scaled by this (tests/executor/backends/local/_helpers.py).
if [ "$(systemd-detect-virt)" = qemu ]; then export CODE_EXEC_TEST_TIME_SCALE=5; fi
phase() { echo "== $*" | tee -a "$results/guest.log" > /dev/console; }

phase "host: $(uname -r), $(stat -fc %T /sys/fs/cgroup), systemd $(systemctl --version | head -1)"
{
    uname -a; cat /proc/self/cgroup; cat /sys/fs/cgroup/cgroup.controllers
    mount | grep -E 'cgroup|9p'; bwrap --version; python3 --version; node --version
    sysctl kernel.unprivileged_userns_clone user.max_user_namespaces 2>/dev/null
} > "$results/environment.txt" 2>&1

phase "installing the project"
mkdir -p /opt/project
tar -C /mnt/project --exclude=./.venv --exclude=./.git --exclude=node_modules \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.mypy_cache -cf - . \
    | tar -C /opt/project -xf -
# The dependencies and the sandbox runtime are in the image (tests/vm/image.sh): only the
# project itself is installed here, as it is in this checkout.
/opt/venv/bin/pip install -q --no-deps --no-build-isolation -e /opt/project \
    > "$results/install.log" 2>&1
echo $? > "$results/install.rc"
if [ "$(cat "$results/install.rc")" != 0 ]; then
    phase "install failed (install.log)"
    exit 1
fi

run_tests() {  # name, then the command's prefix (how to become the user)
    local name=$1; shift
    phase "tests as $name"
    "$@" /opt/venv/bin/python -m pytest -p no:cacheprovider -o addopts="-ra --strict-markers" \
        --junitxml="$results/$name.xml" $tests > "$results/$name.log" 2>&1
    echo $? > "$results/$name.rc"
    phase "tests as $name: exit $(cat "$results/$name.rc"), $(tail -1 "$results/$name.log")"
}

cd /opt/project
case " $phases " in *" root "*) run_tests root env ;; esac
case " $phases " in *" rootless "*) ;; *) phase "done"; touch "$results/done"; exit 0 ;; esac

# The ordinary user: a copy of the checkout of its own, a transient service of systemd's with
# a delegated cgroup subtree (Delegate=yes), as `systemd-run --user` or a unit would give it.
cp -a /opt/project /home/tester/project
chown -R tester:tester /home/tester/project
cd /home/tester/project
run_tests rootless systemd-run --quiet --wait --pipe --collect -p User=tester -p Delegate=yes \
    -p WorkingDirectory=/home/tester/project -E HOME=/home/tester \
    -E CODE_EXEC_TEST_TIME_SCALE="${CODE_EXEC_TEST_TIME_SCALE:-1}" --
phase "done"
touch "$results/done"
