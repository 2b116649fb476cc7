"""OpenAI function calling: the tool list, and tool calls in, tool messages out."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response

from executor.errors import InvalidRequest
from executor.tools import call_tool, invoke, parse_arguments
from openai_tools.deps import ClientDep, LimiterDep, UserDep
from schemas.strict import strict_json_schema
from schemas.tools import TOOLS

router = APIRouter(prefix="/v1/tools", tags=["tools"])


def chat_tools() -> list[dict[str, Any]]:
    """The `tools` list of a Chat Completions request."""
    return [
        {
            "type": "function",
            "function": {
                "name": spec.name,
                "description": spec.description,
                "parameters": strict_json_schema(spec.arguments),
                "strict": True,
            },
        }
        for spec in TOOLS.values()
    ]


def responses_tools() -> list[dict[str, Any]]:
    """The `tools` list of a Responses API request."""
    return [
        {
            "type": "function",
            "name": spec.name,
            "description": spec.description,
            "parameters": strict_json_schema(spec.arguments),
            "strict": True,
        }
        for spec in TOOLS.values()
    ]


@router.get("")
async def list_tools(
    format: Annotated[Literal["chat", "responses"], Query()] = "chat",
) -> list[dict[str, Any]]:
    """The tools, ready to pass as `tools` to Chat Completions (default) or Responses."""
    return chat_tools() if format == "chat" else responses_tools()


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


@router.post("/call")
async def call_tools(
    client: ClientDep,
    user: UserDep,
    limiter: LimiterDep,
    body: Annotated[Any, Body()],
) -> list[dict[str, Any]]:
    """Run the calls of a model's response in order; returns the messages to append."""
    calls, style = _normalise(body)
    messages: list[dict[str, Any]] = []
    for call_id, name, arguments in calls:
        async with limiter.slot(user):
            outcome = await call_tool(client, name, arguments, user)
        if style == "chat":
            messages.append({"role": "tool", "tool_call_id": call_id, "content": outcome.text})
        else:
            messages.append(
                {"type": "function_call_output", "call_id": call_id, "output": outcome.text}
            )
    return messages


@router.post("/{name}")
async def call_one(
    name: str,
    client: ClientDep,
    user: UserDep,
    limiter: LimiterDep,
    arguments: Annotated[dict[str, Any], Body()],
) -> Response:
    """Call one tool with an arguments object; the structured result as JSON."""
    _, args = parse_arguments(name, arguments)
    async with limiter.slot(user):
        result = await invoke(client, args, user)
    return Response(result.model_dump_json(), media_type="application/json")
