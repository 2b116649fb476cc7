"""The three tools, each declared once: arguments, call, rendering, hints and session effect.

Front-ends (the OpenAI endpoint, the MCP server) iterate over a ToolSet and never test a
tool's name. Descriptions are written from the limits in force, so they stay true when an
operator changes them. A ToolSet call never raises for the model's mistakes or the code's
failures: they become an outcome whose text says what to do.
"""

import copy
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from executor.config import ExecutorSettings
from executor.errors import ExecutorError, InvalidRequest, validation_text
from executor.interface import ExecutorClient, OutputCallback
from schemas.execution import ExecuteResult, Image
from schemas.file_uris import output_uri
from schemas.health import Limits
from schemas.jsonschema import compact
from schemas.languages import Language
from schemas.network import Network
from schemas.outputs import OutputPage, OutputQuery
from schemas.render import render_result
from schemas.sessions import CloseSessionResult, SessionInfo, SessionOptions
from schemas.tools import (
    CloseSessionArgs,
    OpenSessionArgs,
    ReadOutputArgs,
    RunCodeArgs,
    SearchToolsArgs,
)
from schemas.upstream import ToolMatches, signature

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
Arguments = str | dict[str, Any] | None
"""A tool call's arguments as a model sends them: a JSON text, an object, or nothing."""


class ToolCallError(InvalidRequest):
    """The model called a tool wrongly: unknown name, bad JSON, arguments off the schema."""


@dataclass(frozen=True)
class Hints:
    """What a tool does to the world, as MCP annotations say it (none reaches the outside)."""

    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False


@dataclass(frozen=True)
class SessionEffect:
    """A session a call opened or closed (front-ends that track sessions read this)."""

    opened: str | None = None
    closed: str | None = None
    used: str | None = None
    """A session a run ran in (its files may have changed)."""


@dataclass(frozen=True)
class Call:
    """Who calls a tool, through which client, and where its output goes as it comes."""

    client: ExecutorClient
    user: str
    on_output: OutputCallback | None = None


@dataclass
class FileRef:
    """A file a result points at (a front-end links it: an MCP resource_link)."""

    uri: str
    name: str
    mime_type: str
    size: int


@dataclass
class ToolOutcome:
    """What a tool call gives back to the model."""

    text: str
    is_error: bool
    structured: dict[str, Any] | None = None
    images: list[Image] = field(default_factory=list)
    effect: SessionEffect | None = None
    files: list[FileRef] = field(default_factory=list)


def _memory(mb: int) -> str:
    return f"{mb // 1024} GiB" if mb % 1024 == 0 else f"{mb} MiB"


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{hours} hour{'s' if hours != 1 else ''}"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} minutes"
    return f"{seconds:g} seconds"


_NETWORK_TEXT = {
    Network.NONE: "without network",
    Network.PACKAGES: "without network but package installs (packages, or pip/npm)",
    Network.ALLOWLIST: "with package installs and the operator's allowed hosts",
}


def _code_mode_text(limits: Limits) -> str:
    if not limits.tool_servers:
        return ""
    servers = ", ".join(limits.tool_servers)
    return (
        f" Python code can call the operator's tools, whose results stay out of your context "
        f"unless printed: `from tools import {servers}` (search_tools finds them)."
    )


def _network_fields(limits: Limits) -> dict[str, str]:
    if limits.network is Network.NONE:
        return {}
    return {"packages": "pip or npm packages to install first."}


def _no_network_fields(limits: Limits) -> set[str]:
    # network (narrowing what a run reaches) is for programs, through the REST API: every
    # request that lists the tools would pay for it, and a model has little use for it.
    hidden = {"network", "allow_hosts"}
    return hidden | {"packages"} if limits.network is Network.NONE else hidden


