"""The egress proxy and the package mirror, with real sandboxes (issue 16).

The package index is the tests' own, on loopback (tests/package_index.py); the hosts an
allowlist reaches are test hosts in network namespaces of the tests' own (tests/netns.py). No
test reaches, or makes the executor dial, an address outside this machine: every refusal of an
outside name below happens before the proxy resolves anything.
"""

import hashlib
import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.sandbox import LocalSandbox
from schemas.languages import Language
from tests.netns import netns_available, netns_host
from tests.package_index import PackageIndex, serve_index

from ._helpers import TIME_SCALE, ok, run
from .conftest import MakeBackend

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

INSTALL = """
import subprocess, sys
done = subprocess.run([sys.executable, "-m", "pip", "install", *{packages!r}],
                      capture_output=True, text=True)
print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
print("pip exit", done.returncode)
"""


def install(*packages: str) -> str:
    return INSTALL.format(packages=list(packages))


@pytest.fixture
def index() -> Iterator[PackageIndex]:
    packages = PackageIndex()
    packages.add_wheel("tinypkg", "1.0", "VALUE = 41\n")
    packages.add_wheel("tinypkg", "1.1", "VALUE = 42\n")
    packages.add_wheel(
        "tinyapp", "2.0", "import tinypkg\nANSWER = tinypkg.VALUE\n", ("tinypkg>=1.1",)
    )
    packages.add_wheel("tampered", "1.0", "EVIL = False\n")
    packages.tamper.add("tampered-1.0-py3-none-any.whl")
    packages.add_npm("tiny-npm", "1.0.0", "module.exports = { seven: 7 };\n")
    with serve_index(packages) as served:
        yield served


@pytest.fixture(params=["bubblewrap", "zygote"])
async def packages_backend(
    make_backend: MakeBackend, index: PackageIndex, request: pytest.FixtureRequest
) -> LocalBackend:
    """A backend whose runs may reach the package indexes, on both ways a Python sandbox
    starts (the zygote needs root)."""
    if request.param == "zygote" and os.geteuid() != 0:
        pytest.skip("the zygote needs root; bubblewrap sandboxes are tested here too")
    return await make_backend(
        network="packages",
        pypi_index_url=index.pypi_url,
        npm_registry_url=index.npm_url,
        zygote="on" if request.param == "zygote" else "off",
    )


@pytest.fixture
async def sandboxes(packages_backend: LocalBackend) -> AsyncIterator[list[LocalSandbox]]:
    made: list[LocalSandbox] = []
    yield made
    for sandbox in made:
        await sandbox.close()


async def python_sandbox(backend: LocalBackend, made: list[LocalSandbox]) -> LocalSandbox:
    sandbox = await backend.create(Language.PYTHON, stateless=backend.settings.zygote == "on")
    made.append(sandbox)
    return sandbox


async def test_pip_installs_a_package_that_imports_in_the_same_run_and_again_from_the_cache(
    packages_backend: LocalBackend, sandboxes: list[LocalSandbox], index: PackageIndex
) -> None:
    code = install("tinyapp") + "import tinyapp, tinypkg\nprint('answer', tinyapp.ANSWER)\n"
    first = await run(await python_sandbox(packages_backend, sandboxes), code, keep_state=False)
    out = ok(first)
    assert "pip exit 0" in out and "answer 42" in out, first.stderr.text()
    # The dependency resolved to the newest version; each file fetched from the index once.
    assert sorted(index.files_fetched()) == [
        "/files/tinyapp-2.0-py3-none-any.whl",
        "/files/tinypkg-1.1-py3-none-any.whl",
    ]
    asked = len(index.requests)
    second = await run(await python_sandbox(packages_backend, sandboxes), code, keep_state=False)
    assert "answer 42" in ok(second)
    assert len(index.requests) == asked, index.requests[asked:]  # pages and files: the cache's
    # Installed in the sandbox's own home, not the shared runtime (read-only).
    where = await run(
        await python_sandbox(packages_backend, sandboxes),
        install("tinypkg==1.0") + "import tinypkg; print(tinypkg.__file__, tinypkg.VALUE)",
        keep_state=False,
    )
    assert "/home/user/.local/lib/python3" in ok(where) and " 41" in ok(where)


