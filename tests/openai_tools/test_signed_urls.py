"""Signed download URLs: minted for the owner's file only, fetched without a token, good for
that one file until they expire, and never a login token (nor a login token one of them)."""

import json
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest

from executor.errors import Forbidden
from openai_tools.config import ApiSettings
from openai_tools.dev_secret import URL_KEY_FILE, kept_secret_path
from openai_tools.signed_urls import DOWNLOAD_AUDIENCE, UrlSigner, lifetime
from tests.openai_tools.conftest import SECRET, URL_KEY, Api, mint, run_code_calls

FILES_CODE = (
    "import os\nos.makedirs('outputs', exist_ok=True)\n"
    "with open('outputs/report.csv', 'w') as f:\n    f.write('x,y\\n3,4\\n')\n"
    "with open('outputs/other file.txt', 'w') as f:\n    f.write('not yours to see')\n"
)


def _run(api: Api, user: str = "alice") -> str:
    """The execution id of a run of user's that wrote two output files."""
    response = api.http.post(
        "/v1/tools/run_code", json={"code": FILES_CODE}, headers=api.headers(user)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(f["name"] for f in body["files"]) == ["other file.txt", "report.csv"]
    return str(body["execution_id"])


def _mint(api: Api, execution_id: str, name: str, user: str = "alice", **params: Any) -> Any:
    return api.http.post(
        f"/v1/executions/{execution_id}/files/outputs/{name}/url",
        params=params,
        headers=api.headers(user),
    )


def _forged(execution_id: str, name: str, **overrides: object) -> str:
    """A download token made with the server's URL key, claims overridden."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "alice",
        "aud": DOWNLOAD_AUDIENCE,
        "iss": "code-exec",
        "iat": now,
        "exp": now + 300,
        "exe": execution_id,
        "file": name,
    }
    claims.update(overrides)
    return jwt.encode(claims, URL_KEY, "HS256")


def test_a_signed_url_downloads_the_owners_file_without_a_token(signed_api: Api) -> None:
    api = signed_api
    execution_id = _run(api)
    minted = _mint(api, execution_id, "report.csv")
    assert minted.status_code == 200, minted.text
    body = minted.json()
    assert set(body) == {"url", "expires_at"}
    url = body["url"]
    assert url.startswith(
        f"{api.url}/v1/executions/{execution_id}/files/outputs/report.csv?signature="
    )
    expires = datetime.fromisoformat(body["expires_at"])
    assert abs((expires - datetime.now(UTC)).total_seconds() - 300) < 30
    got = api.http.get(url)  # no Authorization: the signature is the credential
    assert got.status_code == 200, got.text
    assert got.content == b"x,y\n3,4\n" and got.headers["content-type"].startswith("text/csv")
    # A bearer token that comes with it wins: another user's gets the download's 404.
    assert api.http.get(url, headers=api.headers("mallory")).status_code == 404
    # Names with spaces are signed and served as the download route spells them.
    spaced = _mint(api, execution_id, "other file.txt").json()["url"]
    assert "/outputs/other%20file.txt?signature=" in spaced
    assert api.http.get(spaced).content == b"not yours to see"


def test_no_url_is_signed_for_a_file_that_is_not_the_callers(signed_api: Api) -> None:
    api = signed_api
    execution_id = _run(api)
    mallory = _mint(api, execution_id, "report.csv", user="mallory")
    download = api.http.get(
        f"/v1/executions/{execution_id}/files/outputs/report.csv", headers=api.headers("mallory")
    )
    assert mallory.status_code == download.status_code == 404
    assert mallory.json() == download.json()
    assert _mint(api, execution_id, "missing.csv").status_code == 404
    assert _mint(api, "exe_" + "0" * 32, "report.csv").status_code == 404
    unauthenticated = api.http.post(f"/v1/executions/{execution_id}/files/outputs/report.csv/url")
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        ("tampered", "signature is not valid"),
        ("expired", "has expired"),
        ("other file", "is for another file"),
        ("other execution", "is for another file"),
        ("login token", "signature is not valid"),
        ("signed with the JWT secret", "signature is not valid"),
    ],
)
def test_a_bad_signature_is_403_and_says_to_ask_again(
    signed_api: Api, spoil: str, expected: str
) -> None:
    api = signed_api
    execution_id = _run(api)
    good = _mint(api, execution_id, "report.csv").json()["url"]
    base, _, token = good.partition("?signature=")
    bad = {
        "tampered": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        "expired": _forged(execution_id, "outputs/report.csv", exp=int(time.time()) - 5),
        "other file": _mint(api, execution_id, "other file.txt")
        .json()["url"]
        .split("signature=")[1],
        "other execution": _forged("exe_" + "1" * 32, "outputs/report.csv"),
        "login token": mint("alice"),
        "signed with the JWT secret": jwt.encode(
            jwt.decode(token, options={"verify_signature": False}), SECRET, "HS256"
        ),
    }[spoil]
    response = api.http.get(base, params={"signature": bad})
    assert response.status_code == 403, response.text
    message = response.json()["error"]["message"]
    assert expected in message
    assert (
        f"ask for a new URL (POST /v1/executions/{execution_id}/files/outputs/report.csv/url"
        in message
    )


def test_a_signature_opens_no_other_route_and_is_no_login_token(signed_api: Api) -> None:
    api = signed_api
    execution_id = _run(api)
    token = _mint(api, execution_id, "report.csv").json()["url"].split("signature=", 1)[1]
    for path in (
        f"/v1/executions/{execution_id}/output",
        "/v1/code_interpreter/sessions",
        "/v1/code_interpreter/sessions/ses_x/files/outputs/report.csv",
        "/mcp",
        "/metrics",
    ):
        response = api.http.get(path, params={"signature": token})
        assert response.status_code == 401, (path, response.text)
        assert "www-authenticate" in response.headers
    # Nor a POST of the download path (which is the URL-minting route's neighbour).
    posted = api.http.post(
        f"/v1/executions/{execution_id}/files/outputs/report.csv/url", params={"signature": token}
    )
    assert posted.status_code == 401
    # As a bearer token it is refused: another key, another audience.
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "run_code", "arguments": '{"code": "1"}'},
    }
    refused = api.http.post(
        "/v1/tools/call", json=call, headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 401
    assert "invalid token" in refused.json()["error"]["message"]


def test_the_lifetime_is_bounded(signed_api: Api) -> None:
    api = signed_api
    execution_id = _run(api)
    over = _mint(api, execution_id, "report.csv", ttl_s=601)
    assert over.status_code == 422
    assert "ttl_s 601 is above the limit of 600 s" in over.json()["error"]["message"]
    short = _mint(api, execution_id, "report.csv", ttl_s=60).json()
    expires = datetime.fromisoformat(short["expires_at"])
    assert abs((expires - datetime.now(UTC)).total_seconds() - 60) < 30
    assert _mint(api, execution_id, "report.csv", ttl_s=0).status_code == 422


def test_tool_results_link_files_by_urls_that_need_no_token(signed_api: Api) -> None:
    api = signed_api
    arguments = json.dumps({"code": FILES_CODE + "print('saved')"})
    for body in run_code_calls(arguments):
        [reply] = api.http.post("/v1/tools/call", json=body, headers=api.headers()).json()
        text = reply.get("content") or reply["output"]
        assert "files in outputs/ (links valid for 5 minutes; " in text, text
        # One file a line, "- name (size, type) URL": the URL ends the line.
        urls = [line.split()[-1] for line in text.splitlines() if "?signature=" in line]
        assert len(urls) == 2
        got = {url.split("?")[0].rsplit("/", 1)[-1]: api.http.get(url) for url in urls}
        assert got["report.csv"].status_code == 200 and got["report.csv"].content == b"x,y\n3,4\n"
        assert got["other%20file.txt"].content == b"not yours to see"


def test_the_key_is_kept_in_the_state_dir_when_none_is_set(tmp_path: Path) -> None:
    def settings(state: Path, **values: Any) -> ApiSettings:
        return ApiSettings(jwt_secret=SECRET, state_dir=state, _env_file=None, **values)

    first = UrlSigner.of(settings(tmp_path / "a"))
    signed = first.url("http://h/", "exe_1", "outputs/a.csv", "dana")
    token = signed.url.split("signature=", 1)[1]
    assert UrlSigner.of(settings(tmp_path / "a")).verify(token, "exe_1", "outputs/a.csv") == "dana"
    key = kept_secret_path(tmp_path / "a", URL_KEY_FILE)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(Forbidden, match="not valid; ask for a new URL"):
        UrlSigner.of(settings(tmp_path / "b")).verify(token, "exe_1", "outputs/a.csv")
    # A key given is used, and nothing is kept.
    given = UrlSigner.of(settings(tmp_path / "c", url_signing_key=URL_KEY))
    assert given.verify(_forged("exe_1", "outputs/a.csv"), "exe_1", "outputs/a.csv") == "alice"
    assert not (tmp_path / "c").exists()


def test_a_weak_or_shared_url_key_and_a_default_over_the_maximum_fail_at_start() -> None:
    def check(**values: Any) -> None:
        ApiSettings(jwt_secret=SECRET, _env_file=None, **values).check()

    with pytest.raises(RuntimeError, match="CODE_EXEC_URL_SIGNING_KEY has 5 characters"):
        check(url_signing_key="short")
    with pytest.raises(RuntimeError, match="is the JWT secret"):
        check(url_signing_key=SECRET)
    with pytest.raises(RuntimeError, match="above CODE_EXEC_MAX_DOWNLOAD_URL_TTL_S"):
        check(download_url_ttl_s=7200)
    check(url_signing_key=URL_KEY)
    # Left blank (as deploy/.env.example has it), it is unset: a key is kept in the state dir.
    assert ApiSettings(url_signing_key="", _env_file=None).url_signing_key is None


def test_lifetimes_read_as_people_say_them() -> None:
    assert [lifetime(s) for s in (300, 60, 3600, 7200, 90)] == [
        "5 minutes",
        "1 minute",
        "1 hour",
        "2 hours",
        "90 seconds",
    ]


PNG = "iVBORw0KGgpmYWtlIGltYWdlIGJvZHk="  # b"\x89PNG\r\n\x1a\n" + b"fake image body"


def test_chat_figure_links_are_signed_too(signed_api: Api) -> None:
    api = signed_api
    code = (
        f"image({PNG!r})"
        if api.backend is not None
        else "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"
    )
    arguments = json.dumps({"code": code})
    chat = {"id": "c", "type": "function", "function": {"name": "run_code", "arguments": arguments}}
    [message] = api.http.post("/v1/tools/call", json=chat, headers=api.headers()).json()
    assert "images: 1 PNG, links valid for 5 minutes: " in message["content"]
    url = next(w for w in message["content"].split() if "/files/image-0.png?signature=" in w)
    got = api.http.get(url)
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG")
