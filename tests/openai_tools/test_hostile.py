"""The API host under hostile input (in process, fake backend): nothing held for callers with
no token, every bad input a 4xx that says what is wrong, nothing of one user reachable or
breakable by another. (The same over real processes and load: tests/test_hostile_load.py.)"""

import json
from collections.abc import Iterator

import pytest

from openai_tools.app import MAX_BODY_BYTES
from tests.mcp_wire import ACCEPT, initialize
from tests.openai_tools.conftest import Api, in_process_api, mint


@pytest.fixture(scope="module")
def app_api() -> Iterator[Api]:
    yield from in_process_api(max_concurrent_runs_per_user="2")


class Chunks:
    """A request body with no Content-Length (chunked), counting what the server took."""

    def __init__(self, total: int, size: int = 64 * 1024) -> None:
        self.total, self.size, self.sent = total, size, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < self.total:
            self.sent += self.size
            yield b" " * self.size


def test_a_body_without_a_token_is_refused_before_it_is_read(app_api: Api) -> None:
    for path in ("/v1/code_interpreter/run", "/v1/code_interpreter/sessions/x/files", "/mcp"):
        body = Chunks(300 * 1024 * 1024)
        response = app_api.http.post(
            path, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 401, (path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert body.sent <= 2 * body.size, (path, body.sent)


def test_a_chunked_body_over_the_limit_is_413_not_memory(app_api: Api) -> None:
    body = Chunks(MAX_BODY_BYTES + 10 * 1024 * 1024, size=1024 * 1024)
    response = app_api.http.post(
        "/v1/code_interpreter/run",
        content=body,
        headers={**app_api.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert "over the limit" in response.json()["error"]["message"]
    # (What the server held meanwhile is measured on a real server: test_hostile_load.py.)
    # Public routes (no token needed) take small bodies only.
    small = Chunks(1024 * 1024)
    token = app_api.http.post(
        "/v1/auth/token", content=small, headers={"content-type": "application/json"}
    )
    assert token.status_code == 413


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/code_interpreter/run", {"code": "echo \ud800", "language": "bash"}),
        ("/v1/code_interpreter/run", {"code": "1", "files": {"a\udc00.txt": "x"}}),
        ("/v1/code_interpreter/run", {"code": "1", "files": {"a.txt": "\ud800"}}),
        ("/v1/code_interpreter/run", {"code": "1", "env": {"A": "\udfff"}}),
        ("/v1/code_interpreter/run", {"code": "1", "timeout": int("9" * 401)}),
        ("/v1/code_interpreter/run", {"code": "1", "files": {"/".join("d" * 100): "x"}}),
        ("/execute", {"code": "1", "timeout": int("9" * 401)}),
        ("/execute-stream", {"code": "1", "clientId": "\ud800"}),
        ("/v1/tools/run_code", {"code": "1", "files": [{"path": "\ud800", "content": ""}]}),
    ],
)
def test_bad_text_and_numbers_are_422_that_say_why(app_api: Api, path: str, body: object) -> None:
    raw = json.dumps(body)  # escapes lone surrogates as \\ud800, as a JSON client would send
    response = app_api.http.post(
        path, content=raw, headers={**app_api.headers(), "content-type": "application/json"}
    )
    assert response.status_code == 422, (path, response.text)
    message = response.json()["error"]["message"]
    assert (
        "surrogate" in message
        or "number" in message
        or "too deep" in message
        or "less than" in message
    ), message


def test_a_lone_surrogate_api_key_is_a_422_without_a_token(app_api: Api) -> None:
    response = app_api.http.post(
        "/v1/auth/token",
        content=json.dumps({"api_key": "ce_\ud800"}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422 and "api_key" in response.json()["error"]["message"]


def test_deeply_nested_input_is_a_clear_error(app_api: Api) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    call = {"id": "c", "type": "function", "function": {"name": "run_code", "arguments": nested}}
    [reply] = app_api.http.post("/v1/tools/call", json=call, headers=app_api.headers()).json()
    assert "nested too deeply" in reply["content"]
    body = app_api.http.post(
        "/v1/tools/call",
        content=nested,
        headers={**app_api.headers(), "content-type": "application/json"},
    )
    assert 400 <= body.status_code < 500, body.text
    deep_object = '{"x": ' * 5000 + '{"code": "1"}' + "}" * 5000
    arguments = app_api.http.post(
        "/v1/tools/run_code",
        content=deep_object,
        headers={**app_api.headers(), "content-type": "application/json"},
    )
    assert 400 <= arguments.status_code < 500, arguments.text


def test_a_websocket_client_id_belongs_to_its_user(app_api: Api) -> None:
    alice, bob = mint("alice"), mint("bob")
    with app_api.http.websocket_connect(f"/?clientId=shared&token={alice}") as alice_ws:
        assert alice_ws.receive_json()["status"] == "connected"
        # Bob connects with the same clientId: his own connection, not a takeover of hers.
        with app_api.http.websocket_connect(f"/?clientId=shared&token={bob}") as bob_ws:
            assert bob_ws.receive_json()["status"] == "connected"
            started = app_api.http.post(
                "/execute-stream",
                json={"code": "print('for alice')", "clientId": "shared"},
                headers={"Authorization": f"Bearer {alice}"},
            )
            assert started.status_code == 200, started.text
            events = []
            while not events or events[-1].get("status") != "completed":
                events.append(alice_ws.receive_json())
            assert "".join(e.get("data", "") for e in events if e["type"] == "stdout") == (
                "for alice\n"
            )


def _initialize(api: Api, user: str, origin: str | None = None) -> str:
    headers = {**api.headers(user), **ACCEPT, **({"Origin": origin} if origin else {})}
    response = api.http.post("/mcp", json=initialize(), headers=headers)
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def test_an_mcp_session_id_is_worth_nothing_to_another_user(app_api: Api) -> None:
    session = _initialize(app_api, "alice")
    stolen = app_api.http.delete(
        "/mcp", headers={**app_api.headers("mallory"), "mcp-session-id": session}
    )
    assert stolen.status_code == 404
    mine = app_api.http.delete(
        "/mcp", headers={**app_api.headers("alice"), "mcp-session-id": session}
    )
    assert mine.status_code == 200


def test_one_user_cannot_fill_the_mcp_session_limit(app_api: Api) -> None:
    from mcp_server.http import MAX_SESSIONS_PER_USER

    opened = [_initialize(app_api, "flood") for _ in range(MAX_SESSIONS_PER_USER)]
    refused = app_api.http.post(
        "/mcp", json=initialize(), headers={**app_api.headers("flood"), **ACCEPT}
    )
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "MCP sessions of this user are open" in refused.json()["error"]["message"]
    _initialize(app_api, "someone-else")  # others are not affected
    for session in opened:
        app_api.http.delete("/mcp", headers={**app_api.headers("flood"), "mcp-session-id": session})
    _initialize(app_api, "flood")  # ending sessions makes room again


def test_unknown_paths_answer_in_the_envelope(app_api: Api) -> None:
    anonymous = app_api.http.get("/nowhere")
    assert anonymous.status_code == 401
    known = app_api.http.get("/nowhere", headers=app_api.headers())
    assert known.status_code == 404 and known.json()["error"]["code"] == "not_found"


def test_a_page_of_another_origin_may_not_call_mcp(app_api: Api) -> None:
    for origin in ("http://evil.example.com", "https://localhost.evil.example"):
        refused = app_api.http.post(
            "/mcp", json=initialize(), headers={**app_api.headers(), **ACCEPT, "Origin": origin}
        )
        assert refused.status_code == 403, (origin, refused.text)
        assert "CODE_EXEC_CORS_ORIGINS" in refused.json()["error"]["message"]
    assert _initialize(app_api, "browser", "http://localhost:6274")  # the Inspector's web UI
