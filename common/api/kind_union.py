"""The OpenAPI description of a body that takes ``kind`` plus that kind's ``settings``.

A request body such as ``JobCreate`` has a ``kind`` (a registered job kind) and
``settings`` (validated by that kind's settings model). Its component is
rewritten as a discriminated union: one variant per kind, each the body's own
properties with ``kind`` fixed to the kind's name and ``settings`` typed by the
kind's settings model, and ``discriminator: {propertyName: kind}``. The
variant of the default kind keeps ``kind`` optional (a body without it is
that kind's, as before kinds existed).

Kinds and their settings models come from :func:`settings_models` (the kinds
registry, :mod:`common.kinds`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

# Request bodies described as a union over the job kinds.
KIND_UNIONS = ("JobCreate",)
DEFAULT_KIND = "extract"


def settings_models() -> dict[str, type[BaseModel]]:
    """Each registered job kind's settings model, by kind name."""
    from common import kinds

    return {name: kinds.get(name).settings_model for name in kinds.names()}


def _variant_name(body: str, kind: str) -> str:
    return body + "_" + "".join(part.capitalize() for part in kind.replace("-", "_").replace(".", "_").split("_"))


def kind_union(
    schemas: dict[str, Any], body: str, models: Mapping[str, type[BaseModel]], *, ref: str, default: str = DEFAULT_KIND
) -> bool:
    """Rewrite ``schemas[body]`` (an object with ``kind`` and ``settings``) as a union
    discriminated by ``kind``, adding each variant and each settings model to
    ``schemas``. False (nothing changed) when the body has no such properties."""
    base = schemas.get(body)
    props = (base or {}).get("properties", {})
    if base is None or "kind" not in props or "settings" not in props or not models:
        return False
    _, defs = models_json_schema([(m, "validation") for m in models.values()], ref_template=ref)
    for name, sub in defs.get("$defs", {}).items():
        schemas.setdefault(name, sub)
    variants: dict[str, str] = {}
    for kind, model in sorted(models.items()):
        variant = copy.deepcopy(base)
        variant["title"] = _variant_name(body, kind)
        variant["description"] = f"A {kind} job: `settings` are the {kind} kind's ({model.__name__})."
        kind_schema: dict[str, Any] = {"const": kind, "type": "string", "title": "Kind"}
        required = [r for r in variant.get("required", []) if r != "kind"]
        if kind == default:
            kind_schema["default"] = kind
        else:
            required.append("kind")
        variant["properties"]["kind"] = kind_schema
        variant["properties"]["settings"] = {
            "anyOf": [{"$ref": ref.format(model=model.__name__)}, {"type": "null"}],
            "default": None,
        }
        if required:
            variant["required"] = required
        name = _variant_name(body, kind)
        schemas[name] = variant
        variants[kind] = ref.format(model=name)
    schemas[body] = {
        "title": body,
        "description": base.get("description", "") + " One variant per job kind, chosen by `kind`.",
        "oneOf": [{"$ref": r} for r in variants.values()],
        "discriminator": {"propertyName": "kind", "mapping": variants},
    }
    return True
