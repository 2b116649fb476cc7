"""JSON Schemas in the form OpenAI's strict mode accepts.

Strict mode wants every object closed (additionalProperties: false) with every property
required; an optional argument is expressed as nullable instead. References are inlined and
keywords strict mode does not support (default, title) are dropped.
"""

from typing import Any

_DROPPED = {"default", "title"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items() if k not in _DROPPED | {"$defs"}}
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    return node


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    variants = schema.get("anyOf")
    if variants and any(v.get("type") == "null" for v in variants):
        return schema
    description = schema.pop("description", None)
    wrapped: dict[str, Any] = {"anyOf": [schema, {"type": "null"}]}
    if description:
        wrapped["description"] = description
    return wrapped


def _close(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _close(v) for k, v in node.items()}
        if node.get("type") == "object" and "properties" in node:
            required = set(node.get("required", []))
            node["properties"] = {
                name: prop if name in required else _nullable(prop)
                for name, prop in node["properties"].items()
            }
            node["required"] = list(node["properties"])
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_close(item) for item in node]
    return node


def strict_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema closed and all-required, references inlined, as OpenAI strict mode wants."""
    resolved = _resolve(schema, schema.get("$defs", {}))
    closed: dict[str, Any] = _close(resolved)
    return closed
