"""Code mode: the operator's MCP servers ("upstream"), whose tools sandbox code calls.

The configuration has the shape of an `mcp.json` (Claude Desktop's `mcpServers`), plus what
code-exec adds per server: which tools code may call, and which users. The sandbox's tools
module and the executor speak JSON over the channel (the egress listener on the sandbox's
loopback): GET /tools/list, GET /tools/search?q=, POST /tools/call.
"""

import json
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def check_server_name(name: str) -> str:
    """A server's name, which code imports (`from tools import NAME`): a Python identifier."""
    if not _IDENTIFIER.match(name):
        raise ValueError(
            f"upstream server name {name!r} must be lowercase letters, digits and _ (a Python "
            "identifier code can import), starting with a letter, at most 40 characters"
        )
    return name


ServerName = Annotated[str, AfterValidator(check_server_name)]


class UpstreamServer(BaseModel):
    """One MCP server code-exec connects to: a command over stdio, or a streamable HTTP URL."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(default=None, description="Started over stdio.")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="The server's environment (its credentials): never seen by sandboxes.",
    )
    url: str | None = Field(default=None, description="A streamable HTTP endpoint.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Sent to the URL (its credentials): never seen by sandboxes.",
    )
    tools: list[str] | None = Field(
        default=None, description="The tools code may call (all when unset)."
    )
    users: list[str] | None = Field(
        default=None, description="The users whose code may call them (everyone when unset)."
    )

    def open_to(self, user: str) -> bool:
        """Whether this user's code may call the server's tools."""
        return self.users is None or user in self.users

    @model_validator(mode="after")
    def _one_transport(self) -> "UpstreamServer":
        if (self.command is None) == (self.url is None):
            raise ValueError("give an upstream server either a command (stdio) or a url (HTTP)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"upstream url {self.url!r} must be http:// or https://")
        return self


class UpstreamConfig(BaseModel):
    """The operator's upstream servers (CODE_EXEC_UPSTREAM_CONFIG, an mcp.json)."""

    model_config = ConfigDict(extra="ignore")

    servers: dict[ServerName, UpstreamServer] = Field(alias="mcpServers")

    @classmethod
    def load(cls, path: Path) -> "UpstreamConfig":
        """The configuration in a file; ValueError saying what is wrong with it."""
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"CODE_EXEC_UPSTREAM_CONFIG {path}: {exc}") from exc


class ToolEntry(BaseModel):
    """One upstream tool as code sees it."""

    server: str
    name: str = Field(description="The tool's name upstream.")
    function: str = Field(description="Its Python name: the name with - and . as _.")
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)


class ToolCall(BaseModel):
    """POST /tools/call: one call of sandbox code."""

    model_config = ConfigDict(extra="forbid")

    server: str = Field(max_length=64)
    tool: str = Field(max_length=256)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolReply(BaseModel):
    """What a call gives back to code: the structured result when the tool has one, else
    its text; or the error the code's exception carries."""

    ok: bool
    structured: Any = None
    text: str = ""
    error: str | None = None


class ToolUse(BaseModel):
    """How often a run called one tool, and how many of those calls failed."""

    tool: str = Field(description="server.tool")
    calls: int
    errors: int = 0


class ToolMatches(BaseModel):
    """search_tools: the tools that match, best first."""

    tools: list[ToolEntry]


_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


def _type_name(schema: Any) -> str:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if not isinstance(kind, str):
        return "Any"
    return _TYPES.get(kind) or {"array": "list", "object": "dict"}.get(kind, "Any")


def signature(entry: ToolEntry) -> str:
    """How code calls the tool, as the sandbox's tools module spells it:
    `notes.search(*, query: str, limit: int = None)`."""
    properties = entry.input_schema.get("properties") or {}
    required = set(entry.input_schema.get("required") or [])
    names = sorted(properties, key=lambda name: name not in required)
    parameters = [
        f"{name}: {_type_name(properties[name])}" + ("" if name in required else " = None")
        for name in names
        if name.isidentifier()
    ]
    listed = f"*, {', '.join(parameters)}" if parameters else ""
    return f"{entry.server}.{entry.function}({listed})"


def python_name(tool: str) -> str:
    """The name code calls a tool by."""
    name = re.sub(r"[^0-9a-zA-Z_]", "_", tool)
    return f"_{name}" if not name or name[0].isdigit() else name
