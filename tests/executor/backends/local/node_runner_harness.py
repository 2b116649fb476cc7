"""Drive executor/backends/local/runners/node_runner.js over its fds and check the protocol.

Plain script (stdlib only): python3 tests/executor/backends/local/node_runner_harness.py
Starts `node node_runner.js` with fd 0 = /dev/null, fd 1/2 = pipes, fd 3 = control in, fd 4 =
control out (dup2 in a preexec_fn), sends runs, reads the streams with a
select loop and checks results, sentinel ordering and interrupt handling.
"""

import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
RUNNER = os.path.join(ROOT, "executor", "backends", "local", "runners", "node_runner.js")
NODE = os.environ.get("NODE", "/usr/bin/node")


class Runner:
    def __init__(self, cwd):
        ctrl_r, self.ctrl_w = os.pipe()
        self.done_r, done_w = os.pipe()

        def wire_fds():  # in the child, before exec: put the control pipes on fds 3 and 4
            hi_r = fcntl.fcntl(ctrl_r, fcntl.F_DUPFD, 100)  # first out of the way of 3/4
            hi_w = fcntl.fcntl(done_w, fcntl.F_DUPFD, 100)
            os.dup2(hi_r, 3)  # dup2 makes them inheritable; everything else is close-on-exec
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [NODE, RUNNER],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            preexec_fn=wire_fds,
            close_fds=False,  # would close 3/4 after preexec_fn; other fds are close-on-exec anyway
        )
        os.close(ctrl_r)
        os.close(done_w)
        self.bufs = {"out": b"", "err": b"", "ctl": b""}
        self.fds = {
            self.proc.stdout.fileno(): "out",
            self.proc.stderr.fileno(): "err",
            self.done_r: "ctl",
        }
        for fd in self.fds:
            os.set_blocking(fd, False)

    def _drain(self, name):
        fd = next(f for f, n in self.fds.items() if n == name)
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.bufs[name] += chunk

    def _pump(self, timeout):
        ready, _, _ = select.select(list(self.fds), [], [], timeout)
        names = {self.fds[fd] for fd in ready}
        # Read fd 1/2 before fd 4: anything the runner wrote before its done line is then seen first.
        for name in ("out", "err", "ctl"):
            if name in names or (name != "ctl" and "ctl" in names):
                self._drain(name)

    def next_control(self, timeout=10.0, on_wait=None):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.bufs["ctl"]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no control message")
            if self.proc.poll() is not None:
                raise RuntimeError(f"runner exited with {self.proc.returncode}")
            self._pump(min(left, 0.05))
            if on_wait:
                on_wait()
        line, self.bufs["ctl"] = self.bufs["ctl"].split(b"\n", 1)
        return json.loads(line), self.bufs["out"], self.bufs["err"]

    def run(self, code, env=None, interrupt_after=None, timeout=10.0):
        run_id = uuid.uuid4().hex
        os.write(
            self.ctrl_w,
            (
                json.dumps({"op": "run", "id": run_id, "code": code, "env": env or {}}) + "\n"
            ).encode(),
        )
        start, sent = time.monotonic(), [False]

        def maybe_interrupt():
            if (
                interrupt_after is not None
                and not sent[0]
                and time.monotonic() - start > interrupt_after
            ):
                os.kill(self.proc.pid, signal.SIGINT)
                sent[0] = True

        done, out, err = self.next_control(timeout, maybe_interrupt)
        assert done["op"] == "done" and done["id"] == run_id, done
        sentinel = f"\x1eCE-END:{run_id}\x1f\n".encode()
        # Ordering: the sentinel must already be on fd 1 and fd 2 when done arrives on fd 4.
        assert out.count(sentinel) == 1 and out.endswith(sentinel), (
            "stdout sentinel not before done",
            out[-200:],
        )
        assert err.count(sentinel) == 1 and err.endswith(sentinel), (
            "stderr sentinel not before done",
            err[-200:],
        )
        self.bufs["out"] = self.bufs["err"] = b""
        done["stdout"] = out[: -len(sentinel)].decode()
        done["stderr"] = err[: -len(sentinel)].decode()
        return done

    def close(self):
        os.close(self.ctrl_w)
        return self.proc.wait(5)


