"""The operator's MCP tools, called from code (code-exec's code mode).

    from tools import notes            # a server the operator configured
    found = notes.search(query="rain", limit=20)
    help(notes.search)                 # its arguments and description
    tools.search_tools("weather")      # find tools without loading every definition

Each server is a module-like object with one function per tool, keyword arguments from the
tool's input schema. A call returns the tool's structured result when it gives one, else its
text; a tool's failure (and a refusal: a tool outside what the operator allows, a run out of
calls) raises ToolError. Calls go to the executor over the sandbox's loopback: the sandbox
has no network, and the servers' credentials never enter it. Stdlib only.
"""

import http.client
import json
import keyword
from inspect import Parameter, Signature
from typing import Any

_PORT = 3128  # the executor's listener on this sandbox's loopback (egress_listen.py)
_TIMEOUT_S = 600.0  # the executor bounds each call; this only ends a wait for a dead executor
__all__ = ["ToolError", "describe", "list_tools", "search_tools"]


class ToolError(Exception):
    """A tool failed, or the call was refused; the message says why."""


def _request(method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", _PORT, timeout=_TIMEOUT_S)
    try:
        headers = {"Content-Type": "application/json"} if data is not None else {}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        payload = response.read()
    except OSError as exc:
        raise ToolError(
            f"the executor's tool channel is not reachable ({exc}): this executor has no "
            "upstream tools (CODE_EXEC_UPSTREAM_CONFIG), or code mode runs only in the run "
            "itself, not in processes it left behind"
        ) from None
    finally:
        connection.close()
    try:
        answer = json.loads(payload)
    except ValueError:
        raise ToolError(f"the tool channel answered {response.status}: {payload[:300]!r}") from None
    if isinstance(answer, dict) and answer.get("ok") is False:
        raise ToolError(answer.get("error") or "the call failed")
    return answer


def _call(server: str, tool: str, arguments: dict[str, Any]) -> Any:
    reply = _request(
        "POST", "/tools/call", {"server": server, "tool": tool, "arguments": arguments}
    )
    structured = reply.get("structured")
    return structured if structured is not None else reply.get("text", "")


_catalogue: list[dict[str, Any]] | None = None


def list_tools() -> list[dict[str, Any]]:
    """Every tool this run may call: server, name, function, description, input_schema."""
    global _catalogue
    if _catalogue is None:
        _catalogue = _request("GET", "/tools/list")
    return list(_catalogue)


def search_tools(query: str, limit: int = 10) -> list[str]:
    """The signatures and first lines of the tools that best match query's words."""
    from urllib.parse import urlencode

    found = _request("GET", "/tools/search?" + urlencode({"q": query, "limit": limit}))
    return [_summary(entry) for entry in found]


def describe(name: str) -> str:
    """The whole description of a tool ("server.tool" or "server.function")."""
    server, _, tool = name.partition(".")
    for entry in list_tools():
        if entry["server"] == server and tool in (entry["name"], entry["function"]):
            return _doc(entry)
    raise ToolError(f"no tool {name!r}; search_tools(query) lists the ones there are")


_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}


def _annotation(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return _TYPES.get(kind, Any) if isinstance(kind, str) else Any


def _parameters(entry: dict[str, Any]) -> list[Parameter]:
    schema = entry.get("input_schema") or {}
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    parameters = []
    for name in sorted(properties, key=lambda n: n not in required):
        if not name.isidentifier() or keyword.iskeyword(name):
            continue  # not a keyword argument Python can spell: pass it in **arguments
        default = Parameter.empty if name in required else None
        parameters.append(
            Parameter(
                name,
                Parameter.KEYWORD_ONLY,
                default=default,
                annotation=_annotation(properties[name]),
            )
        )
    return parameters


def _summary(entry: dict[str, Any]) -> str:
    signature = Signature(_parameters(entry))
    first = (entry.get("description") or "").strip().split("\n")[0][:200]
    return f"{entry['server']}.{entry['function']}{signature}: {first}"


def _doc(entry: dict[str, Any]) -> str:
    lines = [_summary(entry), "", (entry.get("description") or "").strip()]
    properties = (entry.get("input_schema") or {}).get("properties") or {}
    if properties:
        lines += ["", "Arguments:"]
        for name, schema in properties.items():
            text = schema.get("description", "") if isinstance(schema, dict) else ""
            kind = getattr(_annotation(schema), "__name__", "Any")
            lines.append(f"  {name} ({kind}): {text}".rstrip(": "))
    return "\n".join(lines).strip()


class Server:
    """One upstream server: its tools as functions."""

    def __init__(self, name: str, entries: list[dict[str, Any]]) -> None:
        self.__name__ = name
        self.__doc__ = f"Tools of the upstream MCP server {name!r}: " + ", ".join(
            entry["function"] for entry in entries
        )
        for entry in entries:
            setattr(self, entry["function"], _function(name, entry))

    def __repr__(self) -> str:
        return f"<code-exec tools of {self.__name__!r}>"


def _function(server: str, entry: dict[str, Any]) -> Any:
    tool = entry["name"]

    def call(**arguments: Any) -> Any:
        given = {k: v for k, v in arguments.items() if v is not None}
        return _call(server, tool, given)

    call.__name__ = call.__qualname__ = entry["function"]
    call.__doc__ = _doc(entry)
    call.__signature__ = Signature(  # type: ignore[attr-defined]
        [*_parameters(entry), Parameter("arguments", Parameter.VAR_KEYWORD)]
    )
    return call


def __getattr__(name: str) -> Server:
    if name.startswith("__"):  # what imports and introspection look for: not a server
        raise AttributeError(name)
    entries = [entry for entry in list_tools() if entry["server"] == name]
    if not entries:
        servers = ", ".join(sorted({entry["server"] for entry in list_tools()})) or "none"
        raise AttributeError(f"no upstream server {name!r} open to this run; there are: {servers}")
    server = Server(name, entries)
    globals()[name] = server
    return server
