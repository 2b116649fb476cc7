"""pydantic-ai's MCP toolset with code-exec over stdio (from the `mcpServers` config file
Claude Desktop, Cursor and pydantic-ai share) and streamable HTTP. A FunctionModel plays
tests/clients/flows.py; each episode is a separate agent.run(), which connects anew."""

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent, BinaryContent
from pydantic_ai.mcp import MCPToolset, load_mcp_toolsets
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import AbstractToolset

from tests.clients.flows import EPISODES, Play, Seen, Step
from tests.clients.servers import Http, Stdio, http, mcp_api, stdio, stdio_state

__all__ = ["http", "mcp_api", "stdio", "stdio_state"]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def seen(part: ToolReturnPart | RetryPromptPart) -> Seen:
    """What the model is shown of a tool's return (text and images) or of its error."""
    if isinstance(part, RetryPromptPart):
        return Seen(part.model_response())
    if isinstance(part.content, dict):  # the structured result, shown when there is no image
        return Seen(json.dumps(part.content), data=part.content)
    content = part.content if isinstance(part.content, list) else [part.content]
    texts = [c for c in content if isinstance(c, str)]
    images = [c for c in content if isinstance(c, BinaryContent)]
    assert len(texts) + len(images) == len(content), content
    assert all(c.media_type == "image/png" for c in images)
    return Seen("\n".join(texts), len(images))


def scripted(steps: list[Step], play: Play) -> FunctionModel:
    """A model that calls one step's tool per turn and says "done" after the last."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = sum(isinstance(m, ModelResponse) for m in messages)
        if turn:
            request = messages[-1]
            assert isinstance(request, ModelRequest)
            [returned] = [
                p for p in request.parts if isinstance(p, ToolReturnPart | RetryPromptPart)
            ]
            play.record(steps[turn - 1], seen(returned))
        if turn == len(steps):
            return ModelResponse(parts=[TextPart("done")])
        step = steps[turn]
        # The config file's toolsets are prefixed with the server's name.
        [name] = [t.name for t in info.function_tools if t.name.endswith(step.tool)]
        return ModelResponse(parts=[ToolCallPart(name, step.arguments(play.memory), f"call{turn}")])

    return FunctionModel(respond)


def toolset(where: Stdio | Http, tmp_path: Path) -> AbstractToolset[Any]:
    if isinstance(where, Http):
        return MCPToolset(where.url, headers=where.headers, read_timeout=60)
    config = tmp_path / "mcp.json"
    # load_mcp_toolsets expands ${VAR} in the file and fails on an unset one: leave out what
    # only looks like one (make's MAKEFLAGS holds ${-*-command-variables-*-} when make is given
    # variables), as a hand-written config would.
    env = {key: value for key, value in where.env.items() if "${" not in value}
    server = {"command": where.command, "args": where.args, "env": env}
    config.write_text(json.dumps({"mcpServers": {"code-exec": server}}))
    [loaded] = load_mcp_toolsets(config)
    return loaded


async def play(where: Stdio | Http, tmp_path: Path) -> Play:
    done = Play()
    tools = toolset(where, tmp_path)
    for episode in EPISODES:
        agent = Agent(scripted(episode, done), toolsets=[tools], retries=5)
        result = await agent.run("Work out 6 * 7 in every language.")
        assert result.output == "done"
    return done


async def test_every_flow_over_stdio(stdio: Stdio, tmp_path: Path) -> None:
    await play(stdio, tmp_path)


async def test_every_flow_over_streamable_http(http: Http, tmp_path: Path) -> None:
    await play(http, tmp_path)
