"""Field schemas (what a job extracts) and extraction results (what came out).

A job's schema is an ordered list of :class:`FieldSpec`. Extractors -- the
offline text-layer extractor, the e-invoice XML reader, Gemini -- all return a
:class:`DocumentExtraction`, whose ``columns``/``results`` pair is the
``{"columns": [...], "results": [[...], ...]}`` shape of the specification:
one document may yield several rows (line items).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")

Scalar = str | int | float | bool | None


class FieldType(StrEnum):
    STRING = "string"  # also accepted as "text"
    NUMBER = "number"  # amounts, quantities: written as numbers in exports; also accepted as "amount"
    INTEGER = "integer"
    DATE = "date"  # ISO 8601 YYYY-MM-DD
    CURRENCY = "currency"  # ISO 4217 code, e.g. EUR
    BOOLEAN = "boolean"
    # Validated text types (common.core.fieldtypes): invalid values become null.
    IBAN = "iban"  # without spaces, mod-97 checked
    BIC = "bic"  # SWIFT code, 8 or 11 characters
    VAT_ID = "vat_id"  # country prefix + the country's format, compacted
    EMAIL = "email"
    PHONE = "phone"  # digits, "+" for international numbers
    PERCENTAGE = "percentage"  # a number of percent, 0-100
    ENUM = "enum"  # one of the field's choices

    @classmethod
    def _missing_(cls, value: object) -> FieldType | None:
        aliases = {"text": cls.STRING, "amount": cls.NUMBER, "money": cls.NUMBER, "vat": cls.VAT_ID}
        return aliases.get(str(value).lower())


class FieldSpec(BaseModel):
    """One column the user wants: a snake_case name, a type, and a description
    that tells an extractor (or a model) what to look for."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: FieldType = FieldType.STRING
    description: str = ""
    # The allowed values of an enum field, as they should be written.
    choices: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _snake_case(cls, v: str) -> str:
        if not _FIELD_NAME.fullmatch(v):
            raise ValueError(f"field name {v!r} must be snake_case: a lowercase letter, then letters, digits or _")
        return v

    @model_validator(mode="after")
    def _enum_has_choices(self) -> FieldSpec:
        if self.type is FieldType.ENUM and not self.choices:
            raise ValueError(f"enum field {self.name!r} needs choices")
        return self


INVOICE_PRESET: tuple[FieldSpec, ...] = (
    FieldSpec(
        name="invoice_number",
        description="The invoice (or credit note) number as printed.",
    ),
    FieldSpec(name="date", type=FieldType.DATE, description="The invoice date (issue date)."),
    FieldSpec(
        name="total",
        type=FieldType.NUMBER,
        description=(
            "The invoice's grand total including tax, as printed (before any prepayment is deducted);"
            " negative for credit notes."
        ),
    ),
    FieldSpec(name="currency", type=FieldType.CURRENCY, description="ISO 4217 currency code."),
    FieldSpec(name="seller", description="Name of the company that issued the invoice."),
    FieldSpec(name="buyer", description="Name of the customer the invoice is addressed to."),
)

PRESETS: dict[str, tuple[FieldSpec, ...]] = {"invoice": INVOICE_PRESET}


def preset(name: str) -> tuple[FieldSpec, ...]:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None


def fields_from_names(names: list[str]) -> tuple[FieldSpec, ...]:
    """``--fields a,b:date,c``: typed from the field catalogue, an explicit
    ``name:type``, or the name's suffix (see :mod:`common.core.field_catalog`)."""
    from common.core.field_catalog import parse_field_names  # the catalogue imports this module

    return parse_field_names(names)


ValueSource = Literal["text", "einvoice_xml", "model"]


class FieldValue(BaseModel):
    """One extracted value with how sure the extractor is and where it was found."""

    value: Scalar
    confidence: float = Field(ge=0.0, le=1.0)
    page: int | None = None  # 1-based
    snippet: str | None = None  # the text the value was read from
    source: ValueSource = "text"


class DocumentExtraction(BaseModel):
    """The result of extracting one document.

    ``columns`` and ``results`` follow the specification's result shape;
    ``fields`` holds the document-level values of the first row with their
    confidence and provenance; ``row_pages`` gives the page of each row where
    known (line items), aligned with ``results``.
    """

    columns: list[str]
    results: list[list[Any]]
    fields: dict[str, FieldValue] = Field(default_factory=dict)
    row_pages: list[int | None] = Field(default_factory=list)
    pages: int = 0
    method: str  # "offline-text", "einvoice-xml", "gemini"
    model: str | None = None
    model_version: str | None = None
    prompt_version: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    notes: list[str] = Field(default_factory=list)
