"""The executor's HTTP API, against a real `code-exec executor` process on loopback."""

import asyncio
import json
import time

import httpx
import pytest

from executor.clients.http import HttpClient
from executor.errors import InvalidRequest, NotFound, SessionNotFound, Unauthorized
from schemas.execution import ExecuteRequest
from schemas.languages import Language
from schemas.outputs import OutputQuery
from tests.executor.conftest import TOKEN, ExecutorProcess
from tests.processes import wait_until

# A real executor process on loopback, real sandboxes.
pytestmark = [pytest.mark.anyio, pytest.mark.slow]

AUTH = {"Internal-Auth-Token": TOKEN}


def post(
    proc: ExecutorProcess, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{proc.url}/execute", json=body, headers=AUTH if headers is None else headers, timeout=60
    )


def test_health_needs_no_token_and_reports_pools(executor_process: ExecutorProcess) -> None:
    response = httpx.get(f"{executor_process.url}/health")
    assert response.status_code == 200
    body = response.json()
    # Sessions have a pool of their own when stateless Python runs come from the zygote.
    zygote = body["backend"]["stateless_python"].startswith("zygote")
    sessions = {"python-sessions"} if zygote else set()
    assert set(body["pools"]) == {"python", "javascript", "bash", "c"} | sessions
    assert body["pools"]["python"]["size"] == 4
    assert "bubblewrap" in body["backend"]["isolation"]


@pytest.mark.parametrize("headers", [{}, {"Internal-Auth-Token": "wrong"}])
def test_every_other_endpoint_needs_the_token(
    executor_process: ExecutorProcess, headers: dict[str, str]
) -> None:
    url = executor_process.url
    assert post(executor_process, {"code": "print(1)"}, headers).status_code == 401
    assert httpx.get(f"{url}/metrics", headers=headers).status_code == 401
    assert httpx.post(f"{url}/sessions", json={}, headers=headers).status_code == 401
    assert httpx.get(f"{url}/sessions/x", headers=headers).status_code == 401


def test_metrics_are_prometheus_text(executor_process: ExecutorProcess) -> None:
    assert post(executor_process, {"code": "print(1)"}).status_code == 200
    text = httpx.get(f"{executor_process.url}/metrics", headers=AUTH).text
    assert "# TYPE code_exec_runs_total counter" in text
    assert 'code_exec_runs_total{language="python",outcome="ok"}' in text
    assert 'code_exec_pool_ready{language="python"}' in text


@pytest.mark.parametrize(
    ("language", "code", "expected"),
    [
        ("python", "print('hi from python')", "hi from python\n"),
        ("js", "console.log('hi from ' + 'node')", "hi from node\n"),
        ("sh", "echo hi from bash", "hi from bash\n"),
        ("c", '#include <stdio.h>\nint main(void){puts("hi from c");return 0;}', "hi from c\n"),
    ],
)
def test_each_language_runs(
    executor_process: ExecutorProcess, language: str, code: str, expected: str
) -> None:
    response = post(executor_process, {"code": code, "language": language})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stdout"] == expected
    assert body["exit_code"] == 0
    assert body["execution_id"].startswith("exe_")


def test_bad_input_gets_clear_errors(executor_process: ExecutorProcess) -> None:
    r = post(executor_process, {"code": "1", "language": "rust"})
    assert r.status_code == 422
    assert "supported: python" in r.json()["error"]["message"]
    r = post(executor_process, {"code": "x" * (1024 * 1024 + 1)})
    assert r.status_code == 413
    assert "limit" in r.json()["error"]["message"]
    r = post(executor_process, {"code": "1", "timeout": 0})
    assert r.status_code == 422
    r = post(executor_process, {"code": "1", "timeout": 900})
    assert r.status_code == 422
    assert "above the limit of 300 s" in r.json()["error"]["message"]
    r = post(executor_process, {"code": "1", "session_id": "ses_nope"})
    assert r.status_code == 404
    assert "ses_nope" in r.json()["error"]["message"]
    r = post(executor_process, {"code": "1", "files": {"../etc/passwd": "x"}})
    assert r.status_code == 422
    r = httpx.post(
        f"{executor_process.url}/execute",
        content=b"{not json",
        headers={**AUTH, "content-type": "application/json"},
    )
    assert r.status_code == 422


