"""The isolation promises of the local backend; each test tries to break one.

The network tests reach no address outside this machine: they make a test host of their own,
in a network namespace joined to this one by a veth pair, and show that the sandbox cannot
reach what this machine can.
"""

import json
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.policy import SANDBOX_RUNTIME, SHM_MIB
from executor.backends.local.sandbox import LocalSandbox
from schemas.languages import Language
from tests.netns import netns_available, netns_host
from tests.processes import new_state_dir

from ._helpers import host_uid, ok, read_bytes, run

REPO = Path(__file__).resolve().parents[4]

pytestmark = pytest.mark.anyio


async def probe(sandbox: LocalSandbox, code: str) -> dict:  # type: ignore[type-arg]
    """Run Python that prints one JSON object; return it."""
    out = ok(await run(sandbox, code))
    return json.loads(out.strip().splitlines()[-1])


# --- network ---


@dataclass(frozen=True)
class NetnsHost:
    """A TCP listener in a network namespace of the test's own, reached over a veth pair."""

    address: str
    port: int
    greeting: bytes


# Accepts connections for at most a minute or 20 of them, greets each, then exits by itself.
LISTENER = """
import socket, sys, time
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
server.settimeout(1)
deadline = time.monotonic() + 60
served = 0
while time.monotonic() < deadline and served < 20:
    try:
        conn, _ = server.accept()
    except TimeoutError:
        continue
    conn.sendall(sys.argv[3].encode())
    conn.close()
    served += 1
"""


@pytest.fixture
def test_host() -> Iterator[NetnsHost]:
    """A test host of our own: a network namespace, a veth pair to it, a listener in it."""
    if not netns_available():
        pytest.skip("a test host needs root and iproute2 (ip netns, veth)")
    host = NetnsHost(address="", port=8765, greeting=b"test host here\n")
    with netns_host(LISTENER, host.port, host.greeting.decode()) as address:
        yield NetnsHost(address=address, port=host.port, greeting=host.greeting)


async def test_a_host_this_machine_reaches_is_unreachable_from_the_sandbox(
    py: LocalSandbox, test_host: NetnsHost
) -> None:
    # From this machine, the test host answers.
    with socket.create_connection((test_host.address, test_host.port), timeout=2) as conn:
        assert conn.recv(100) == test_host.greeting
    code = f"""
import errno, json, socket
results = {{}}
try:
    with socket.create_connection(({test_host.address!r}, {test_host.port}), timeout=2) as conn:
        results['connect'] = conn.recv(100).decode()
except OSError as exc:
    results['connect'] = errno.errorcode.get(exc.errno, repr(exc))
try:
    socket.getaddrinfo('code-exec-test-host.test', {test_host.port})
    results['resolve'] = 'resolved'
except OSError as exc:
    results['resolve'] = type(exc).__name__
results['interfaces'] = [name for _, name in socket.if_nameindex()]
with open('/proc/net/route') as f:
    results['routes'] = f.read().splitlines()[1:]
with open('/proc/net/dev') as f:
    results['dev'] = [line.split(':')[0].strip() for line in f.read().splitlines()[2:]]
print(json.dumps(results))
"""
    results = await probe(py, code)
    assert results["connect"] == "ENETUNREACH"
    assert results["resolve"] == "gaierror"
    assert results["interfaces"] == ["lo"]
    assert results["routes"] == []
    assert results["dev"] == ["lo"]


async def test_host_loopback_unreachable(py: LocalSandbox) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        code = f"""
import json, socket
try:
    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)
    s.sendall(b'hello host')
    result = 'connected'
except OSError as exc:
    result = exc.__class__.__name__
print(json.dumps({{'result': result}}))
"""
        results = await probe(py, code)
        assert results["result"] == "ConnectionRefusedError"
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


