"""The executor's HTTP API in this process over the fake backend: tokens, the error envelope
for every kind of bad input, metrics and the NDJSON stream. (test_app.py: a real process.)"""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from executor.server.app import create_app
from tests.executor.conftest import TOKEN

pytestmark = pytest.mark.anyio

AUTH = {"Internal-Auth-Token": TOKEN}


@pytest.fixture
async def http(make_fake_executor: Any) -> AsyncIterator[httpx.AsyncClient]:
    executor = await make_fake_executor(internal_token=TOKEN, max_timeout_s=300)
    app = create_app(executor.settings, executor)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://executor") as client:
        yield client


async def test_health_needs_no_token_and_reports_pools_and_limits(http: httpx.AsyncClient) -> None:
    body = (await http.get("/health")).json()
    assert set(body["pools"]) == {"python", "javascript", "bash", "c"}
    assert body["limits"]["max_timeout_s"] == 300 and body["backend"]["backend"] == "fake"


@pytest.mark.parametrize("headers", [{}, {"Internal-Auth-Token": "wrong"}])
async def test_every_other_endpoint_needs_the_token(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for method, path in (
        ("POST", "/execute"),
        ("GET", "/metrics"),
        ("POST", "/sessions"),
        ("GET", "/sessions"),
        ("GET", "/sessions/x"),
        ("DELETE", "/sessions/x"),
        ("GET", "/sessions/x/files"),
        ("GET", "/sessions/x/files/a.txt"),
        ("GET", "/executions/x/output"),
    ):
        response = await http.request(method, path, json={"code": "1"}, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"


async def test_bad_input_gets_a_clear_error_in_the_envelope(http: httpx.AsyncClient) -> None:
    cases: list[tuple[Any, int, str]] = [
        ({"code": "1", "language": "rust"}, 422, "supported: python"),
        ({"code": "x" * (1024 * 1024 + 1)}, 413, "above the limit"),
        ({"code": "1", "timeout": 0}, 422, "timeout"),
        ({"code": "1", "timeout": 900}, 422, "above the limit of 300 s"),
        ({"code": "1", "session_id": "ses_nope"}, 404, "ses_nope"),
        ({"code": "1", "files": {"../etc/passwd": "x"}}, 422, "inside /home/user"),
        ({"code": "1", "env": {"A-B": "x"}}, 422, "environment variable name"),
        ({"code": "1", "max_output_tokens": 10}, 422, "below the minimum"),
        ({"code": "1", "colour": "red"}, 422, "Extra inputs are not permitted"),
    ]
    for body, status, message in cases:
        response = await http.post("/execute", json=body, headers=AUTH)
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["error"]["message"], (body, response.text)
    raw = await http.post(
        "/execute", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
    )
    assert raw.status_code == 422 and raw.json()["error"]["code"] == "invalid_request"
    unknown = await http.get("/nowhere", headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "no endpoint GET /nowhere; see /docs"


async def test_metrics_count_runs_and_refusals(http: httpx.AsyncClient) -> None:
    assert (await http.post("/execute", json={"code": "print(1)"}, headers=AUTH)).is_success
    await http.post("/execute", json={"code": "1", "timeout": 900}, headers=AUTH)
    text = (await http.get("/metrics", headers=AUTH)).text
    assert 'code_exec_runs_total{language="python",outcome="ok"} 1' in text
    assert 'code_exec_errors_total{code="invalid_request"} 1' in text
    assert 'code_exec_pool_ready{language="python"}' in text


async def test_the_stream_is_output_events_then_the_result(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/execute",
        params={"stream": "true"},
        json={"code": "print('a')\nprint('b', file=stderr)\n1/0"},
        headers=AUTH,
    )
    events = [json.loads(line) for line in response.text.splitlines() if line]
    assert [e["type"] for e in events] == ["stdout", "stderr", "result"]
    assert events[-1]["result"]["error"]["name"] == "ZeroDivisionError"
    refused = await http.post(
        "/execute", params={"stream": "true"}, json={"code": "1", "session_id": "x"}, headers=AUTH
    )
    assert [json.loads(line)["type"] for line in refused.text.splitlines()] == ["error"]
