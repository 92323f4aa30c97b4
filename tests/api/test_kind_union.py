"""The OpenAPI description of ``kind`` plus that kind's ``settings``: a union discriminated by ``kind``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from common.api.kind_union import kind_union, settings_models
from common.kinds.extract import ExtractSettings

REF = "#/components/schemas/{model}"


class Body(BaseModel):
    """Create a job."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kind: str = "extract"
    settings: dict[str, Any] | None = None


class EchoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repeat: int = Field(default=1, ge=1)


def _components() -> dict[str, Any]:
    _, defs = models_json_schema([(Body, "validation")], ref_template=REF)
    return dict(defs["$defs"])


def _resolve(schemas: dict[str, Any], ref: str) -> dict[str, Any]:
    return schemas[ref.rsplit("/", 1)[1]]  # type: ignore[no-any-return]


def test_the_body_becomes_one_variant_per_kind_chosen_by_kind() -> None:
    schemas = _components()
    assert kind_union(schemas, "Body", {"extract": ExtractSettings, "echo": EchoSettings}, ref=REF)
    union = schemas["Body"]
    assert union["discriminator"]["propertyName"] == "kind"
    mapping = union["discriminator"]["mapping"]
    assert set(mapping) == {"extract", "echo"}
    assert [v["$ref"] for v in union["oneOf"]] == [mapping["echo"], mapping["extract"]]
    echo = _resolve(schemas, mapping["echo"])
    assert echo["properties"]["kind"]["const"] == "echo"
    assert echo["additionalProperties"] is False
    settings_ref = echo["properties"]["settings"]["anyOf"][0]["$ref"]
    assert _resolve(schemas, settings_ref)["properties"]["repeat"]["minimum"] == 1


def test_the_default_kind_may_be_left_out_and_every_other_kind_must_be_named() -> None:
    schemas = _components()
    kind_union(schemas, "Body", {"extract": ExtractSettings, "echo": EchoSettings}, ref=REF)
    mapping = schemas["Body"]["discriminator"]["mapping"]
    extract, echo = _resolve(schemas, mapping["extract"]), _resolve(schemas, mapping["echo"])
    assert "kind" not in extract["required"] and extract["properties"]["kind"]["default"] == "extract"
    assert "kind" in echo["required"] and "default" not in echo["properties"]["kind"]
    assert "name" in extract["required"] and "name" in echo["required"]


def test_a_body_without_kind_and_settings_is_left_as_it_is() -> None:
    class Plain(BaseModel):
        name: str

    _, defs = models_json_schema([(Plain, "validation")], ref_template=REF)
    schemas = dict(defs["$defs"])
    before = dict(schemas)
    assert not kind_union(schemas, "Plain", {"extract": ExtractSettings}, ref=REF)
    assert schemas == before


def test_the_registered_kinds_include_extract() -> None:
    assert "extract" in settings_models()


def test_the_document_describes_a_kind_bodys_variants_from_the_kinds_registry(monkeypatch: Any) -> None:
    import types

    from common.api import schemas as s
    from common.api.call import Route
    from common.api.openapi import build

    class JobCreate(s.Request):
        name: str
        kind: str = "extract"
        settings: dict[str, Any] | None = None

    from common import kinds

    declared = {"extract": ExtractSettings, "echo": EchoSettings}
    monkeypatch.setattr(kinds, "names", lambda: sorted(declared))
    monkeypatch.setattr(kinds, "get", lambda name: types.SimpleNamespace(settings_model=declared[name]))

    def create_job(call: Any) -> None:
        return None

    doc = build([Route("POST", "/v1/jobs", create_job, "Create a job", "jobs", body=JobCreate, status=201)])
    schemas = doc["components"]["schemas"]
    body_ref = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    union = _resolve(schemas, body_ref)
    assert union["discriminator"]["mapping"] == {
        "echo": "#/components/schemas/JobCreate_Echo",
        "extract": "#/components/schemas/JobCreate_Extract",
    }
    assert "EchoSettings" in schemas and "ExtractSettings" in schemas