class Tool(ABC, Generic[A, R]):
    """One tool: what the model sees, how it is called, how its result reads.

    A tool is declared as `class RunCode(Tool[RunCodeArgs, ExecuteResult], name="run_code")`:
    its argument and result models are the ones it is generic over.
    """

    name: ClassVar[str]
    arguments: type[A]
    result: type[R]
    hints: ClassVar[Hints] = Hints()
    description: ClassVar[str]
    """For the model, with {limits.*}, {memory} and {idle} filled in from the limits in force."""

    def __init_subclass__(cls, name: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name:
            cls.name = name
            cls.arguments, cls.result = get_args(cls.__orig_bases__[0])  # type: ignore[attr-defined]

    def describe(self, limits: Limits) -> str:
        """The description the model reads, with the limits in force."""
        return self.description.format(
            code_mode=_code_mode_text(limits),
            limits=limits,
            memory=_memory(limits.memory_limit_mb),
            idle=_duration(limits.session_idle_ttl_s),
            network=_NETWORK_TEXT[limits.network],
        )

    def field_descriptions(self, limits: Limits) -> dict[str, str]:
        """Model-facing descriptions of the arguments where they differ from the schema's
        ("" drops one: the argument's name says enough)."""
        return {}

    def hidden_fields(self, limits: Limits) -> set[str]:
        """Arguments left out of the schema under these limits (they could not be used)."""
        return set()

    @abstractmethod
    async def call(self, call: Call, args: A) -> R:
        """Do what the tool does; executor errors propagate."""

    @abstractmethod
    def render(self, result: R) -> str:
        """The model-ready text of a result."""

    def failed(self, result: R) -> bool:
        """Whether the result reports a failure of the user's code."""
        return False

    def images(self, result: R) -> list[Image]:
        """Figures that travel beside the text."""
        return []

    def files(self, result: R) -> list[FileRef]:
        """Files that travel beside the text, as links."""
        return []

    def effect(self, args: A, result: R) -> SessionEffect | None:
        """The session this call opened or closed."""
        return None

    def input_schema(self, limits: Limits) -> dict[str, Any]:
        """The JSON Schema of the arguments, described for the model: self-contained (no
        references, which strict-mode converters refuse) and short (no titles, defaults or
        null unions, which every request that lists the tools pays for)."""
        schema = compact(copy.deepcopy(self.arguments.model_json_schema()))
        for name in self.hidden_fields(limits):
            schema["properties"].pop(name, None)
            if name in schema.get("required", []):
                schema["required"].remove(name)
        for name, text in self.field_descriptions(limits).items():
            if text:
                schema["properties"][name]["description"] = text
            else:  # the name says it all
                schema["properties"][name].pop("description", None)
        return schema

    def structured(self, result: R) -> dict[str, Any]:
        """The result as structured data (what a program reads beside the text)."""
        return result.model_dump(mode="json")

    def parse(self, arguments: Arguments) -> A:
        """The validated arguments, or ToolCallError saying how to fix the call."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolCallError(
                    f"the arguments of {self.name} are not valid JSON ({exc.msg} at character "
                    f'{exc.pos}); send one JSON object, e.g. {{"code": "print(1)"}}'
                ) from None
            except RecursionError:
                raise ToolCallError(
                    f"the arguments of {self.name} are nested too deeply; send a flat object"
                ) from None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ToolCallError(f"the arguments of {self.name} must be a JSON object")
        try:
            return self.arguments.model_validate(arguments)
        except RecursionError:
            raise ToolCallError(
                f"the arguments of {self.name} are nested too deeply; send a flat object"
            ) from None
        except ValidationError as exc:
            text = validation_text(exc.errors(), default_where="arguments")
            raise ToolCallError(f"invalid arguments for {self.name}: {text}") from None

    async def outcome(self, call: Call, args: A) -> ToolOutcome:
        """Call and render: what the model gets back."""
        result = await self.call(call, args)
        return ToolOutcome(
            text=self.render(result),
            is_error=self.failed(result),
            structured=self.structured(result),
            images=self.images(result),
            effect=self.effect(args, result),
            files=self.files(result),
        )


class RunCode(Tool[RunCodeArgs, ExecuteResult], name="run_code"):
    """run_code: one run, stateless or in a session."""

    hints = Hints(destructive=False)
    description = (
        "Run code in an isolated sandbox {network}: python (numpy, pandas, scipy, sklearn, "
        "matplotlib...; shows the last expression's value and plots), javascript (Node.js), "
        "bash or c (gcc). "
        "Runs start clean unless given a session_id from open_session. {memory} of memory. "
        "Output over {limits.default_output_tokens} tokens is cut: read_output reads the rest."
        "{code_mode}"
    )

    def field_descriptions(self, limits: Limits) -> dict[str, str]:
        """The arguments as the model should read them."""
        return {
            "code": "",
            "session_id": "",
            "language": "Default python (in a session, its language).",
            "timeout": f"Seconds (default {limits.default_timeout_s:g}, max "
            f"{limits.max_timeout_s:g}).",
            "max_output_tokens": f"Token budget (default {limits.default_output_tokens}).",
            "files": "Files to write first.",
            "inputs": "Files to copy in first, by code-exec:// URI.",
            **_network_fields(limits),
        }

    def hidden_fields(self, limits: Limits) -> set[str]:
        """packages where the executor allows no network; network (for programs) always."""
        return _no_network_fields(limits)

    async def call(self, call: Call, args: RunCodeArgs) -> ExecuteResult:
        """Run the code."""
        return await call.client.execute(args.to_request(), call.user, call.on_output)

    def render(self, result: ExecuteResult) -> str:
        """Status, output, value, error and traceback, as schemas.render writes them."""
        return render_result(result)

    def failed(self, result: ExecuteResult) -> bool:
        """An error, a non-zero exit or a timeout."""
        return result.failed

    def images(self, result: ExecuteResult) -> list[Image]:
        """The run's figures."""
        return result.images

    def files(self, result: ExecuteResult) -> list[FileRef]:
        """What the run wrote under outputs/."""
        return [
            FileRef(output_uri(result.execution_id, f.name), f.name, f.mime_type, f.size)
            for f in result.files
        ]

    def effect(self, args: RunCodeArgs, result: ExecuteResult) -> SessionEffect | None:
        """The session the run ran in, if any."""
        return SessionEffect(used=result.session_id) if result.session_id else None

    def structured(self, result: ExecuteResult) -> dict[str, Any]:
        """The result without the images' bytes: they travel as images, never inside text a
        model might read (a base64 plot is thousands of tokens); each file with its URI."""
        data = result.model_dump(mode="json", exclude={"images"})
        data["images"] = [{"format": image.format} for image in result.images]
        for file in data["files"]:  # what a later run's inputs take
            file["uri"] = output_uri(result.execution_id, file["name"])
        return data


class OpenSession(Tool[OpenSessionArgs, SessionInfo], name="open_session"):
    """open_session: a sandbox whose state persists across runs."""

    hints = Hints(destructive=False)
    description = (
        "Open a sandbox that keeps variables and files between run_code calls; returns a "
        "session_id. It closes after {idle} idle, or by close_session."
    )

    def field_descriptions(self, limits: Limits) -> dict[str, str]:
        """The arguments as the model should read them."""
        return {"language": "", **_network_fields(limits)}

    def hidden_fields(self, limits: Limits) -> set[str]:
        """packages where the executor allows no network; network and inputs (for programs:
        a model copies files in with run_code's inputs) always."""
        return _no_network_fields(limits) | {"inputs"}

    async def call(self, call: Call, args: OpenSessionArgs) -> SessionInfo:
        """Open the session."""
        options = SessionOptions(packages=args.packages, network=args.network, inputs=args.inputs)
        return await call.client.open_session(args.language or Language.PYTHON, call.user, options)

    def render(self, result: SessionInfo) -> str:
        """The session id and what to do with it."""
        return (
            f"session_id: {result.session_id}\nlanguage: {result.language.value}\n"
            f"expires_at: {result.expires_at.isoformat()} (when idle; each run extends it)\n"
            "Pass this session_id to run_code; call close_session when done."
        )

    def effect(self, args: OpenSessionArgs, result: SessionInfo) -> SessionEffect:
        """The session opened."""
        return SessionEffect(opened=result.session_id)


class CloseSession(Tool[CloseSessionArgs, CloseSessionResult], name="close_session"):
    """close_session: end a session and free its sandbox."""

    hints = Hints(destructive=True, idempotent=True)
    description = "Close a session and free its sandbox."

    async def call(self, call: Call, args: CloseSessionArgs) -> CloseSessionResult:
        """Close the session."""
        return await call.client.close_session(args.session_id, call.user)

    def render(self, result: CloseSessionResult) -> str:
        """One line."""
        return f"session {result.session_id} closed"

    def effect(self, args: CloseSessionArgs, result: CloseSessionResult) -> SessionEffect:
        """The session closed."""
        return SessionEffect(closed=result.session_id)


class ReadOutput(Tool[ReadOutputArgs, OutputPage], name="read_output"):
    """read_output: the lines a cut result left out."""

    hints = Hints(read_only=True, idempotent=True)
    description = "Read the lines a run_code marker says were cut."

    async def call(self, call: Call, args: ReadOutputArgs) -> OutputPage:
        """Read the page."""
        query = OutputQuery(
            execution_id=args.execution_id, stream=args.stream, offset=args.offset, limit=args.limit
        )
        return await call.client.read_output(query, call.user)

    def render(self, result: OutputPage) -> str:
        """A header, then the lines (cut if the page itself is too long for a context)."""
        shown = result.text.count("\n")
        first = result.offset + 1
        header = (
            f"{result.stream} of {result.execution_id}: lines {first}-{result.offset + shown} "
            f"of {result.total_lines}"
        )
        text = result.text
        if len(text) > _PAGE_CHARS:
            note = f"[... page cut at {_PAGE_CHARS} characters; ask for fewer lines ...]"
            text = f"{text[:_PAGE_CHARS]}\n{note}"
        return f"{header}\n{text}" if text else f"{header} (none)"


_PAGE_CHARS = 24_000


class SearchTools(Tool[SearchToolsArgs, ToolMatches], name="search_tools"):
    """search_tools: the operator's tools code may call, found on demand (code mode)."""

    hints = Hints(read_only=True, idempotent=True)
    description = (
        "Find the operator's tools that run_code's Python can call (from tools import SERVER): "
        "their signatures and descriptions."
    )

    async def call(self, call: Call, args: SearchToolsArgs) -> ToolMatches:
        """Search."""
        found = await call.client.search_tools(args.query, call.user, args.limit or 10)
        return ToolMatches(tools=found)

    def render(self, result: ToolMatches) -> str:
        """One tool a paragraph: its call, then its description (bounded)."""
        if not result.tools:
            return "no tool matches; try other words"
        return "\n\n".join(
            f"{signature(entry)}\n{entry.description.strip()[:_DESCRIPTION_CHARS]}"
            for entry in result.tools
        )

    def structured(self, result: ToolMatches) -> dict[str, Any]:
        """Names and signatures (the schemas are in the text's signatures)."""
        return {"tools": [signature(entry) for entry in result.tools]}


_DESCRIPTION_CHARS = 1000

AnyTool = Tool[Any, Any]


class ToolSet:
    """The tools as a model meets them under one set of limits."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or ExecutorSettings.model_construct().limits()
        tools: list[AnyTool] = [RunCode(), OpenSession(), CloseSession(), ReadOutput()]
        if self.limits.tool_servers:  # code mode: listed only where it can find something
            tools.append(SearchTools())
        self.tools: dict[str, AnyTool] = {tool.name: tool for tool in tools}

    def __iter__(self) -> Any:
        return iter(self.tools.values())

    def get(self, name: str) -> AnyTool:
        """A tool by name, or ToolCallError naming the tools there are."""
        tool = self.tools.get(name)
        if tool is None:
            raise ToolCallError(f"unknown tool {name!r}; the tools are: {', '.join(self.tools)}")
        return tool

    def describe(self, tool: AnyTool) -> str:
        """A tool's description under these limits."""
        return tool.describe(self.limits)

    def input_schema(self, tool: AnyTool) -> dict[str, Any]:
        """A tool's argument schema under these limits."""
        return tool.input_schema(self.limits)

    async def invoke(self, call: Call, name: str, arguments: Arguments) -> BaseModel:
        """The structured result; mistakes and executor errors raise (HTTP status at the edge)."""
        tool = self.get(name)
        result: BaseModel = await tool.call(call, tool.parse(arguments))
        return result

    async def call(
        self,
        call: Call,
        name: str,
        arguments: Arguments,
        propagate: tuple[type[ExecutorError], ...] = (),
    ) -> ToolOutcome:
        """Call a tool as a model asked; every failure becomes an outcome the model can read.

        Errors of the `propagate` classes are raised instead, for a front-end that has a
        better way to say them (an HTTP 429 with Retry-After, say).
        """
        try:
            tool = self.get(name)
            return await tool.outcome(call, tool.parse(arguments))
        except propagate:
            raise
        except ExecutorError as exc:
            return ToolOutcome(text=f"error: {exc.message}", is_error=True)
