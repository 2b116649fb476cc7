"""Sandbox backends behind one small Protocol, chosen by configuration with a lazy import."""

from executor.backends.base import Backend, RunOutcome, Sandbox
from executor.config import ExecutorSettings

__all__ = ["Backend", "RunOutcome", "Sandbox", "create_backend"]


def create_backend(settings: ExecutorSettings) -> Backend:
    """The backend the settings name; imported only when chosen."""
    match settings.backend:
        case "local":
            from executor.backends.local.backend import LocalBackend

            return LocalBackend(settings)
        case "e2b":
            from executor.backends.e2b import E2BBackend

            return E2BBackend(settings)
