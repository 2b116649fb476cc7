"""The OpenAI front-end: the tool list in strict mode, and tool calls in, tool messages out."""

import base64
import functools
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response

from executor.errors import ExecutorError, InvalidRequest, LimitExceeded
from executor.interface import ExecutorClient
from executor.tools import Call, ToolOutcome, ToolSet
from executor.web import unless_caller_leaves
from openai_tools.deps import ClientDep, SettingsDep, SignerDep, ToolsDep, UserDep
from openai_tools.signed_urls import UrlSigner, file_path, lifetime, public_base
from openai_tools.strict import strict_json_schema
from schemas.outputs import image_name
from schemas.render import BEARER_URLS, files_line

router = APIRouter(prefix="/v1/tools", tags=["tools"])


def function_tools(tools: ToolSet, api: Literal["chat", "responses"]) -> list[dict[str, Any]]:
    """The `tools` list of a Chat Completions (or Responses) request, strict mode on."""
    listed = []
    for tool in tools:
        function = {
            "name": tool.name,
            "description": tools.describe(tool),
            "parameters": strict_json_schema(tools.input_schema(tool)),
            "strict": True,
        }
        listed.append(
            {"type": "function", "function": function}
            if api == "chat"
            else {"type": "function", **function}
        )
    return listed


@functools.lru_cache(maxsize=16)
def _listed(tools: ToolSet, api: Literal["chat", "responses"]) -> bytes:
    """The tool list as JSON, made once per tool set and API (agents fetch it often)."""
    return json.dumps(function_tools(tools, api)).encode()


@router.get("", response_model=list[dict[str, Any]])
async def list_tools(
    tools: ToolsDep,
    format: Annotated[Literal["chat", "responses"], Query()] = "chat",
) -> Response:
    """The tools, ready to pass as `tools` to Chat Completions (default) or Responses."""
    return Response(_listed(tools, format), media_type="application/json")


_ENVELOPE_HELP = (
    "send a Chat Completions tool call ({id, type: function, function: {name, arguments}}), "
    "a list of them, an assistant message with tool_calls, or Responses function_call items"
)


def _normalise(body: Any) -> tuple[list[tuple[str, str, Any]], Literal["chat", "responses"]]:
    """(call id, tool name, arguments) of each call, and which API's shape they came in."""
    if isinstance(body, dict) and "tool_calls" in body:
        body = body["tool_calls"] or []
    elif isinstance(body, dict) and isinstance(body.get("output"), list):
        body = body["output"]  # a whole Responses response
    items = body if isinstance(body, list) else [body]
    calls: list[tuple[str, str, Any]] = []
    style: Literal["chat", "responses"] | None = None
    for item in items:
        if not isinstance(item, dict):
            raise InvalidRequest(f"cannot read a tool call from {item!r}: {_ENVELOPE_HELP}")
        if isinstance(item.get("function"), dict):
            function = item["function"]
            calls.append(
                (str(item.get("id", "")), str(function.get("name", "")), function.get("arguments"))
            )
            style = style or "chat"
        elif item.get("type") == "function_call":
            calls.append(
                (str(item.get("call_id", "")), str(item.get("name", "")), item.get("arguments"))
            )
            style = style or "responses"
        elif "type" in item:
            continue  # other Responses output items: messages, reasoning
        else:
            raise InvalidRequest(f"cannot read a tool call from {item!r}: {_ENVELOPE_HELP}")
    if not calls:
        raise InvalidRequest(f"no tool call found: {_ENVELOPE_HELP}")
    return calls, style or "chat"


@dataclass(frozen=True)
class Links:
    """How a result's text links the files a run kept: bearer URLs, or URLs signed for user."""

    base: str
    user: str
    signer: UrlSigner | None = None

    def url(self, execution_id: str, name: str) -> str:
        """The URL of one kept file (image-0.png, outputs/report.csv)."""
        if self.signer is None:
            return self.base + file_path(execution_id, name)
        return self.signer.url(self.base, execution_id, name, self.user).url

    @property
    def how(self) -> str:
        """What the text says about fetching them."""
        if self.signer is None:
            return BEARER_URLS
        return f"links valid for {lifetime(self.signer.ttl_s)}"


def _linked_text(outcome: ToolOutcome, links: Links, style: Literal["chat", "responses"]) -> str:
    """The text with URLs for what a message cannot carry: output files (neither API has
    links), and figures in Chat (its tool messages are text only)."""
    text = outcome.text
    if outcome.structured is None or not (outcome.files or (style == "chat" and outcome.images)):
        return text  # nothing to link (other tools' results have no execution)
    execution_id = outcome.structured["execution_id"]
    if outcome.files:
        urls = [links.url(execution_id, "outputs/" + f.name) for f in outcome.files]
        uris = [f.uri for f in outcome.files]
        text = text.replace(
            files_line(outcome.files, uris), files_line(outcome.files, urls, links.how)
        )
    if style == "chat" and outcome.images:
        urls = [links.url(execution_id, image_name(i)) for i in range(len(outcome.images))]
        note = f"images: {len(urls)} PNG, {links.how}: " + " ".join(urls)
        text = text.replace(f"images: {len(urls)} PNG (returned separately)", note)
    return text


# Bounds of the files files=embed puts in function_call_output items. They are read whole into
# this answer, grow by a third as base64, and go on to the model in the client's next request,
# where megabytes of file cost many tokens: beyond these a link serves better than the bytes.
MAX_EMBED_FILE_BYTES = 8 * 1024 * 1024
MAX_EMBED_BYTES = 16 * 1024 * 1024
"""All the files embedded in one POST /v1/tools/call answer, over all its calls."""


