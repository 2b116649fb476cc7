"""Contract tests of the E2B backend: the real e2b SDK against FakeE2B on loopback.

The SDK runs in API mode (E2B_API_URL/E2B_SANDBOX_URL pointing at the fake), so that create,
kill, list and set_timeout reach it too (in E2B_DEBUG mode the SDK skips them). Live tests
against the real service run only with E2B_API_KEY set and CODE_EXEC_E2B_LIVE=1.
"""

import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from executor.backends.e2b import TAG, E2BBackend
from executor.config import ExecutorSettings
from executor.core import Executor
from executor.errors import SandboxFailure
from schemas.execution import ExecuteRequest
from schemas.languages import Language
from tests.executor.backends.e2b.fake_e2b import FakeE2B

pytestmark = pytest.mark.anyio

POOLS = {"python": 1, "javascript": 0, "bash": 0, "c": 0}


def _settings(**overrides: object) -> ExecutorSettings:
    values: dict[str, object] = {
        "backend": "e2b",
        "pool_sizes": POOLS,
        "e2b_creates_per_s": 100.0,
        "e2b_executor_name": "test-executor",
        "state_dir": tempfile.mkdtemp(prefix="code-exec-e2b-", dir="/tmp"),
    }
    values.update(overrides)
    return ExecutorSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def executor(e2b_api: FakeE2B) -> AsyncIterator[Executor]:
    executor = Executor(_settings())
    await executor.start()
    yield executor
    await executor.aclose()


async def test_a_stateless_run_uses_a_tagged_sandbox_once_and_kills_it(
    executor: Executor, e2b_api: FakeE2B
) -> None:
    result = await executor.execute(ExecuteRequest(code="print('hi')\n6 * 7"), "u")
    assert (result.stdout, result.value, result.exit_code) == ("hi\n", "42", 0)
    # The used sandbox is killed off the response path: give it a moment.
    for _ in range(100):
        if e2b_api.killed:
            break
        await anyio.sleep(0.05)
    assert len(e2b_api.killed) == 1, "the sandbox of a stateless run must be killed after it"
    assert all(s.metadata.get(TAG) == "test-executor" for s in e2b_api.sandboxes.values())


async def test_errors_are_values_with_name_value_traceback(executor: Executor) -> None:
    result = await executor.execute(ExecuteRequest(code="1/0"), "u")
    assert result.exit_code == 1 and result.error is not None
    assert result.error.name == "ZeroDivisionError"
    assert "division by zero" in result.error.value


async def test_sessions_keep_state_and_extend_the_sandbox_lifetime(
    executor: Executor, e2b_api: FakeE2B
) -> None:
    info = await executor.open_session(Language.PYTHON, "u")
    sid = info.session_id
    await executor.execute(ExecuteRequest(code="x = 41", session_id=sid), "u")
    result = await executor.execute(ExecuteRequest(code="x + 1", session_id=sid), "u")
    assert result.value == "42"
    sandbox_id = executor.sessions.get(sid, "u").sandbox.id
    assert e2b_api.sandboxes[sandbox_id].set_timeout_calls
    await executor.close_session(sid, "u")
    assert sandbox_id in e2b_api.killed


async def test_bash_javascript_and_c(executor: Executor) -> None:
    bash = await executor.execute(ExecuteRequest(code="echo $((6 * 7))", language="bash"), "u")
    assert bash.stdout == "42\n"
    js = await executor.execute(
        ExecuteRequest(code="console.log([1, 2].map(x => x * 3).join(','))", language="js"), "u"
    )
    assert js.stdout == "3,6\n"
    c = await executor.execute(
        ExecuteRequest(
            code='#include <stdio.h>\nint main(void){printf("c says %d\\n", 6*7);return 3;}',
            language="c",
        ),
        "u",
    )
    assert (c.stdout, c.exit_code, c.stderr) == ("c says 42\n", 3, "")
    broken = await executor.execute(
        ExecuteRequest(code="int main(void){ return x; }", language="c"), "u"
    )
    assert broken.error is not None and broken.error.name == "CompileError"
    assert "undeclared" in broken.error.value


async def test_png_results_come_back_as_images(executor: Executor) -> None:
    result = await executor.execute(ExecuteRequest(code="#FAKE_PNG\n1"), "u")
    assert len(result.images) == 1 and result.images[0].format == "png"


