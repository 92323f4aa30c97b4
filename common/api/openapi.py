"""The OpenAPI 3.1 document, generated from the route table and its pydantic models.

Nothing here is written by hand per route: paths, parameters, request bodies
and responses all come from the route table (:data:`common.api.routes.ROUTES`), so the
document cannot drift from what the handlers validate and return.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from common.api import kind_union
from common.api.call import Route
from common.api.schemas import ErrorOut

_PARAM = re.compile(r"{([^}]+)}")
REF = "#/components/schemas/{model}"
SSE_EVENT: dict[str, object] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "enum": ["progress", "done", "error"]},
        "id": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/OperationOut"},
        },
    },
}
_REASONS = {
    400: "Bad request",
    401: "Missing or invalid bearer token",
    402: "Over the monthly budget (budget_exceeded: details say what is left)",
    403: "Forbidden (an invalid signature, or operators only)",
    404: "Not found (or not yours)",
    409: "Conflict with the current state",
    411: "Length required",
    413: "Too large",
    415: "The body is not JSON (Content-Type)",
    422: "Invalid input",
    429: "Rate limited (see Retry-After)",
    501: "Not available in this deployment",
}


def _models(routes: Sequence[Route]) -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {"ErrorOut": ErrorOut}
    for r in routes:
        for m in (r.body, r.response):
            if m is not None:
                seen[m.__name__] = m
    return list(seen.values())


def _query_parameters(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    _, defs = models_json_schema([(model, "validation")], ref_template=REF)
    schema = defs.get("$defs", {}).get(model.__name__, {})
    for name, sub in defs.get("$defs", {}).items():
        if name != model.__name__:
            schemas.setdefault(name, sub)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def build(routes: Sequence[Route]) -> dict[str, Any]:  # noqa: C901 (split pending)
    models = _models(routes)
    _, defs = models_json_schema(
        [(m, "validation") for m in models] + [(m, "serialization") for m in models], ref_template=REF
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    models_by_kind = kind_union.settings_models()
    for body in kind_union.KIND_UNIONS:
        kind_union.kind_union(schemas, body, models_by_kind, ref=REF)
    paths: dict[str, dict[str, Any]] = {}
    error = {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}}
    for r in routes:
        op: dict[str, Any] = {"operationId": r.operation_id, "summary": r.summary, "tags": [r.tag]}
        if r.description:
            op["description"] = r.description
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in _PARAM.findall(r.path)
        ]
        if r.query is not None:
            params += _query_parameters(r.query, schemas)
        if r.method == "POST" and r.auth:
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            )
        if r.path.startswith("/v1/blobs/"):
            params += [
                {"name": "expires", "in": "query", "required": True, "schema": {"type": "integer"}},
                {"name": "signature", "in": "query", "required": True, "schema": {"type": "string"}},
            ]
        if params:
            op["parameters"] = params
        if r.body is not None and r.body_kind == "json":
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": REF.format(model=r.body.__name__)}}},
            }
        elif r.body_kind == "multipart":
            op["requestBody"] = {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                            "required": ["file"],
                        }
                    }
                },
            }
        elif r.body_kind == "raw":
            op["requestBody"] = {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        responses: dict[str, Any] = {}
        if r.reply == "sse":
            responses["200"] = {
                "description": "Server-Sent Events: 'progress' events, then one 'done' event",
                # One parsed event (OpenAPI 3.1 reads ``schema`` per event, as 3.2's itemSchema):
                # its data is an OperationOut as JSON ('error': the operation is gone).
                "content": {"text/event-stream": {"schema": SSE_EVENT}},
            }
        elif r.reply == "file":
            responses["200"] = {
                "description": "The object's bytes",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        elif r.response is not None:
            responses[str(r.status)] = {
                "description": r.summary,
                "content": {"application/json": {"schema": {"$ref": REF.format(model=r.response.__name__)}}},
            }
        elif r.path == "/v1/openapi.json":
            responses["200"] = {
                "description": "OpenAPI 3.1",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        else:
            responses[str(r.status)] = {"description": r.summary}
        codes = set(r.errors) | ({429} if r.auth else set())
        if r.body is not None and r.body_kind == "json":
            codes |= {400, 415}  # malformed or too deeply nested JSON; a body that is not JSON
        if r.method == "POST" and r.auth:
            codes.add(409)  # Idempotency-Key in progress or reused
        for code in sorted(codes):
            responses[str(code)] = {"description": _REASONS.get(code, "Error"), "content": error}
        responses["default"] = {"description": "Unexpected error", "content": error}
        op["responses"] = responses
        if not r.auth:
            op["security"] = []
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice job API",
            "version": "1.0.0",
            "description": "Documents in, tables out: jobs, files, runs, exports and live progress.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


@lru_cache(maxsize=4)
def _cached(routes: tuple[Route, ...], kinds: tuple[tuple[str, type[BaseModel]], ...]) -> str:
    return json.dumps(build(routes), indent=1, sort_keys=True)


def document(routes: Sequence[Route]) -> str:
    # Keyed by the registered kinds too: registering one changes the bodies' unions.
    return _cached(tuple(routes), tuple(sorted(kind_union.settings_models().items(), key=lambda kv: kv[0])))


if __name__ == "__main__":  # python -m common.api.openapi > docs/openapi.json
    from common.api.routes import ROUTES

    print(json.dumps(build(ROUTES), indent=1, sort_keys=True))
