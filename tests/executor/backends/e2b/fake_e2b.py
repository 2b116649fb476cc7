"""A local fake of the E2B cloud endpoints that `e2b` / `e2b-code-interpreter` talk to.

Written from the protocol as the SDK (e2b 2.63, e2b-code-interpreter 2.11) uses it, so contract
tests can run the real SDK -- its own request building and response parsing -- on loopback.

Three plain-HTTP/1.1 servers on 127.0.0.1, at the ports the SDK hard-codes for debug mode:

* 3000  control plane (`ConnectionConfig.api_url` is ``http://localhost:3000`` when debug):
  ``POST /v2/sandboxes`` (create), ``GET /v2/sandboxes`` (list; metadata/state filters and
  ``limit``/``nextToken`` pagination with an ``x-next-token`` header), ``GET /sandboxes/{id}``,
  ``DELETE /sandboxes/{id}``, ``POST /sandboxes/{id}/timeout``, ``POST /v2/sandboxes/{id}/connect``.
  Every call needs an ``X-API-KEY`` header starting with ``e2b_`` (401 otherwise).
* 49983 envd: ``GET /health``, ``GET``/``POST /files`` (multipart or octet-stream uploads) and the
  Connect-protocol (JSON codec, unary) ``filesystem.Filesystem`` methods ListDir, Stat, MakeDir
  and Remove. Files live in memory, per sandbox.
* 49999 code interpreter: ``POST /execute`` (NDJSON stream), ``GET``/``POST /contexts``,
  ``DELETE /contexts/{id}``, ``POST /contexts/{id}/restart``.

Like E2B's sandbox proxy, the data-plane servers route on the ``E2b-Sandbox-Id`` and
``E2b-Sandbox-Port`` headers the SDK sends, so both servers serve both envd and the code
interpreter; that is what makes the non-debug "API mode" work, where ``E2B_SANDBOX_URL`` sends
every data-plane request to one URL.

Two ways to point the SDK here (see `FakeE2B.sdk_env`):

* debug mode (``E2B_DEBUG=true``): the SDK never calls the control plane for create, kill,
  set_timeout, connect or get_metrics (create returns a sandbox with the fixed id
  ``debug_sandbox_id``); only ``list`` and the data plane reach the fake.
* API mode (``E2B_API_URL=http://localhost:3000``, ``E2B_SANDBOX_URL=http://localhost:49983``,
  no ``E2B_DEBUG``): every call reaches the fake, with real sandbox ids and envd access tokens.

The python "kernel" is a persistent subprocess per context (state persists, the value of a last
expression becomes the main result); bash and javascript run one ``bash -c`` / ``node -e``
process per execution. A cell containing ``#FAKE_PNG`` also yields a display result with a
1x1 PNG. A test fake: no isolation, the code runs as the test user on the host.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import queue
import secrets
import select
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

API_PORT = 3000
ENVD_PORT = 49983
JUPYTER_PORT = 49999
DEBUG_SANDBOX_ID = "debug_sandbox_id"
"""The sandbox id the SDK uses for every sandbox it 'creates' in debug mode."""
ENVD_VERSION = "0.6.4"
HOME = "/home/user"
DEFAULT_SANDBOX_TIMEOUT = 300
CLIENT_ID = "6532622b"
PNG_MARKER = "#FAKE_PNG"
_EXEC_LANGUAGES = {
    "python": "python",
    "bash": "bash",
    "javascript": "javascript",
    "js": "javascript",
}
_INTERRUPT_GRACE_SECONDS = 5.0


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte + one red pixel
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


FAKE_PNG = _png_1x1()
FAKE_PNG_B64 = base64.b64encode(FAKE_PNG).decode("ascii")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- python kernel

# Runs in the kernel subprocess. Protocol: one JSON request per line on (a dup of) fd 0, JSON
# events per line on (a dup of) fd 1. The cell's own fds 1 and 2 are pipes pumped into
# stdout/stderr events, so output of child processes is captured as well; a sync marker
# written to both pipes after the cell keeps every output event ahead of the result.
_WORKER_SOURCE = r"""
import ast, json, linecache, os, signal, sys, threading, time, traceback

SYNC = b"\x00fake-e2b-sync\x00"
_proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
_commands = os.fdopen(os.dup(0), "r", encoding="utf-8")
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
_emit_lock = threading.Lock()


def emit(event):
    with _emit_lock:
        _proto.write(json.dumps(event) + "\n")
        _proto.flush()