def test_output_that_is_not_utf8_is_replaced(executor_process: ExecutorProcess) -> None:
    code = "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')"
    body = post(executor_process, {"code": code}).json()
    assert body["stdout"] == "ok \ufffd\ufffd end\n"


async def test_session_lifecycle_through_the_http_client(
    executor_process: ExecutorProcess,
) -> None:
    client = HttpClient(executor_process.url, TOKEN)
    try:
        info = await client.open_session(Language.PYTHON, "alice")
        sid = info.session_id
        assert len(sid) > 30
        await client.execute(ExecuteRequest(code="x = 41", session_id=sid), "alice")
        result = await client.execute(ExecuteRequest(code="x + 1", session_id=sid), "alice")
        assert result.value == "42"
        assert result.session_id == sid
        uploaded = await client.upload_file(sid, "alice", "data/in.csv", b"a,b\n1,2\n")
        assert uploaded.size == 8
        result = await client.execute(
            ExecuteRequest(
                code="import pandas as pd\nint(pd.read_csv('data/in.csv').b.sum())", session_id=sid
            ),
            "alice",
        )
        assert result.value == "2"
        listed = [f.path for f in await client.list_files(sid, "alice")]
        assert "data/in.csv" in listed
        assert await (await client.download_file(sid, "alice", "data/in.csv")).read() == b"a,b\n1,2\n"
        assert [s.session_id for s in await client.list_sessions("alice")] == [sid]
        # Another user sees nothing of it, and cannot close it.
        with pytest.raises(SessionNotFound):
            await client.get_session(sid, "mallory")
        with pytest.raises(SessionNotFound):
            await client.execute(ExecuteRequest(code="x", session_id=sid), "mallory")
        with pytest.raises(SessionNotFound):
            await client.close_session(sid, "mallory")
        assert await client.list_sessions("mallory") == []
        with pytest.raises(InvalidRequest):
            await client.execute(
                ExecuteRequest(code="1", language=Language.BASH, session_id=sid), "alice"
            )
        await client.close_session(sid, "alice")
        with pytest.raises(SessionNotFound, match="ended"):
            await client.execute(ExecuteRequest(code="x", session_id=sid), "alice")
    finally:
        await client.aclose()


async def test_wrong_token_raises_unauthorized_in_the_client(
    executor_process: ExecutorProcess,
) -> None:
    client = HttpClient(executor_process.url, "nope")
    try:
        with pytest.raises(Unauthorized):
            await client.execute(ExecuteRequest(code="1"), "u")
    finally:
        await client.aclose()


async def test_stream_delivers_output_in_order_before_the_result(
    executor_process: ExecutorProcess,
) -> None:
    code = "import sys, time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.1)"
    events = []
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream(
            "POST",
            f"{executor_process.url}/execute",
            params={"stream": "true"},
            json={"code": code},
            headers=AUTH,
        ) as response,
    ):
        async for line in response.aiter_lines():
            if line:
                events.append(json.loads(line))
    assert events[-1]["type"] == "result"
    chunks = [e["data"] for e in events if e["type"] == "stdout"]
    assert "".join(chunks) == "0\n1\n2\n3\n4\n"
    assert len(chunks) >= 3, "output arrived in one piece: it was not streamed"
    assert events[-1]["result"]["stdout"] == "0\n1\n2\n3\n4\n"

    client = HttpClient(executor_process.url, TOKEN)
    seen: list[str] = []

    async def on_output(stream: str, data: str) -> None:
        seen.append(data)

    try:
        result = await client.execute(ExecuteRequest(code=code), "u", on_output)
    finally:
        await client.aclose()
    assert "".join(seen) == result.stdout == "0\n1\n2\n3\n4\n"


async def test_fifty_concurrent_stateless_runs_all_right(
    executor_process: ExecutorProcess,
) -> None:
    client = HttpClient(executor_process.url, TOKEN)
    try:
        results = await asyncio.gather(
            *(
                client.execute(ExecuteRequest(code=f"print({i} * {i})"), f"user{i % 5}")
                for i in range(50)
            )
        )
    finally:
        await client.aclose()
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(50)]
    assert len({r.execution_id for r in results}) == 50


