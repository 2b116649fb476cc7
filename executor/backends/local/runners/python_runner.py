"""Runner inside a sandbox: runs Python notebook-style, or compiles and runs C.

It speaks the runner protocol described in executor/backends/local/protocol.py (its file
descriptors, messages, sentinels, SIGINT and sizes). Here a done's value is the repr of a Python
cell's last expression and its images are the cell's matplotlib figures; a C run has neither.
Whatever the code does, the runner answers every run with a done that fits the protocol's
limits, and goes on serving: a failure of its own becomes the run's error.
"""

import json
import os
import signal
import sys
import types

# Heavier modules (asyncio alone costs tens of milliseconds) are imported where needed, so
# that a warm sandbox is ready sooner and costs less CPU to start.

CTRL_IN = 3  # protocol.CONTROL_IN_FD (this file runs in the sandbox and cannot import it)
CTRL_OUT = 4  # protocol.CONTROL_OUT_FD
# protocol.CONTROL_LIMIT, ERROR_NAME_LIMIT, TEXT_LIMIT and IMAGES_LIMIT: bytes of JSON text.
CONTROL_LIMIT = 8 * 1024 * 1024
ERROR_NAME_LIMIT = 1024
TEXT_LIMIT = 256 * 1024
IMAGES_LIMIT = 6 * 1024 * 1024
RUNNERS_DIR = os.path.dirname(os.path.abspath(__file__))
MAX_VALUE_CHARS = 100_000
_SIGNAL_NAMES = {s.value: s.name for s in signal.Signals}

_running = False


def _on_sigint(signum: int, frame: object) -> None:
    if _running:
        raise KeyboardInterrupt


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[written:]


def send(message: dict) -> None:
    """Write one control message to the host."""
    _write_all(CTRL_OUT, (json.dumps(message) + "\n").encode())


def _json_size(text: str) -> int:
    return len(json.dumps(text))


