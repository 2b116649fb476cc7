"""The MCP front-end: the ToolSet's tools served by a low-level MCP server.

Results carry the same model-ready text as the OpenAI endpoint, structuredContent (the
result's fields, never image bytes), PNG figures as ImageContent, a resource_link for each
file the run wrote under outputs/ (resources/read gives its bytes, to the user who ran it),
and isError when the code failed. The files of the user's open sessions are resources too
(resources/list, resources/read); a call that changes them sends
notifications/resources/list_changed to the user's connections. When the client asks for
progress, output is reported as it is produced. A client that sets a log level
(logging/setLevel) gets one log notification per tool call at that level or above: what was
called, whether it failed, how long it took.

Code sessions belong to the user, not to an MCP connection: clients that open a connection
per call (langchain-mcp-adapters, pydantic-ai across agent runs) keep using a session_id
from an earlier connection. Sessions end by close_session, their idle TTL or their lifetime.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, get_args
from weakref import WeakKeyDictionary

import anyio
from mcp import types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.shared.context import RequestContext
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl

from executor.errors import ExecutorError, NotFound
from executor.interface import ExecutorClient, OutputCallback
from executor.tools import AnyTool, Call, Hints, SessionEffect, ToolSet
from schemas.file_uris import OutputRef, parse_file_uri, session_file_uri
from schemas.files import FileInfo, mime_type

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Run code in isolated sandboxes without network access: run_code for one-off runs, "
    "open_session/run_code(session_id)/close_session to keep state across runs."
)

UserOf = Callable[[RequestContext[Any, Any, Any]], str]
LinksOf = Callable[[RequestContext[Any, Any, Any]], bool]
"""Whether a connection takes resource_link blocks (else files are named in the text only)."""
# MCP's error for an unknown resource; what one resources/read may bring into memory.
RESOURCE_NOT_FOUND = -32002
MAX_READ_BYTES = 16 * 1024 * 1024
# resources/list answers in one page: a workspace of thousands of files is not for a picker.
MAX_LISTED_RESOURCES = 500
MAX_SEEN_SESSIONS = 10_000
TEMPLATES = [
    types.ResourceTemplate(
        uriTemplate="code-exec://sessions/{session_id}/files/{path}",
        name="session-file",
        description="A file of one of your sessions (path relative to /home/user).",
    ),
    types.ResourceTemplate(
        uriTemplate="code-exec://executions/{execution_id}/outputs/{name}",
        name="run-output",
        description="A file a run wrote under /home/user/outputs/ (linked from its result).",
    ),
]
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

    def __init__(
        self,
        client: ExecutorClient,
        tools: ToolSet,
        user_of: UserOf,
        links_of: LinksOf = lambda ctx: True,
    ) -> None:
        super().__init__("code-exec", version="0.1.0", instructions=INSTRUCTIONS)
        self.client = client
        self.tools = tools
        self.user_of = user_of
        self.links_of = links_of
        self._definitions = [tool_definition(tools, tool) for tool in tools]
        # The level each connection asked for; forgotten with the connection.
        self._log_levels: WeakKeyDictionary[ServerSession, types.LoggingLevel] = WeakKeyDictionary()
        # Who is behind each connection, and what each (user, session) last listed: a run
        # that changes a session's files is announced to the user's connections.
        self._connections: WeakKeyDictionary[ServerSession, str] = WeakKeyDictionary()
        self._seen: OrderedDict[tuple[str, str], frozenset[tuple[str, int, Any]]] = OrderedDict()
        self.list_tools()(self._list_tools)  # type: ignore[no-untyped-call]
        self.call_tool(validate_input=False)(self._call_tool)
        self.set_logging_level()(self._set_logging_level)  # type: ignore[no-untyped-call]
        self.list_resources()(self._list_resources)  # type: ignore[no-untyped-call]
        self.list_resource_templates()(self._list_resource_templates)  # type: ignore[no-untyped-call]
        self.read_resource()(self._read_resource)  # type: ignore[no-untyped-call]

    def options(self) -> InitializationOptions:
        """Initialization options (tools, resources with list_changed, logging)."""
        return self.create_initialization_options()

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        """As the SDK makes them, saying resources/list changes are announced (the HTTP
        transport's session manager calls this itself)."""
        return super().create_initialization_options(
            notification_options or NotificationOptions(resources_changed=True),
            experimental_capabilities,
        )

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
        user = self._user()
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
            if self.links_of(self.request_context)
        ]
        if await self._files_changed(outcome.effect, user):
            await self._announce_resources(user)
        return types.CallToolResult(
            content=content, structuredContent=outcome.structured, isError=outcome.is_error
        )

    def _user(self) -> str:
        """The caller, remembered with its connection (resource notifications reach them)."""
        user = self.user_of(self.request_context)
        self._connections[self.request_context.session] = user
        return user

    async def _session_files(self, session_id: str, user: str) -> list[FileInfo]:
        """A session's files as resources list them: not directories, not hidden ones (the
        packages a session installed live under .local), none when it has closed meanwhile."""
        try:
            listed = await self.client.list_files(session_id, user)
        except ExecutorError as exc:  # closed meanwhile, lost: the call's result still goes back
            log.info("session %s: files not listed: %s", session_id[:12], exc.message)
            return []
        return [
            f
            for f in listed
            if not f.is_dir and not any(part.startswith(".") for part in f.path.split("/"))
        ]

    async def _files_changed(self, effect: SessionEffect | None, user: str) -> bool:
        """Whether a call changed the user's session files (what resources/list shows)."""
        if effect is None:
            return False
        changed = False
        if effect.closed is not None:
            changed = bool(self._seen.pop((user, effect.closed), None))
        session_id = effect.opened or effect.used
        if session_id is not None:
            files = await self._session_files(session_id, user)
            now = frozenset((f.path, f.size, f.modified_at) for f in files)
            before = self._seen.pop((user, session_id), frozenset())
            self._seen[(user, session_id)] = now
            while len(self._seen) > MAX_SEEN_SESSIONS:
                self._seen.popitem(last=False)  # least recently used (closed by expiry)
            changed = changed or now != before
        return changed

    async def _announce_resources(self, user: str) -> None:
        """notifications/resources/list_changed to each connection of the user: on the call's
        own stream for the caller (a client without a standalone stream still gets it)."""
        ctx = self.request_context
        for connection, owner in list(self._connections.items()):
            if owner != user:
                continue
            related = ctx.request_id if connection is ctx.session else None
            try:
                await connection.send_notification(
                    types.ServerNotification(types.ResourceListChangedNotification()),
                    related_request_id=related,
                )
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._connections.pop(connection, None)  # gone; the client re-lists on return

    async def _list_resources(self) -> list[types.Resource]:
        """The files of the user's open sessions (a run's outputs are linked from its result,
        not listed), at most MAX_LISTED_RESOURCES."""
        user = self._user()
        resources: list[types.Resource] = []
        for session in await self.client.list_sessions(user):
            for f in await self._session_files(session.session_id, user):
                if len(resources) >= MAX_LISTED_RESOURCES:
                    return resources
                resources.append(
                    types.Resource(
                        uri=AnyUrl(session_file_uri(session.session_id, f.path)),
                        name=f.path,
                        description=f"/home/user/{f.path} in {session.language.value} session "
                        f"{session.session_id}",
                        mimeType=mime_type(f.path),
                        size=f.size,
                    )
                )
        return resources

    async def _list_resource_templates(self) -> list[types.ResourceTemplate]:
        return TEMPLATES

    async def _read_resource(self, uri: AnyUrl) -> list[ReadResourceContents]:
        """A file of this user's: one a run wrote under outputs/ (a resource_link's URI), or
        one in a session's workspace (from resources/list)."""
        ref = parse_file_uri(str(uri))
        if ref is None:
            raise McpError(
                types.ErrorData(
                    code=RESOURCE_NOT_FOUND,
                    message=f"no resource {str(uri)[:200]!r}: code-exec serves the files runs "
                    "wrote (code-exec://executions/ID/outputs/NAME, from a run_code result) and "
                    "sessions' files (code-exec://sessions/ID/files/PATH, from resources/list)",
                )
            )
        user = self._user()
        try:
            if isinstance(ref, OutputRef):
                where = f"GET /v1/executions/{ref.execution_id}/files/outputs/{ref.name}"
                name = ref.name
                download = await self.client.download_output(
                    ref.execution_id, f"outputs/{ref.name}", user
                )
            else:
                where = f"GET /v1/code_interpreter/sessions/{ref.session_id}/files/{ref.path}"
                name = ref.path
                download = await self.client.download_file(ref.session_id, user, ref.path)
        except NotFound as exc:
            raise McpError(types.ErrorData(code=RESOURCE_NOT_FOUND, message=exc.message)) from None
        except ExecutorError as exc:  # a directory, a file over the executor's limit
            raise McpError(
                types.ErrorData(code=types.INVALID_PARAMS, message=exc.message)
            ) from None
        data = await download.read_at_most(MAX_READ_BYTES)
        if data is None:
            raise McpError(
                types.ErrorData(
                    code=types.INVALID_REQUEST,
                    message=f"{name} is over {MAX_READ_BYTES // 2**20} MiB: download it "
                    f"over HTTP ({where})",
                )
            )
        mime = mime_type(name)
        content: str | bytes = data
        if mime.startswith("text/") or mime in _TEXT_TYPES:
            try:
                content = data.decode("utf-8")
            except UnicodeDecodeError:
                pass  # sent as a blob
        return [ReadResourceContents(content=content, mime_type=mime)]
