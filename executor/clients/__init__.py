"""Executor clients besides the Executor itself: one remote executor, several, a per-user cap.

Each satisfies executor.interface.ExecutorClient; none imports the executor's core or server.
"""

from executor.clients.capped import CappedClient, RunLimiter
from executor.clients.http import HttpClient
from executor.clients.routing import RoutingClient

__all__ = ["CappedClient", "HttpClient", "RoutingClient", "RunLimiter"]