async def test_files_go_through_the_filesystem_api(executor: Executor) -> None:
    info = await executor.open_session(Language.PYTHON, "u")
    await executor.upload_file(info.session_id, "u", "data/in.txt", b"payload")
    listed = [f.path for f in await executor.list_files(info.session_id, "u")]
    assert "data/in.txt" in listed
    assert await (await executor.download_file(info.session_id, "u", "data/in.txt")).read() == b"payload"


async def test_a_timeout_restarts_the_context_and_says_state_was_lost(executor: Executor) -> None:
    info = await executor.open_session(Language.PYTHON, "u")
    result = await executor.execute(
        ExecuteRequest(code="import time\ntime.sleep(10)", session_id=info.session_id, timeout=1),
        "u",
    )
    assert result.timed_out and result.exit_code == 124
    assert result.error is not None and result.error.name == "TimeoutError"
    assert result.duration_ms < 5000


async def test_truncation_applies_the_same_way(executor: Executor) -> None:
    result = await executor.execute(
        ExecuteRequest(code="for i in range(5000):\n    print(i)", max_output_tokens=150), "u"
    )
    assert result.truncation is not None and result.truncation.stdout is not None
    assert "lines (" in result.stdout and "of stdout cut here" in result.stdout


async def test_leftovers_of_this_executor_are_killed_at_start(e2b_api: FakeE2B) -> None:
    mine = e2b_api.add_sandbox(metadata={TAG: "test-executor"})
    theirs = e2b_api.add_sandbox(metadata={TAG: "another-executor"})
    backend = E2BBackend(_settings())
    await backend.start()
    try:
        assert mine.sandbox_id in e2b_api.killed
        assert theirs.sandbox_id not in e2b_api.killed
    finally:
        await backend.close()


async def test_creation_backs_off_on_429(e2b_api: FakeE2B) -> None:
    backend = E2BBackend(_settings())
    await backend.start()
    try:
        e2b_api.rate_limit_next(5)  # more than the SDK's own 3 retries
        sandbox = await backend.create(Language.PYTHON)
        assert e2b_api.create_attempts >= 6
        await sandbox.close()
    finally:
        await backend.close()


async def test_clear_errors_without_the_key_or_the_extra(
    e2b_api: FakeE2B, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("E2B_API_KEY")
    with pytest.raises(SandboxFailure, match="needs an E2B API key"):
        await E2BBackend(_settings()).start()
    monkeypatch.setitem(sys.modules, "e2b_code_interpreter", None)
    with pytest.raises(SandboxFailure, match=r"pip install 'code-exec\[e2b\]'"):
        await E2BBackend(_settings()).start()


@pytest.mark.skipif(
    not (os.environ.get("E2B_API_KEY") and os.environ.get("CODE_EXEC_E2B_LIVE")),
    reason="live E2B test: set E2B_API_KEY and CODE_EXEC_E2B_LIVE=1 (needs network and costs "
    "sandbox time)",
)
async def test_live_e2b_print() -> None:
    executor = Executor(_settings(pool_sizes={"python": 0}))
    await executor.start()
    try:
        result = await executor.execute(ExecuteRequest(code="print(1 + 1)"), "live")
        assert result.stdout == "2\n"
    finally:
        await executor.aclose()


async def test_sandboxes_are_made_without_internet(executor: Executor, e2b_api: FakeE2B) -> None:
    await executor.execute(ExecuteRequest(code="1"), "u")
    assert e2b_api.sandboxes and not any(s.allow_internet_access for s in e2b_api.sandboxes.values())
    assert executor.backend.health().model_dump()["network"].startswith("none")


async def test_a_network_e2b_cannot_keep_is_refused_at_start(e2b_api: FakeE2B) -> None:
    executor = Executor(_settings(network="packages"))
    with pytest.raises(SandboxFailure, match="not kept by the E2B backend.*CODE_EXEC_NETWORK=none"):
        await executor.start()
    await executor.aclose()


async def test_code_mode_is_refused_at_start_with_e2b(e2b_api: FakeE2B, tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {"notes": {"command": "true"}}}')
    executor = Executor(_settings(upstream_config=str(config)))
    with pytest.raises(SandboxFailure, match="CODE_EXEC_UPSTREAM_CONFIG .* needs the local backend"):
        await executor.start()
    await executor.aclose()