@pytest.mark.skipif(
    not Path("/usr/bin/npm").exists(),
    reason="npm is not installed on this host (apt-get install npm)",
)
async def test_npm_installs_through_the_mirror(
    packages_backend: LocalBackend, index: PackageIndex
) -> None:
    sandbox = await packages_backend.create(Language.BASH)
    try:
        out = ok(
            await run(
                sandbox,
                "cd ~ && npm install tiny-npm 2>&1 | tail -3; "
                'node -e \'console.log("seven is", require("tiny-npm").seven)\'',
                timeout=120 * TIME_SCALE,
            )
        )
    finally:
        await sandbox.close()
    assert "seven is 7" in out, out
    assert index.files_fetched() == ["/npm-files/tiny-npm-1.0.0.tgz"]


async def test_a_file_that_does_not_match_its_digest_is_refused_and_not_kept(
    packages_backend: LocalBackend,
    sandboxes: list[LocalSandbox],
    index: PackageIndex,
    executor_state_dir: Path,
) -> None:
    outcome = await run(
        await python_sandbox(packages_backend, sandboxes),
        install("tampered") + "import tampered",
        keep_state=False,
    )
    assert outcome.exit_code != 0
    assert "ModuleNotFoundError" in str(outcome.error)
    assert "does not match the digest its index gave" in outcome.stderr.text()
    # Every file the cache holds is named by its own digest: the tampered one is not there.
    cache = executor_state_dir / "package-cache" / "sha256"
    for path in cache.iterdir():
        assert (
            path.name.startswith(".") or hashlib.sha256(path.read_bytes()).hexdigest() == path.name
        )
    tampered = dict(index.wheels["tampered"])["tampered-1.0-py3-none-any.whl"]
    assert not (cache / hashlib.sha256(tampered).hexdigest()).exists()
    assert "/files/tampered-1.0-py3-none-any.whl" in index.files_fetched()


async def test_hosts_outside_the_packages_policy_are_refused_with_the_reason(
    packages_backend: LocalBackend, sandboxes: list[LocalSandbox], index: PackageIndex
) -> None:
    port = int(index.url.rsplit(":", 1)[1])
    code = f"""
import json, urllib.request
results = {{}}
for url in ("https://pypi.org/simple/", "http://example.org/", "http://127.0.0.1:{port}/simple/"):
    try:
        urllib.request.urlopen(url, timeout=10)
        results[url] = "reached"
    except Exception as exc:
        results[url] = str(exc)
print(json.dumps(results))
"""
    asked = len(index.requests)
    results = json.loads(
        ok(await run(await python_sandbox(packages_backend, sandboxes), code)).splitlines()[-1]
    )
    https, http, loopback = results.values()
    assert "403 Forbidden by code-exec: pypi.org is not reachable" in https
    assert "'packages', which reaches the package indexes only" in https
    assert "Forbidden" in http and "example.org is not reachable" in http
    # The index itself is on this machine's loopback: the sandbox reaches it only through the
    # mirror, never directly (127.0.0.1 is the sandbox's own loopback, where nothing listens).
    assert "Connection refused" in loopback
    assert len(index.requests) == asked


async def test_without_a_network_setting_there_is_no_proxy(make_backend: MakeBackend) -> None:
    backend = await make_backend(zygote="off")
    assert backend.health().model_dump()["network"].startswith("none")
    sandbox = await backend.create(Language.PYTHON)
    try:
        code = """
import os, socket
print(sorted(k for k in os.environ if "PROXY" in k.upper() or k.startswith("PIP_")))
try:
    socket.create_connection(("127.0.0.1", 3128), timeout=2)
    print("listening")
except OSError as exc:
    print("refused", exc.errno)
"""
        out = ok(await run(sandbox, code))
    finally:
        await sandbox.close()
    assert out.splitlines() == ["[]", "refused 111"]


# --- against the proxy itself ---

RAW = """
import json, socket, sys, time
def exchange(data, read=True):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=15)
    s.sendall(data)
    if not read:
        return s
    reply = b""
    try:
        while chunk := s.recv(65536):
            reply += chunk
    except OSError as exc:
        reply += repr(exc).encode()
    s.close()
    return reply.decode("latin-1")
"""


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[bytes]]]:
    """A service on this machine's loopback that records whoever connects to it."""
    seen: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            seen.append(conn.recv(1000))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join()
    server.close()


# An HTTP server for the netns test host: /hello, and /big (8 MiB); it ends itself in 2 min.
TEST_HTTP = """
import http.server, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the test host\\n" if self.path == "/hello" else b"x" * (8 << 20)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the proxy cut the answer
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H)
threading.Timer(120, server.shutdown).start()
server.serve_forever()
"""


