"""The seeds' API in their shapes: 000's curl examples, 001's sessions/files, 003's streaming."""

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import websockets

from tests.openai_tools.conftest import Api, mint

SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "000_954406a35c2ec4ad.txt"


def _curl_examples() -> list[str]:
    text = SEED.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    commands = []
    for block in blocks:
        for command in re.split(r"\n(?=curl |# )", block):
            command = command.strip()
            if command.startswith("curl "):
                commands.append(command)
    return commands


@pytest.mark.skipif(not SEED.exists(), reason="the seed documents are not beside the checkout")
def test_the_seed_curl_examples_work_as_written(real_api: Api) -> None:
    api = real_api
    commands = _curl_examples()
    assert len(commands) == 4, commands  # run, open session, run in session, end session
    token = mint("seed-user")
    outputs = []
    session_id = ""
    for command in commands:
        command = command.replace("<your-token>", token)
        command = command.replace("<session_id_from_previous_response>", session_id)
        command = command.replace("<session_id>", session_id)
        if not api.url.endswith(":8000"):  # port 8000 was taken: same command, other port
            command = command.replace("localhost:8000", api.url.removeprefix("http://"))
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        outputs.append(body)
        session_id = body.get("session_id") or session_id
    run, opened, in_session, ended = outputs
    assert run["output"] == "Hello, World!\n" and run["exit_code"] == 0 and run["error"] is None
    assert opened["session_id"].startswith("ses_")
    assert in_session["output"] == "Hello from session!\n"
    assert in_session["session_id"] == opened["session_id"]
    assert ended == {"success": True, "message": "Session ended", "session_id": session_id}


def test_001_shapes_errors_and_files(api: Api) -> None:
    h = api.headers()
    body = api.http.post("/v1/code_interpreter/run", json={"code": "1/0"}, headers=h).json()
    assert set(body) >= {
        "execution_id",
        "output",
        "error",
        "exit_code",
        "duration_ms",
        "session_id",
    }
    assert body["exit_code"] == 1 and "ZeroDivisionError: division by zero" in body["error"]
    sid = api.http.post(
        "/v1/code_interpreter/sessions", params={"language": "python"}, headers=h
    ).json()["session_id"]
    up = api.http.post(
        f"/v1/code_interpreter/sessions/{sid}/files",
        files={"file": ("nums.txt", b"1\n2\n3\n")},
        headers=h,
    )
    assert up.status_code == 200 and up.json()["path"] == "nums.txt"
    ran = api.http.post(
        "/v1/code_interpreter/run",
        json={"code": "sum(int(x) for x in open('nums.txt'))", "session_id": sid},
        headers=h,
    ).json()
    assert ran["value"] == "6"
    listed = api.http.get(f"/v1/code_interpreter/sessions/{sid}/files", headers=h).json()
    assert [f["path"] for f in listed] == ["nums.txt"]
    got = api.http.get(f"/v1/code_interpreter/sessions/{sid}/files/nums.txt", headers=h)
    assert got.content == b"1\n2\n3\n"
    # Another user: the session does not exist for them, and they cannot end it.
    other = api.headers("mallory")
    for response in (
        api.http.get(f"/v1/code_interpreter/sessions/{sid}", headers=other),
        api.http.delete(f"/v1/code_interpreter/sessions/{sid}", headers=other),
        api.http.get(f"/v1/code_interpreter/sessions/{sid}/files", headers=other),
        api.http.post(
            "/v1/code_interpreter/run",
            json={"code": "1", "session_id": sid},
            headers=other,
        ),
    ):
        assert response.status_code == 404, response.text
    assert api.http.delete(f"/v1/code_interpreter/sessions/{sid}", headers=h).json()["success"]


