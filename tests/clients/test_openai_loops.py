"""The `openai` SDK's types in scripted Chat Completions and Responses loops against
/v1/tools and /v1/tools/call of a real server: the tool list validated as the SDK's tool
params (strict mode), calls built as a strict-mode model sends them (every optional argument
null), replies validated as the messages the next request carries, every flow played."""

import json
import re
from typing import Any

import httpx
import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionToolMessageParam,
)
from openai.types.responses import FunctionToolParam, ResponseFunctionToolCall
from openai.types.responses.response_input_item_param import FunctionCallOutput
from pydantic import TypeAdapter

from tests.clients.flows import EPISODES, Play, Seen
from tests.clients.servers import mcp_api, runs_in_progress
from tests.openai_tools.conftest import Api
from tests.processes import wait_until

__all__ = ["mcp_api"]
pytestmark = pytest.mark.slow
PNG = b"\x89PNG\r\n\x1a\n"


def _strict_arguments(properties: dict[str, Any], arguments: dict[str, Any]) -> str:
    return json.dumps(dict.fromkeys(properties) | arguments)


def test_every_flow_in_a_chat_completions_loop(mcp_api: Api) -> None:
    headers = mcp_api.headers("chat-loop")
    listed = mcp_api.http.get("/v1/tools").json()
    for tool in listed:
        TypeAdapter(ChatCompletionFunctionToolParam).validate_python(tool, strict=True)
    properties = {t["function"]["name"]: t["function"]["parameters"]["properties"] for t in listed}
    reply_type = TypeAdapter(ChatCompletionToolMessageParam)
    done, turn = Play(), 0
    for step in (step for episode in EPISODES for step in episode):
        turn += 1
        arguments = _strict_arguments(properties[step.tool], step.arguments(done.memory))
        call = {
            "id": f"call{turn}",
            "type": "function",
            "function": {"name": step.tool, "arguments": arguments},
        }
        message = ChatCompletionMessage(
            role="assistant",
            tool_calls=[ChatCompletionMessageFunctionToolCall.model_validate(call)],
        )
        response = mcp_api.http.post(
            "/v1/tools/call", json=message.model_dump(exclude_none=True), headers=headers
        )
        assert response.status_code == 200, response.text
        [reply] = response.json()
        reply_type.validate_python(reply, strict=True)
        assert reply["tool_call_id"] == f"call{turn}"
        # A tool message carries text only: figures are URLs the caller fetches with its token.
        urls = re.findall(r"https?://\S+/files/image-\d+\.png", reply["content"])
        fetched = [mcp_api.http.get(url, headers=headers) for url in urls]
        assert all(r.status_code == 200 and r.content.startswith(PNG) for r in fetched)
        assert all(httpx.get(url).status_code == 401 for url in urls)
        done.record(step, Seen(reply["content"], len(fetched)))


def test_every_flow_in_a_responses_loop(mcp_api: Api) -> None:
    headers = mcp_api.headers("responses-loop")
    listed = mcp_api.http.get("/v1/tools", params={"format": "responses"}).json()
    for tool in listed:
        TypeAdapter(FunctionToolParam).validate_python(tool, strict=True)
    properties = {t["name"]: t["parameters"]["properties"] for t in listed}
    reply_type = TypeAdapter(FunctionCallOutput)
    done, turn = Play(), 0
    for step in (step for episode in EPISODES for step in episode):
        turn += 1
        arguments = _strict_arguments(properties[step.tool], step.arguments(done.memory))
        item = ResponseFunctionToolCall(
            type="function_call", call_id=f"fc{turn}", name=step.tool, arguments=arguments
        )
        response = mcp_api.http.post(
            "/v1/tools/call", json=[item.model_dump(exclude_none=True)], headers=headers
        )
        assert response.status_code == 200, response.text
        [reply] = response.json()
        reply_type.validate_python(reply, strict=True)
        output = reply["output"]
        if isinstance(output, str):
            done.record(step, Seen(output))
            continue
        texts = [part["text"] for part in output if part["type"] == "input_text"]
        images = [part["image_url"] for part in output if part["type"] == "input_image"]
        assert all(url.startswith("data:image/png;base64,") for url in images)
        done.record(step, Seen("\n".join(texts), len(images)))


def test_a_loop_that_gives_up_on_a_call_cancels_its_run(mcp_api: Api) -> None:
    """An agent loop whose HTTP call times out (or is interrupted) leaves nothing running."""

    def runs() -> int:
        return runs_in_progress(mcp_api.http.get("/health").json())

    wait_until(lambda: not runs(), 30)
    sleeper = {"code": "import time\ntime.sleep(60)", "timeout": 120}
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "run_code", "arguments": json.dumps(sleeper)},
    }
    with pytest.raises(httpx.ReadTimeout):
        mcp_api.http.post(
            "/v1/tools/call", json=call, headers=mcp_api.headers("gives-up"), timeout=2
        )
    wait_until(lambda: not runs(), 15, "the abandoned run still holds its sandbox")
