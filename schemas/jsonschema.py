"""JSON Schemas as a model reads them: self-contained and short.

Pydantic's schemas carry $defs and $ref, a title on every property, `"default": null` and
`anyOf [X, null]` for every optional field. Clients that convert tool schemas (the OpenAI
Agents SDK's strict mode) refuse references, and every one of those words costs tokens in
each request that lists the tools. compact() keeps what a model needs: types, enums,
constraints, descriptions, and which arguments are required.
"""

from typing import Any

# Numeric bounds go too: descriptions state the limits in words, and the server checks them
# and says what is wrong.
_DROPPED = {
    "title",
    "default",
    "$defs",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            # A model's docstring is for developers; the field's own description stays.
            target = {k: v for k, v in target.items() if k != "description"}
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _inline(merged, defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in _DROPPED}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def _without_null(node: Any) -> Any:
    """An optional field is one that is not required: `anyOf [X, null]` becomes X."""
    if isinstance(node, dict):
        node = {k: _without_null(v) for k, v in node.items()}
        variants = node.get("anyOf")
        if isinstance(variants, list):
            kept = [v for v in variants if v != {"type": "null"}]
            if len(kept) == 1 and len(kept) < len(variants):
                rest = {k: v for k, v in node.items() if k != "anyOf"}
                return {**kept[0], **rest}
        return node
    if isinstance(node, list):
        return [_without_null(item) for item in node]
    return node


def compact(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with references inlined, titles, defaults and null unions dropped."""
    inlined: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    inlined.pop("description", None)  # the tool's own description says it
    result: dict[str, Any] = _without_null(inlined)
    return result
