"""LocalSandbox: output, exit codes, errors, session state, timeouts and files, per language."""

import asyncio
import time
from pathlib import Path

import anyio
import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.sandbox import LocalSandbox
from executor.errors import FileNotFound, InvalidRequest, SandboxFailure
from schemas.languages import Language

from ._helpers import ok, pid_exists, read_bytes, run, wait_gone
from .conftest import own_processes

pytestmark = pytest.mark.anyio


# --- Python ---


async def test_python_print(py: LocalSandbox) -> None:
    outcome = await run(py, "print('hello')\nprint('world')")
    assert ok(outcome) == "hello\nworld\n"
    assert outcome.stderr.text() == ""
    assert outcome.value is None


async def test_python_last_expression_value(py: LocalSandbox) -> None:
    outcome = await run(py, "x = 20\nx * 2 + 2")
    ok(outcome)
    assert outcome.value == "42"
    outcome = await run(py, "'ab' * 2")
    assert outcome.value == "'abab'"
    # A statement last, or an expression that is None, gives no value.
    assert (await run(py, "y = 1")).value is None
    assert (await run(py, "None")).value is None


async def test_python_exception(py: LocalSandbox) -> None:
    outcome = await run(py, "a = 1\nb = 0\nresult = a / b\n")
    assert outcome.exit_code == 1
    assert outcome.error is not None
    assert outcome.error.name == "ZeroDivisionError"
    assert outcome.error.value == "division by zero"
    tb = outcome.error.traceback
    assert "line 3" in tb
    assert "result = a / b" in tb  # the cell's source line is shown
    assert "python_runner" not in tb  # the runner's own frames are hidden


async def test_python_exception_in_function_names_both_lines(py: LocalSandbox) -> None:
    outcome = await run(py, "def f():\n    raise ValueError('bad input')\n\nf()\n")
    assert outcome.error is not None
    assert outcome.error.name == "ValueError"
    assert outcome.error.value == "bad input"
    assert "line 4" in outcome.error.traceback
    assert "line 2" in outcome.error.traceback
    assert "raise ValueError('bad input')" in outcome.error.traceback


async def test_python_syntax_error(py: LocalSandbox) -> None:
    outcome = await run(py, "print('before')\ndef f(:\n    pass\n")
    assert outcome.exit_code != 0
    assert outcome.error is not None
    assert outcome.error.name == "SyntaxError"
    assert "line 2" in outcome.error.traceback
    # Nothing of the cell ran.
    assert outcome.stdout.text() == ""


async def test_python_sys_exit(py: LocalSandbox) -> None:
    outcome = await run(py, "import sys\nprint('bye')\nsys.exit(3)")
    assert outcome.exit_code == 3
    assert outcome.error is None
    assert outcome.stdout.text() == "bye\n"
    # sys.exit in a session ends the cell, not the runner.
    assert py.alive
    assert ok(await run(py, "print('still here')")) == "still here\n"


@pytest.mark.usefixtures("bwrap_only")
async def test_python_hard_exit_restarts_runner(py: LocalSandbox) -> None:
    ok(await run(py, "x = 1"))
    outcome = await run(py, "import os\nos._exit(5)")
    assert outcome.exit_code == 5
    assert outcome.state_lost
    assert py.alive
    outcome = await run(py, "'x' in globals()")
    assert outcome.value == "False"


async def test_python_closing_stdout_does_not_wedge_session(py: LocalSandbox) -> None:
    await run(py, "import os\nos.close(1)")
    start = time.monotonic()
    outcome = await run(py, "print('next')")
    elapsed = time.monotonic() - start
    if not outcome.state_lost and outcome.stdout.text() != "next\n":
        outcome = await run(py, "print('next')")
    assert elapsed < 1.0
    assert outcome.stdout.text() == "next\n"


async def test_python_stderr(py: LocalSandbox) -> None:
    outcome = await run(py, "import sys\nprint('out')\nprint('oops', file=sys.stderr)")
    assert ok(outcome) == "out\n"
    assert outcome.stderr.text() == "oops\n"


async def test_python_non_utf8_output_replaced(py: LocalSandbox) -> None:
    outcome = await run(py, "import sys; sys.stdout.buffer.write(b'\\xff\\xfeok\\n')")
    ok(outcome)
    assert outcome.stdout.total_bytes == 5
    assert outcome.stdout.text() == "\ufffd\ufffdok\n"


