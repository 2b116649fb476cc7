"""The seccomp filter, tried from inside real sandboxes: what it refuses, and what still works."""

import json

import pyseccomp  # type: ignore[import-untyped]
import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.sandbox import LocalSandbox

from ._helpers import ok, run

pytestmark = pytest.mark.anyio

# Calls syscalls by number with ctypes and prints, for each, its result or its errno's name.
PROBE = """
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
results = {}
for name, (number, *args) in CALLS.items():
    ctypes.set_errno(0)
    returned = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    code = ctypes.get_errno()
    results[name] = errno.errorcode.get(code, str(code)) if returned == -1 else "returned"
print(json.dumps(results))
"""


def number(name: str) -> int:
    """The syscall's number on this machine (libseccomp's table, not the policy's)."""
    return int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))


async def probe(sandbox: LocalSandbox, calls: dict[str, list[int]]) -> dict[str, str]:
    outcome = await run(sandbox, f"CALLS = {calls!r}\n{PROBE}", timeout=30)
    return dict(json.loads(ok(outcome).strip().splitlines()[-1]))


CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_SESSION_KEYRING = -3
PTRACE_PEEKDATA = 2
ADDR_NO_RANDOMIZE = 0x0040000  # turns ASLR off
NO_SUCH_PID = 999_999


async def test_dangerous_syscalls_fail_with_the_intended_errno(py: LocalSandbox) -> None:
    # Arguments with which each call, unfiltered, would succeed or fail with another errno.
    calls = {
        "io_uring_setup": [number("io_uring_setup"), 1, 0],
        "add_key": [number("add_key"), 0, 0, 0, 0, KEY_SPEC_SESSION_KEYRING],
        "keyctl": [number("keyctl"), KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0],
        "bpf": [number("bpf"), 0, 0, 0],
        "perf_event_open": [number("perf_event_open"), 0, 0, -1, -1, 0],
        "userfaultfd": [number("userfaultfd"), 0],
        "unshare": [number("unshare"), 0],
        "setns": [number("setns"), -1, 0],
        "mount": [number("mount"), 0, 0, 0, 0, 0],
        "ptrace": [number("ptrace"), PTRACE_PEEKDATA, NO_SUCH_PID, 0, 0],
        "clone": [number("clone"), CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0],
        "personality": [number("personality"), ADDR_NO_RANDOMIZE],
        "inotify_init1": [number("inotify_init1"), 0],
        "process_vm_readv": [number("process_vm_readv"), NO_SUCH_PID, 0, 0, 0, 0, 0],
        "socket(AF_VSOCK)": [number("socket"), 40, 1, 0],
        "clone3": [number("clone3"), 0, 0],
        "a syscall newer than the policy": [462, 0, 0, 0],  # mseal (Linux 6.10)
        # The ends of the unreviewed range, which is one comparison of its own in the filter.
        "the first unreviewed number": [451, -1, 0, 0, 0],  # cachestat: EBADF unfiltered
        "the last reviewed number": [449, 0, 0, 0, 0, 0],  # futex_waitv, no futexes: EINVAL
        # Still allowed: the persona query, and plain sockets.
        "personality(query)": [number("personality"), 0xFFFFFFFF],
        "socket(AF_UNIX)": [number("socket"), 1, 1, 0],
    }
    assert await probe(py, calls) == {
        "io_uring_setup": "ENOSYS",
        "add_key": "EPERM",
        "keyctl": "EPERM",
        "bpf": "EPERM",
        "perf_event_open": "EPERM",
        "userfaultfd": "EPERM",
        "unshare": "EPERM",
        "setns": "EPERM",
        "mount": "EPERM",
        "ptrace": "EPERM",
        "clone": "EPERM",
        "personality": "EPERM",
        "inotify_init1": "ENOSYS",
        "process_vm_readv": "EPERM",
        "socket(AF_VSOCK)": "EPERM",
        "clone3": "ENOSYS",
        "a syscall newer than the policy": "ENOSYS",
        "the first unreviewed number": "ENOSYS",
        "the last reviewed number": "EINVAL",
        "personality(query)": "returned",
        "socket(AF_UNIX)": "returned",
    }


