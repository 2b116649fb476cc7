"""The executor's core: the Executor (pools, sessions, limits) and what it owns."""

from executor.core.service import Executor

__all__ = ["Executor"]