async def test_python_unicode_output(py: LocalSandbox) -> None:
    outcome = await run(py, "print('h\\u00e9llo \\u4e16\\u754c \\U0001F600')")
    assert ok(outcome) == "h\u00e9llo \u4e16\u754c \U0001f600\n"


async def test_python_env_applied(py: LocalSandbox) -> None:
    code = (
        "import os, subprocess\nprint(os.environ['FOO'])\nsubprocess.run(['sh', '-c', 'echo $FOO'])"
    )
    outcome = await run(py, code, env={"FOO": "bar baz"})
    assert ok(outcome) == "bar baz\nbar baz\n"


async def test_python_output_ordering_and_sentinel_isolated_between_runs(py: LocalSandbox) -> None:
    # Output of one run never leaks into the next one.
    first = await run(py, "import sys\nfor i in range(1000): print(i)\nsys.stderr.write('e1\\n')")
    assert ok(first) == "".join(f"{i}\n" for i in range(1000))
    second = await run(py, "print('second')")
    assert ok(second) == "second\n"
    assert second.stderr.text() == ""


# --- session state ---


async def test_python_state_persists(py: LocalSandbox) -> None:
    ok(await run(py, "import math\nx = 41\ndef f(y):\n    return y + 1\nclass K:\n    v = 7"))
    outcome = await run(py, "f(x), round(math.pi, 2), K.v")
    ok(outcome)
    assert outcome.value == "(42, 3.14, 7)"


async def test_python_top_level_await_state(py: LocalSandbox) -> None:
    ok(await run(py, "import asyncio\nasync def g():\n    await asyncio.sleep(0)\n    return 5"))
    outcome = await run(py, "v = await g()\nv * 2")
    assert outcome.value == "10"
    assert (await run(py, "v")).value == "5"


async def test_javascript_output_and_state(js: LocalSandbox) -> None:
    code = (
        "const a = 1;\n"
        "let b = 2;\n"
        "var c = await Promise.resolve(3);\n"
        "function f(x) { return x * 10; }"
    )
    ok(await run(js, code))
    outcome = await run(js, "const d = await Promise.resolve(a + b + c);\nconsole.log(f(d));")
    assert ok(outcome) == "60\n"
    outcome = await run(js, "console.error('warn'); console.log(d + 1);")
    assert ok(outcome) == "7\n"
    assert outcome.stderr.text() == "warn\n"


async def test_javascript_error(js: LocalSandbox) -> None:
    outcome = await run(js, "console.log('before');\nnull.x;")
    assert outcome.exit_code != 0
    assert outcome.error is not None
    assert outcome.error.name == "TypeError"
    assert outcome.stdout.text() == "before\n"
    # The runner survives a thrown error.
    assert ok(await run(js, "console.log('after')")) == "after\n"


async def test_javascript_env_applied(js: LocalSandbox) -> None:
    outcome = await run(js, "console.log(process.env.FOO)", env={"FOO": "from-env"})
    assert ok(outcome) == "from-env\n"


async def test_bash_cwd_and_exports_persist(sh: LocalSandbox) -> None:
    ok(
        await run(
            sh,
            "mkdir -p sub/dir && cd sub/dir\nexport GREETING=hi\nplain=kept\nf() { echo fn-$1; }",
        )
    )
    outcome = await run(sh, 'pwd; echo "$GREETING" "$plain"; f x; bash -c \'echo child:$GREETING\'')
    assert ok(outcome) == "/home/user/sub/dir\nhi kept\nfn-x\nchild:hi\n"


async def test_c_workspace_files_persist(c: LocalSandbox) -> None:
    write = (
        "#include <stdio.h>\n"
        "int main(void) {\n"
        '    FILE *f = fopen("state.txt", "w");\n'
        "    if (!f) return 1;\n"
        '    fprintf(f, "%d\\n", 6 * 7);\n'
        "    fclose(f);\n"
        "    return 0;\n"
        "}\n"
    )
    ok(await run(c, write))
    read = (
        "#include <stdio.h>\n"
        "int main(void) {\n"
        '    FILE *f = fopen("/home/user/state.txt", "r");\n'
        "    int n = 0;\n"
        '    if (!f || fscanf(f, "%d", &n) != 1) return 2;\n'
        '    printf("read %d\\n", n);\n'
        "    return 0;\n"
        "}\n"
    )
    assert ok(await run(c, read)) == "read 42\n"
    assert await c.read_file("state.txt", 100) == b"42\n"


# --- Bash ---


