"""Validation of JSON values against the subset of JSON Schema that structured model output uses.

Both model providers (Gemini's ``response_json_schema``, OpenAI's ``json_schema``
response format) accept only a subset of JSON Schema; Sluice builds its schemas
from that subset and checks answers against it here, because a provider's
"structured output" is a request, not a guarantee (a local OpenAI-compatible
server may ignore it entirely).

Supported: ``type`` (a name or a list of names, ``"null"`` included), ``enum``,
``properties`` / ``required`` / ``additionalProperties: false``, ``items``,
``minItems`` / ``maxItems``, ``minimum`` / ``maximum``, ``maxLength``. Anything else
in a schema is ignored, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from common.core.errors import MalformedModelOutput

_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def problems(value: Any, schema: Mapping[str, Any], *, path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema``, as ``"$.rows[2].category: not one of [...]"`` lines; [] when valid."""
    found = _type_problems(value, schema, path)
    if found:
        return found  # the rest would only repeat the type error
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {list(schema['enum'])!r}"]
    if isinstance(value, dict):
        return _object_problems(value, schema, path)
    if isinstance(value, list):
        return _array_problems(value, schema, path)
    return _scalar_problems(value, schema, path)


def _type_problems(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    wanted = schema.get("type")
    if wanted is None:
        return []
    names: Sequence[str] = [wanted] if isinstance(wanted, str) else list(wanted)
    for name in names:
        types = _TYPES.get(name, ())
        # bool is an int in Python, never a number in JSON.
        if isinstance(value, types) and not (isinstance(value, bool) and name in ("number", "integer")):
            return []
        if name == "integer" and isinstance(value, float) and value.is_integer():
            return []
    return [f"{path}: expected {' or '.join(names)}, got {_json_type(value)}"]


def _object_problems(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> list[str]:
    found: list[str] = []
    props: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            found.append(f"{path}.{name}: missing")
    if schema.get("additionalProperties") is False:
        found += [f"{path}.{k}: not expected" for k in value if k not in props]
    for name, sub in props.items():
        if name in value:
            found += problems(value[name], sub, path=f"{path}.{name}")
    return found


def _array_problems(value: list[Any], schema: Mapping[str, Any], path: str) -> list[str]:
    found: list[str] = []
    if "minItems" in schema and len(value) < int(schema["minItems"]):
        found.append(f"{path}: {len(value)} items, at least {schema['minItems']} expected")
    if "maxItems" in schema and len(value) > int(schema["maxItems"]):
        found.append(f"{path}: {len(value)} items, at most {schema['maxItems']} expected")
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            found += problems(item, items, path=f"{path}[{i}]")
    return found


def _scalar_problems(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return [f"{path}: {value} is below {schema['minimum']}"]
        if "maximum" in schema and value > schema["maximum"]:
            return [f"{path}: {value} is above {schema['maximum']}"]
    if isinstance(value, str) and "maxLength" in schema and len(value) > int(schema["maxLength"]):
        return [f"{path}: longer than {schema['maxLength']} characters"]
    return []


def _json_type(value: Any) -> str:
    for name, types in _TYPES.items():
        if isinstance(value, types) and not (isinstance(value, bool) and name in ("number", "integer")):
            return name
    return type(value).__name__


def parse_answer(raw: str, schema: Mapping[str, Any] | None) -> Any:
    """The answer's JSON value; MalformedModelOutput when it is not JSON or (given a schema) breaks it."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise MalformedModelOutput(f"the model's answer is not JSON: {exc}", raw_output=raw[:2000]) from None
    if schema is not None:
        wrong = problems(value, schema)
        if wrong:
            raise MalformedModelOutput(
                "the model's answer breaks the schema: " + "; ".join(wrong[:5]), raw_output=raw[:2000]
            )
    return value
