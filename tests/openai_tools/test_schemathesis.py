"""Schemathesis against the API's own OpenAPI spec, on a real server: never a 5xx.

Each operation of /openapi.json gets Hypothesis-generated requests (valid and invalid ones)
with a valid token; the pytest plugin of schemathesis does not run under pytest 9, so the
operations are driven directly.
"""

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from tests.openai_tools.conftest import Api, _port, mint, start_api


@pytest.fixture(scope="module")
def fuzzed_api() -> Iterator[Api]:
    # Short limits: generated code may loop; the point is the API's answers, not the runs.
    yield from start_api(_port(), max_timeout_s="3", default_timeout_s="2", pool_wait_s="5")


def test_no_server_errors_on_any_operation(fuzzed_api: Api) -> None:
    import schemathesis  # here: it costs the fast tier's collection most of a second

    schema = schemathesis.openapi.from_url(f"{fuzzed_api.url}/openapi.json")
    headers = {"Authorization": f"Bearer {mint('fuzz')}"}
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: "schemathesis.Case") -> None:
            response = case.call(headers=headers, timeout=30)
            assert response.status_code < 500, (
                case.method,
                case.formatted_path,
                response.status_code,
                response.text[:300],
            )

        check()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) >= 15, checked
