"""Calling a tool by name: parse and validate its arguments, run it, render its result.

Every front-end (OpenAI endpoint, MCP server) goes through here, so a tool behaves and reads
the same wherever a model calls it. call_tool never raises for the model's mistakes or the
code's failures: they become an error outcome whose text says what to do.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from executor.backends.base import OutputCallback
from executor.client import ExecutorClient
from executor.errors import ExecutorError, InvalidRequest, validation_text
from schemas.execution import ExecuteResult, Image
from schemas.languages import Language
from schemas.render import render_result
from schemas.sessions import SessionInfo
from schemas.tools import (
    TOOLS,
    CloseSessionArgs,
    CloseSessionResult,
    OpenSessionArgs,
    RunCodeArgs,
    ToolSpec,
)


class ToolCallError(InvalidRequest):
    """The model called a tool wrongly: unknown name, bad JSON, arguments off the schema."""


@dataclass
class ToolOutcome:
    """What a tool call gives back to the model."""

    text: str
    is_error: bool
    structured: dict[str, Any] | None = None
    images: list[Image] = field(default_factory=list)


def _validation_text(exc: ValidationError) -> str:
    return validation_text(exc.errors(), default_where="arguments")


def parse_arguments(
    name: str, arguments: str | dict[str, Any] | None
) -> tuple[ToolSpec, BaseModel]:
    """The tool and its validated arguments, or ToolCallError saying how to fix the call."""
    spec = TOOLS.get(name)
    if spec is None:
        raise ToolCallError(f"unknown tool {name!r}; the tools are: {', '.join(TOOLS)}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolCallError(
                f"the arguments of {name} are not valid JSON ({exc.msg} at character "
                f'{exc.pos}); send one JSON object, e.g. {{"code": "print(1)"}}'
            ) from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ToolCallError(f"the arguments of {name} must be a JSON object")
    try:
        return spec, spec.arguments.model_validate(arguments)
    except ValidationError as exc:
        raise ToolCallError(f"invalid arguments for {name}: {_validation_text(exc)}") from None


async def invoke(
    client: ExecutorClient,
    args: BaseModel,
    user: str,
    on_output: OutputCallback | None = None,
) -> BaseModel:
    """Run a tool whose arguments are validated; executor errors propagate."""
    if isinstance(args, RunCodeArgs):
        try:
            request = args.to_request()
        except ValidationError as exc:  # e.g. a file path outside the workspace
            raise ToolCallError(
                f"invalid arguments for run_code: {_validation_text(exc)}"
            ) from None
        return await client.execute(request, user, on_output)
    if isinstance(args, OpenSessionArgs):
        return await client.open_session(args.language or Language.PYTHON, user)
    if isinstance(args, CloseSessionArgs):
        await client.close_session(args.session_id, user)
        return CloseSessionResult(session_id=args.session_id, closed=True)
    raise ToolCallError(f"no handler for {type(args).__name__}")


def render(result: BaseModel) -> str:
    """The model-ready text of a tool's result."""
    if isinstance(result, ExecuteResult):
        return render_result(result)
    if isinstance(result, SessionInfo):
        return (
            f"session_id: {result.session_id}\nlanguage: {result.language.value}\n"
            f"expires_at: {result.expires_at.isoformat()} (when idle; each run extends it)\n"
            "Pass this session_id to run_code; call close_session when done."
        )
    if isinstance(result, CloseSessionResult):
        return f"session {result.session_id} closed"
    return result.model_dump_json()


def is_failure(result: BaseModel) -> bool:
    """Whether the result reports a failure of the user's code."""
    return isinstance(result, ExecuteResult) and (
        result.error is not None or result.exit_code != 0 or result.timed_out
    )


async def call_tool(
    client: ExecutorClient,
    name: str,
    arguments: str | dict[str, Any] | None,
    user: str,
    on_output: OutputCallback | None = None,
) -> ToolOutcome:
    """Call a tool as a model asked; every failure becomes an outcome the model can read."""
    try:
        _, args = parse_arguments(name, arguments)
        result = await invoke(client, args, user, on_output)
    except ExecutorError as exc:
        return ToolOutcome(text=f"error: {exc.message}", is_error=True)
    images = result.images if isinstance(result, ExecuteResult) else []
    return ToolOutcome(
        text=render(result),
        is_error=is_failure(result),
        structured=result.model_dump(mode="json"),
        images=images,
    )
