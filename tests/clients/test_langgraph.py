"""langchain-mcp-adapters with a LangChain agent (create_agent, a LangGraph graph), over stdio
and streamable HTTP, as the README shows: `MultiServerMCPClient.get_tools()`, whose tools open
a new MCP session for every call (and, over stdio, start a new `code-exec mcp` process). A
scripted chat model plays tests/clients/flows.py; each episode is a new client and agent."""

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_mcp_adapters.client import MultiServerMCPClient

from tests.clients.flows import EPISODES, Play, Seen, Step
from tests.clients.servers import Http, Stdio, http, mcp_api, stdio, stdio_state

__all__ = ["http", "mcp_api", "stdio", "stdio_state"]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def seen(message: ToolMessage) -> Seen:
    """A ToolMessage's content as the model reads it: a string, or text and image blocks."""
    if isinstance(message.content, str):
        return Seen(message.content)
    texts = [b["text"] for b in message.content if isinstance(b, dict) and b["type"] == "text"]
    images = [b for b in message.content if isinstance(b, dict) and b["type"] == "image"]
    assert len(texts) + len(images) == len(message.content), message.content
    assert all(b["mime_type"] == "image/png" and b["base64"] for b in images)
    return Seen("\n".join(texts), len(images))


class ScriptedChat(BaseChatModel):
    """A chat model that calls one step's tool per turn and says "done" after the last."""

    steps: list[Step]
    play: Play

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> "ScriptedChat":  # type: ignore[override]
        names = {tool.name for tool in tools}
        assert {step.tool for step in self.steps} <= names, names
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        turn = sum(isinstance(m, AIMessage) for m in messages)
        if turn:
            assert isinstance(messages[-1], ToolMessage)
            self.play.record(self.steps[turn - 1], seen(messages[-1]))
        if turn == len(self.steps):
            return ChatResult(generations=[ChatGeneration(message=AIMessage("done"))])
        step = self.steps[turn]
        call = {"name": step.tool, "args": step.arguments(self.play.memory), "id": f"call{turn}"}
        message = AIMessage("", tool_calls=[{**call, "type": "tool_call"}])
        return ChatResult(generations=[ChatGeneration(message=message)])


def connection(where: Stdio | Http, resource_links: bool = False) -> dict[str, Any]:
    """The server as the README configures it for LangChain: without resource_link blocks,
    which langchain-mcp-adapters 0.3 turns into image or file blocks whose URL is the
    resource's URI (code-exec://...), a URL no model provider can fetch
    (langchain-ai/langchain-mcp-adapters#591: the agent run ends at the next model call)."""
    if isinstance(where, Stdio):
        args = where.args if resource_links else [*where.args, "--no-resource-links"]
        return {"transport": "stdio", "command": where.command, "args": args, "env": where.env}
    url = where.url if resource_links else f"{where.url}?resource_links=false"
    return {"transport": "streamable_http", "url": url, "headers": where.headers}


async def play(where: Stdio | Http) -> Play:
    done = Play()
    for episode in EPISODES:
        client = MultiServerMCPClient({"code-exec": connection(where)})  # type: ignore[dict-item]
        tools = await client.get_tools()
        agent = create_agent(ScriptedChat(steps=episode, play=done), tools)
        state = await agent.ainvoke(
            {"messages": [("user", "Work out 6 * 7 in every language.")]},
            {"recursion_limit": 100},
        )
        assert state["messages"][-1].content == "done"
    return done


async def test_every_flow_over_stdio(stdio: Stdio) -> None:
    await play(stdio)


async def test_every_flow_over_streamable_http(http: Http) -> None:
    await play(http)


async def test_why_langchain_is_served_without_resource_links(http: Http) -> None:
    """With resource_link blocks, langchain-mcp-adapters hands the model provider a URL block
    of each output file's code-exec:// URI; served as the README says, the file is named in
    the text, with a URI a later run's inputs take."""
    client = MultiServerMCPClient({"code-exec": connection(http, resource_links=True)})  # type: ignore[dict-item]
    [run_code] = [t for t in await client.get_tools() if t.name == "run_code"]
    code = (
        "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/a.png', 'wb').write(b'x')"
    )
    call = {"name": "run_code", "args": {"code": code}, "id": "c1", "type": "tool_call"}
    linked = await run_code.ainvoke(call)
    urls = [b.get("url") for b in linked.content if isinstance(b, dict) and b["type"] == "image"]
    assert len(urls) == 1 and urls[0].startswith("code-exec://executions/"), linked.content
    client = MultiServerMCPClient({"code-exec": connection(http)})  # type: ignore[dict-item]
    [run_code] = [t for t in await client.get_tools() if t.name == "run_code"]
    plain = await run_code.ainvoke(call)
    assert (
        seen(plain).images == 0 and "- a.png (1 bytes, image/png) code-exec://" in seen(plain).text
    )
