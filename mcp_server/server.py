"""The MCP server's tools, generated from schemas.TOOLS and run through executor.tools.

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

from executor.client import ExecutorClient
from executor.errors import ExecutorError
from executor.tools import call_tool
from schemas.tools import TOOLS, ToolSpec

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Run code in isolated sandboxes without network access: run_code for one-off runs, "
    "open_session/run_code(session_id)/close_session to keep state across runs."
)

UserOf = Callable[[RequestContext[Any, Any, Any]], str]

_opened: ContextVar[set[tuple[str, str]]] = ContextVar("code_exec_opened_sessions")


def _annotations(spec: ToolSpec) -> types.ToolAnnotations:
    """Honest hints: tools change sandbox state, none reaches the outside world."""
    return types.ToolAnnotations(
        title=spec.name.replace("_", " ").capitalize(),
        readOnlyHint=False,
        destructiveHint=spec.name == "close_session",
        idempotentHint=spec.name == "close_session",
        openWorldHint=False,
    )


def tool_definitions() -> list[types.Tool]:
    """The MCP tool list."""
    return [
        types.Tool(
            name=spec.name,
            description=spec.description,
            inputSchema=spec.arguments.model_json_schema(),
            outputSchema=spec.result.model_json_schema(),
            annotations=_annotations(spec),
        )
        for spec in TOOLS.values()
    ]


class CodeExecServer(Server[Any, Any]):
    """A low-level MCP server that remembers the sessions each connection opened."""

    def __init__(self, client: ExecutorClient, user_of: UserOf) -> None:
        super().__init__("code-exec", version="0.1.0", instructions=INSTRUCTIONS)
        self.client = client
        self.user_of = user_of
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
        return tool_definitions()

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        ctx = self.request_context
        user = self.user_of(ctx)
        token = ctx.meta.progressToken if ctx.meta else None
        on_output = None
        if token is not None:
            sent = 0

            async def report(stream: str, text: str) -> None:
                nonlocal sent
                sent += 1
                await ctx.session.send_progress_notification(
                    token,
                    progress=sent,
                    message=text if stream == "stdout" else f"[{stream}] {text}",
                )

            on_output = report
        outcome = await call_tool(self.client, name, arguments, user, on_output)
        if outcome.structured is not None and name == "open_session":
            with contextlib.suppress(LookupError):
                _opened.get().add((user, outcome.structured["session_id"]))
        elif name == "close_session" and outcome.structured is not None:
            with contextlib.suppress(LookupError):
                _opened.get().discard((user, outcome.structured["session_id"]))
        content: list[types.ContentBlock] = [types.TextContent(type="text", text=outcome.text)]
        content += [
            types.ImageContent(type="image", data=image.data, mimeType="image/png")
            for image in outcome.images
        ]
        return types.CallToolResult(
            content=content, structuredContent=outcome.structured, isError=outcome.is_error
        )