async def test_only_loopback_interface(py: LocalSandbox) -> None:
    results = await probe(
        py, "import json, socket\nprint(json.dumps([n for _, n in socket.if_nameindex()]))"
    )
    assert results == ["lo"]


async def test_abstract_unix_socket_of_host_unreachable(py: LocalSandbox) -> None:
    # Abstract unix sockets belong to the network namespace: a host one must be invisible.
    name = f"\0code-exec-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(1)
    try:
        code = f"""
import json, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect({name!r})
    result = 'connected'
except OSError as exc:
    result = exc.__class__.__name__
print(json.dumps({{'result': result}}))
"""
        results = await probe(py, code)
        assert results["result"] != "connected"
    finally:
        server.close()


# --- environment ---


async def test_executor_environment_invisible(
    make_sandbox,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("CODE_EXEC_SECRET_PROBE", "s3cr3t")
    sandbox = await make_sandbox(Language.PYTHON)
    code = """
import glob, json, os
found = []
for path in glob.glob('/proc/[0-9]*/environ'):
    try:
        with open(path, 'rb') as f:
            data = f.read()
        if b's3cr3t' in data or b'CODE_EXEC_SECRET_PROBE' in data:
            found.append(path)
    except OSError:
        pass
print(json.dumps({
    'in_environ': any('s3cr3t' in v or 'SECRET_PROBE' in k for k, v in os.environ.items()),
    'found': found,
    'keys': sorted(os.environ),
}))
"""
    results = await probe(sandbox, code)
    assert results["in_environ"] is False
    assert results["found"] == []
    assert not any(k.startswith("CODE_EXEC_") for k in results["keys"])
    # Host side too: none of the sandbox's processes carries the secret.
    for pid in sandbox.process_ids():
        assert b"s3cr3t" not in read_bytes(f"/proc/{pid}/environ")


async def test_bash_environment_invisible(
    make_sandbox,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("CODE_EXEC_SECRET_PROBE", "s3cr3t")
    sandbox = await make_sandbox(Language.BASH)
    outcome = await run(sandbox, "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'")
    assert "HOME=/home/user" in outcome.stdout.text()
    assert "s3cr3t" not in outcome.stdout.text()
    assert "CODE_EXEC" not in outcome.stdout.text()


# --- processes ---


async def test_host_processes_invisible(py: LocalSandbox) -> None:
    code = """
import json, os
pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
cmdlines = []
for pid in pids:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            cmdlines.append(f.read().replace(b'\\0', b' ').decode(errors='replace'))
    except OSError:
        pass
print(json.dumps({'pids': pids, 'cmdlines': cmdlines, 'me': os.getpid()}))
"""
    results = await probe(py, code)
    assert os.getpid() not in results["pids"]
    assert len(results["pids"]) < 10
    assert not any("pytest" in c for c in results["cmdlines"])
    assert results["me"] < 10  # its own pid namespace


async def test_cannot_signal_host_process(py: LocalSandbox) -> None:
    code = f"""
import json, os
try:
    os.kill({os.getpid()}, 0)
    result = 'reachable'
except OSError as exc:
    result = exc.__class__.__name__
print(json.dumps({{'result': result}}))
"""
    assert (await probe(py, code))["result"] == "ProcessLookupError"


# --- files ---

# Sandbox code: try_write(path) is "written", or the name of the errno that refused it.
TRY_WRITE = """
import errno, json
def try_write(path, mode='wb'):
    try:
        with open(path, mode) as f:
            f.write(b'x')
        return 'written'
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
"""


async def test_host_files_invisible(backend: LocalBackend, make_sandbox) -> None:  # type: ignore[no-untyped-def]
    other = await make_sandbox(Language.PYTHON)
    await other.write_file("secret.txt", b"other sandbox")
    sandbox = await make_sandbox(Language.PYTHON)
    paths = [
        "/root",
        "/etc/shadow",
        "/etc/ssh",
        str(REPO / "pyproject.toml"),
        str(REPO / "executor"),
        str(backend.settings.runtime_dir),
        str(backend.state_dir),
        str(other.workspace.home / "secret.txt"),
        str(sandbox.workspace.home),
        "/var/log",
        "/sys/fs/cgroup",
        "/usr/local/bin",
    ]
    code = f"""
import json, os
result = {{}}
for path in {paths!r}:
    try:
        if os.path.isdir(path):
            result[path] = sorted(os.listdir(path))
        else:
            with open(path, 'rb') as f:
                result[path] = f.read(100).decode(errors='replace')
    except OSError as exc:
        result[path] = exc.__class__.__name__
print(json.dumps({{'result': result, 'repo': os.path.exists({str(REPO)!r})}}))
"""
    results = await probe(sandbox, code)
    for path, seen in results["result"].items():
        assert seen in ("FileNotFoundError", "PermissionError", []), (path, seen)
    # Nothing of the repository is visible at its host path (the runtime is at SANDBOX_RUNTIME).
    assert results["repo"] is False


async def test_runtime_and_system_read_only(backend: LocalBackend, py: LocalSandbox) -> None:
    targets = [
        "/usr/x",
        "/usr/bin/python3",
        str(SANDBOX_RUNTIME / "python" / "x"),
        str(SANDBOX_RUNTIME / "python" / "bin" / "python"),
        "/opt/code-exec/runners/python_runner.py",
        "/opt/code-exec/runners/x",
        "/etc/passwd",
        "/etc/ld.so.cache",
    ]
    code = TRY_WRITE + f"print(json.dumps({{path: try_write(path, 'ab') for path in {targets!r}}}))"
    results = await probe(py, code)
    for path, seen in results.items():
        assert seen in ("EROFS", "EACCES", "EPERM"), (path, seen)
    assert not (backend.settings.runtime_dir / "python" / "x").exists()


async def test_root_outside_workspace_not_writable(py: LocalSandbox) -> None:
    paths = ["/x", "/etc/x", "/opt/x", "/home/x"]
    code = TRY_WRITE + f"print(json.dumps({{path: try_write(path) for path in {paths!r}}}))"
    results = await probe(py, code)
    for path, seen in results.items():
        assert seen in ("EROFS", "EACCES", "EPERM"), (path, seen)


async def test_usr_local_and_dev_are_read_only_and_dev_shm_is_bounded(py: LocalSandbox) -> None:
    code = (
        TRY_WRITE
        + f"""
import multiprocessing, os
paths = ['/usr/local/x', '/usr/local/bin/x', '/dev/x', '/dev/pts/x']
result = {{path: try_write(path) for path in paths}}
result['usr_local'] = os.listdir('/usr/local')
written = 0
try:
    with open('/dev/shm/big', 'wb') as f:
        for _ in range({SHM_MIB + 16}):
            f.write(b'x' * (1 << 20))
            f.flush()
            written += 1
    result['shm'] = 'no error'
except OSError as exc:
    result['shm'] = errno.errorcode.get(exc.errno, str(exc.errno))
os.remove('/dev/shm/big')
result['shm_written_mib'] = written
with open('/dev/null', 'wb') as f:  # devices still work
    result['dev_null'] = f.write(b'x')
with multiprocessing.Pool(2) as pool:  # its semaphores live in /dev/shm
    result['pool'] = pool.map(abs, [-1, -2])
print(json.dumps(result))
"""
    )
    results = await probe(py, code)
    for path in ("/usr/local/x", "/usr/local/bin/x", "/dev/x", "/dev/pts/x"):
        assert results[path] in ("EROFS", "EACCES", "ENOENT"), (path, results[path])
    assert results["/usr/local/x"] == "EROFS"
    assert results["/dev/x"] == "EROFS"
    assert results["usr_local"] == []
    assert results["shm"] == "ENOSPC"
    assert results["shm_written_mib"] <= SHM_MIB
    assert results["dev_null"] == 1
    assert results["pool"] == [1, 2]


def _host_traces(text: str, backend: LocalBackend) -> list[str]:
    """The lines of text that show the executor's state dir, its pid, or the repository;
    without a tmpfs per sandbox (not root), what policy.py says mountinfo still shows then:
    the workspace's binds (/home/user and /tmp) name their directories in the state dir."""
    marks = (str(backend.settings.state_dir), backend.instance, str(REPO))
    traces = [line for line in text.splitlines() if any(mark in line for mark in marks)]
    if not backend.use_tmpfs:
        workspace = [line for line in traces if line.split()[4:5] in (["/home/user"], ["/tmp"])]
        assert len(workspace) <= 2 and all("/sb" in line for line in workspace), workspace
        traces = [line for line in traces if line not in workspace]
    return traces


SHOW_HOST_VIEW = """
import json
with open('/proc/1/cmdline', 'rb') as f:
    cmdline = f.read().replace(b'\\0', b' ').decode()
with open('/proc/self/mountinfo') as f:
    mountinfo = f.read()
print(json.dumps({'cmdline': cmdline, 'mountinfo': mountinfo}))
"""


async def test_pid_1_and_mountinfo_show_no_state_dir_pid_or_repository(
    make_backend,  # type: ignore[no-untyped-def]
) -> None:
    # A runtime outside the repository (a bind mount shows its source's path: see policy.py):
    # all a bash sandbox needs of it is that it exists.
    runtime = new_state_dir("code-exec-test-runtime-")
    try:
        (runtime / "python" / "bin").mkdir(parents=True)
        (runtime / "python" / "bin" / "python").symlink_to("/usr/bin/python3")
        (runtime / "python" / ".installed").touch()  # the mark of a whole runtime
        backend = await make_backend(runtime_dir=runtime)
        sandbox = await backend.create(Language.BASH)
        outcome = await run(
            sandbox, "tr '\\0' ' ' < /proc/1/cmdline; echo; echo ---; cat /proc/self/mountinfo"
        )
        cmdline, _, mountinfo = ok(outcome).partition("\n---\n")
        assert cmdline.startswith("bwrap --args ")
        assert "/" not in cmdline.split(" -- ")[0]  # no path among bubblewrap's own arguments
        assert _host_traces(cmdline + "\n" + mountinfo, backend) == []
        assert "/etc/passwd" not in mountinfo  # a file in the sandbox's root, not a mount
        assert "/opt/code-exec/runners" not in mountinfo
        await sandbox.close()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


async def test_with_the_runtime_in_the_repository_only_its_mount_shows_it(
    backend: LocalBackend, py: LocalSandbox
) -> None:
    seen = await probe(py, SHOW_HOST_VIEW)
    assert _host_traces(seen["cmdline"], backend) == []
    traces = _host_traces(seen["mountinfo"], backend)
    runtime = str(backend.settings.runtime_dir.resolve())
    # What policy.py says mountinfo still shows: the runtime's path on the host filesystem.
    assert all(line.split()[3:5] == [runtime, str(SANDBOX_RUNTIME)] for line in traces), traces
    if backend.use_tmpfs:
        assert str(backend.settings.state_dir) not in seen["mountinfo"]
        assert backend.instance not in seen["mountinfo"]


# --- identity and privileges ---


async def test_unprivileged_inside_and_outside(backend: LocalBackend, py: LocalSandbox) -> None:
    code = """
import json, os, subprocess
status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())
unshare = subprocess.run(['unshare', '-U', 'true'], capture_output=True)
unshare_r = subprocess.run(['unshare', '-r', 'id', '-u'], capture_output=True)
print(json.dumps({
    'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(), 'groups': os.getgroups(),
    'capeff': status['CapEff'].strip(), 'capprm': status['CapPrm'].strip(),
    'capbnd': status['CapBnd'].strip(), 'nonewprivs': status.get('NoNewPrivs', '').strip(),
    'unshare': unshare.returncode, 'unshare_r': unshare_r.returncode,
    'has_os_unshare': hasattr(os, 'unshare'),
}))
"""
    results = await probe(py, code)
    assert results["uid"] == 1000
    assert results["euid"] == 1000
    assert results["gid"] == 1000
    assert int(results["capeff"], 16) == 0
    assert int(results["capprm"], 16) == 0
    assert results["unshare"] != 0
    assert results["unshare_r"] != 0
    # On the host, no process of the sandbox runs as root.
    pids = py.process_ids()
    assert pids
    uids = {host_uid(pid) for pid in pids} - {None}
    assert uids and 0 not in uids
    if backend.is_root:
        assert all(uid >= backend.settings.sandbox_uid_base for uid in uids)  # type: ignore[operator]


async def test_cannot_create_user_namespace_from_bash(sh: LocalSandbox) -> None:
    outcome = await run(sh, "unshare -U true; echo rc=$?; unshare -m true; echo rc=$?")
    assert outcome.stdout.text() == "rc=1\nrc=1\n"


async def test_each_sandbox_has_its_own_host_uid(backend: LocalBackend, make_sandbox) -> None:  # type: ignore[no-untyped-def]
    if not backend.is_root:
        pytest.skip("per-sandbox uids need root")
    a = await make_sandbox(Language.PYTHON)
    b = await make_sandbox(Language.PYTHON)
    uids_a = {host_uid(p) for p in a.process_ids()} - {None}
    uids_b = {host_uid(p) for p in b.process_ids()} - {None}
    assert len(uids_a) == 1 and len(uids_b) == 1
    assert uids_a != uids_b
    assert os.stat(a.workspace.home).st_uid in uids_a


# --- sandboxes from each other ---


async def test_other_sandbox_files_invisible(make_sandbox) -> None:  # type: ignore[no-untyped-def]
    a = await make_sandbox(Language.PYTHON)
    b = await make_sandbox(Language.BASH)
    ok(
        await run(
            a, "open('/home/user/mine.txt', 'w').write('a')\nopen('/tmp/mine-tmp', 'w').write('a')"
        )
    )
    outcome = await run(
        a, "import os\nos.path.exists('/home/user/mine.txt'), os.path.exists('/tmp/mine-tmp')"
    )
    assert outcome.value == "(True, True)"
    outcome = await run(b, "ls -A /home/user /tmp")
    assert "mine" not in outcome.stdout.text()
    outcome = await run(b, "cat /home/user/mine.txt; cat /tmp/mine-tmp")
    assert outcome.exit_code != 0
    assert outcome.stdout.text() == ""
    assert "mine.txt" not in [f.path for f in await b.list_files("")]
    # And the other way round, through the host-side API.
    await b.write_file("b-only.txt", b"b")
    assert "b-only.txt" not in [f.path for f in await a.list_files("")]


async def test_other_sandbox_processes_invisible(make_sandbox) -> None:  # type: ignore[no-untyped-def]
    a = await make_sandbox(Language.PYTHON)
    b = await make_sandbox(Language.PYTHON)
    ok(await run(a, "import subprocess\nsubprocess.Popen(['sleep', '123'])"))
    code = """
import json, os
cmds = []
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            cmds.append(open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace'))
        except OSError:
            pass
print(json.dumps(cmds))
"""
    cmds = await probe(b, code)
    assert not any("sleep" in c for c in cmds)


async def test_hostname_and_ipc_private(py: LocalSandbox) -> None:
    results = await probe(
        py,
        "import json, os, socket\n"
        "print(json.dumps({'host': socket.gethostname(), 'shm': sorted(os.listdir('/dev/shm')) "
        "if os.path.isdir('/dev/shm') else []}))",
    )
    assert results["host"] == "sandbox"
