"""The model's answers pass the same type validation as the offline extractor's."""

from __future__ import annotations

from common.adapters.gcp.gemini_schema import coerce, user_text
from common.core.schema import FieldSpec, FieldType


def test_a_models_iban_is_compacted_and_a_misread_one_is_null() -> None:
    assert coerce("DE89 3704 0044 0532 0130 00", FieldType.IBAN) == "DE89370400440532013000"
    assert coerce("DE89 3704 0044 0532 0130 01", FieldType.IBAN) is None


def test_enum_choices_are_told_to_the_model_and_enforced() -> None:
    spec = FieldSpec(name="status", type=FieldType.ENUM, choices=("paid", "open"))
    assert "Choices: paid, open" in user_text([spec], "")
    assert coerce("PAID", FieldType.ENUM, spec.choices) == "paid"
    assert coerce("overdue", FieldType.ENUM, spec.choices) is None


def test_percentages_from_numbers_or_text() -> None:
    assert coerce(19, FieldType.PERCENTAGE) == 19.0
    assert coerce("7 %", FieldType.PERCENTAGE) == 7.0
