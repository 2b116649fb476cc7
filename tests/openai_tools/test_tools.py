"""OpenAI function calling against a real server: the tool list and scripted agent loops."""

import base64
import json
from contextlib import contextmanager
from typing import Any

import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionToolMessageParam,
)
from openai.types.responses import (
    FunctionToolParam,
    ResponseFunctionCallOutputItemListParam,
    ResponseFunctionToolCall,
)
from openai.types.responses.response_input_item_param import FunctionCallOutput
from pydantic import TypeAdapter

from openai_tools import tool_routes
from openai_tools.tool_routes import MAX_EMBED_FILE_BYTES
from tests.openai_tools.conftest import Api, in_process_api, run_code_calls


def _assert_strict(schema: dict[str, Any], where: str = "parameters") -> None:
    if schema.get("type") == "object":
        assert schema.get("additionalProperties") is False, where
        assert sorted(schema["required"]) == sorted(schema["properties"]), where
    for key in ("default", "title", "$ref", "$defs"):
        assert key not in schema, f"{where}: {key}"
    for name, sub in schema.get("properties", {}).items():
        _assert_strict(sub, f"{where}.{name}")
    for sub in schema.get("anyOf", []):
        _assert_strict(sub, where)
    if isinstance(schema.get("items"), dict):
        _assert_strict(schema["items"], f"{where}[]")


def test_tool_lists_are_valid_openai_tools_in_strict_mode(api: Api) -> None:
    chat = api.http.get("/v1/tools").json()
    assert [t["function"]["name"] for t in chat] == [
        "run_code",
        "open_session",
        "close_session",
        "read_output",
    ]
    adapter = TypeAdapter(ChatCompletionFunctionToolParam)
    for tool in chat:
        adapter.validate_python(tool, strict=True)
        assert tool["function"]["strict"] is True
        _assert_strict(tool["function"]["parameters"])
    responses = api.http.get("/v1/tools", params={"format": "responses"}).json()
    responses_adapter = TypeAdapter(FunctionToolParam)
    for tool in responses:
        responses_adapter.validate_python(tool, strict=True)
        _assert_strict(tool["parameters"])
    # Optional arguments are nullable, so a model in strict mode can leave them out.
    run_code = chat[0]["function"]["parameters"]["properties"]
    assert {"type": "null"} in run_code["session_id"]["anyOf"]
    assert run_code["code"] == {"type": "string"}
    assert "$ref" not in json.dumps(chat) and '"title"' not in json.dumps(chat)


def _chat_call(
    call_id: str, name: str, arguments: dict[str, Any]
) -> ChatCompletionMessageFunctionToolCall:
    return ChatCompletionMessageFunctionToolCall.model_validate(
        {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
    )


def test_a_chat_completions_agent_loop(api: Api) -> None:
    """Feed tool calls exactly as a model's response carries them, append what comes back."""
    history: list[dict[str, Any]] = [{"role": "user", "content": "What is 6 * 7? Use a session."}]
    tool_message = TypeAdapter(ChatCompletionToolMessageParam)

    def step(message: ChatCompletionMessage) -> list[dict[str, Any]]:
        history.append(message.model_dump(exclude_none=True))
        response = api.http.post("/v1/tools/call", json=history[-1], headers=api.headers())
        assert response.status_code == 200, response.text
        replies = response.json()
        for reply in replies:
            tool_message.validate_python(reply, strict=True)
        history.extend(replies)
        return replies

    first = ChatCompletionMessage(
        role="assistant",
        content=None,
        tool_calls=[_chat_call("call_open", "open_session", {"language": "python"})],
    )
    [opened] = step(first)
    assert opened["tool_call_id"] == "call_open"
    session_id = opened["content"].split("session_id: ")[1].split("\n")[0]
    second = ChatCompletionMessage(
        role="assistant",
        content=None,
        tool_calls=[
            _chat_call("call_a", "run_code", {"code": "x = 6 * 7", "session_id": session_id}),
            _chat_call("call_b", "run_code", {"code": "print(x)", "session_id": session_id}),
        ],
    )
    a, b = step(second)
    assert (a["tool_call_id"], b["tool_call_id"]) == ("call_a", "call_b")
    assert a["content"] == "exit_code: 0\n(no output)"
    assert b["content"] == "exit_code: 0\nstdout:\n42"
    third = ChatCompletionMessage(
        role="assistant",
        content=None,
        tool_calls=[_chat_call("call_c", "close_session", {"session_id": session_id})],
    )
    [closed] = step(third)
    assert closed["content"] == f"session {session_id} closed"


def test_a_responses_agent_loop(real_api: Api) -> None:
    api = real_api
    items = [
        ResponseFunctionToolCall(
            type="function_call",
            call_id="fc_1",
            name="run_code",
            arguments=json.dumps(
                {"code": "console.log([1,2,3].map(x => x * 2).join(','))", "language": "javascript"}
            ),
        ),
        ResponseFunctionToolCall(
            type="function_call",
            call_id="fc_2",
            name="run_code",
            arguments=json.dumps({"code": "import math\nmath.sqrt(-1)"}),
        ),
    ]
    body = [item.model_dump(exclude_none=True) for item in items]
    replies = api.http.post("/v1/tools/call", json=body, headers=api.headers()).json()
    adapter = TypeAdapter(FunctionCallOutput)
    for reply in replies:
        adapter.validate_python(reply, strict=True)
    assert replies[0] == {
        "type": "function_call_output",
        "call_id": "fc_1",
        "output": "exit_code: 0\nstdout:\n2,4,6",
    }
    assert replies[1]["call_id"] == "fc_2"
    assert "error: ValueError: math domain error" in replies[1]["output"]
    assert "Traceback" in replies[1]["output"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"code": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"language": "python"}', "code: Field required"),
        ('{"code": "1", "language": "cobol"}', "unsupported language 'cobol'"),
        ('{"code": "1", "colour": "red"}', "colour: Extra inputs are not permitted"),
        ('{"code": "1", "session_id": "ses_nope"}', "session 'ses_nope' not found"),
    ],
)
def test_mistakes_come_back_as_tool_messages_the_model_can_act_on(
    api: Api, arguments: str, expected: str
) -> None:
    call = {
        "id": "call_x",
        "type": "function",
        "function": {"name": "run_code", "arguments": arguments},
    }
    response = api.http.post("/v1/tools/call", json=call, headers=api.headers())
    assert response.status_code == 200
    [reply] = response.json()
    assert reply["role"] == "tool" and reply["tool_call_id"] == "call_x"
    assert reply["content"].startswith("error: ")
    assert expected in reply["content"]


