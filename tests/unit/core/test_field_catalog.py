"""The field catalogue: names become typed specs; unknown names are warned about."""

from __future__ import annotations

import pytest

from common.core import fieldtypes as F
from common.core.field_catalog import field_warnings
from common.core.schema import FieldSpec, FieldType, fields_from_names


def test_known_names_and_aliases_take_their_type() -> None:
    specs = {s.name: s.type for s in fields_from_names(["due_date", "iban", "vat_number", "swift", "tax_rate"])}
    assert specs == {
        "due_date": FieldType.DATE,
        "iban": FieldType.IBAN,
        "vat_number": FieldType.VAT_ID,
        "swift": FieldType.BIC,
        "tax_rate": FieldType.PERCENTAGE,
    }


def test_a_suffix_implies_a_type_for_unknown_names() -> None:
    (spec,) = fields_from_names(["shipping_date"])
    assert spec.type is FieldType.DATE


def test_explicit_types_and_their_aliases() -> None:
    a, b, c = fields_from_names(["ref:text", "fee:amount", "state:enum=open|paid"])
    assert (a.type, b.type, c.type, c.choices) == (FieldType.STRING, FieldType.NUMBER, FieldType.ENUM, ("open", "paid"))


def test_an_unknown_type_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown type 'colour'"):
        fields_from_names(["x:colour"])


def test_an_enum_without_choices_is_refused() -> None:
    with pytest.raises(ValueError, match="needs choices"):
        FieldSpec(name="state", type=FieldType.ENUM)


def test_unknown_untyped_names_are_warned_about_and_known_ones_are_not() -> None:
    warnings = field_warnings(fields_from_names(["flux_capacitor", "due_date", "order_number", "ship_date"]))
    assert len(warnings) == 1
    assert "flux_capacitor" in warnings[0]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("GB82 WEST 1234 5698 7654 32 BIC NWBKGB2L", "GB82WEST12345698765432"),
        ("DE89 3704 0044 0532 0130 01", None),  # mod-97 fails
        ("XX89 3704 0044", None),  # no such country
    ],
)
def test_iban(text: str, want: str | None) -> None:
    assert F.iban(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("DE 123 456 789", "DE123456789"),
        ("ATU12345678", "ATU12345678"),
        ("NL123456789B01", "NL123456789B01"),
        ("GR123456789", "EL123456789"),
        ("DE1234567890", None),  # ten digits: not a German VAT id
        ("US123456789", None),
    ],
)
def test_vat_id_by_country_format(text: str, want: str | None) -> None:
    assert F.vat_id(text) == want


def test_normalize_value_rejects_invalid_values_of_each_type() -> None:
    assert F.normalize_value("2022-02-30", FieldType.DATE) is None
    assert F.normalize_value("150 %", FieldType.PERCENTAGE) is None
    assert F.normalize_value("no-at-sign", FieldType.EMAIL) is None
    assert F.normalize_value("PAID", FieldType.ENUM, ("paid", "open")) == "paid"
    assert F.normalize_value("GUTSCHRIFT", FieldType.BIC) is None