def test_hundred_megabytes_of_output_leave_executor_memory_flat(
    executor_process: ExecutorProcess,
) -> None:
    assert post(executor_process, {"code": "print(1)"}).status_code == 200
    before = executor_process.rss_bytes()
    code = "import sys\nblock = 'y' * 1023 + '\\n'\nfor _ in range(100 * 1024):\n    sys.stdout.write(block)"
    body = post(executor_process, {"code": code, "timeout": 120}).json()
    after = executor_process.rss_bytes()
    assert body["truncation"]["stdout"]["original_bytes"] == 100 * 1024 * 1024
    assert body["truncation"]["stdout"]["original_lines"] == 100 * 1024
    assert len(body["stdout"]) < 2 * 1024 * 1024
    assert after - before < 64 * 1024 * 1024, (before, after)


def test_stateless_sandboxes_are_never_reused(executor_process: ExecutorProcess) -> None:
    code = (
        "import os\nseen = os.path.exists('/tmp/marker')\n"
        "open('/tmp/marker', 'w').write('x')\nprint(seen)"
    )
    outputs = [post(executor_process, {"code": code}).json()["stdout"] for _ in range(6)]
    assert outputs == ["False\n"] * 6


def _live(proc: ExecutorProcess) -> int:
    return int(httpx.get(f"{proc.url}/health").json()["backend"]["live_sandboxes"])


def test_a_caller_that_leaves_cancels_its_run(executor_process: ExecutorProcess) -> None:
    """A client that timed out or exited (a `code-exec mcp`, an API host whose caller
    cancelled) must not leave its run holding a sandbox until the run's own timeout."""
    wait_until(lambda: httpx.get(f"{executor_process.url}/health").json()["pools"]["python"]["ready"] == 4)
    idle = _live(executor_process)
    sleeper = {"code": "import time\ntime.sleep(60)", "timeout": 120}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{executor_process.url}/execute", json=sleeper, headers=AUTH, timeout=2)
    began = time.monotonic()
    wait_until(lambda: _live(executor_process) == idle)
    assert time.monotonic() - began < 15
    assert post(executor_process, {"code": "print(6 * 7)"}).json()["stdout"] == "42\n"


def test_an_empty_pool_answers_503_with_retry_after() -> None:
    from tests.executor.conftest import start_executor_process

    with start_executor_process(
        pool_sizes='{"python": 0, "javascript": 0, "bash": 0, "c": 0}', pool_wait_s="0.001"
    ) as proc:
        response = post(proc, {"code": "print(1)"})
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) >= 1
        assert "retry" in response.json()["error"]["message"]


async def test_full_output_over_http_for_the_owner(executor_process: ExecutorProcess) -> None:
    client = HttpClient(executor_process.url, TOKEN)
    try:
        result = await client.execute(
            ExecuteRequest(
                code="import sys\nfor i in range(5000):\n    print(i, file=sys.stderr)",
                max_output_tokens=150,
            ),
            "alice",
        )
        assert result.truncation is not None and result.truncation.stderr is not None
        page = await client.read_output(
            OutputQuery(execution_id=result.execution_id, stream="stderr", offset=4990, limit=100),
            "alice",
        )
        assert page.text.split() == [str(i) for i in range(4990, 5000)]
        with pytest.raises(NotFound):
            await client.read_output(
                OutputQuery(execution_id=result.execution_id, stream="stderr"), "eve"
            )
    finally:
        await client.aclose()


def test_an_ndjson_client_that_never_reads_costs_the_executor_nothing(
    executor_process: ExecutorProcess,
) -> None:
    import json as _json
    import socket

    code = "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(800):\n    sys.stdout.write(block)"
    body = _json.dumps({"code": code, "timeout": 8}).encode()
    host, port = executor_process.url.removeprefix("http://").split(":")
    with open(f"/proc/{executor_process.process.pid}/clear_refs", "w") as f:
        f.write("5")
    before = executor_process.rss_bytes()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /execute?stream=true HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Internal-Auth-Token: {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    time.sleep(10)  # the run prints until its timeout; nothing is read
    sock.close()
    with open(f"/proc/{executor_process.process.pid}/status") as f:
        peak = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))
    assert peak - before < 96 * 1024 * 1024, f"grew by {(peak - before) >> 20} MiB"
    assert post(executor_process, {"code": "print(1)"}).json()["stdout"] == "1\n"
