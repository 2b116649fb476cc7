"""Every way a token can be wrong is refused with 401; keys exchange for tokens; dev tokens
outlive restarts; the CLI mints tokens and keys a running server takes."""

import base64
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jwt
import pytest

from code_exec.cli import main
from executor.errors import Unauthorized
from openai_tools.auth import Authenticator
from openai_tools.config import ApiSettings, dev_secret, dev_secret_path
from tests.openai_tools.conftest import API_KEY, SECRET, Api, in_process_api, mint


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _none_token(user: str) -> str:
    claims = {"sub": user, "aud": "code-exec", "iss": "code-exec", "exp": int(time.time()) + 600}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


BAD_TOKENS = {
    "alg none": (lambda: _none_token("alice"), "algorithm 'none' is not accepted"),
    "expired": (lambda: mint("alice", exp=int(time.time()) - 10), "the token has expired"),
    "wrong signature": (
        lambda: jwt.encode(
            {"sub": "alice", "aud": "code-exec", "iss": "code-exec", "exp": int(time.time()) + 600},
            "another-secret-of-sufficient-length-000",
            "HS256",
        ),
        "Signature verification failed",
    ),
    "wrong audience": (lambda: mint("alice", aud="someone-else"), "not for this service"),
    "wrong issuer": (lambda: mint("alice", iss="evil"), "issuer 'evil' is not trusted here"),
    "no expiry": (lambda: mint("alice", exp=None), "missing the 'exp' claim"),
    "no subject": (lambda: mint("alice", sub=None), "missing the 'sub' claim"),
    "garbage": (lambda: "not.a.token", "invalid token:"),
    "HS512 with the right secret": (
        lambda: jwt.encode(
            {"sub": "alice", "aud": "code-exec", "iss": "code-exec", "exp": int(time.time()) + 600},
            SECRET,
            "HS512",
        ),
        "algorithm 'HS512' is not accepted",
    ),
    "a subject of the external form": (
        lambda: mint("https://idp.example#alice"),
        "may not contain '://'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_tokens_are_refused(api: Api, case: str) -> None:
    make, reason = BAD_TOKENS[case]
    response = api.http.post(
        "/v1/code_interpreter/run",
        json={"code": "print(1)"},
        headers={"Authorization": f"Bearer {make()}"},
    )
    assert response.status_code == 401, (case, response.text)
    message = response.json()["error"]["message"].replace('"', "'")
    assert reason in message, (case, message)
    # A real server is reached as 127.0.0.1, so it names its metadata; "testserver" is no
    # local name, and the server does not know its public URL.
    where = (
        f'resource_metadata="{api.url}/.well-known/oauth-protected-resource", '
        if api.process
        else ""
    )
    expected = f'Bearer {where}error="invalid_token", error_description="{message}"'
    assert response.headers["WWW-Authenticate"] == expected


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
    assert "--dev" in done.stderr  # what to do instead, and it works (see below)


@pytest.fixture
def no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """No JWT settings from this process's environment."""
    for name in list(os.environ):
        if name.startswith("CODE_EXEC_"):
            monkeypatch.delenv(name)


def _dev(state: Path) -> ApiSettings:
    return ApiSettings(dev_mode=True, state_dir=state, _env_file=None)


def test_dev_tokens_outlive_a_restart_and_stay_with_their_state_dir(
    tmp_path: Path, no_secret: None
) -> None:
    first, again = _dev(tmp_path / "a"), _dev(tmp_path / "a")
    token = Authenticator(first).issue("dana")
    assert Authenticator(again).verify(token) == "dana"
    assert first.dev_secret_file == dev_secret_path(tmp_path / "a")
    secret = dev_secret_path(tmp_path / "a")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert secret.parent.stat().st_uid == os.geteuid()
    with pytest.raises(Unauthorized, match="Signature verification failed"):
        Authenticator(_dev(tmp_path / "b")).verify(token)
    # A secret given wins over the kept one, and nothing is kept then.
    given = ApiSettings(dev_mode=True, state_dir=tmp_path / "c", jwt_secret=SECRET, _env_file=None)
    assert given.jwt_secret is not None and given.jwt_secret.get_secret_value() == SECRET
    assert given.dev_secret_file is None and not (tmp_path / "c").exists()


def test_starts_racing_for_the_dev_secret_all_get_the_same_one(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)
    found: list[str] = []

    def start() -> None:
        barrier.wait()
        found.append(dev_secret(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len(set(found)) == 1 and len(found[0]) >= 32
    assert [p.name for p in dev_secret_path(tmp_path).parent.iterdir()] == ["dev-jwt-secret"]


def test_a_dev_secret_others_can_read_or_own_is_refused(tmp_path: Path) -> None:
    secret = dev_secret_path(tmp_path)
    dev_secret(tmp_path)
    secret.parent.chmod(0o750)
    with pytest.raises(RuntimeError, match=r"open to other users \(mode 750\); run `chmod 700"):
        dev_secret(tmp_path)
    secret.parent.chmod(0o700)
    secret.chmod(0o640)
    with pytest.raises(RuntimeError, match=r"open to other users \(mode 640\); run `chmod 600"):
        dev_secret(tmp_path)
    secret.chmod(0o600)
    secret.write_text("short\n")
    with pytest.raises(RuntimeError, match="does not hold a usable secret"):
        dev_secret(tmp_path)
    secret.unlink()
    planted = tmp_path / "planted"
    planted.write_text("x" * 40)
    secret.symlink_to(planted)
    with pytest.raises(RuntimeError, match="cannot read the dev secret"):
        dev_secret(tmp_path)
    secret.unlink()
    assert len(dev_secret(tmp_path)) >= 32  # removed: a new one is made
    if os.geteuid() != 0:
        pytest.skip("giving the directory to another user needs root")
    os.chown(secret.parent, 65534, 65534)
    with pytest.raises(RuntimeError, match="belongs to uid 65534, not to this user"):
        dev_secret(tmp_path)
    os.chown(secret.parent, 0, 0)
    os.chown(secret, 65534, 65534)
    with pytest.raises(RuntimeError, match="belongs to uid 65534"):
        dev_secret(tmp_path)


@contextmanager
def _app(**settings: str) -> Iterator[Api]:
    yield from in_process_api(**settings)


def test_cli_dev_tokens_are_accepted_by_a_dev_server_of_the_same_state_dir(
    tmp_path: Path,
    no_secret: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODE_EXEC_STATE_DIR", str(tmp_path / "state"))
    assert main(["token", "create", "--user", "erin"]) == 2
    refused = capsys.readouterr().err
    assert "CODE_EXEC_JWT_SECRET is not set" in refused and "--dev" in refused
    assert main(["token", "create", "--dev", "--user", "erin", "--ttl", "5m"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert str(dev_secret_path(tmp_path / "state")) in out.err
    headers = {"Authorization": f"Bearer {token}"}
    # jwt_secret "" is no secret: dev mode takes the one kept in the state dir.
    same = {"jwt_secret": "", "dev_mode": "true", "state_dir": str(tmp_path / "state")}
    with _app(**same) as api:
        opened = api.http.post(
            "/v1/code_interpreter/sessions", json={"language": "python"}, headers=headers
        )
        assert opened.status_code == 200, opened.text
    with _app(**{**same, "state_dir": str(tmp_path / "elsewhere")}) as api:
        refused_there = api.http.get("/v1/code_interpreter/sessions", headers=headers)
        assert refused_there.status_code == 401


def test_a_new_key_works_without_a_restart_and_a_removed_one_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# user sha256-hex\n")
    monkeypatch.setenv("CODE_EXEC_API_KEYS_FILE", str(keys))
    assert main(["key", "create", "--user", "dora"]) == 0
    out = capsys.readouterr().out
    key = out.splitlines()[1].strip()
    echo = next(line.strip() for line in out.splitlines() if line.strip().startswith("echo "))
    assert "no restart" in out and echo.endswith(f">> {keys}")
    line = echo.removeprefix("echo '").split("'")[0]
    with _app(api_keys_file=str(keys)) as api:
        assert api.http.post("/v1/auth/token", json={"api_key": key}).status_code == 401
        with keys.open("a") as file:
            file.write(line + "\n")
        granted = api.http.post("/v1/auth/token", json={"api_key": key})
        assert granted.status_code == 200, granted.text
        claims = jwt.decode(granted.json()["access_token"], SECRET, ["HS256"], audience="code-exec")
        assert claims["sub"] == "dora"
        keys.write_text("# nobody\n")
        assert api.http.post("/v1/auth/token", json={"api_key": key}).status_code == 401
        keys.write_text(line + "\n")
        assert api.http.post("/v1/auth/token", json={"api_key": key}).status_code == 200
        keys.unlink()  # fail closed: gone with its file
        assert api.http.post("/v1/auth/token", json={"api_key": key}).status_code == 401
        assert api.http.post("/v1/auth/token", json={"api_key": API_KEY}).status_code == 200


def test_key_create_refuses_names_its_lines_cannot_carry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("a:b", "a b", "a,b", ""):
        assert main(["key", "create", "--user", name]) == 2
        assert "without spaces, ',' or ':'" in capsys.readouterr().err


def test_a_missing_keys_file_stops_the_start() -> None:
    with pytest.raises(
        RuntimeError, match="CODE_EXEC_API_KEYS_FILE /nonexistent/keys is not a file"
    ):
        ApiSettings(jwt_secret=SECRET, api_keys_file="/nonexistent/keys", _env_file=None).check()
