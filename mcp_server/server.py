"""The MCP front-end: the ToolSet's tools served by a low-level MCP server.

Results carry the same model-ready text as the OpenAI endpoint, structuredContent (the
result's fields, never image bytes), PNG figures as ImageContent, a resource_link for each
file the run wrote under outputs/ (resources/read gives its bytes, to the user who ran it),
and isError when the code failed. When the client asks for progress, output is reported as
it is produced. A client that sets a log level (logging/setLevel) gets one log notification
per tool call at that level or above: what was called, whether it failed, how long it took.

Code sessions belong to the user, not to an MCP connection: clients that open a connection
per call (langchain-mcp-adapters, pydantic-ai across agent runs) keep using a session_id
from an earlier connection. Sessions end by close_session, their idle TTL or their lifetime.
"""

import logging
import mimetypes
import time
from collections.abc import Callable
from typing import Any, get_args
from weakref import WeakKeyDictionary

from mcp import types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.session import ServerSession
from mcp.shared.context import RequestContext
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl

from executor.errors import NotFound
from executor.interface import ExecutorClient, OutputCallback
from executor.tools import AnyTool, Call, Hints, ToolSet
from schemas.outputs import parse_output_uri

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Run code in isolated sandboxes without network access: run_code for one-off runs, "
    "open_session/run_code(session_id)/close_session to keep state across runs."
)

UserOf = Callable[[RequestContext[Any, Any, Any]], str]
# MCP's error for an unknown resource; what one resources/read may bring into memory.
RESOURCE_NOT_FOUND = -32002
MAX_READ_BYTES = 16 * 1024 * 1024
_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/x-yaml"})
# MCP's log levels, least severe first.
LEVELS: tuple[types.LoggingLevel, ...] = get_args(types.LoggingLevel)


def _annotations(hints: Hints) -> types.ToolAnnotations:
    """The hints that differ from MCP's defaults (not read-only, destructive, not idempotent,
    open world): every word of a tool list is paid for in every request that carries it."""
    return types.ToolAnnotations(
        openWorldHint=hints.open_world,
        readOnlyHint=True if hints.read_only else None,
        destructiveHint=False if not hints.read_only and not hints.destructive else None,
        idempotentHint=True if hints.idempotent else None,
    )


def tool_definition(tools: ToolSet, tool: AnyTool) -> types.Tool:
    """One tool as MCP lists it: no output schema (the text is the result a model reads, and
    clients would validate every result against it), honest hints."""
    return types.Tool(
        name=tool.name,
        description=tools.describe(tool),
        inputSchema=tools.input_schema(tool),
        annotations=_annotations(tool.hints),
    )


class CodeExecServer(Server[Any, Any]):
    """A low-level MCP server over a ToolSet and an executor client."""

    def __init__(self, client: ExecutorClient, tools: ToolSet, user_of: UserOf) -> None:
        super().__init__("code-exec", version="0.1.0", instructions=INSTRUCTIONS)
        self.client = client
        self.tools = tools
        self.user_of = user_of
        self._definitions = [tool_definition(tools, tool) for tool in tools]
        # The level each connection asked for; forgotten with the connection.
        self._log_levels: WeakKeyDictionary[ServerSession, types.LoggingLevel] = WeakKeyDictionary()
        self.list_tools()(self._list_tools)  # type: ignore[no-untyped-call]
        self.call_tool(validate_input=False)(self._call_tool)
        self.set_logging_level()(self._set_logging_level)  # type: ignore[no-untyped-call]
        self.list_resources()(self._list_resources)  # type: ignore[no-untyped-call]
        self.read_resource()(self._read_resource)  # type: ignore[no-untyped-call]

    def options(self) -> Any:
        """Initialization options (tools and logging)."""
        return self.create_initialization_options(NotificationOptions())

    async def _set_logging_level(self, level: types.LoggingLevel) -> None:
        self._log_levels[self.request_context.session] = level

    async def _log(self, level: types.LoggingLevel, message: str) -> None:
        """A log notification, to a client that asked for this level or a lower one."""
        ctx = self.request_context
        wanted = self._log_levels.get(ctx.session)
        if wanted is None or LEVELS.index(level) < LEVELS.index(wanted):
            return
        await ctx.session.send_log_message(
            level, message, logger="code-exec", related_request_id=ctx.request_id
        )

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
            # On the call's own stream (over HTTP), where it is kept for a client that resumes.
            await ctx.session.send_progress_notification(
                token,
                progress=sent,
                message=text if stream == "stdout" else f"[{stream}] {text}",
                related_request_id=str(ctx.request_id),
            )

        return report

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        user = self.user_of(self.request_context)
        started = time.monotonic()
        outcome = await self.tools.call(Call(self.client, user, self._progress()), name, arguments)
        took = f"{time.monotonic() - started:.2f} s"
        if outcome.is_error:
            await self._log("warning", f"{name}: an error result after {took}")
        else:
            await self._log("info", f"{name}: done in {took}")
        content: list[types.ContentBlock] = [types.TextContent(type="text", text=outcome.text)]
        content += [
            types.ImageContent(type="image", data=image.data, mimeType="image/png")
            for image in outcome.images
        ]
        content += [
            types.ResourceLink(
                type="resource_link",
                uri=AnyUrl(f.uri),
                name=f.name,
                mimeType=f.mime_type,
                size=f.size,
            )
            for f in outcome.files
        ]
        return types.CallToolResult(
            content=content, structuredContent=outcome.structured, isError=outcome.is_error
        )

    async def _list_resources(self) -> list[types.Resource]:
        # A run's files are linked from its result (resource_link) and read by URI; nothing
        # is listed yet (a session's files will be).
        return []

    async def _read_resource(self, uri: AnyUrl) -> list[ReadResourceContents]:
        """A file a run of this user wrote under outputs/ (a resource_link's URI)."""
        parsed = parse_output_uri(str(uri))
        if parsed is None:
            raise McpError(
                types.ErrorData(
                    code=RESOURCE_NOT_FOUND,
                    message=f"no resource {str(uri)[:200]!r}: code-exec serves the files runs "
                    "wrote (code-exec://executions/ID/outputs/NAME, from a run_code result)",
                )
            )
        execution_id, name = parsed
        user = self.user_of(self.request_context)
        try:
            download = await self.client.download_output(execution_id, f"outputs/{name}", user)
        except NotFound as exc:
            raise McpError(types.ErrorData(code=RESOURCE_NOT_FOUND, message=exc.message)) from None
        data = bytearray()
        async for chunk in download.chunks:
            data += chunk
            if len(data) > MAX_READ_BYTES:
                raise McpError(
                    types.ErrorData(
                        code=types.INVALID_REQUEST,
                        message=f"{name} is over {MAX_READ_BYTES // 2**20} MiB: download it over "
                        f"HTTP (GET /v1/executions/{execution_id}/files/outputs/{name})",
                    )
                )
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        content: str | bytes = bytes(data)
        if mime.startswith("text/") or mime in _TEXT_TYPES:
            try:
                content = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                pass  # sent as a blob
        return [ReadResourceContents(content=content, mime_type=mime)]