class Pump(threading.Thread):
    def __init__(self, fd, kind):
        super().__init__(daemon=True)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self.read_end, self.kind, self.synced = read_end, kind, threading.Event()

    def text(self, data):
        if data:
            text = data.decode("utf-8", "replace")
            emit({"type": self.kind, "text": text, "timestamp": time.time_ns()})

    def run(self):
        buf = b""
        while True:
            data = os.read(self.read_end, 65536)
            if not data:
                return
            buf += data
            while True:
                sync_at, newline_at = buf.find(SYNC), buf.find(b"\n")
                if sync_at != -1 and (newline_at == -1 or sync_at < newline_at):
                    self.text(buf[:sync_at])
                    buf = buf[sync_at + len(SYNC):]
                    self.synced.set()
                elif newline_at != -1:
                    self.text(buf[:newline_at + 1])
                    buf = buf[newline_at + 1:]
                else:
                    break


pumps = [Pump(1, "stdout"), Pump(2, "stderr")]
for pump in pumps:
    pump.start()
namespace = {"__name__": "__main__", "__builtins__": __builtins__}
in_cell = False


def on_sigint(signum, frame):
    if in_cell:
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, on_sigint)


def sync_output():
    sys.stdout.flush()
    sys.stderr.flush()
    for pump in pumps:
        pump.synced.clear()
    os.write(1, SYNC)
    os.write(2, SYNC)
    for pump in pumps:
        pump.synced.wait(5)


def cell_traceback(exc):
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def run(request):
    global in_cell
    code, filename = request["code"], "<cell-%d>" % request["n"]
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    saved = {key: os.environ.get(key) for key in request["env_vars"]}
    os.environ.update(request["env_vars"])
    value = error = None
    try:
        in_cell = True
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, filename, "eval"), namespace)
    except BaseException as exc:
        error = exc
    finally:
        in_cell = False
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
    sync_output()
    if request.get("png"):
        emit({"type": "result", "png": request["png"], "text": "<Figure size 1x1 with 0 Axes>",
              "is_main_result": False})
    if error is not None:
        emit({"type": "error", "name": type(error).__name__, "value": str(error),
              "traceback": cell_traceback(error)})
    elif value is not None:
        try:
            text = repr(value)
        except Exception as exc:
            text = "<repr failed: %r>" % (exc,)
        emit({"type": "result", "text": text, "is_main_result": True})


while True:
    line = _commands.readline()
    if not line:
        break
    try:
        run(json.loads(line))
    except KeyboardInterrupt:
        pass
    emit({"type": "__done__"})
"""

Event = dict[str, Any]


class _PythonKernel:
    """A persistent python process: one namespace, one execution at a time."""

    def __init__(self, cwd: str, env: dict[str, str]) -> None:
        self.lock = threading.Lock()
        self.events: queue.Queue[Event] = queue.Queue()
        self.dead = False
        self._proc = subprocess.Popen(
            [sys.executable, "-u", "-c", _WORKER_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"},
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                continue
        self.dead = True
        self.events.put({"type": "__dead__"})

    def submit(self, request: Event) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(request) + "\n").encode())
        self._proc.stdin.flush()

    def interrupt(self) -> None:
        if self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGINT)

    def kill(self) -> None:
        self.dead = True
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()


class _ProcessRun:
    """One `bash -c` / `node -e` execution, its output turned into events."""

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str], png: bool) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self._png = png
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        readers = [
            threading.Thread(target=self._pump, args=(self._proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._pump, args=(self._proc.stderr, "stderr"), daemon=True),
        ]
        for reader in readers:
            reader.start()
        threading.Thread(target=self._finish, args=(readers,), daemon=True).start()

    def _pump(self, stream: Any, kind: str) -> None:
        for line in iter(stream.readline, b""):
            text = line.decode("utf-8", "replace")
            self.events.put({"type": kind, "text": text, "timestamp": time.time_ns()})
        stream.close()

    def _finish(self, readers: list[threading.Thread]) -> None:
        for reader in readers:
            reader.join()
        code = self._proc.wait()
        if self._png:
            self.events.put(_png_result())
        if code != 0:
            value = f"Command exited with code {code}"
            self.events.put({"type": "error", "name": "Error", "value": value, "traceback": value})
        self.events.put({"type": "__done__"})

    def kill(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)


def _png_result() -> Event:
    return {
        "type": "result",
        "png": FAKE_PNG_B64,
        "text": "<Figure size 1x1 with 0 Axes>",
        "is_main_result": False,
    }


# --------------------------------------------------------------------------- state


@dataclass
class FakeFile:
    data: bytes
    modified: datetime


@dataclass
class FakeContext:
    id: str
    language: str
    cwd: str
    execution_count: int = 0
    kernel: _PythonKernel | None = None

    def to_json(self) -> Event:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def stop(self) -> None:
        if self.kernel is not None:
            self.kernel.kill()
            self.kernel = None


@dataclass
class FakeSandbox:
    sandbox_id: str
    template: str
    metadata: dict[str, str]
    timeout: int
    env_vars: dict[str, str] = field(default_factory=dict)
    envd_access_token: str | None = None
    alive: bool = True
    end_reason: str | None = None
    """Why the sandbox stopped: "killed" or "timeout"."""
    started_at: datetime = field(default_factory=_now)
    end_at: datetime = field(default_factory=_now)
    files: dict[str, FakeFile] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/", "/home", HOME, "/tmp"})
    contexts: dict[str, FakeContext] = field(default_factory=dict)
    default_contexts: dict[str, str] = field(default_factory=dict)
    """Language -> id of the context used when /execute names no context."""
    workdir: str | None = None
    set_timeout_calls: list[int] = field(default_factory=list)
    allow_internet_access: bool = True

    def listed_json(self) -> Event:
        return {
            "templateID": self.template,
            "alias": self.template,
            "sandboxID": self.sandbox_id,
            "clientID": CLIENT_ID,
            "startedAt": _iso(self.started_at),
            "endAt": _iso(self.end_at),
            "cpuCount": 2,
            "memoryMB": 512,
            "diskSizeMB": 2048,
            "metadata": dict(self.metadata),
            "state": "running",
            "envdVersion": ENVD_VERSION,
            "volumeMounts": [],
        }

    def created_json(self) -> Event:
        return {
            "templateID": self.template,
            "sandboxID": self.sandbox_id,
            "alias": self.template,
            "clientID": CLIENT_ID,
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": self.envd_access_token,
            "domain": None,
        }

    def detail_json(self) -> Event:
        return {
            **self.listed_json(),
            "envdAccessToken": self.envd_access_token,
            "domain": None,
        }

    def stop_processes(self) -> None:
        for context in self.contexts.values():
            context.stop()


@dataclass
class RecordedRequest:
    server: str
    """"api", "envd" or "jupyter": the service that answered (after header routing)."""
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lower-cased names."""


