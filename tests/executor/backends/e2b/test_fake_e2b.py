"""The real E2B SDK (`e2b_code_interpreter.AsyncSandbox`) against `FakeE2B`.

Two modes (fixtures in conftest.py):

* `e2b_debug` -- `E2B_DEBUG=true`, as the SDK's debug mode: the data plane (run_code, contexts,
  files) and `list` reach the fake, but the SDK itself skips the control-plane calls of create,
  kill and set_timeout (create returns the fixed id "debug_sandbox_id").
* `e2b_api` -- `E2B_API_URL` / `E2B_SANDBOX_URL` at the fake: every call reaches it, so this is
  the mode for lifecycle, listing, rate limiting and auth tests.
"""

import base64
import shutil
import time
from typing import Any

import pytest
from e2b import (
    AuthenticationException,
    FileNotFoundException,
    FileType,
    NotFoundException,
    RateLimitException,
    SandboxNotFoundException,
    SandboxNotRunningException,
    SandboxQuery,
    TimeoutException,
)
from e2b.sandbox.sandbox_api import SandboxInfo
from e2b_code_interpreter import AsyncSandbox, ExecutionError, OutputMessage

from tests.executor.backends.e2b.fake_e2b import DEBUG_SANDBOX_ID, FAKE_PNG, FakeE2B

pytestmark = pytest.mark.anyio

TEMPLATE = "code-interpreter-v1"


async def list_all(query: SandboxQuery, **opts: Any) -> list[SandboxInfo]:
    paginator = AsyncSandbox.list(query=query, **opts)
    items: list[SandboxInfo] = []
    while paginator.has_next:
        items.extend(await paginator.next_items())
    return items


# --------------------------------------------------------------------------- debug mode


async def test_debug_mode_create_kill_and_set_timeout_skip_the_api(e2b_debug: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE, metadata={"k": "v"}, timeout=60)
    assert sandbox.sandbox_id == DEBUG_SANDBOX_ID
    await sandbox.set_timeout(120)
    assert await sandbox.kill() is True
    assert await AsyncSandbox.kill(sandbox.sandbox_id) is True
    assert e2b_debug.created == [] and e2b_debug.killed == []
    assert [r for r in e2b_debug.requests if r.server == "api"] == []