def _fit(text: str, budget: int, from_end: bool) -> str:
    """The longest start (or end) of text whose JSON form takes at most budget bytes."""
    count = min(len(text), budget)
    while True:
        piece = text[len(text) - count :] if from_end else text[:count]
        size = _json_size(piece)
        if size <= budget or count == 0:
            return piece
        count = max(0, min(count - 1, count * budget // size))


def clip(text: str, limit: int) -> str:
    """text, cut in the middle with a note when its JSON form is over limit bytes."""
    if len(text) <= limit // 12 or _json_size(text) <= limit:  # 12: the widest JSON escape
        return text
    budget = (limit - 200) // 2  # 200: room for the note
    head = _fit(text, budget, from_end=False)
    tail = _fit(text, budget, from_end=True)
    cut = len(text) - len(head) - len(tail)
    return f"{head}\n[... {cut} of {len(text)} characters cut here ...]\n{tail}"


def safe_str(value: object) -> str:
    """str(value), or a placeholder when the object's __str__ itself fails."""
    try:
        text = str(value)
    except BaseException:  # noqa: BLE001 - the code's __str__ may raise anything
        return f"<{type(value).__name__} that cannot be shown>"
    return text if isinstance(text, str) else ""


def error_value(name: str, value: str, tb: str = "") -> dict:
    """An error object of the protocol, each field within its limit."""
    return {
        "name": clip(name, ERROR_NAME_LIMIT),
        "value": clip(value, TEXT_LIMIT),
        "traceback": clip(tb, TEXT_LIMIT),
    }


def exit_status(code: int) -> int:
    """The status a process exiting with code has (what `python script.py` would give)."""
    return code & 0xFF if -(2**63) <= code < 2**63 else 0xFF


def signal_error(returncode: int) -> tuple[int, dict]:
    """Exit code and error for a process killed by a signal (negative returncode)."""
    signum = -returncode
    name = _SIGNAL_NAMES.get(signum, f"signal {signum}")
    description = signal.strsignal(signum) or name
    return 128 + signum, error_value("Signal", f"killed by {name} ({description})")


class PythonCells:
    """Runs Python cells in one persistent namespace, as a notebook kernel does."""

    def __init__(self) -> None:
        import ast  # noqa: F401  (every cell is parsed: load it before saying ready)
        import linecache  # noqa: F401

        self.module = types.ModuleType("__main__")
        self.module.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = self.module
        self.namespace = self.module.__dict__
        self.count = 0
        self.loop: object = None
        if "" not in sys.path:
            sys.path.insert(0, "")
        sys.path.append(os.path.join(RUNNERS_DIR, "pythonpath"))
        # Where pip installs in the sandbox (PIP_PREFIX: the runtime is read-only), named in
        # PYTHONPATH when the executor allows packages. Made now, so that what a run installs
        # imports in that same run (a directory missing at the first import is never looked
        # at again).
        home = os.path.expanduser("~")
        for path in os.environ.get("PYTHONPATH", "").split(os.pathsep):
            if path.startswith(home + os.sep) and path not in sys.path:
                try:
                    os.makedirs(path, exist_ok=True)
                except OSError:
                    continue
                sys.path.append(path)
        sys.dont_write_bytecode = True

    def _await(self, code: types.CodeType) -> object:
        result = eval(code, self.namespace)
        if code.co_flags & 0x80:  # CO_COROUTINE: the cell used top-level await
            import asyncio

            if self.loop is None:
                self.loop = asyncio.new_event_loop()
            return self.loop.run_until_complete(result)  # type: ignore[attr-defined]
        return result

    def _error(self, exc: BaseException) -> dict:
        """The protocol's error of an exception the cell raised (its message may be huge)."""
        try:
            tb = self._traceback(exc)
        except BaseException:  # noqa: BLE001 - formatting runs the code's __str__ and __repr__
            tb = ""
        return error_value(type(exc).__name__, safe_str(exc), tb)

    def _traceback(self, exc: BaseException) -> str:
        import traceback

        # The runner's own frames (the exec call, the SIGINT handler) are noise to the user.
        frames = [
            frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename != __file__
        ]
        lines = ["Traceback (most recent call last):\n"] if frames else []
        lines += traceback.format_list(frames)
        lines += traceback.format_exception_only(type(exc), exc)
        return "".join(lines)

    def run(self, code: str) -> dict:
        """Run one cell; the outcome as the fields of a done message."""
        import ast
        import linecache

        global _running
        self.count += 1
        filename = f"<cell-{self.count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        outcome: dict = {"exit_code": 0, "error": None, "value": None}
        try:
            tree = ast.parse(code, filename, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            body = compile(tree, filename, "exec", flags=flags)
            tail = compile(last, filename, "eval", flags=flags) if last is not None else None
        except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte in the source
            import traceback

            message = exc.msg if isinstance(exc, SyntaxError) else safe_str(exc)
            tb = "".join(traceback.format_exception_only(type(exc), exc))
            outcome.update(exit_code=1, error=error_value("SyntaxError", str(message), tb))
            return outcome
        except (RecursionError, MemoryError) as exc:  # nested too deep to compile
            name = type(exc).__name__
            outcome.update(exit_code=1, error=error_value(name, safe_str(exc)))
            return outcome
        try:
            _running = True
            self._await(body)
            if tail is not None:
                value = self._await(tail)
                if value is not None:
                    self.namespace["_"] = value
                    text = repr(value)
                    if not isinstance(text, str):  # a __repr__ that returns no str raises above
                        text = ""
                    if len(text) > MAX_VALUE_CHARS:
                        text = text[:MAX_VALUE_CHARS] + f"... [{len(text)} characters in all]"
                    outcome["value"] = text
        except SystemExit as exc:
            code_ = exc.code
            if code_ is None:
                outcome["exit_code"] = 0
            elif isinstance(code_, int):
                outcome["exit_code"] = exit_status(code_)
            else:
                print(safe_str(code_), file=sys.stderr)
                outcome["exit_code"] = 1
        except BaseException as exc:
            outcome.update(exit_code=1, error=self._error(exc))
        finally:
            _running = False
        return outcome

    def images(self) -> list[dict]:
        """Figures made by the last run, as PNG."""
        backend = sys.modules.get("code_exec_mpl_backend")
        if backend is None:
            return []
        import base64

        try:
            pngs = backend.drain()
        except Exception as exc:
            print(f"[code-exec] could not render figures: {safe_str(exc)}", file=sys.stderr)
            return []
        images: list[dict] = []
        total = 0
        for index, png in enumerate(pngs):
            data = base64.b64encode(png).decode()
            if total + len(data) > IMAGES_LIMIT:
                print(
                    f"[code-exec] {len(pngs) - index} of {len(pngs)} figures dropped: the figures"
                    f" of one run may take {IMAGES_LIMIT >> 20} MiB (as base64); show fewer, or"
                    " smaller ones (lower dpi or figsize)",
                    file=sys.stderr,
                )
                break
            images.append({"format": "png", "data": data})
            total += len(data)
        return images


class CPrograms:
    """Compiles each run's code as main.c in the workspace and runs it."""

    source = "main.c"
    binary = "/tmp/.code-exec/main"

    def run(self, code: str) -> dict:
        """Compile, then run; compile errors are told apart from runtime errors."""
        import re
        import subprocess

        global _running
        os.makedirs(os.path.dirname(self.binary), exist_ok=True)
        with open(self.source, "w", encoding="utf-8", errors="replace") as f:
            f.write(code)
        cmd = ["gcc", "-std=gnu17", "-O2", "-Wall", "-o", self.binary, self.source, "-lm"]
        _running = True
        try:
            compiled = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
            diagnostics = compiled.stdout.decode(errors="replace") + compiled.stderr.decode(
                errors="replace"
            )
            if diagnostics:
                sys.stderr.write(diagnostics)
                sys.stderr.flush()
            if compiled.returncode != 0:
                first = next(
                    (ln for ln in diagnostics.splitlines() if "error" in ln),
                    "compilation failed",
                )
                first = re.sub(r"^\S*main\.c:", "main.c:", first)
                return {
                    "exit_code": compiled.returncode,
                    "error": error_value("CompileError", first, diagnostics),
                    "value": None,
                }
            proc = subprocess.Popen([self.binary], stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                returncode = proc.wait()
            except KeyboardInterrupt:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {
                    "exit_code": 130,
                    "error": error_value("KeyboardInterrupt", "execution interrupted"),
                    "value": None,
                }
        except KeyboardInterrupt:
            return {
                "exit_code": 130,
                "error": error_value("KeyboardInterrupt", "execution interrupted"),
                "value": None,
            }
        finally:
            _running = False
        if returncode < 0:
            exit_code, error = signal_error(returncode)
            return {"exit_code": exit_code, "error": error, "value": None}
        return {"exit_code": returncode, "error": None, "value": None}

    def images(self) -> list[dict]:
        """C programs make no figures."""
        return []


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the user's code may have replaced or closed it
            pass


def _apply_env(env: object) -> dict | None:
    """Set the run's environment variables; the run's error when one cannot be set."""
    try:
        for name, value in dict(env or {}).items():
            os.environ[str(name)] = str(value)
    except (ValueError, TypeError) as exc:  # a NUL byte, a lone surrogate, not a mapping
        return {"exit_code": 1, "error": error_value("EnvironmentError", safe_str(exc))}
    return None


def _serve(engine: "PythonCells | CPrograms", message: dict) -> dict:
    """The run's outcome, as the fields of a done; never raises (but KeyboardInterrupt)."""
    try:
        failed = _apply_env(message.get("env"))
        if failed is not None:
            return {"value": None, **failed}
        code = message.get("code")
        return engine.run(code if isinstance(code, str) else "")
    except Exception as exc:  # a failure of the runner itself: the run's error, not its end
        error = error_value("RunnerError", safe_str(exc))
        return {"exit_code": 1, "error": error, "value": None}


def _done(run_id: str, outcome: dict, images: list[dict]) -> bytes:
    """The done line, within the control limit whatever the outcome holds."""
    done = {"op": "done", "id": run_id, "images": images, **outcome}
    line = (json.dumps(done) + "\n").encode()
    if len(line) > CONTROL_LIMIT and images:
        print("[code-exec] the run's figures were dropped: its result was too big", file=sys.stderr)
        return _done(run_id, outcome, [])
    if len(line) > CONTROL_LIMIT:
        error = error_value("RunnerError", "the run's result was too large to send")
        return _done(run_id, {"exit_code": 1, "error": error, "value": None}, [])
    return line


def main() -> None:
    """Serve runs until the host closes the control pipe."""
    mode = sys.argv[1] if len(sys.argv) > 1 else "python"
    signal.signal(signal.SIGINT, _on_sigint)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(encoding="utf-8", errors="backslashreplace", line_buffering=True)
    engine = PythonCells() if mode == "python" else CPrograms()
    control = os.fdopen(CTRL_IN, "rb")
    os.set_inheritable(CTRL_IN, False)
    os.set_inheritable(CTRL_OUT, False)
    # Private copies of stdout and stderr for the sentinels: code that closes or redirects
    # fd 1 or 2 must not leave the host waiting for the end of every later run.
    sentinel_fds = [os.dup(1), os.dup(2)]
    send({"op": "ready"})
    while True:
        try:
            line = control.readline()
        except KeyboardInterrupt:
            continue
        if not line:
            return
        try:
            message = json.loads(line)
            run_id = message["id"]
        except (ValueError, KeyError, TypeError):
            continue  # not a run from the host: there is no one to answer
        if not isinstance(run_id, str):
            continue
        outcome = _serve(engine, message)
        _flush_streams()
        try:
            images = engine.images()
        except KeyboardInterrupt:
            images = []
        try:
            done = _done(run_id, outcome, images)
        except KeyboardInterrupt:
            done = _done(run_id, outcome, [])
        _flush_streams()
        sentinel = f"\x1eCE-END:{run_id}\x1f\n".encode()
        for fd, saved in zip((1, 2), sentinel_fds, strict=True):
            try:
                os.fstat(fd)
            except OSError:  # the cell closed it: reopen it for the next run
                os.dup2(saved, fd)
        for fd in sentinel_fds:
            try:
                _write_all(fd, sentinel)
            except OSError:
                pass
        _write_all(CTRL_OUT, done)


if __name__ == "__main__":
    main()