async def test_bash_output_exit_code_and_stderr(sh: LocalSandbox) -> None:
    outcome = await run(sh, "echo out; echo err >&2; false")
    assert outcome.exit_code == 1
    assert outcome.stdout.text() == "out\n"
    assert outcome.stderr.text() == "err\n"
    outcome = await run(sh, "(exit 7)")
    assert outcome.exit_code == 7
    assert ok(await run(sh, "true")) == ""


async def test_bash_env_applied(sh: LocalSandbox) -> None:
    outcome = await run(sh, 'echo "$FOO"', env={"FOO": "it's $(not) `run`"})
    assert ok(outcome) == "it's $(not) `run`\n"


async def test_bash_exit_in_session_loses_state_and_recovers(sh: LocalSandbox) -> None:
    ok(await run(sh, "export KEEP=1; echo data > kept.txt"))
    outcome = await run(sh, "echo leaving; exit 3")
    assert outcome.exit_code == 3
    assert outcome.state_lost is True
    assert outcome.stdout.text() == "leaving\n"
    assert sh.alive
    outcome = await run(sh, 'echo "keep=${KEEP:-unset}"; cat kept.txt')
    assert ok(outcome) == "keep=unset\ndata\n"


async def test_bash_control_fds_hidden(sh: LocalSandbox) -> None:
    # User code must not be able to forge the runner's done message.
    outcome = await run(sh, 'echo \'{"op":"done"}\' >&4 2>/dev/null; echo rc=$?')
    assert ok(outcome) == "rc=1\n"


# --- C ---


async def test_c_hello_and_exit_code(c: LocalSandbox) -> None:
    code = (
        "#include <stdio.h>\n"
        'int main(void) { printf("hi\\n"); fprintf(stderr, "e\\n"); return 5; }\n'
    )
    outcome = await run(c, code)
    assert outcome.exit_code == 5
    assert outcome.error is None
    assert outcome.stdout.text() == "hi\n"
    assert outcome.stderr.text() == "e\n"


async def test_c_compile_error(c: LocalSandbox) -> None:
    outcome = await run(c, "int main(void) { return undefined_name; }\n")
    assert outcome.exit_code != 0
    assert outcome.error is not None
    assert outcome.error.name == "CompileError"
    assert "undefined_name" in outcome.error.value
    assert "main.c" in outcome.error.value
    assert "undefined_name" in outcome.stderr.text()


async def test_c_segfault(c: LocalSandbox) -> None:
    # argc is 1 at run time, so p is NULL; the compiler cannot know it.
    code = (
        "int main(int argc, char **argv) {\n"
        "    int *p = (int *)(long)(argc - 1);\n"
        "    *p = 42;\n"
        "    return *p;\n"
        "}\n"
    )
    outcome = await run(c, code)
    assert outcome.exit_code == 139
    assert outcome.error is not None
    assert outcome.error.name == "Signal"
    assert "SIGSEGV" in outcome.error.value
    assert c.alive
    assert ok(await run(c, "int main(void) { return 0; }\n")) == ""


# --- timeouts ---


async def test_python_timeout_keeps_state(py: LocalSandbox) -> None:
    ok(await run(py, "before = 'kept'"))
    outcome = await run(py, "while True:\n    pass", timeout=1, keep_state=True)
    assert outcome.timed_out
    assert outcome.exit_code == 124
    assert outcome.error is not None
    assert outcome.error.name == "TimeoutError"
    assert not outcome.state_lost
    outcome = await run(py, "before")
    assert outcome.value == "'kept'"


async def test_python_timeout_without_state_kills_everything(py: LocalSandbox) -> None:
    code = "import subprocess\nsubprocess.Popen(['sleep', '300'])\nwhile True:\n    pass"
    task = asyncio.create_task(py.run(code, env={}, timeout=2, keep_state=False))
    await asyncio.sleep(1.0)
    during = py.process_ids()
    assert len(during) >= own_processes(py) + 1  # the sandbox's own, and sleep
    outcome = await task
    assert outcome.timed_out
    assert outcome.error is not None and outcome.error.name == "TimeoutError"
    assert py.process_ids() == []
    assert wait_gone(during) == []


async def test_bash_timeout_in_session_keeps_files(sh: LocalSandbox) -> None:
    ok(await run(sh, "export V=1; echo data > /home/user/f.txt"))
    outcome = await run(sh, "sleep 300", timeout=1, keep_state=True)
    assert outcome.timed_out
    assert outcome.state_lost is True
    assert outcome.error is not None and outcome.error.name == "TimeoutError"
    assert await sh.read_file("f.txt", 100) == b"data\n"
    assert ok(await run(sh, 'cat f.txt; echo "V=${V:-unset}"')) == "data\nV=unset\n"