def test_003_execute_with_timeout_in_milliseconds(api: Api) -> None:
    body = api.http.post(
        "/execute",
        json={"code": "print('Hello, World!')", "language": "python", "timeout": 30000},
        headers=api.headers(),
    ).json()
    assert body["result"]["logs"] == {"stdout": ["Hello, World!\n"], "stderr": []}
    assert body["result"]["error"] is None and isinstance(body["duration"], int)
    slow = api.http.post(
        "/execute",
        json={"code": "import asyncio\nawait asyncio.sleep(5)", "timeout": 200},
        headers=api.headers(),
    ).json()
    assert slow["result"]["error"]["name"] == "TimeoutError"
    assert "0.2 s" in slow["result"]["error"]["value"]


def test_sse_delivers_output_in_order_then_the_result(api: Api) -> None:
    code = "import time\nfor i in range(4):\n    print(i, flush=True)\n    time.sleep(0.15)"
    events = []
    with api.http.stream(
        "POST",
        "/v1/code_interpreter/run",
        json={"code": code},
        headers={**api.headers(), "Accept": "text/event-stream"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    assert [n for n, _ in events[:-1]] == ["stdout"] * (len(events) - 1)
    assert "".join(d["data"] for _, d in events[:-1]) == "0\n1\n2\n3\n"
    assert len(events) - 1 >= 3, "output arrived in one piece: not streamed"
    assert events[-1][0] == "result" and events[-1][1]["output"] == "0\n1\n2\n3\n"


@pytest.mark.anyio
async def test_003_websocket_events_in_order(real_api: Api) -> None:
    api = real_api
    token = mint("alice")
    ws_url = api.url.replace("http://", "ws://") + f"/?clientId=client_123456&token={token}"
    async with websockets.connect(ws_url) as ws:
        assert json.loads(await ws.recv())["status"] == "connected"
        async with httpx.AsyncClient(timeout=60) as http:
            started = await http.post(
                f"{api.url}/execute-stream",
                json={
                    "code": "import sys\nprint('out', flush=True)\nprint('err', file=sys.stderr)\n"
                    "undefined_variable",
                    "language": "python",
                    "timeout": 30000,
                    "clientId": "client_123456",
                },
                headers={"Authorization": f"Bearer {token}"},
            )
        assert started.json()["status"] == "streaming"
        execution_id = started.json()["executionId"]
        events = []
        while not events or events[-1].get("status") != "completed":
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    types = [e["type"] for e in events]
    assert types[0] == "status" and events[0]["status"] == "running"
    assert types[-3:] == ["error", "result", "status"]
    assert {"stdout", "stderr"} <= set(types)
    assert all(e["executionId"] == execution_id for e in events)
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "out\n"
    assert events[-3]["error"]["name"] == "NameError"


@pytest.mark.anyio
async def test_003_websocket_needs_a_valid_token(real_api: Api) -> None:
    api = real_api
    url = api.url.replace("http://", "ws://") + "/?clientId=x&token=forged"
    with pytest.raises(websockets.exceptions.WebSocketException):
        async with websockets.connect(url) as ws:
            await ws.recv()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{api.url}/execute-stream",
            json={"code": "1", "clientId": "nobody"},
            headers=api.headers(),
        )
    assert response.status_code == 404 and "connect to ws://" in response.json()["error"]["message"]


def _live(api: Api) -> int:
    return int(api.http.get("/health").json()["executor"]["backend"]["live_sandboxes"])


def _settle(api: Api) -> int:
    deadline = time.monotonic() + 20
    last = -1
    while time.monotonic() < deadline:
        now = _live(api)
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    return last


def test_a_client_that_disconnects_frees_its_sandbox(real_api: Api) -> None:
    api = real_api
    baseline = _settle(api)
    with api.http.stream(
        "POST",
        "/v1/code_interpreter/run",
        json={"code": "import time\nprint('started', flush=True)\ntime.sleep(60)"},
        headers={**api.headers(), "Accept": "text/event-stream"},
    ) as response:
        lines = response.iter_lines()  # held: closing this iterator would close the stream
        for line in lines:
            if "started" in line:
                break
        # The running sandbox on top of a refilled pool.
        deadline = time.monotonic() + 20
        while _live(api) <= baseline and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _live(api) == baseline + 1
    # Leaving the block closed the connection: the run is cancelled and its sandbox killed.
    assert _settle(api) == baseline


@pytest.mark.anyio
async def test_a_websocket_that_disconnects_cancels_its_runs(real_api: Api) -> None:
    api = real_api
    baseline = _settle(api)
    token = mint("alice")
    url = api.url.replace("http://", "ws://") + f"/?clientId=gone&token={token}"
    async with websockets.connect(url) as ws:
        await ws.recv()
        async with httpx.AsyncClient(timeout=60) as http:
            await http.post(
                f"{api.url}/execute-stream",
                json={
                    "code": "import time\nprint('x', flush=True)\ntime.sleep(60)",
                    "clientId": "gone",
                },
                headers={"Authorization": f"Bearer {token}"},
            )
        while json.loads(await ws.recv())["type"] != "stdout":
            pass
    assert await asyncio.to_thread(_settle, api) == baseline


def test_per_user_run_cap_answers_429_with_retry_after(real_api: Api) -> None:
    api = real_api
    # The fixture allows 2 runs in progress per user.
    streams = []
    try:
        for _ in range(2):
            ctx = api.http.stream(
                "POST",
                "/v1/code_interpreter/run",
                json={"code": "import time\nprint('go', flush=True)\ntime.sleep(30)"},
                headers={**api.headers("busy"), "Accept": "text/event-stream"},
            )
            response = ctx.__enter__()
            lines = response.iter_lines()  # held: closing this iterator would close the stream
            streams.append((ctx, lines))
            while "go" not in next(lines):
                pass
        third = api.http.post(
            "/v1/code_interpreter/run", json={"code": "1"}, headers=api.headers("busy")
        )
        assert third.status_code == 429
        assert int(third.headers["Retry-After"]) >= 1
        other = api.http.post(
            "/v1/code_interpreter/run",
            json={"code": "print(1)"},
            headers=api.headers("idle"),
        )
        assert other.status_code == 200
    finally:
        for ctx, _ in streams:
            ctx.__exit__(None, None, None)


def test_rest_results_link_output_files_and_sessions_take_them_by_reference(
    real_api: Api,
) -> None:
    """A run's files come with a download URL (the caller's token) and a URI; a session
    opened with that URI, or with the URL, starts with the file; nobody else reaches it."""
    api = real_api
    code = "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/t.csv', 'w').write('n\\n5\\n')"
    ran = api.http.post("/v1/code_interpreter/run", json={"code": code}, headers=api.headers())
    assert ran.status_code == 200, ran.text
    [made] = ran.json()["files"]
    assert made["name"] == "t.csv" and made["uri"].startswith("code-exec://executions/exe_")
    assert api.http.get(made["url"], headers=api.headers()).content == b"n\n5\n"
    assert api.http.get(made["url"], headers=api.headers("mallory")).status_code == 404
    for reference in (made["uri"], made["url"]):
        opened = api.http.post(
            "/v1/code_interpreter/sessions",
            json={"language": "python", "inputs": [reference]},
            headers=api.headers(),
        )
        assert opened.status_code == 200, opened.text
        sid = opened.json()["session_id"]
        body = {"code": "print(open('t.csv').read().split()[1])", "session_id": sid}
        used = api.http.post("/v1/code_interpreter/run", json=body, headers=api.headers())
        assert used.json()["output"] == "5\n", used.text
        api.http.delete(f"/v1/code_interpreter/sessions/{sid}", headers=api.headers())
    refused = api.http.post(
        "/v1/code_interpreter/sessions",
        json={"inputs": [made["uri"]]},
        headers=api.headers("mallory"),
    )
    assert refused.status_code == 404 and "the session was not opened" in refused.text
    typo = api.http.post(
        "/v1/code_interpreter/sessions", json={"langauge": "python"}, headers=api.headers()
    )
    assert typo.status_code == 422 and "langauge" in typo.text
