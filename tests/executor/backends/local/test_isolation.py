"""The isolation promises of the local backend; each test tries to break one."""

import json
import os
import socket
from pathlib import Path

import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.policy import SANDBOX_RUNTIME
from executor.backends.local.sandbox import LocalSandbox
from schemas.languages import Language

from ._helpers import host_uid, ok, read_bytes, run

REPO = Path(__file__).resolve().parents[4]

pytestmark = pytest.mark.anyio


async def probe(sandbox: LocalSandbox, code: str) -> dict:  # type: ignore[type-arg]
    """Run Python that prints one JSON object; return it."""
    out = ok(await run(sandbox, code))
    return json.loads(out.strip().splitlines()[-1])


# --- network ---


async def test_no_route_to_internet(py: LocalSandbox) -> None:
    code = """
import json, socket
results = {}
for host, port in [('1.1.1.1', 53), ('8.8.8.8', 443)]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        results[host] = 'connected'
    except OSError as exc:
        results[host] = exc.__class__.__name__ + ':' + str(exc.errno)
try:
    socket.getaddrinfo('example.com', 80)
    results['dns'] = 'resolved'
except OSError as exc:
    results['dns'] = 'failed'
print(json.dumps(results))
"""
    results = await probe(py, code)
    assert results["1.1.1.1"] != "connected"
    assert results["8.8.8.8"] != "connected"
    assert results["dns"] == "failed"


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
    code = f"""
import errno, json
result = {{}}
for path in {targets!r}:
    try:
        with open(path, 'ab') as f:
            f.write(b'x')
        result[path] = 'written'
    except OSError as exc:
        result[path] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(result))
"""
    results = await probe(py, code)
    for path, seen in results.items():
        assert seen in ("EROFS", "EACCES", "EPERM"), (path, seen)
    assert not (backend.settings.runtime_dir / "python" / "x").exists()


async def test_root_outside_workspace_not_writable(py: LocalSandbox) -> None:
    code = """
import errno, json
result = {}
for path in ['/x', '/etc/x', '/opt/x', '/home/x']:
    try:
        with open(path, 'wb') as f:
            f.write(b'x')
        result[path] = 'written'
    except OSError as exc:
        result[path] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(result))
"""
    results = await probe(py, code)
    for path, seen in results.items():
        assert seen in ("EROFS", "EACCES", "EPERM"), (path, seen)


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