def test_an_unknown_tool_is_a_tool_message_too(api: Api) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "rm_rf", "arguments": "{}"}}
    [reply] = api.http.post("/v1/tools/call", json=call, headers=api.headers()).json()
    assert "unknown tool 'rm_rf'" in reply["content"]
    assert "run_code, open_session, close_session" in reply["content"]


def test_an_envelope_that_holds_no_tool_call_is_a_422(api: Api) -> None:
    response = api.http.post("/v1/tools/call", json={"hello": 1}, headers=api.headers())
    assert response.status_code == 422
    assert "tool call" in response.json()["error"]["message"]


def test_structured_endpoint_for_wrappers(api: Api) -> None:
    response = api.http.post(
        "/v1/tools/run_code",
        json={"code": "print('hi')\n2 ** 10"},
        headers=api.headers(),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["stdout"] == "hi\n" and body["value"] == "1024" and body["exit_code"] == 0
    bad = api.http.post("/v1/tools/run_code", json={"cod": "1"}, headers=api.headers())
    assert bad.status_code == 422
    assert "code: Field required" in bad.json()["error"]["message"]
    missing = api.http.post(
        "/v1/tools/close_session", json={"session_id": "ses_zzz"}, headers=api.headers()
    )
    assert missing.status_code == 404


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"fake image body").decode()


def test_figures_reach_both_apis(api: Api) -> None:
    code = (
        f"image({PNG!r})\nprint('plotted')"
        if api.backend is not None
        else "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nprint('plotted')"
    )
    arguments = json.dumps({"code": code})
    # Responses: the figure is an input_image the model sees.
    [reply] = api.http.post(
        "/v1/tools/call",
        json={"type": "function_call", "call_id": "fc", "name": "run_code", "arguments": arguments},
        headers=api.headers(),
    ).json()
    TypeAdapter(FunctionCallOutput).validate_python(reply, strict=True)
    text, image = reply["output"]
    assert text["type"] == "input_text" and "plotted" in text["text"]
    assert image["type"] == "input_image" and image["image_url"].startswith(
        "data:image/png;base64,"
    )
    # Chat: tool messages are text, so the figure is a URL the user's token can fetch.
    [message] = api.http.post(
        "/v1/tools/call",
        json={
            "id": "c",
            "type": "function",
            "function": {"name": "run_code", "arguments": arguments},
        },
        headers=api.headers(),
    ).json()
    url = next(word for word in message["content"].split() if "/files/image-0.png" in word)
    got = api.http.get(url, headers=api.headers())
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.content.startswith(b"\x89PNG")
    assert api.http.get(url, headers=api.headers("mallory")).status_code == 404


