"""The OpenAI front-end: the tool list in strict mode, and tool calls in, tool messages out."""

import functools
import json
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response

from executor.errors import InvalidRequest, LimitExceeded
from executor.tools import Call, ToolOutcome, ToolSet
from executor.web import unless_caller_leaves
from openai_tools.deps import ClientDep, ToolsDep, UserDep
from openai_tools.strict import strict_json_schema
from schemas.outputs import image_name
from schemas.render import files_line

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


def _linked_text(outcome: ToolOutcome, base_url: str, style: Literal["chat", "responses"]) -> str:
    """The text with URLs the user's token can fetch for what a message cannot carry: output
    files (neither API has links), and figures in Chat (its tool messages are text only)."""
    text = outcome.text
    if outcome.structured is None or not (outcome.files or (style == "chat" and outcome.images)):
        return text  # nothing to link (other tools' results have no execution)
    execution = f"{base_url}v1/executions/{outcome.structured['execution_id']}/files/"
    if outcome.files:
        urls = [execution + "outputs/" + quote(f.name) for f in outcome.files]
        text = text.replace(files_line(outcome.files), files_line(outcome.files, urls))
    if style == "chat" and outcome.images:
        urls = [execution + image_name(i) for i in range(len(outcome.images))]
        note = f"images: {len(urls)} PNG, fetch with your bearer token: " + " ".join(urls)
        text = text.replace(f"images: {len(urls)} PNG (returned separately)", note)
    return text


def _responses_output(outcome: ToolOutcome, text: str) -> str | list[dict[str, Any]]:
    """A function_call_output: the text, and the figures as images the model sees."""
    if not outcome.images:
        return text
    return [
        {"type": "input_text", "text": text},
        *(
            {"type": "input_image", "image_url": f"data:image/png;base64,{image.data}"}
            for image in outcome.images
        ),
    ]


@router.post("/call", response_model=list[dict[str, Any]])
async def call_tools(
    request: Request,
    client: ClientDep,
    tools: ToolsDep,
    user: UserDep,
    body: Annotated[Any, Body()],
) -> Response:
    """Run the calls of a model's response in order; returns the messages to append. A
    caller that leaves cancels the calls in progress."""
    calls, style = _normalise(body)

    async def answer() -> Response:
        messages: list[dict[str, Any]] = []
        for call_id, name, arguments in calls:
            # Over the per-user cap, the whole request answers 429 with Retry-After: the loop
            # retries the call, rather than the model reading about someone's concurrency.
            outcome = await tools.call(Call(client, user), name, arguments, (LimitExceeded,))
            text = _linked_text(outcome, str(request.base_url), style)
            if style == "chat":
                messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            else:
                messages.append(
                    {
                        "type": "function_call_output",
                        "call_id": call_id,
                        "output": _responses_output(outcome, text),
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