async def test_c_timeout_in_session(c: LocalSandbox) -> None:
    outcome = await run(c, "int main(void) { for (;;) {} }\n", timeout=1, keep_state=True)
    assert outcome.timed_out
    assert outcome.error is not None and outcome.error.name == "TimeoutError"
    assert c.alive
    assert ok(await run(c, '#include <stdio.h>\nint main(void) { puts("ok"); }\n')) == "ok\n"


async def test_close_kills_all_processes(py: LocalSandbox) -> None:
    ok(
        await run(
            py, "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)"
        )
    )
    pids = py.process_ids()
    assert len(pids) >= own_processes(py) + 1
    await py.close()
    assert not py.alive
    assert wait_gone(pids) == []
    assert not any(pid_exists(p) for p in pids)


# --- close, cancel, restart ---


def cgroup_dirs(backend: LocalBackend, sandbox: LocalSandbox) -> list[Path]:
    """The cgroup directories of a sandbox, of every generation, that still exist, but for
    those kept empty to hold a later sandbox (a zygote sandbox's, limits.SpareCgroups)."""
    parents = [Path(p) for p in backend.cgroups._parents.values()]
    kept = {
        d
        for handle in backend.spare_cgroups.kept
        if backend.cgroups.pids_of(handle) == []
        for d in handle.dirs
    }
    return [d for parent in parents for d in parent.glob(f"{sandbox.id}-*") if d not in kept]


async def test_closing_during_a_run_ends_the_run_as_killed(
    backend: LocalBackend, make_sandbox
) -> None:  # type: ignore[no-untyped-def]
    for keep_state in (True, False):
        sandbox = await make_sandbox(Language.PYTHON)
        task = asyncio.create_task(
            run(
                sandbox,
                "import time\nprint('started', flush=True)\ntime.sleep(60)",
                keep_state=keep_state,
            )
        )
        await asyncio.sleep(1.0)
        pids = sandbox.process_ids()
        assert len(pids) >= own_processes(sandbox)
        await sandbox.close()
        outcome = await asyncio.wait_for(task, 10)  # an outcome, not an exception
        assert outcome.exit_code == 137
        assert outcome.error is not None and outcome.error.name == "SandboxError"
        assert "closed during the run" in outcome.error.value
        assert not sandbox.alive
        assert wait_gone(pids) == []
        # Closed is for good: nothing starts again, and nothing is left to clean.
        with pytest.raises(SandboxFailure):
            await sandbox.restart()
        with pytest.raises(SandboxFailure):
            await run(sandbox, "1")
        assert sandbox.process_ids() == []
        assert cgroup_dirs(backend, sandbox) == []


async def test_closing_during_a_restart_leaves_nothing_running(backend: LocalBackend) -> None:
    for delay in (0.0, 0.02, 0.05, 0.1, 0.3):
        sandbox = await backend.create(Language.PYTHON)
        restart = asyncio.create_task(sandbox.restart())
        await asyncio.sleep(delay)
        await sandbox.close()
        # Refused once closed, or done before: either way nothing runs after the close.
        (result,) = await asyncio.gather(restart, return_exceptions=True)
        assert result is None or isinstance(result, SandboxFailure), result
        pid = sandbox.pid
        assert pid is None or wait_gone([pid]) == []
        assert sandbox.process_ids() == []
        assert cgroup_dirs(backend, sandbox) == []
        assert not sandbox.alive


@pytest.mark.usefixtures("bwrap_only")
async def test_a_cancelled_run_kills_and_restart_brings_a_fresh_runner(py: LocalSandbox) -> None:
    ok(await run(py, "open('kept.txt', 'w').write('file')\nstate = 1"))
    task = asyncio.create_task(run(py, "import time\ntime.sleep(60)"))
    await asyncio.sleep(0.5)
    pids = py.process_ids()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not py.alive  # at once: the executor restarts it before the next run
    assert wait_gone(pids) == []
    await py.restart()
    assert py.alive
    outcome = await run(py, "print(open('kept.txt').read())\n'state' in globals()")
    assert ok(outcome) == "file\n"
    assert outcome.value == "False"


@pytest.mark.usefixtures("bwrap_only")
async def test_a_run_in_a_cancelled_scope_is_killed_however_often_cancelled(
    py: LocalSandbox,
) -> None:
    # anyio cancels every await inside a cancelled scope again, the cleanup's ones too.
    with anyio.move_on_after(0.5):
        await run(py, "import time\ntime.sleep(60)")
    assert not py.alive
    await py.restart()
    assert ok(await run(py, "print('again')")) == "again\n"