# What the Responses API reads as input_file (its file-inputs guide): PDF; text and code;
# office documents; spreadsheets. Anything else (an image, an archive) would fail the client's
# next request, so it stays a link (figures already travel as input_image).
_READABLE_PREFIXES = ("text/", "application/vnd.openxmlformats-officedocument.")
_READABLE = frozenset(
    {
        "application/pdf",
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-sh",
        "application/x-python-code",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
    }
)


def readable_by_responses(mime_type: str) -> bool:
    """Whether a Responses input_file of this type is read by the model (not refused)."""
    return mime_type in _READABLE or mime_type.startswith(_READABLE_PREFIXES)


@dataclass
class Embedding:
    """The room left for embedded files in one answer, and how to read them."""

    client: ExecutorClient
    user: str
    room: int

    async def files(self, outcome: ToolOutcome) -> tuple[list[dict[str, Any]], list[str]]:
        """input_file items of the outcome's files that fit, and the names of those that did
        not (or could no longer be read)."""
        items: list[dict[str, Any]] = []
        left: list[str] = []
        if outcome.structured is None:
            return items, left
        execution_id = outcome.structured["execution_id"]
        for f in outcome.files:
            limit = min(MAX_EMBED_FILE_BYTES, self.room)
            data = None
            if f.size <= limit and readable_by_responses(f.mime_type):
                try:
                    download = await self.client.download_output(
                        execution_id, "outputs/" + f.name, self.user
                    )
                    data = await download.read_at_most(limit)
                except ExecutorError:
                    data = None  # gone since the run (expired, evicted): the link says so
            if data is None:
                left.append(f.name)
                continue
            self.room -= len(data)
            encoded = base64.b64encode(data).decode("ascii")
            items.append(
                {
                    "type": "input_file",
                    "filename": f.name,
                    "file_data": f"data:{f.mime_type};base64,{encoded}",
                }
            )
        return items, left


def _not_embedded(names: list[str]) -> str:
    return (
        f"not embedded (not a type the Responses API reads, over "
        f"{MAX_EMBED_FILE_BYTES // 2**20} MiB, past {MAX_EMBED_BYTES // 2**20} MiB in all, or "
        "no longer kept), use the link: " + ", ".join(names)
    )


async def _responses_output(
    outcome: ToolOutcome, text: str, embedding: Embedding | None
) -> str | list[dict[str, Any]]:
    """A function_call_output: the text, the figures as images the model sees, and (when
    embedding) the output files as input_file items."""
    files, left = await embedding.files(outcome) if embedding else ([], [])
    if left:
        text += "\n" + _not_embedded(left)
    if not (outcome.images or files):
        return text
    return [
        {"type": "input_text", "text": text},
        *(
            {"type": "input_image", "image_url": f"data:image/png;base64,{image.data}"}
            for image in outcome.images
        ),
        *files,
    ]


@router.post("/call", response_model=list[dict[str, Any]])
async def call_tools(
    request: Request,
    client: ClientDep,
    tools: ToolsDep,
    user: UserDep,
    settings: SettingsDep,
    signer: SignerDep,
    body: Annotated[Any, Body()],
    files: Annotated[
        Literal["link", "embed"],
        Query(
            description=(
                "How output files reach Responses function_call_output items: 'link' (a URL "
                "in the text) or 'embed' (also input_file items with their bytes, up to "
                f"{MAX_EMBED_FILE_BYTES // 2**20} MiB each and {MAX_EMBED_BYTES // 2**20} MiB "
                "in all). Chat tool messages are text only: they always link."
            )
        ),
    ] = "link",
) -> Response:
    """Run the calls of a model's response in order; returns the messages to append. Output
    files are linked in the text (signed URLs when CODE_EXEC_TOOL_RESULT_URLS=signed); with
    files=embed a Responses function_call_output also carries them as input_file items,
    while Chat tool messages, text only, stay as they are. A caller that leaves cancels the
    calls in progress."""
    calls, style = _normalise(body)
    signed = signer if settings.tool_result_urls == "signed" else None
    links = Links(public_base(request, settings), user, signed)
    embedding = (
        Embedding(client, user, MAX_EMBED_BYTES)
        if files == "embed" and style == "responses"
        else None
    )

    async def answer() -> Response:
        messages: list[dict[str, Any]] = []
        for call_id, name, arguments in calls:
            # Over the per-user cap, the whole request answers 429 with Retry-After: the loop
            # retries the call, rather than the model reading about someone's concurrency.
            outcome = await tools.call(Call(client, user), name, arguments, (LimitExceeded,))
            text = _linked_text(outcome, links, style)
            if style == "chat":
                messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            else:
                messages.append(
                    {
                        "type": "function_call_output",
                        "call_id": call_id,
                        "output": await _responses_output(outcome, text, embedding),
                    }
                )
        return JSONResponse(messages)

    return await unless_caller_leaves(request, answer)


@router.post("/{name}")
async def call_one(
    request: Request,
    name: str,
    client: ClientDep,
    tools: ToolsDep,
    user: UserDep,
    arguments: Annotated[dict[str, Any], Body()],
) -> Response:
    """Call one tool with an arguments object; the structured result as JSON."""

    async def answer() -> Response:
        result = await tools.invoke(Call(client, user), name, arguments)
        return Response(result.model_dump_json(), media_type="application/json")

    return await unless_caller_leaves(request, answer)
