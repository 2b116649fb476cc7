"""The OpenAI Agents SDK with code-exec as its MCP server, strict schema conversion on, over
stdio and streamable HTTP. A scripted model plays tests/clients/flows.py the way a strict-mode
model calls tools (every optional argument sent as null); each episode is a new MCP server
connection and a new Runner.run."""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents import Agent, FunctionTool, ModelSettings, Runner, Usage
from agents.items import ModelResponse, TResponseInputItem
from agents.mcp import MCPServer, MCPServerStdio, MCPServerStreamableHttp
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from tests.clients.flows import EPISODES, Play, Seen, Step
from tests.clients.servers import Http, Stdio, http, mcp_api, stdio, stdio_state

__all__ = ["http", "mcp_api", "stdio", "stdio_state"]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def seen(output: Any) -> Seen:
    """A function_call_output as the model receives it: a string, or input_text/input_image."""
    if isinstance(output, str):
        return Seen(output)
    texts = [item["text"] for item in output if item["type"] == "input_text"]
    images = [item for item in output if item["type"] == "input_image"]
    assert all(item["image_url"].startswith("data:image/png;base64,") for item in images)
    return Seen("\n".join(texts), len(images))


class ScriptedModel(Model):
    """Calls one step's tool per turn, reads what came back, says "done" after the last."""

    def __init__(self, steps: list[Step], play: Play) -> None:
        self.steps = steps
        self.play = play
        self.turn = 0

    async def get_response(  # type: ignore[override]
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        function_tools = {t.name: t for t in tools if isinstance(t, FunctionTool)}
        # Strict conversion held for every tool (the SDK logs and falls back when it cannot).
        assert all(t.strict_json_schema for t in function_tools.values()), function_tools
        if self.turn:
            output = [
                i for i in input if isinstance(i, dict) and i.get("type") == "function_call_output"
            ]
            self.play.record(self.steps[self.turn - 1], seen(output[-1]["output"]))
        if self.turn == len(self.steps):
            done = ResponseOutputText(type="output_text", text="done", annotations=[])
            message = ResponseOutputMessage(
                id="msg", type="message", role="assistant", status="completed", content=[done]
            )
            return ModelResponse(output=[message], usage=Usage(), response_id=None)
        step = self.steps[self.turn]
        self.turn += 1
        schema = function_tools[step.tool].params_json_schema
        arguments = dict.fromkeys(schema["properties"]) | step.arguments(self.play.memory)
        call = ResponseFunctionToolCall(
            type="function_call",
            id=f"fc{self.turn}",
            call_id=f"call{self.turn}",
            name=step.tool,
            arguments=json.dumps(arguments),
        )
        return ModelResponse(output=[call], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the flows run without streaming")


def server(where: Stdio | Http) -> MCPServer:
    """code-exec as an Agents SDK MCP server, with the timeout a run needs (the SDK's default
    of 5 s fails any longer run; the README says so)."""
    if isinstance(where, Stdio):
        params = {"command": where.command, "args": where.args, "env": where.env}
        return MCPServerStdio(params, client_session_timeout_seconds=60)  # type: ignore[arg-type]
    return MCPServerStreamableHttp(
        {"url": where.url, "headers": where.headers, "timeout": 60},
        client_session_timeout_seconds=60,
    )


async def play(where: Stdio | Http) -> Play:
    done = Play()
    for episode in EPISODES:
        async with server(where) as mcp:
            agent = Agent(
                name="coder",
                model=ScriptedModel(episode, done),
                mcp_servers=[mcp],
                mcp_config={"convert_schemas_to_strict": True},
            )
            result = await Runner.run(agent, "Work out 6 * 7 in every language.", max_turns=30)
            assert result.final_output == "done"
    return done


async def test_every_flow_over_stdio(stdio: Stdio) -> None:
    await play(stdio)


async def test_every_flow_over_streamable_http(http: Http) -> None:
    await play(http)