async def test_the_health_report_says_what_the_filter_does(
    backend: LocalBackend, py: LocalSandbox
) -> None:
    report = backend.health().policy["syscalls"]
    assert report == backend.policy.syscalls.report()
    special = {  # arguments that meet each condition of the report
        "clone": [CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0],
        "personality": [ADDR_NO_RANDOMIZE],
        "socket": [40, 1, 0],
    }
    calls: dict[str, list[int]] = {}
    expected: dict[str, str] = {}
    for entry in report["denied"]:
        name = entry["syscall"]
        if number(name) < 0:
            continue  # none on this architecture (vm86, ...): the kernel has no such call
        assert ("when" in entry) == (name in special), entry
        # -1 everywhere: a bad descriptor, address or flag, should the filter let it through.
        calls[name] = [number(name), *special.get(name, [-1] * 6)]
        expected[name] = entry["errno"]
    numbers = report["denied_numbers"]
    for nr in (numbers["from"], numbers["from"] + 10, numbers["to"]):
        calls[f"#{nr}"] = [nr, -1, -1, -1]
        expected[f"#{nr}"] = numbers["errno"]
    assert len(calls) > 80
    assert await probe(py, calls) == expected


async def test_a_32_bit_syscall_kills_the_process(c: LocalSandbox) -> None:
    # int 0x80 enters the i386 syscall table, which the rules were not written for.
    code = """
#include <stdio.h>
int main(void) {
    long pid;
    fflush(stdout);
    __asm__ volatile ("int $0x80" : "=a"(pid) : "a"(20) : "memory");  /* i386 getpid */
    printf("survived: %ld\\n", pid);
    return 0;
}
"""
    outcome = await run(c, code)
    assert outcome.stdout.text() == ""
    assert outcome.exit_code == 128 + 31
    assert outcome.error is not None and "SIGSYS" in outcome.error.value
    assert ok(await run(c, '#include <stdio.h>\nint main(void) { puts("next"); }\n')) == "next\n"


async def test_python_workloads_still_run(py: LocalSandbox) -> None:
    code = """
import asyncio, multiprocessing, subprocess, threading
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

frame = pd.DataFrame({"x": np.arange(1000), "y": np.random.default_rng(0).normal(size=1000)})
print(int(frame.x.sum()), round(float(np.linalg.norm(np.eye(3))), 3))
plt.plot(frame.x, frame.y)
print(subprocess.run(["sh", "-c", "echo child"], capture_output=True, text=True).stdout.strip())
with multiprocessing.Pool(2) as pool:
    print(pool.map(abs, [-1, -2, -3]))
done = []
threads = [threading.Thread(target=done.append, args=(i,)) for i in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(sorted(done) == list(range(8)))

async def main():
    await asyncio.sleep(0.01)
    return "async"

print(asyncio.run(main()))
"""
    outcome = await run(py, code, timeout=60)
    assert ok(outcome) == "499500 1.732\nchild\n[1, 2, 3]\nTrue\nasync\n"
    assert len(outcome.images) == 1


async def test_node_bash_and_c_workloads_still_run(
    js: LocalSandbox, sh: LocalSandbox, c: LocalSandbox
) -> None:
    node = """
const { Worker } = require('worker_threads');
const { execFileSync } = require('child_process');
const fs = require('fs');
const doubled = await new Promise((resolve, reject) => {
  const worker = new Worker('const { parentPort } = require("worker_threads"); parentPort.on("message", (n) => parentPort.postMessage(n * 2));', { eval: true });
  worker.on('message', (n) => { resolve(n); worker.terminate(); });
  worker.on('error', reject);
  worker.postMessage(21);
});
fs.writeFileSync('n.txt', String(doubled));
console.log(doubled, execFileSync('cat', ['n.txt']).toString(), await fs.promises.readFile('n.txt', 'utf8'));
"""
    assert ok(await run(js, node)) == "42 42 42\n"
    bash = "seq 1 5 | paste -sd+ | (read sum; echo $((sum))); (cd /tmp && echo sub); sleep 0.1 & wait; echo $(( 6 * 7 ))"
    assert ok(await run(sh, bash)) == "15\nsub\n42\n"
    program = """
#include <pthread.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
static void *work(void *arg) { *(int *)arg *= 2; return NULL; }
int main(void) {
    int n = 21;
    pthread_t thread;
    pthread_create(&thread, NULL, work, &n);
    pthread_join(thread, NULL);
    pid_t child = fork();
    if (child == 0) { execlp("true", "true", (char *)NULL); _exit(127); }
    int status;
    waitpid(child, &status, 0);
    printf("%d %d\\n", n, WEXITSTATUS(status));
    return 0;
}
"""
    assert ok(await run(c, program)) == "42 0\n"
