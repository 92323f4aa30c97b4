"""Field specs, presets and ``--fields`` parsing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.core.schema import INVOICE_PRESET, FieldSpec, FieldType, fields_from_names, preset


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a", id="one-letter"),
        pytest.param("invoice_number", id="snake-case"),
        pytest.param("vat_2", id="digits"),
        pytest.param("total_", id="trailing-underscore"),
        pytest.param("a" * 63, id="63-chars"),
    ],
)
def test_field_name_accepts_snake_case(name: str) -> None:
    assert FieldSpec(name=name).name == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("Invoice", id="capital"),
        pytest.param("invoiceNumber", id="camel-case"),
        pytest.param("1total", id="leading-digit"),
        pytest.param("_total", id="leading-underscore"),
        pytest.param("total-amount", id="hyphen"),
        pytest.param("total amount", id="space"),
        pytest.param("montant_dû", id="non-ascii"),
        pytest.param("a" * 64, id="64-chars"),
    ],
)
def test_field_name_rejects_anything_else(name: str) -> None:
    with pytest.raises(ValidationError, match="must be snake_case"):
        FieldSpec(name=name)


def test_field_name_rejects_a_trailing_newline() -> None:
    with pytest.raises(ValidationError):
        FieldSpec(name="total\n")


def test_field_spec_defaults_to_a_string_with_no_description() -> None:
    spec = FieldSpec(name="notes")
    assert (spec.type, spec.description) == (FieldType.STRING, "")


def test_invoice_preset_lists_its_fields_in_order() -> None:
    names = [f.name for f in preset("invoice")]
    assert names == ["invoice_number", "date", "total", "currency", "seller", "buyer"]


def test_invoice_preset_types_its_fields() -> None:
    types = {f.name: f.type for f in INVOICE_PRESET}
    assert types["date"] is FieldType.DATE
    assert types["total"] is FieldType.NUMBER
    assert types["currency"] is FieldType.CURRENCY


def test_every_preset_field_has_a_description() -> None:
    assert all(f.description for f in INVOICE_PRESET)


def test_an_unknown_preset_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown preset 'receipt'; known presets: invoice"):
        preset("receipt")


def test_fields_from_names_keeps_the_given_order() -> None:
    assert [f.name for f in fields_from_names(["total", "notes", "date"])] == ["total", "notes", "date"]


@pytest.mark.parametrize(
    ("name", "type_"),
    [
        ("date", FieldType.DATE),
        ("total", FieldType.NUMBER),
        ("currency", FieldType.CURRENCY),
        ("invoice_number", FieldType.STRING),
        ("notes", FieldType.STRING),
    ],
)
def test_fields_from_names_types_names_a_preset_knows_and_makes_others_strings(name: str, type_: FieldType) -> None:
    (spec,) = fields_from_names([name])
    assert spec.type is type_


def test_fields_from_names_reuses_the_preset_description() -> None:
    (spec,) = fields_from_names(["total"])
    assert spec == next(f for f in INVOICE_PRESET if f.name == "total")


@pytest.mark.parametrize("names", [["total", "total"], ["notes", "date", "notes"]])
def test_fields_from_names_rejects_a_name_listed_twice(names: list[str]) -> None:
    with pytest.raises(ValueError, match="is listed twice"):
        fields_from_names(names)


def test_fields_from_names_rejects_an_invalid_name() -> None:
    with pytest.raises(ValueError, match="must be snake_case"):
        fields_from_names(["total", "Total Amount"])


def test_fields_from_names_of_nothing_is_empty() -> None:
    assert fields_from_names([]) == ()
