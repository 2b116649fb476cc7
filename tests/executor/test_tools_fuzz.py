"""Tool calls as a model might make them, fuzzed: every mistake is a ToolCallError, and
arguments that parse are whole (file paths included) before anything reaches the executor."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.tools import ToolCallError, ToolSet
from schemas.execution import ExecuteRequest
from schemas.tools import RunCodeArgs

# Hypothesis and its hundreds of examples cost the fast tier seconds: fuzzing is thorough work.
pytestmark = pytest.mark.slow

TOOLS = ToolSet()
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
@given(name=st.sampled_from([*TOOLS.tools, "rm", ""]), raw=JSON | ARGUMENTS | st.text())
def test_arguments_either_parse_whole_or_say_what_is_wrong(name: str, raw: object) -> None:
    arguments = raw if isinstance(raw, str | dict) else json.dumps(raw)
    try:
        args = TOOLS.get(name).parse(arguments)  # type: ignore[arg-type]
    except ToolCallError as exc:
        assert exc.message and exc.status_code == 422
        return
    if isinstance(args, RunCodeArgs):
        # Validated once: the request is built without validating again, and is valid.
        request = args.to_request()
        ExecuteRequest.model_validate(request.model_dump())


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    files=st.lists(
        st.fixed_dictionaries({"path": st.text(max_size=20), "content": st.text(max_size=5)}),
        min_size=1,
        max_size=3,
    )
)
def test_bad_file_paths_are_refused_when_the_call_is_parsed(files: list[dict[str, str]]) -> None:
    try:
        args = TOOLS.get("run_code").parse({"code": "1", "files": files})
    except ToolCallError as exc:
        assert "files" in exc.message
        return
    for path in (args.to_request().files or {}):
        assert path and not path.startswith("/") and ".." not in path.split("/")