@dataclass
class _PlannedFailure:
    status: int
    headers: dict[str, str]


def _new_sandbox_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "i" + "".join(secrets.choice(alphabet) for _ in range(19))


def _normalize_path(path: str) -> str:
    if not path.startswith("/"):
        path = posixpath.join(HOME, path)
    return posixpath.normpath(path).replace("//", "/")


# --------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeE2B, kind: str) -> None:
        self.fake = fake
        self.kind = kind
        self.open_connections: set[socket.socket] = set()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # ----- plumbing

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.fake.lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.fake.lock:
            self.server.open_connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        return body

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if body and status != 204:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _api_error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"code": status, "message": message}, headers)

    def _connect_error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"code": code, "message": message})

    def _dispatch(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        body = self._read_body()
        kind = self.server.kind
        if kind != "api":
            target = self.headers.get("E2b-Sandbox-Port")
            if target is not None:
                kind = "jupyter" if target == str(JUPYTER_PORT) else "envd"
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake._record(RecordedRequest(kind, self.command, url.path, query, headers))
        fake._expire_due()
        try:
            if kind == "api":
                self._api(url.path, query, body)
            elif kind == "jupyter":
                self._jupyter(url.path, body)
            else:
                self._envd(url.path, query, body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug or a malformed request: answer 500 rather than hang up
            try:
                self._send(500, f"FakeE2B error: {e!r}".encode(), "text/plain")
            except OSError:
                pass

    # ----- control plane

    def _api(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
        fake = self.server.fake
        key = self.headers.get("X-API-Key", "")
        if not key.startswith("e2b_") or key in fake.rejected_api_keys:
            self._api_error(401, "Invalid API key, please visit https://e2b.dev/docs to get one.")
            return
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] == "v2":
            parts = parts[1:]
        method = self.command
        if parts == ["sandboxes"] and method == "POST":
            self._create(body)
        elif parts == ["sandboxes"] and method == "GET":
            self._list(query)
        elif len(parts) == 2 and parts[0] == "sandboxes" and method == "GET":
            sandbox = fake._running(parts[1])
            if sandbox is None:
                self._api_error(
                    404, f"sandbox \"{parts[1]}\" doesn't exist or you don't have access"
                )
            else:
                self._json(200, sandbox.detail_json())
        elif len(parts) == 2 and parts[0] == "sandboxes" and method == "DELETE":
            if fake.kill_sandbox(parts[1]):
                fake.killed.append(parts[1])
                self._send(204)
            else:
                self._api_error(404, f'sandbox "{parts[1]}" not found')
        elif len(parts) == 3 and parts[0] == "sandboxes" and parts[2] == "timeout":
            self._set_timeout(parts[1], body)
        elif len(parts) == 3 and parts[0] == "sandboxes" and parts[2] == "connect":
            self._connect(parts[1], body)
        else:
            self._api_error(404, f"no route for {method} {path} in the fake")

    def _create(self, body: bytes) -> None:
        fake = self.server.fake
        with fake.lock:
            fake.create_attempts += 1
            planned = (
                fake._planned_create_failures.pop(0) if fake._planned_create_failures else None
            )
        if planned is not None:
            messages = {429: "Rate limit exceeded", 503: "No capacity to place the sandbox"}
            message = messages.get(planned.status, "Planned failure")
            self._api_error(planned.status, message, planned.headers)
            return
        try:
            request = json.loads(body or b"{}")
            template = request["templateID"]
        except (ValueError, KeyError):
            self._api_error(400, "request body must be JSON with a templateID")
            return
        if fake.known_templates is not None and template not in fake.known_templates:
            self._api_error(404, f"template '{template}' not found")
            return
        sandbox = fake.add_sandbox(
            template=template,
            metadata=request.get("metadata") or {},
            timeout=int(request.get("timeout", DEFAULT_SANDBOX_TIMEOUT)),
            env_vars=request.get("envVars") or {},
            envd_access_token=secrets.token_hex(16),
        )
        # Omitted means the internet is on, as E2B has it.
        sandbox.allow_internet_access = bool(request.get("allow_internet_access", True))
        fake.created.append(sandbox.sandbox_id)
        self._json(201, sandbox.created_json())

    def _list(self, query: dict[str, list[str]]) -> None:
        fake = self.server.fake
        wanted = {
            unquote(k): unquote(v)
            for k, v in parse_qsl(query.get("metadata", [""])[0], keep_blank_values=True)
        }
        states = set(",".join(query.get("state", [])).split(",")) - {""}
        with fake.lock:
            matches = [
                s
                for s in fake.sandboxes.values()
                if s.alive
                and (not states or "running" in states)
                and all(s.metadata.get(k) == v for k, v in wanted.items())
                and (not query.get("template") or s.template == query["template"][0])
            ]
        matches.sort(key=lambda s: s.started_at, reverse=query.get("order") == ["desc"])
        start = int(query.get("nextToken", ["0"])[0] or 0)
        limit = int(query.get("limit", ["100"])[0])
        page = matches[start : start + limit]
        headers = {}
        if start + limit < len(matches):
            headers["X-Next-Token"] = str(start + limit)
        self._json(200, [s.listed_json() for s in page], headers)

    def _set_timeout(self, sandbox_id: str, body: bytes) -> None:
        fake = self.server.fake
        try:
            timeout = int(json.loads(body)["timeout"])
        except (ValueError, KeyError, TypeError):
            self._api_error(400, "request body must be JSON with a timeout")
            return
        with fake.lock:
            sandbox = fake._running(sandbox_id)
            if sandbox is not None:
                sandbox.timeout = timeout
                sandbox.end_at = _now() + timedelta(seconds=timeout)
                sandbox.set_timeout_calls.append(timeout)
        if sandbox is None:
            self._api_error(404, f'sandbox "{sandbox_id}" not found')
        else:
            self._send(204)

    def _connect(self, sandbox_id: str, body: bytes) -> None:
        fake = self.server.fake
        timeout = json.loads(body or b"{}").get("timeout", DEFAULT_SANDBOX_TIMEOUT)
        with fake.lock:
            sandbox = fake._running(sandbox_id)
            if sandbox is not None:
                sandbox.end_at = max(sandbox.end_at, _now() + timedelta(seconds=timeout))
        if sandbox is None:
            self._api_error(404, f'sandbox "{sandbox_id}" not found')
        else:
            self._json(200, sandbox.created_json())

    # ----- data plane: shared

    def _target_sandbox(self) -> FakeSandbox | None:
        """The sandbox the proxy headers name; answers 502 like E2B's proxy when it is gone."""
        fake = self.server.fake
        sandbox_id = self.headers.get("E2b-Sandbox-Id") or DEBUG_SANDBOX_ID
        with fake.lock:
            sandbox = fake.sandboxes.get(sandbox_id)
            if sandbox is None and sandbox_id == DEBUG_SANDBOX_ID:
                sandbox = fake.add_sandbox(
                    template="debug", timeout=10**9, sandbox_id=DEBUG_SANDBOX_ID
                )
        if sandbox is None or not sandbox.alive:
            payload = {
                "sandboxId": sandbox_id,
                "message": f"The sandbox {sandbox_id} was not found",
                "code": 502,
            }
            self._json(502, payload)
            return None
        return sandbox

    # ----- envd

    def _envd(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
        sandbox = self._target_sandbox()
        if sandbox is None:
            return
        if path == "/health":
            self._send(204)
            return
        is_rpc = path.startswith("/filesystem.") or path.startswith("/process.")
        token = sandbox.envd_access_token
        if token is not None and self.headers.get("X-Access-Token") != token:
            if is_rpc:
                self._connect_error(401, "unauthenticated", "invalid access token")
            else:
                self._api_error(401, "invalid access token")
            return
        if path == "/files" and self.command == "GET":
            self._read_file(sandbox, query)
        elif path == "/files" and self.command == "POST":
            self._write_files(sandbox, query, body)
        elif path.startswith("/filesystem.Filesystem/"):
            self._filesystem_rpc(sandbox, path.rsplit("/", 1)[1], body)
        elif is_rpc:
            self._connect_error(501, "unimplemented", f"{path} is not implemented by the fake")
        else:
            self._api_error(404, f"no route for {self.command} {path} in the fake")

    def _read_file(self, sandbox: FakeSandbox, query: dict[str, list[str]]) -> None:
        path = _normalize_path(query.get("path", [""])[0])
        with self.server.fake.lock:
            file = sandbox.files.get(path)
            is_dir = path in sandbox.dirs
        if is_dir:
            self._api_error(400, f"path '{path}' is a directory")
        elif file is None:
            self._api_error(404, f"path '{path}' does not exist")
        else:
            self._send(200, file.data, content_type="application/octet-stream")

    def _write_files(self, sandbox: FakeSandbox, query: dict[str, list[str]], body: bytes) -> None:
        content_type = self.headers.get("Content-Type", "")
        query_path = query.get("path", [""])[0]
        if content_type.startswith("multipart/form-data"):
            # One file: `path` is in the query; several: each part's filename is its path.
            uploads = _parse_multipart(content_type, body)
            if query_path and len(uploads) == 1:
                uploads = [(query_path, uploads[0][1])]
        else:
            uploads = [(query_path, body)]
        results = []
        with self.server.fake.lock:
            for raw_path, data in uploads:
                path = _normalize_path(raw_path)
                if not raw_path or path in sandbox.dirs:
                    self._api_error(400, f"cannot write a file at '{raw_path}'")
                    return
                sandbox.files[path] = FakeFile(data, _now())
                parent = posixpath.dirname(path)
                while parent not in sandbox.dirs:
                    sandbox.dirs.add(parent)
                    parent = posixpath.dirname(parent)
                results.append({"name": posixpath.basename(path), "type": "file", "path": path})
        self._json(200, results)

    def _filesystem_rpc(self, sandbox: FakeSandbox, method: str, body: bytes) -> None:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            self._connect_error(400, "invalid_argument", "request is not JSON")
            return
        path = _normalize_path(request.get("path", ""))
        with self.server.fake.lock:
            exists = path in sandbox.files or path in sandbox.dirs
            if method in ("ListDir", "Stat", "Remove") and not exists:
                self._connect_error(404, "not_found", f"path '{path}' does not exist")
            elif method == "ListDir":
                if path not in sandbox.dirs:
                    self._connect_error(400, "invalid_argument", f"path '{path}' is not a dir")
                    return
                depth = max(1, int(request.get("depth") or 1))
                self._json(200, {"entries": _list_entries(sandbox, path, depth)})
            elif method == "Stat":
                self._json(200, {"entry": _entry_json(sandbox, path)})
            elif method == "MakeDir":
                if exists:
                    self._connect_error(409, "already_exists", f"path '{path}' already exists")
                    return
                while path not in sandbox.dirs:
                    sandbox.dirs.add(path)
                    path = posixpath.dirname(path)
                self._json(200, {"entry": _entry_json(sandbox, _normalize_path(request["path"]))})
            elif method == "Remove":
                prefix = path.rstrip("/") + "/"
                for name in [f for f in sandbox.files if f == path or f.startswith(prefix)]:
                    del sandbox.files[name]
                sandbox.dirs -= {d for d in sandbox.dirs if d == path or d.startswith(prefix)}
                self._json(200, {})
            else:
                self._connect_error(501, "unimplemented", f"Filesystem/{method} is not faked")

    # ----- code interpreter

    def _jupyter(self, path: str, body: bytes) -> None:
        sandbox = self._target_sandbox()
        if sandbox is None:
            return
        fake = self.server.fake
        parts = [p for p in path.split("/") if p]
        method = self.command
        if parts == ["health"]:
            self._json(200, "OK")
        elif parts == ["execute"] and method == "POST":
            self._execute(sandbox, body)
        elif parts == ["contexts"] and method == "POST":
            request = json.loads(body or b"{}")
            language = _EXEC_LANGUAGES.get(request.get("language") or "python")
            if language is None:
                self._send(
                    400, f"Unsupported language: {request.get('language')}".encode(), "text/plain"
                )
                return
            with fake.lock:
                created = fake._new_context(sandbox, language, request.get("cwd") or HOME)
            self._json(200, created.to_json())
        elif parts == ["contexts"] and method == "GET":
            with fake.lock:
                fake._default_context(sandbox, "python")
                contexts = [c.to_json() for c in sandbox.contexts.values()]
            self._json(200, contexts)
        elif len(parts) >= 2 and parts[0] == "contexts":
            with fake.lock:
                context = sandbox.contexts.get(parts[1])
                if context is not None and method == "DELETE" and len(parts) == 2:
                    del sandbox.contexts[context.id]
                    for default_language, default_id in list(sandbox.default_contexts.items()):
                        if default_id == context.id:
                            del sandbox.default_contexts[default_language]
            if context is None:
                self._send(404, f"Context {parts[1]} not found".encode(), "text/plain")
            elif method == "DELETE" and len(parts) == 2:
                context.stop()
                self._send(204)
            elif method == "POST" and parts[2:] == ["restart"]:
                context.stop()
                context.execution_count = 0
                self._send(204)
            else:
                self._send(404, b"Not Found", "text/plain")
        else:
            self._send(404, b"Not Found", "text/plain")

    def _execute(self, sandbox: FakeSandbox, body: bytes) -> None:
        fake = self.server.fake
        token = sandbox.envd_access_token
        if token is not None and self.headers.get("X-Access-Token") != token:
            self._send(401, b"invalid access token", "text/plain")
            return
        request = json.loads(body or b"{}")
        code = request.get("code") or ""
        context_id, language = request.get("context_id"), request.get("language")
        if context_id and language:
            self._send(400, b"Only one of context_id or language can be provided", "text/plain")
            return
        with fake.lock:
            if context_id:
                context = sandbox.contexts.get(context_id)
                if context is None:
                    self._send(404, f"Context {context_id} not found".encode(), "text/plain")
                    return
            else:
                normalized = _EXEC_LANGUAGES.get(language or "python")
                if normalized is None:
                    self._send(400, f"Unsupported language: {language}".encode(), "text/plain")
                    return
                context = fake._default_context(sandbox, normalized)
            context.execution_count += 1
            count = context.execution_count
            cwd = fake._context_dir(sandbox, context)
        env = {**os.environ, **sandbox.env_vars, **(request.get("env_vars") or {})}
        png = PNG_MARKER in code
        if context.language == "python":
            self._execute_python(sandbox, context, code, request, cwd, count, png)
        else:
            argv = (
                ["node", "-e", code] if context.language == "javascript" else ["bash", "-c", code]
            )
            run = _ProcessRun(argv, cwd, env, png)
            self._stream(run.events, interrupt=run.kill, kill=run.kill, count=count)

    def _execute_python(
        self,
        sandbox: FakeSandbox,
        context: FakeContext,
        code: str,
        request: Event,
        cwd: str,
        count: int,
        png: bool,
    ) -> None:
        with self.server.fake.lock:
            if context.kernel is None or context.kernel.dead:
                context.kernel = _PythonKernel(cwd, {**os.environ, **sandbox.env_vars})
            kernel = context.kernel
        with kernel.lock:
            try:
                kernel.submit(
                    {
                        "code": code,
                        "n": count,
                        "env_vars": request.get("env_vars") or {},
                        "png": FAKE_PNG_B64 if png else None,
                    }
                )
            except OSError:
                kernel.kill()
            self._stream(kernel.events, interrupt=kernel.interrupt, kill=kernel.kill, count=count)

    def _stream(
        self,
        events: queue.Queue[Event],
        interrupt: Callable[[], None],
        kill: Callable[[], None],
        count: int,
    ) -> None:
        """Forward events as NDJSON until the run ends; interrupt the run if the client leaves."""
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        connected = True
        give_up_at: float | None = None

        def disconnected() -> None:
            nonlocal connected, give_up_at
            connected = False
            interrupt()
            give_up_at = time.monotonic() + _INTERRUPT_GRACE_SECONDS

        while True:
            try:
                event = events.get(timeout=0.1)
            except queue.Empty:
                if connected and self._client_gone():
                    disconnected()
                if give_up_at is not None and time.monotonic() > give_up_at:
                    kill()
                    return
                continue
            if event["type"] == "__done__":
                break
            dead = event["type"] == "__dead__"
            if dead:
                message = "The kernel process exited"
                event = {
                    "type": "error",
                    "name": "DeadKernelError",
                    "value": message,
                    "traceback": message,
                }
            if connected:
                try:
                    self._chunk(event)
                except OSError:
                    disconnected()
            if dead:
                break
        if connected:
            try:
                self._chunk({"type": "number_of_executions", "execution_count": count})
                self._chunk({"type": "end_of_execution"})
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass

    def _chunk(self, event: Event) -> None:
        data = (json.dumps(event) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


def _parse_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(filename, data) of each part of a multipart/form-data body."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        filename = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition"):
                for param in line.split(";")[1:]:
                    name, _, value = param.strip().partition("=")
                    if name == "filename":
                        filename = value.strip('"')
        parts.append((filename, data[:-2] if data.endswith(b"\r\n") else data))
    return parts


def _entry_json(sandbox: FakeSandbox, path: str) -> Event:
    is_dir = path in sandbox.dirs
    file = sandbox.files.get(path)
    modified = file.modified if file is not None else sandbox.started_at
    return {
        "name": posixpath.basename(path) or "/",
        "type": "FILE_TYPE_DIRECTORY" if is_dir else "FILE_TYPE_FILE",
        "path": path,
        "size": str(0 if file is None else len(file.data)),  # int64 is a string in proto JSON
        "mode": 0o755 if is_dir else 0o644,
        "permissions": "drwxr-xr-x" if is_dir else "-rw-r--r--",
        "owner": "user",
        "group": "user",
        "modifiedTime": _iso(modified),
    }


def _list_entries(sandbox: FakeSandbox, path: str, depth: int) -> list[Event]:
    prefix = path.rstrip("/") + "/"
    names = [p for p in (*sandbox.dirs, *sandbox.files) if p.startswith(prefix) and p != path]
    return [_entry_json(sandbox, p) for p in sorted(names) if p[len(prefix) :].count("/") < depth]


# --------------------------------------------------------------------------- the fake


class FakeE2B:
    """The fake E2B cloud. Use as a context manager, or call `start()` / `stop()`.

    Inspection: `sandboxes` (id -> `FakeSandbox`, killed ones stay with ``alive=False``),
    `created` / `killed` (sandbox ids, in order, as done through the API), `create_attempts`
    (every POST /v2/sandboxes, including refused ones) and `requests` (every request seen).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        api_port: int = API_PORT,
        envd_port: int = ENVD_PORT,
        jupyter_port: int = JUPYTER_PORT,
        known_templates: set[str] | None = None,
    ) -> None:
        self.host = host
        self.ports = {"api": api_port, "envd": envd_port, "jupyter": jupyter_port}
        self.known_templates = known_templates
        """When set, creating a sandbox from any other template answers 404."""
        self.rejected_api_keys: set[str] = set()
        """Keys answered with 401 although they start with "e2b_"."""
        self.auto_expire = True
        """Stop sandboxes whose timeout has passed, like E2B does."""
        self.lock = threading.RLock()
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.created: list[str] = []
        self.killed: list[str] = []
        self.create_attempts = 0
        self.requests: list[RecordedRequest] = []
        self._planned_create_failures: list[_PlannedFailure] = []
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._tmp: str | None = None

    # ----- lifecycle

    def start(self) -> FakeE2B:
        if self._servers:
            return self
        self._tmp = tempfile.mkdtemp(prefix="fake-e2b-")
        for kind, port in self.ports.items():
            try:
                server = _Server((self.host, port), self, kind)
            except OSError as e:
                self.stop()
                raise RuntimeError(
                    f"FakeE2B cannot listen on {self.host}:{port} (fake {kind} server): {e}. "
                    "The E2B SDK uses fixed ports in debug mode, so the port must be free; "
                    "another process or an un-stopped FakeE2B holds it."
                ) from e
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
            with self.lock:
                connections = list(server.open_connections)
            for connection in connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()
        with self.lock:
            for sandbox in self.sandboxes.values():
                sandbox.stop_processes()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> FakeE2B:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----- configuration helpers

    @property
    def api_url(self) -> str:
        return f"http://localhost:{self.ports['api']}"

    @property
    def sandbox_url(self) -> str:
        return f"http://localhost:{self.ports['envd']}"

    def sdk_env(self, *, debug: bool, api_key: str = "e2b_test") -> dict[str, str]:
        """Environment variables that point the SDK at the fake.

        ``debug=True``: ``E2B_DEBUG=true`` (no control-plane calls for create/kill/set_timeout).
        ``debug=False``: ``E2B_API_URL`` + ``E2B_SANDBOX_URL`` (everything reaches the fake).
        Remove the variables of the other mode (``E2B_DEBUG``, ``E2B_API_URL``,
        ``E2B_SANDBOX_URL``, ``E2B_DOMAIN``) from the environment before applying these.
        """
        if debug:
            return {"E2B_DEBUG": "true", "E2B_API_KEY": api_key}
        return {
            "E2B_DEBUG": "false",
            "E2B_API_KEY": api_key,
            "E2B_API_URL": self.api_url,
            "E2B_SANDBOX_URL": self.sandbox_url,
        }

    def rate_limit_next(
        self, n: int = 1, *, retry_after: int | None = None, should_retry: bool | None = None
    ) -> None:
        """Answer the next `n` POST /v2/sandboxes with 429.

        The SDK's transport retries a 429 itself (3 retries by default, exponential backoff
        from 0.1 s, or `Retry-After` seconds) before raising, so `n` <= 3 ends in a success.
        """
        self.fail_create_next(n, 429, retry_after=retry_after, should_retry=should_retry)

    def fail_create_next(
        self,
        n: int,
        status: int,
        *,
        retry_after: int | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """Answer the next `n` POST /v2/sandboxes with `status` (e.g. 429, 503, 500)."""
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if should_retry is not None:
            headers["Should-Retry"] = "true" if should_retry else "false"
        with self.lock:
            self._planned_create_failures.extend(_PlannedFailure(status, headers) for _ in range(n))

    def add_sandbox(
        self,
        template: str = "code-interpreter-v1",
        metadata: dict[str, str] | None = None,
        timeout: int = DEFAULT_SANDBOX_TIMEOUT,
        env_vars: dict[str, str] | None = None,
        envd_access_token: str | None = None,
        sandbox_id: str | None = None,
    ) -> FakeSandbox:
        """Register a running sandbox directly (e.g. to seed `list` in debug mode)."""
        with self.lock:
            sandbox = FakeSandbox(
                sandbox_id=sandbox_id or _new_sandbox_id(),
                template=template,
                metadata=dict(metadata or {}),
                timeout=timeout,
                env_vars=dict(env_vars or {}),
                envd_access_token=envd_access_token,
            )
            sandbox.end_at = sandbox.started_at + timedelta(seconds=timeout)
            self.sandboxes[sandbox.sandbox_id] = sandbox
            return sandbox

    def kill_sandbox(self, sandbox_id: str, reason: str = "killed") -> bool:
        """Stop a running sandbox (as DELETE or a timeout would); False if it is not running."""
        with self.lock:
            sandbox = self._running(sandbox_id)
            if sandbox is None:
                return False
            sandbox.alive = False
            sandbox.end_reason = reason
        sandbox.stop_processes()
        return True

    def alive_ids(self) -> list[str]:
        with self.lock:
            return [s.sandbox_id for s in self.sandboxes.values() if s.alive]

    # ----- internals used by the handler

    def _record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def _running(self, sandbox_id: str) -> FakeSandbox | None:
        sandbox = self.sandboxes.get(sandbox_id)
        return sandbox if sandbox is not None and sandbox.alive else None

    def _expire_due(self) -> None:
        if not self.auto_expire:
            return
        now = _now()
        with self.lock:
            due = [s.sandbox_id for s in self.sandboxes.values() if s.alive and s.end_at <= now]
        for sandbox_id in due:
            self.kill_sandbox(sandbox_id, reason="timeout")

    def _new_context(self, sandbox: FakeSandbox, language: str, cwd: str) -> FakeContext:
        context = FakeContext(id=str(uuid.uuid4()), language=language, cwd=cwd)
        sandbox.contexts[context.id] = context
        return context

    def _default_context(self, sandbox: FakeSandbox, language: str) -> FakeContext:
        context_id = sandbox.default_contexts.get(language)
        if context_id is None or context_id not in sandbox.contexts:
            context = self._new_context(sandbox, language, HOME)
            sandbox.default_contexts[language] = context.id
            return context
        return sandbox.contexts[context_id]

    def _context_dir(self, sandbox: FakeSandbox, context: FakeContext) -> str:
        """A real directory standing in for the context's cwd (the in-memory files are not there)."""
        if sandbox.workdir is None:
            assert self._tmp is not None
            sandbox.workdir = tempfile.mkdtemp(prefix=f"{sandbox.sandbox_id}-", dir=self._tmp)
        path = os.path.join(sandbox.workdir, context.cwd.lstrip("/"))
        os.makedirs(path, exist_ok=True)
        return path