@pytest.fixture
def test_http_host() -> Iterator[str]:
    if not netns_available():
        pytest.skip("a test host needs root and iproute2 (ip netns, veth)")
    with netns_host(TEST_HTTP, 8080, tag="eg") as address:
        yield address


async def test_an_allowlist_reaches_its_hosts_only_and_never_this_machines_loopback(
    make_backend: MakeBackend, test_http_host: str, loopback_server: tuple[int, list[bytes]]
) -> None:
    port, seen = loopback_server
    backend = await make_backend(
        zygote="off",
        network="allowlist",
        # localhost is listed, and still refused: it resolves to loopback. The executor's own
        # port is on loopback too.
        network_allowlist=[f"{test_http_host}:8080", f"localhost:{port}"],
        egress_run_mb=1,
    )
    sandbox = await backend.create(Language.PYTHON)
    code = (
        RAW
        + f"""
out = {{}}
out["hello"] = exchange(b"GET http://{test_http_host}:8080/hello HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
out["localhost"] = exchange(b"CONNECT localhost:{port} HTTP/1.1\\r\\n\\r\\n")
out["loopback"] = exchange(b"CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n")
out["executor"] = exchange(b"GET http://127.0.0.1:{backend.settings.port}/health HTTP/1.1\\r\\n\\r\\n")
out["other_port"] = exchange(b"CONNECT {test_http_host}:22 HTTP/1.1\\r\\n\\r\\n")
out["mirror_fetch"] = exchange(b"GET /pypi/files/sha256/{"0" * 64}/x.whl HTTP/1.1\\r\\n\\r\\n")
big = exchange(b"GET http://{test_http_host}:8080/big HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
out["big_bytes"] = len(big)
out["after"] = exchange(b"GET http://{test_http_host}:8080/hello HTTP/1.1\\r\\n\\r\\n")
print(json.dumps(out))
"""
    )
    try:
        out = json.loads(ok(await run(sandbox, code, timeout=60 * TIME_SCALE)).splitlines()[-1])
    finally:
        await sandbox.close()
    assert "200 OK" in out["hello"] and "hello from the test host" in out["hello"]
    try:
        socket.getaddrinfo("localhost", port)
    except socket.gaierror:  # a host without it in /etc/hosts (the test VM's minimal image)
        assert "502" in out["localhost"] and "localhost does not resolve" in out["localhost"]
    else:
        assert "403" in out["localhost"] and "which is not a public address" in out["localhost"]
    assert "403" in out["loopback"] and "not in this run's network allowlist" in out["loopback"]
    assert "403" in out["executor"]
    assert "403" in out["other_port"]
    assert "404" in out["mirror_fetch"] and "knows no file with this digest" in out["mirror_fetch"]
    assert seen == []  # nothing reached the service on this machine's loopback
    # 1 MiB a run: the 8 MiB answer is cut, and nothing more is let through.
    assert out["big_bytes"] < 2 << 20
    assert "403" in out["after"] and "moved its 1 MiB" in out["after"]


async def test_the_proxy_bounds_what_a_connection_may_hold(make_backend: MakeBackend) -> None:
    backend = await make_backend(zygote="off", network="packages", header_timeout_s=1.0)
    sandbox = await backend.create(Language.PYTHON)
    code = (
        RAW
        + """
out = {}
out["huge_head"] = exchange(b"GET /pypi/simple/x/ HTTP/1.1\\r\\nX: " + b"a" * 40000)
start = time.monotonic()
out["silent"] = exchange(b"GET /pypi/simple/x/ HTTP/1.1\\r\\n")
out["silent_s"] = time.monotonic() - start
out["not_http"] = exchange(b"\\x16\\x03\\x01 hello\\r\\n\\r\\n")
out["bad_target"] = exchange(b"CONNECT a b:c HTTP/1.1\\r\\n\\r\\n")
held = [exchange(b"", read=False) for _ in range(40)]
time.sleep(0.5)
out["over_cap"] = exchange(b"GET /pypi/simple/x/ HTTP/1.1\\r\\n\\r\\n")
print(json.dumps(out))
"""
    )
    try:
        out = json.loads(ok(await run(sandbox, code, timeout=60 * TIME_SCALE)).splitlines()[-1])
    finally:
        await sandbox.close()
    assert "431" in out["huge_head"]
    assert "400" in out["silent"] and "no request head in time" in out["silent"]
    assert out["silent_s"] < 10
    assert "400" in out["not_http"]
    assert "400" in out["bad_target"]
    assert "429" in out["over_cap"] and "at most 32 connections" in out["over_cap"]