# --- files ---


async def test_file_round_trip(py: LocalSandbox) -> None:
    await py.write_file("data/in.txt", b"hello\n")
    await py.write_file("/home/user/top.bin", bytes(range(256)))
    assert await py.read_file("data/in.txt", 1024) == b"hello\n"
    assert await py.read_file("top.bin", 1024) == bytes(range(256))
    listing = {f.path: f for f in await py.list_files("")}
    assert listing["data"].is_dir
    assert listing["data/in.txt"].size == 6
    assert not listing["data/in.txt"].is_dir
    assert listing["top.bin"].size == 256
    # The sandbox sees the uploaded file and can write files back.
    outcome = await run(
        py, "print(open('data/in.txt').read().strip())\nopen('data/out.txt', 'w').write('back')"
    )
    assert ok(outcome) == "hello\n"
    assert await py.read_file("data/out.txt", 1024) == b"back"
    assert [f.path for f in await py.list_files("data")] == ["data/in.txt", "data/out.txt"]


async def test_read_missing_file(py: LocalSandbox) -> None:
    with pytest.raises(FileNotFound):
        await py.read_file("nope.txt", 100)
    with pytest.raises(FileNotFound):
        await py.list_files("no-such-dir")


async def test_symlink_to_host_file_not_followed(py: LocalSandbox) -> None:
    ok(await run(py, "import os\nos.symlink('/etc/shadow', 'leak')\nos.symlink('/etc', 'etcdir')"))
    with pytest.raises(FileNotFound):
        await py.read_file("leak", 1 << 20)
    with pytest.raises(FileNotFound):
        await py.read_file("etcdir/shadow", 1 << 20)
    with pytest.raises(FileNotFound):
        await py.read_file("etcdir/hostname", 1 << 20)
    with pytest.raises(FileNotFound):
        await py.list_files("etcdir")
    paths = [f.path for f in await py.list_files("")]
    assert "leak" in paths
    assert not any(p.startswith("etcdir/") for p in paths)


async def test_fifo_in_workspace_does_not_hang_host(py: LocalSandbox) -> None:
    ok(await run(py, "import os\nos.mkfifo('pipe')"))
    with anyio.fail_after(5):
        with pytest.raises(FileNotFound):
            await py.read_file("pipe", 100)
        with pytest.raises(InvalidRequest):
            await py.write_file("pipe", b"x")


async def test_symlink_write_does_not_escape(py: LocalSandbox, tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    victim = host_dir / "victim.txt"
    victim.write_text("original")
    ok(
        await run(
            py, f"import os\nos.symlink({str(victim)!r}, 'vf')\nos.symlink({str(host_dir)!r}, 'vd')"
        )
    )
    with pytest.raises(InvalidRequest):
        await py.write_file("vf", b"pwned")
    with pytest.raises(InvalidRequest):
        await py.write_file("vd/new.txt", b"pwned")
    assert read_bytes(victim) == b"original"
    assert sorted(p.name for p in host_dir.iterdir()) == ["victim.txt"]


@pytest.mark.parametrize(
    "path", ["../etc/passwd", "a/../../x", "/etc/passwd", "/home/user/../x", ""]
)
async def test_paths_outside_workspace_rejected(py: LocalSandbox, path: str) -> None:
    with pytest.raises((ValueError, InvalidRequest)):
        await py.read_file(path, 100)
    with pytest.raises((ValueError, InvalidRequest)):
        await py.write_file(path, b"x")


async def test_memory_bytes_reported(py: LocalSandbox) -> None:
    before = await py.memory_bytes()
    assert before is not None and before > 1024 * 1024
    ok(
        await run(
            py, "block = bytearray(64 * 1024 * 1024)\nblock[::4096] = b'x' * len(block[::4096])"
        )
    )
    after = await py.memory_bytes()
    assert after is not None and after > before + 50 * 1024 * 1024


@pytest.mark.parametrize("language", list(Language))
async def test_every_language_starts_and_closes(make_sandbox, language: Language) -> None:  # type: ignore[no-untyped-def]
    sandbox = await make_sandbox(language)
    assert sandbox.alive
    assert sandbox.language is language
    pid = sandbox.pid
    assert pid is not None and pid_exists(pid)
    await sandbox.close()
    assert not sandbox.alive
    assert wait_gone([pid]) == []
