"""Every way a token can be wrong is refused with 401; keys exchange for tokens."""

import base64
import json
import os
import subprocess
import sys
import time

import jwt
import pytest

from tests.openai_tools.conftest import API_KEY, SECRET, Api, mint


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _none_token(user: str) -> str:
    claims = {"sub": user, "aud": "code-exec", "iss": "code-exec", "exp": int(time.time()) + 600}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


BAD_TOKENS = {
    "alg none": lambda: _none_token("alice"),
    "expired": lambda: mint("alice", exp=int(time.time()) - 10),
    "wrong signature": lambda: jwt.encode(
        {"sub": "alice", "aud": "code-exec", "iss": "code-exec", "exp": int(time.time()) + 600},
        "another-secret-of-sufficient-length-000",
        "HS256",
    ),
    "wrong audience": lambda: mint("alice", aud="someone-else"),
    "wrong issuer": lambda: mint("alice", iss="evil"),
    "no expiry": lambda: mint("alice", exp=None),
    "no subject": lambda: mint("alice", sub=None),
    "garbage": lambda: "not.a.token",
    "HS512 with the right secret": lambda: jwt.encode(
        {"sub": "alice", "aud": "code-exec", "iss": "code-exec", "exp": int(time.time()) + 600},
        SECRET,
        "HS512",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_tokens_are_refused(api: Api, case: str) -> None:
    token = BAD_TOKENS[case]()
    response = api.http.post(
        "/v1/code_interpreter/run",
        json={"code": "print(1)"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401, (case, response.text)
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Basic YWxpY2U6eA=="}, {"Authorization": "Bearer"}]
)
def test_missing_or_malformed_authorization_is_refused(api: Api, headers: dict[str, str]) -> None:
    for method, path in (
        ("POST", "/v1/tools/call"),
        ("POST", "/v1/code_interpreter/run"),
        ("POST", "/v1/code_interpreter/sessions"),
        ("POST", "/execute"),
        ("GET", "/v1/code_interpreter/sessions"),
    ):
        response = api.http.request(method, path, json={"code": "1"}, headers=headers)
        assert response.status_code == 401, (path, response.text)


def test_health_tools_and_docs_need_no_token(api: Api) -> None:
    for path in ("/health", "/docs", "/openapi.json", "/v1/tools"):
        assert api.http.get(f"{path}").status_code == 200, path


def test_an_api_key_is_exchanged_for_a_working_token(api: Api) -> None:
    response = api.http.post("/v1/auth/token", json={"api_key": API_KEY})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    run = api.http.post(
        "/v1/code_interpreter/run",
        json={"code": "print('via key')"},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert run.json()["output"] == "via key\n"
    assert jwt.decode(body["access_token"], SECRET, ["HS256"], audience="code-exec")["sub"] == (
        "alice"
    )
    wrong = api.http.post("/v1/auth/token", json={"api_key": "ce_guess"})
    assert wrong.status_code == 401


def test_the_cli_mints_tokens_the_server_accepts(real_api: Api) -> None:
    api = real_api
    minted = subprocess.run(
        [
            sys.executable,
            "-m",
            "code_exec.cli",
            "token",
            "create",
            "--user",
            "carol",
            "--ttl",
            "5m",
        ],
        env={**os.environ, "CODE_EXEC_JWT_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    claims = jwt.decode(minted, SECRET, ["HS256"], audience="code-exec")
    assert claims["sub"] == "carol" and 290 <= claims["exp"] - claims["iat"] <= 300
    opened = api.http.post(
        "/v1/code_interpreter/sessions",
        json={"language": "bash"},
        headers={"Authorization": f"Bearer {minted}"},
    )
    assert opened.status_code == 200
    api.http.delete(
        f"/v1/code_interpreter/sessions/{opened.json()['session_id']}",
        headers={"Authorization": f"Bearer {minted}"},
    )


@pytest.mark.slow
def test_the_cli_refuses_to_mint_without_a_secret() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODE_EXEC_")}
    done = subprocess.run(
        [sys.executable, "-m", "code_exec.cli", "token", "create", "--user", "x"],
        env=env,
        capture_output=True,
        text=True,
        cwd="/tmp",
    )
    assert done.returncode == 2
    assert "CODE_EXEC_JWT_SECRET is not set" in done.stderr