RESULTS = []


def check(name, cond, detail=""):
    RESULTS.append((name, bool(cond)))
    print(f"{'PASS' if cond else 'FAIL'}  {name}" + ("" if cond else f"   -> {detail}"))


def main():
    cwd = tempfile.mkdtemp(prefix="node_runner_home_")
    with open(os.path.join(cwd, "helper.js"), "w") as f:
        f.write("module.exports = { twice: (x) => 2 * x };\n")
    r = Runner(cwd)
    msg, _, _ = r.next_control(10)
    check("ready line", msg == {"op": "ready"}, msg)

    d = r.run('console.log("hello"); console.error("oops"); process.stdout.write("raw\\n")')
    check(
        "print output to fd1/fd2",
        d["stdout"] == "hello\nraw\n" and d["stderr"] == "oops\n" and d["exit_code"] == 0,
        d,
    )

    d = r.run("1 + 2")
    check("last expression value", d["value"] == "3" and d["error"] is None, d)
    d = r.run("const decl = 1")
    check("declaration gives null value", d["value"] is None and d["exit_code"] == 0, d)
    d = r.run("{ a: 1, b: [1, 2] }")
    check("object literal cell", d["value"] == "{ a: 1, b: [ 1, 2 ] }", d)
    d = r.run('"s"')
    check("string value inspected", d["value"] == "'s'", d)

    d = r.run(
        "// setup\nconst a = 10;\nlet b = 20;\nvar v = 1;\n"
        "function add(x, y) {\n  // comment\n  return x + y;\n}\nclass P { hi() { return 'hi'; } }\n"
        "add(a, b)\n"
    )
    check("multi-line cell, trailing expression", d["value"] == "30", d)
    d = r.run("add(a, b) + new P().hi() + v")
    check("const/let/var/function/class persist", d["value"] == "'30hi1'", d)

    d = r.run("const r = await new Promise((res) => setTimeout(() => res(42), 50));")
    check("top-level await cell", d["exit_code"] == 0 and d["value"] is None, d)
    d = r.run("r")
    check("top-level await result persists", d["value"] == "42", d)

    d = r.run("throw new TypeError('bad')")
    e = d["error"] or {}
    check(
        "sync throw",
        d["exit_code"] == 1
        and e.get("name") == "TypeError"
        and e.get("value") == "bad"
        and "cell-" in e.get("traceback", "")
        and "node_runner" not in e["traceback"]
        and "node:inspector" not in e["traceback"],
        d,
    )
    d = r.run("async function deep() { await null; throw new RangeError('nope'); }\nawait deep()")
    e = d["error"] or {}
    check(
        "async rejection",
        d["exit_code"] == 1
        and e.get("name") == "RangeError"
        and e.get("value") == "nope"
        and "deep" in e.get("traceback", ""),
        d,
    )
    d = r.run("x = ")
    e = d["error"] or {}
    check("SyntaxError", d["exit_code"] == 1 and e.get("name") == "SyntaxError", d)
    d = r.run("throw 42")
    e = d["error"] or {}
    check(
        "throw 42",
        d["exit_code"] == 1 and e.get("value") == "42" and e.get("name") in ("Error", "Uncaught"),
        d,
    )
    d = r.run("a = 4")
    e = d["error"] or {}
    check(
        "assignment to const is a TypeError",
        d["exit_code"] == 1 and e.get("name") == "TypeError",
        d,
    )
    d = r.run("const bad = undefinedFunction()")
    check("ReferenceError", (d["error"] or {}).get("name") == "ReferenceError", d)
    d = r.run("const bad = 5; bad")
    check("re-running a failed const cell works", d["value"] == "5", d)

    d = r.run("let spin = 0; while (true) { spin++; }", interrupt_after=0.5)
    check(
        "SIGINT during while(true)",
        d["exit_code"] == 1
        and d["error"]
        == {
            "name": "KeyboardInterrupt",
            "value": "execution interrupted (timeout)",
            "traceback": "",
        },
        d,
    )
    d = r.run("[a, b, r, spin > 0]")
    check("state usable after interrupt", d["value"] == "[ 10, 20, 42, true ]", d)

    d = r.run("console.log('before'); await new Promise(() => {})", interrupt_after=0.5)
    check(
        "SIGINT during pending await",
        d["exit_code"] == 1
        and (d["error"] or {}).get("name") == "KeyboardInterrupt"
        and d["stdout"] == "before\n",
        d,
    )
    d = r.run("r + 1")
    check("state usable after abandoned await", d["value"] == "43", d)

    os.kill(r.proc.pid, signal.SIGINT)
    time.sleep(0.3)
    d = r.run("'alive'")
    check(
        "SIGINT while idle ignored",
        r.proc.poll() is None and d["value"] == "'alive'" and d["exit_code"] == 0,
        d,
    )

    d = r.run("setTimeout(() => { throw new Error('later'); }, 50); 'scheduled'")
    check("setTimeout throw: run ok", d["value"] == "'scheduled'", d)
    d = r.run(
        "Promise.reject(new Error('nobody')); await new Promise((res) => setTimeout(res, 200)); 'still here'"
    )
    check(
        "later throw + unhandled rejection do not kill",
        d["value"] == "'still here'"
        and "Uncaught Error: later" in d["stderr"]
        and "Uncaught Error: nobody" in d["stderr"],
        d,
    )

    d = r.run("Promise.resolve(5)")
    check("trailing Promise shown as a Promise (not awaited)", d["value"] == "Promise { 5 }", d)
    d = r.run("new Error('as value')")
    check(
        "Error as value, runner frames stripped",
        re.fullmatch(r"Error: as value\n    at cell-\d+:1:1", d["value"] or ""),
        d,
    )
    d = r.run("Promise.reject(new Error('dropped')); 1")
    check(
        "unhandled rejection reported in the same run's stderr",
        d["value"] == "1" and "Uncaught Error: dropped" in d["stderr"],
        d,
    )

    d = r.run("process.env.FOO + ':' + process.env.NUM", env={"FOO": "bar", "NUM": "7"})
    check("env applied", d["value"] == "'bar:7'", d)

    d = r.run(
        "const path = require('path'); const { twice } = require('./helper'); [path.join('x', 'y'), twice(21)]"
    )
    check("require (built-in and relative to cwd)", d["value"] == "[ 'x/y', 42 ]", d)

    d = r.run("console.log('y'.repeat(300000)); console.error('e'.repeat(300000)); 'big'")
    check(
        "large output flushed before sentinel",
        d["stdout"] == "y" * 300000 + "\n" and d["stderr"] == "e" * 300000 + "\n",
        len(d["stdout"]),
    )

    d = r.run("for (let i = 0; i < 3; i++) console.log('line', i); 'done'")
    check(
        "sentinel after output, before done (checked on every run)",
        d["stdout"] == "line 0\nline 1\nline 2\n",
        d,
    )

    try:
        d = r.run("process.exit(3)")
        check("process.exit ends the runner with its code", False, d)
    except RuntimeError as exc:  # raised by next_control when the runner process is gone
        check("process.exit ends the runner with its code", "exited with 3" in str(exc), exc)


if __name__ == "__main__":
    main()

    # EOF on fd 3 -> exit 0
    r2 = Runner(tempfile.mkdtemp(prefix="node_runner_home_"))
    r2.next_control(10)
    check("EOF on fd 3 exits 0", r2.close() == 0)

    failed = [n for n, ok in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} passed")
    sys.exit(1 if failed else 0)
