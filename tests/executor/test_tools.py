"""Tool calls as a model might make them, fuzzed: every mistake is a ToolCallError."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.client import InProcessClient
from executor.tools import ToolCallError, call_tool, invoke, parse_arguments
from schemas.tools import TOOLS, RunCodeArgs

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
ARGUMENTS = st.dictionaries(
    st.sampled_from(
        ["code", "language", "session_id", "timeout", "max_output_tokens", "files", "env", "extra"]
    ),
    JSON,
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from([*TOOLS, "rm", ""]), raw=JSON | ARGUMENTS | st.text())
def test_arguments_either_parse_or_say_what_is_wrong(name: str, raw: object) -> None:
    arguments = raw if isinstance(raw, str | dict) else json.dumps(raw)
    try:
        _, args = parse_arguments(name, arguments)  # type: ignore[arg-type]
    except ToolCallError as exc:
        assert exc.message and exc.status_code == 422
        return
    if isinstance(args, RunCodeArgs):
        try:
            args.to_request()
        except ValueError:
            pass  # invoke() turns this into a ToolCallError (tested below)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    files=st.lists(
        st.fixed_dictionaries({"path": st.text(max_size=20), "content": st.text(max_size=5)}),
        min_size=1,
        max_size=3,
    )
)
def test_bad_file_paths_never_reach_the_executor(files: list[dict[str, str]]) -> None:
    class Unreachable:
        async def execute(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("an invalid request reached the executor")

    _, args = parse_arguments("run_code", {"code": "1", "files": files})
    import anyio

    async def go() -> None:
        try:
            await invoke(Unreachable(), args, "u")  # type: ignore[arg-type]
        except ToolCallError as exc:
            assert "files" in exc.message
        except AssertionError:
            # Reached the executor: then every path had to be a valid workspace path.
            args.to_request()  # type: ignore[attr-defined]

    anyio.run(go)


@pytest.mark.anyio
async def test_call_tool_never_raises_for_garbage(make_executor) -> None:  # type: ignore[no-untyped-def]
    client = InProcessClient(await make_executor(pool_sizes={"python": 0}))
    for arguments in (
        "",
        "{",
        "null",
        "[]",
        '{"code": 5}',
        '{"code": "1", "timeout": -1}',
        '{"code": "1", "files": [{"path": "../x", "content": ""}]}',
        '{"session_id": 3}',
        "\x00",
    ):
        for name in TOOLS:
            outcome = await call_tool(client, name, arguments, "u")
            if name == "open_session" and arguments in ("", "null"):
                assert not outcome.is_error  # no arguments are needed to open a session
                continue
            assert outcome.is_error and outcome.text.startswith("error: "), (name, arguments)