async def test_run_code_streams_output_in_order(e2b_debug: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    stdout: list[tuple[float, str]] = []
    stderr: list[str] = []
    code = (
        "import sys, time\n"
        "print('one')\n"
        "print('warn', file=sys.stderr)\n"
        "print('two')\n"
        "time.sleep(0.5)\n"
        "print('three')\n"
    )

    def on_stdout(message: OutputMessage) -> None:
        stdout.append((time.monotonic(), message.line))

    started = time.monotonic()
    execution = await sandbox.run_code(
        code, language="python", on_stdout=on_stdout, on_stderr=lambda m: stderr.append(m.line)
    )
    finished = time.monotonic()

    assert [line for _, line in stdout] == ["one\n", "two\n", "three\n"]
    assert stderr == ["warn\n"]
    assert execution.logs.stdout == ["one\n", "two\n", "three\n"]
    assert execution.logs.stderr == ["warn\n"]
    assert execution.error is None and execution.results == []
    # Streamed: the first line arrived well before the cell finished.
    assert stdout[0][0] - started < finished - started - 0.3


async def test_python_state_persists_and_last_expression_is_the_result(
    e2b_debug: FakeE2B,
) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    first = await sandbox.run_code("x = 1")
    assert first.results == [] and first.text is None
    second = await sandbox.run_code("x + 1")
    assert second.text == "2"
    assert [r.is_main_result for r in second.results] == [True]
    assert second.execution_count == 2
    assert (await sandbox.run_code("'a' * 2")).text == "'aa'"


async def test_exception_comes_back_as_execution_error(e2b_debug: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    errors: list[ExecutionError] = []
    execution = await sandbox.run_code("print('before')\n1 / 0", on_error=errors.append)
    assert execution.error is not None
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert "ZeroDivisionError: division by zero" in execution.error.traceback
    assert errors == [execution.error]
    assert execution.logs.stdout == ["before\n"]
    syntax = await sandbox.run_code("def (")
    assert syntax.error is not None and syntax.error.name == "SyntaxError"


async def test_png_display_result(e2b_debug: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    execution = await sandbox.run_code("#FAKE_PNG\n40 + 2")
    display, main = execution.results
    assert display.is_main_result is False
    assert display.png is not None and base64.b64decode(display.png) == FAKE_PNG
    assert FAKE_PNG.startswith(b"\x89PNG\r\n\x1a\n")
    assert "png" in display.formats()
    assert main.is_main_result is True and execution.text == "42"


async def test_bash_context(e2b_debug: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    context = await sandbox.create_code_context(language="bash")
    assert context.language == "bash" and context.cwd == "/home/user" and context.id
    execution = await sandbox.run_code("echo hi; echo $((1 + 2)); echo oops >&2", context=context)
    assert execution.logs.stdout == ["hi\n", "3\n"]
    assert execution.logs.stderr == ["oops\n"]
    assert execution.error is None
    failed = await sandbox.run_code("exit 3", context=context)
    assert failed.error is not None and "3" in failed.error.value

    assert context.id in [c.id for c in await sandbox.list_code_contexts()]
    await sandbox.remove_code_context(context)
    assert context.id not in [c.id for c in await sandbox.list_code_contexts()]
    with pytest.raises(NotFoundException):
        await sandbox.run_code("echo gone", context=context)


async def test_python_contexts_are_separate(e2b_debug: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    context = await sandbox.create_code_context(language="python")
    await sandbox.run_code("x = 'default'")
    await sandbox.run_code("x = 'own'", context=context)
    assert (await sandbox.run_code("x")).text == "'default'"
    assert (await sandbox.run_code("x", context=context)).text == "'own'"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_javascript(e2b_debug: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    execution = await sandbox.run_code("console.log(6 * 7)", language="javascript")
    assert execution.logs.stdout == ["42\n"]


async def test_run_code_timeout_interrupts_the_cell(e2b_debug: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    await sandbox.run_code("kept = 7")
    with pytest.raises(TimeoutException):
        await sandbox.run_code("import time; time.sleep(10)", timeout=0.5)
    # The fake interrupted the cell (KeyboardInterrupt); the namespace survived.
    assert (await sandbox.run_code("kept")).text == "7"


async def test_files_write_read_list(e2b_debug: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    info = await sandbox.files.write("/home/user/data/a.bin", b"\x00\x01binary")
    assert info.path == "/home/user/data/a.bin" and info.name == "a.bin"
    await sandbox.files.write("notes.txt", "relative to home")

    assert await sandbox.files.read("/home/user/data/a.bin", format="bytes") == b"\x00\x01binary"
    assert await sandbox.files.read("/home/user/notes.txt") == "relative to home"

    entries = {e.name: e for e in await sandbox.files.list("/home/user")}
    assert entries["data"].type == FileType.DIR
    assert entries["notes.txt"].type == FileType.FILE
    assert entries["notes.txt"].size == len("relative to home")
    [binary] = await sandbox.files.list("/home/user/data")
    assert (binary.name, binary.path, binary.size) == ("a.bin", "/home/user/data/a.bin", 8)

    with pytest.raises(FileNotFoundException):
        await sandbox.files.read("/home/user/missing.txt")
    with pytest.raises(FileNotFoundException):
        await sandbox.files.list("/nowhere")
    assert e2b_debug.sandboxes[DEBUG_SANDBOX_ID].files["/home/user/notes.txt"].data == (
        b"relative to home"
    )


async def test_debug_mode_list_by_metadata(e2b_debug: FakeE2B) -> None:
    seeded = e2b_debug.add_sandbox(metadata={"owner": "exec-1"})
    e2b_debug.add_sandbox(metadata={"owner": "other"})
    found = await list_all(SandboxQuery(metadata={"owner": "exec-1"}))
    assert [s.sandbox_id for s in found] == [seeded.sandbox_id]


# --------------------------------------------------------------------------- API mode


async def test_create_sends_template_metadata_timeout_and_api_key(e2b_api: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(
        template=TEMPLATE, api_key="e2b_test", metadata={"owner": "exec-1"}, timeout=120
    )
    assert e2b_api.created == [sandbox.sandbox_id]
    fake_sandbox = e2b_api.sandboxes[sandbox.sandbox_id]
    assert fake_sandbox.template == TEMPLATE
    assert fake_sandbox.metadata == {"owner": "exec-1"}
    assert fake_sandbox.timeout == 120 and fake_sandbox.alive
    [create] = [r for r in e2b_api.requests if r.server == "api"]
    assert (create.method, create.path) == ("POST", "/v2/sandboxes")
    assert create.headers["x-api-key"] == "e2b_test"


async def test_data_plane_through_sandbox_url(e2b_api: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    assert (await sandbox.run_code("21 * 2")).text == "42"
    await sandbox.files.write("/tmp/x.txt", "x")
    assert await sandbox.files.read("/tmp/x.txt") == "x"
    token = e2b_api.sandboxes[sandbox.sandbox_id].envd_access_token
    [execute] = [r for r in e2b_api.requests if r.path == "/execute"]
    assert execute.server == "jupyter"
    assert execute.headers["e2b-sandbox-id"] == sandbox.sandbox_id
    assert execute.headers["x-access-token"] == token


async def test_set_timeout(e2b_api: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE, timeout=60)
    await sandbox.set_timeout(600)
    assert e2b_api.sandboxes[sandbox.sandbox_id].timeout == 600
    await AsyncSandbox.set_timeout(sandbox.sandbox_id, 30)
    assert e2b_api.sandboxes[sandbox.sandbox_id].set_timeout_calls == [600, 30]


async def test_list_by_metadata_paginates(e2b_api: FakeE2B) -> None:
    mine = [
        (await AsyncSandbox.create(template=TEMPLATE, metadata={"owner": "me", "n": str(i)}))
        for i in range(3)
    ]
    await AsyncSandbox.create(template=TEMPLATE, metadata={"owner": "someone else"})
    found = await list_all(SandboxQuery(metadata={"owner": "me"}), limit=2, api_key="e2b_test")
    assert sorted(s.sandbox_id for s in found) == sorted(s.sandbox_id for s in mine)
    assert {s.metadata["owner"] for s in found} == {"me"}
    assert {s.template_id for s in found} == {TEMPLATE}
    pages = [r for r in e2b_api.requests if r.path == "/v2/sandboxes" and r.method == "GET"]
    assert len(pages) == 2  # limit=2 over 3 matches: the SDK followed x-next-token once


async def test_kill(e2b_api: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE, metadata={"owner": "me"})
    assert await sandbox.kill() is True
    assert e2b_api.killed == [sandbox.sandbox_id]
    assert e2b_api.sandboxes[sandbox.sandbox_id].alive is False
    assert await list_all(SandboxQuery(metadata={"owner": "me"})) == []
    assert await AsyncSandbox.kill(sandbox.sandbox_id, api_key="e2b_test") is False
    assert await sandbox.is_running() is False
    with pytest.raises(TimeoutException):
        await sandbox.run_code("1")
    with pytest.raises(SandboxNotRunningException):
        await sandbox.files.read("/tmp/x")


async def test_missing_sandbox(e2b_api: FakeE2B) -> None:
    assert await AsyncSandbox.kill("nope", api_key="e2b_test") is False
    with pytest.raises(SandboxNotFoundException):
        await AsyncSandbox.set_timeout("nope", 30)
    with pytest.raises(SandboxNotFoundException):
        await AsyncSandbox.get_info("nope")
    with pytest.raises(SandboxNotFoundException):
        await AsyncSandbox.connect("nope")


async def test_rate_limited_create_is_retried_by_the_sdk(e2b_api: FakeE2B) -> None:
    e2b_api.rate_limit_next(2)
    sandbox = await AsyncSandbox.create(template=TEMPLATE)
    assert e2b_api.create_attempts == 3
    assert e2b_api.created == [sandbox.sandbox_id]


async def test_rate_limited_create_raises_once_retries_are_spent(e2b_api: FakeE2B) -> None:
    e2b_api.rate_limit_next(1)
    with pytest.raises(RateLimitException) as raised:
        await AsyncSandbox.create(template=TEMPLATE, retries=0)
    assert raised.value.status_code == 429
    e2b_api.rate_limit_next(4)
    with pytest.raises(RateLimitException):
        await AsyncSandbox.create(template=TEMPLATE)  # default: 3 retries, 4 attempts
    assert e2b_api.create_attempts == 5 and e2b_api.created == []
    await AsyncSandbox.create(template=TEMPLATE)
    assert len(e2b_api.created) == 1


async def test_bad_api_key_is_rejected(e2b_api: FakeE2B) -> None:
    with pytest.raises(AuthenticationException):
        await AsyncSandbox.create(template=TEMPLATE, api_key="not-an-e2b-key")
    with pytest.raises(AuthenticationException):
        await list_all(SandboxQuery(), api_key="not-an-e2b-key")
    assert e2b_api.created == []


async def test_sandbox_expires_after_its_timeout(e2b_api: FakeE2B) -> None:
    sandbox = await AsyncSandbox.create(template=TEMPLATE, timeout=1)
    e2b_api.sandboxes[sandbox.sandbox_id].end_at = e2b_api.sandboxes[sandbox.sandbox_id].started_at
    assert await sandbox.is_running() is False
    assert e2b_api.sandboxes[sandbox.sandbox_id].end_reason == "timeout"


def test_busy_port_fails_clearly(fake_e2b: FakeE2B) -> None:
    with pytest.raises(RuntimeError, match="cannot listen on 127.0.0.1:3000"):
        FakeE2B().start()