def test_output_files_reach_both_apis_as_urls_for_their_owner_only(api: Api) -> None:
    code = (
        "import os\nos.makedirs('outputs/data', exist_ok=True)\n"
        "with open('outputs/data/clean table.csv', 'w') as f:\n    f.write('a,b\\n1,2\\n')\n"
        "print('saved')"
    )
    arguments = json.dumps({"code": code})
    for body in run_code_calls(arguments):
        [reply] = api.http.post("/v1/tools/call", json=body, headers=api.headers()).json()
        text = reply.get("content") or reply["output"]
        assert isinstance(text, str) and "saved" in text
        assert "files in outputs/ (fetch with your bearer token; " in text, text
        line = next(line for line in text.splitlines() if line.startswith("- data/clean table"))
        assert "data/clean table.csv (8 bytes, text/csv)" in line, line
        url = line.split()[-1]
        assert url.endswith("/files/outputs/data/clean%20table.csv"), url
        got = api.http.get(url, headers=api.headers())
        assert got.status_code == 200 and got.content == b"a,b\n1,2\n"
        assert got.headers["content-type"].startswith("text/csv")
        assert api.http.get(url, headers=api.headers("mallory")).status_code == 404


PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def _embed_code(big: int) -> str:
    return (
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        f"with open('outputs/report.pdf', 'wb') as f:\n    f.write({PDF!r})\n"
        "with open('outputs/table.csv', 'w') as f:\n    f.write('a,b\\n1,2\\n')\n"
        f"with open('outputs/big.txt', 'wb') as f:\n    f.write(b'x' * {big})\n"
        "with open('outputs/archive.zip', 'wb') as f:\n    f.write(b'PK\\x05\\x06' + bytes(18))\n"
        "print('saved')"
    )


def test_responses_carry_output_files_as_input_file_items_when_asked(api: Api) -> None:
    arguments = json.dumps({"code": _embed_code(MAX_EMBED_FILE_BYTES + 1)})
    call = {"type": "function_call", "call_id": "fc", "name": "run_code", "arguments": arguments}
    response = api.http.post(
        "/v1/tools/call", params={"files": "embed"}, json=call, headers=api.headers()
    )
    assert response.status_code == 200, response.text[:500]
    [reply] = response.json()
    TypeAdapter(FunctionCallOutput).validate_python(reply, strict=True)
    TypeAdapter(ResponseFunctionCallOutputItemListParam).validate_python(
        reply["output"], strict=True
    )
    text, *files = reply["output"]
    assert text["type"] == "input_text" and "saved" in text["text"]
    # The file over the bound, and a type the Responses API does not read (an archive, which
    # would fail the client's next request), stay links, and the text says so.
    assert "not embedded (not a type the Responses API reads, over 8 MiB" in text["text"]
    assert text["text"].rstrip().endswith("use the link: archive.zip, big.txt")
    assert "/files/outputs/big.txt" in text["text"]
    assert [f["filename"] for f in files] == ["report.pdf", "table.csv"]
    by_name = {f["filename"]: f["file_data"] for f in files}
    for name, mime, data in (
        ("report.pdf", "application/pdf", PDF),
        ("table.csv", "text/csv", b"a,b\n1,2\n"),
    ):
        prefix = f"data:{mime};base64,"
        assert by_name[name].startswith(prefix), by_name[name][:60]
        assert base64.b64decode(by_name[name][len(prefix) :], validate=True) == data
    # Chat tool messages are text only: files=embed leaves them as they are.
    chat = {"id": "c", "type": "function", "function": {"name": "run_code", "arguments": arguments}}
    [message] = api.http.post(
        "/v1/tools/call", params={"files": "embed"}, json=chat, headers=api.headers()
    ).json()
    TypeAdapter(ChatCompletionToolMessageParam).validate_python(message, strict=True)
    assert isinstance(message["content"], str) and "not embedded" not in message["content"]
    assert "/files/outputs/report.pdf" in message["content"]
    # Without files=embed a Responses output is the text, as before.
    [linked] = api.http.post("/v1/tools/call", json=call, headers=api.headers()).json()
    assert isinstance(linked["output"], str) and "not embedded" not in linked["output"]


def test_embedded_files_share_one_bound_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # Bounds this small are patched in this process: the in-process API only.
    monkeypatch.setattr(tool_routes, "MAX_EMBED_FILE_BYTES", 64)
    monkeypatch.setattr(tool_routes, "MAX_EMBED_BYTES", 80)
    # 10 + 54 + 8 bytes a run: the first call's files fit, then 8 bytes are left (the CSV).
    arguments = json.dumps({"code": _embed_code(10)})
    calls = [
        {"type": "function_call", "call_id": f"fc{i}", "name": "run_code", "arguments": arguments}
        for i in range(2)
    ]
    with contextmanager(in_process_api)() as api:
        first, second = api.http.post(
            "/v1/tools/call", params={"files": "embed"}, json=calls, headers=api.headers()
        ).json()
    names = [[item.get("filename") for item in reply["output"][1:]] for reply in (first, second)]
    assert names == [["big.txt", "report.pdf", "table.csv"], ["table.csv"]]
    assert second["output"][0]["text"].endswith("use the link: archive.zip, big.txt, report.pdf")
