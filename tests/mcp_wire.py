"""MCP messages as they go on the wire, for tests and benchmarks that speak it raw."""

from typing import Any

PROTOCOL_VERSION = "2025-06-18"
ACCEPT = {"Accept": "application/json, text/event-stream"}


def initialize(request_id: int = 1, client: str = "test") -> dict[str, Any]:
    """An initialize request."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": client, "version": "1"},
        },
    }
