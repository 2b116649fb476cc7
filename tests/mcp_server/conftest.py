"""The executor fixtures, shared with the MCP tests."""

from tests.executor.conftest import executor_state_dir, make_any_executor, make_executor

__all__ = ["executor_state_dir", "make_any_executor", "make_executor"]
