"""A small MCP server of our own for code mode's tests (stdio, the official SDK's FastMCP):
100 notes to search and read, and tools that fail, hang, die, or show their credential.

Run as `python -m tests.upstream_server` (stdio) or with `--http PORT` (streamable HTTP on
127.0.0.1:PORT/mcp); NOTES_TOKEN in its environment, or the Authorization header over HTTP, is
the credential the operator gave it, which sandbox code must never see.
"""

import os
import sys
import time
from typing import Any

from mcp.server.fastmcp import Context, FastMCP

server = FastMCP("notes", log_level="WARNING")

WORDS = ("rain", "sun", "snow", "wind", "fog")
NOTES = [
    {"id": i, "title": f"note {i}", "body": f"a day of {WORDS[i % len(WORDS)]}", "stars": i % 7}
    for i in range(100)
]


@server.tool()
def search(query: str = "", limit: int = 100) -> dict[str, Any]:
    """Ids of the notes whose body holds the query word, at most limit."""
    ids = [note["id"] for note in NOTES if query in note["body"]][:limit]
    return {"ids": ids, "total": len(ids)}


@server.tool()
def read(id: int) -> dict[str, Any]:
    """One note: id, title, body and stars."""
    if not 0 <= id < len(NOTES):
        raise ValueError(f"no note {id}")
    return NOTES[id]


@server.tool()
def fail(message: str) -> str:
    """Always fails with the message."""
    raise ValueError(message)


@server.tool()
def hang(seconds: float) -> str:
    """Answers after seconds."""
    time.sleep(seconds)
    return "late"


@server.tool()
def crash() -> str:
    """The server process exits without answering."""
    os._exit(3)


@server.tool()
def token(ctx: Context) -> str:  # type: ignore[type-arg]
    """The credential the server was given: its NOTES_TOKEN, or over HTTP the request's
    Authorization header (only the executor may see either)."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", None)
    if headers is not None:
        return str(headers.get("authorization", ""))
    return os.environ.get("NOTES_TOKEN", "")


@server.tool()
def pid() -> int:
    """The server's process id (tests kill it)."""
    return os.getpid()


@server.tool()
async def grow(ctx: Context) -> str:  # type: ignore[type-arg]
    """Adds the tool `extra` and says the tool list changed."""

    def extra() -> str:
        """A tool added while the server runs."""
        return "extra"

    server.add_tool(extra)
    await ctx.session.send_tool_list_changed()
    return "grown"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":  # streamable HTTP on this loopback port
        server.settings.port = int(sys.argv[2])
        server.run("streamable-http")
    else:
        server.run()
