"""The MCP front-end: the ToolSet's tools served by a low-level MCP server.

Results carry the same model-ready text as the OpenAI endpoint, structuredContent matching
each tool's outputSchema, PNG figures as ImageContent, and isError when the code failed.
When the client asks for progress, output is reported as it is produced. Sessions a client
opened are closed when its MCP session ends (they expire by TTL when that cannot be known).
"""

import contextlib
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import anyio
from mcp import types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.shared.context import RequestContext

from executor.errors import ExecutorError
from executor.interface import ExecutorClient, OutputCallback
from executor.tools import AnyTool, Call, ToolSet

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Run code in isolated sandboxes without network access: run_code for one-off runs, "
    "open_session/run_code(session_id)/close_session to keep state across runs."
)

UserOf = Callable[[RequestContext[Any, Any, Any]], str]

_opened: ContextVar[set[tuple[str, str]]] = ContextVar("code_exec_opened_sessions")


def tool_definition(tools: ToolSet, tool: AnyTool) -> types.Tool:
    """One tool as MCP lists it, with honest annotations (no tool reaches the outside world)."""
    return types.Tool(
        name=tool.name,
        description=tools.describe(tool),
        inputSchema=tools.input_schema(tool),
        outputSchema=tool.output_schema(),
        annotations=types.ToolAnnotations(
            title=tool.title,
            readOnlyHint=tool.hints.read_only,
            destructiveHint=tool.hints.destructive,
            idempotentHint=tool.hints.idempotent,
            openWorldHint=tool.hints.open_world,
        ),
    )


class CodeExecServer(Server[Any, Any]):
    """A low-level MCP server that remembers the sessions each connection opened."""

    def __init__(self, client: ExecutorClient, tools: ToolSet, user_of: UserOf) -> None:
        super().__init__("code-exec", version="0.1.0", instructions=INSTRUCTIONS)
        self.client = client
        self.tools = tools
        self.user_of = user_of
        self._definitions = [tool_definition(tools, tool) for tool in tools]
        self.list_tools()(self._list_tools)  # type: ignore[no-untyped-call]
        self.call_tool(validate_input=False)(self._call_tool)

    async def run(self, *args: Any, **kwargs: Any) -> None:
        """Serve one connection; close the sessions it opened when it ends."""
        opened: set[tuple[str, str]] = set()
        _opened.set(opened)
        try:
            await super().run(*args, **kwargs)
        finally:
            with anyio.CancelScope(shield=True):
                for user, session_id in list(opened):
                    with contextlib.suppress(ExecutorError):
                        await self.client.close_session(session_id, user)
                        log.info("closed session %s: its MCP client went away", session_id[:12])

    def options(self) -> Any:
        """Initialization options (tools only)."""
        return self.create_initialization_options(NotificationOptions())

    async def _list_tools(self) -> list[types.Tool]:
        return self._definitions

    def _progress(self) -> OutputCallback | None:
        """Output as progress notifications, when the client sent a progress token."""
        ctx = self.request_context
        token = ctx.meta.progressToken if ctx.meta else None
        if token is None:
            return None
        sent = 0

        async def report(stream: str, text: str) -> None:
            nonlocal sent
            sent += 1
            await ctx.session.send_progress_notification(
                token, progress=sent, message=text if stream == "stdout" else f"[{stream}] {text}"
            )

        return report

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        user = self.user_of(self.request_context)
        outcome = await self.tools.call(Call(self.client, user, self._progress()), name, arguments)
        if outcome.effect is not None:
            with contextlib.suppress(LookupError):
                opened = _opened.get()
                if outcome.effect.opened:
                    opened.add((user, outcome.effect.opened))
                if outcome.effect.closed:
                    opened.discard((user, outcome.effect.closed))
        content: list[types.ContentBlock] = [types.TextContent(type="text", text=outcome.text)]
        content += [
            types.ImageContent(type="image", data=image.data, mimeType="image/png")
            for image in outcome.images
        ]
        return types.CallToolResult(
            content=content, structuredContent=outcome.structured, isError=outcome.is_error
        )
