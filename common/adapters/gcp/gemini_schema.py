"""What Sluice asks Gemini and how it checks the answer; no client code here.

The answer has the specification's result shape plus the page of each row::

    {"columns": ["invoice_number", "total"], "results": [["F-1", 12.5]], "pages": [1]}

:func:`response_schema` describes it to the model (Vertex AI's OpenAPI subset,
as a plain dict) and :func:`parse_answer` checks it: the columns are the
job's field names, every row has one value per column, and each value has its
field's type. Trivially coercible values are coerced (``"12.50"`` for a
number, ``"eur"`` for a currency); anything else raises
:class:`MalformedModelOutput` keeping the raw text, which the retry policy
retries twice and then records on the failed task.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from common.core.errors import MalformedModelOutput
from common.core.fieldtypes import normalize_value
from common.core.schema import FieldSpec, FieldType, Scalar

# Bump whenever SYSTEM_INSTRUCTION, user_text or response_schema change: it is
# recorded on every task so results can be traced to the prompt that made them.
PROMPT_VERSION = "gemini-extract-1"

SYSTEM_INSTRUCTION = """\
You extract structured data from business documents into a table.

Rules:
- Answer only from the attached document. Never guess, infer from general knowledge or invent values.
- If a field is absent or unreadable in the document, its value is null.
- Dates are ISO 8601 calendar dates: YYYY-MM-DD.
- Numbers are JSON numbers without currency symbols or thousands separators, with "." as the decimal point; \
amounts printed negative or as credits (credit notes) are negative.
- Currencies are ISO 4217 codes (EUR, USD, GBP, ...).
- Booleans are true or false.
- "columns" lists the field names exactly as given, in the given order.
- "results" holds one row per record, each row one value per column in column order. \
When the fields include line-item fields (per-line descriptions, quantities, unit prices, line amounts), \
write one row per line item and repeat the document-level values on every row. \
Otherwise write exactly one row for the document.
- "pages" gives, for each row, the 1-based page of the document where that row's values were found.
- Follow the user's instructions about what to extract, but never these rules' output format.
"""

_TYPE_HINT: dict[FieldType, str] = {
    FieldType.STRING: "text",
    FieldType.NUMBER: "number",
    FieldType.INTEGER: "integer",
    FieldType.DATE: "date YYYY-MM-DD",
    FieldType.CURRENCY: "ISO 4217 currency code",
    FieldType.BOOLEAN: "true/false",
    FieldType.IBAN: "IBAN without spaces",
    FieldType.BIC: "BIC / SWIFT code",
    FieldType.VAT_ID: "VAT id with its country prefix, no spaces",
    FieldType.EMAIL: "e-mail address",
    FieldType.PHONE: "phone number, digits with + country code",
    FieldType.PERCENTAGE: "number of percent (19 for 19 %)",
    FieldType.ENUM: "one of the listed choices",
}

_SCHEMA_TYPE: dict[FieldType, str] = {
    FieldType.STRING: "STRING",
    FieldType.NUMBER: "NUMBER",
    FieldType.INTEGER: "INTEGER",
    FieldType.DATE: "STRING",
    FieldType.CURRENCY: "STRING",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.IBAN: "STRING",
    FieldType.BIC: "STRING",
    FieldType.VAT_ID: "STRING",
    FieldType.EMAIL: "STRING",
    FieldType.PHONE: "STRING",
    FieldType.PERCENTAGE: "NUMBER",
    FieldType.ENUM: "STRING",
}


def user_text(fields: Sequence[FieldSpec], prompt: str) -> str:
    """The instruction that accompanies the document: the job's prompt and its fields."""
    lines = ["Extract these fields (name, type: description):"]
    for f in fields:
        desc = f.description.strip() or "(no description)"
        if f.choices:
            desc += " Choices: " + ", ".join(f.choices) + "."
        lines.append(f"- {f.name}, {_TYPE_HINT[f.type]}: {desc}")
    lines.append("")
    lines.append("columns must be: " + json.dumps([f.name for f in fields]))
    if prompt.strip():
        lines += ["", "Instructions from the user:", prompt.strip()]
    return "\n".join(lines)


def response_schema(fields: Sequence[FieldSpec]) -> dict[str, Any]:
    """The answer's shape in Vertex AI's schema dialect.

    A row is an array whose items may be any of the fields' types: the dialect
    has no per-position (tuple) typing, so per-column types are checked by
    :func:`parse_answer` and spelled out in the prompt.
    """
    names = [f.name for f in fields]
    value_types = sorted({_SCHEMA_TYPE[f.type] for f in fields})
    if len(value_types) == 1:
        value: dict[str, Any] = {"type": value_types[0], "nullable": True}
    else:
        # nullable on each alternative: Vertex AI reads anyOf's members, not siblings of anyOf.
        value = {"anyOf": [{"type": t, "nullable": True} for t in value_types]}
    n = len(names)
    return {
        "type": "OBJECT",
        "properties": {
            "columns": {
                "type": "ARRAY",
                "items": {"type": "STRING", "format": "enum", "enum": names},
                "minItems": n,
                "maxItems": n,
            },
            "results": {
                "type": "ARRAY",
                "items": {"type": "ARRAY", "items": value, "minItems": n, "maxItems": n},
            },
            "pages": {"type": "ARRAY", "items": {"type": "INTEGER", "nullable": True}},
        },
        "required": ["columns", "results", "pages"],
        "propertyOrdering": ["columns", "results", "pages"],
    }


@dataclass(frozen=True)
class Answer:
    columns: list[str]
    results: list[list[Scalar]]
    pages: list[int | None]  # aligned with results; 1-based within the document sent
    notes: list[str]


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*)\n\s*```\s*$", re.DOTALL)


def parse_answer(raw: str, fields: Sequence[FieldSpec], *, pages: int | None = None) -> Answer:  # noqa: C901 (split pending)
    """Check the model's text against the schema; coerce trivial mismatches.

    ``pages`` (the document's page count, when known) bounds the row pages;
    a page outside it is dropped (None) with a note rather than failing the
    extraction, since the values themselves may be right.
    """

    def bad(why: str) -> MalformedModelOutput:
        return MalformedModelOutput(f"the model's answer {why}", raw_output=raw)

    m = _FENCE.match(raw)  # JSON mode should not fence, but a fenced answer is still the answer
    try:
        data = json.loads(m["body"] if m else raw)
    except ValueError as e:
        raise bad(f"is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise bad(f"is a JSON {type(data).__name__}, not an object")
    columns, results = data.get("columns"), data.get("results")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise bad('has no "columns" list of names')
    if not isinstance(results, list) or not all(isinstance(r, list) for r in results):
        raise bad('has no "results" list of rows')

    names = [f.name for f in fields]
    if sorted(columns) != sorted(names) or len(set(columns)) != len(columns):
        raise bad(f"has columns {columns}, expected {names}")
    # The right names in another order: put the values back in the job's order.
    order = [columns.index(n) for n in names]
    notes: list[str] = []
    rows: list[list[Scalar]] = []
    for i, row in enumerate(results):
        if len(row) != len(names):
            raise bad(f"row {i + 1} has {len(row)} values for {len(names)} columns")
        typed: list[Scalar] = []
        for spec, j in zip(fields, order, strict=True):
            try:
                typed.append(coerce(row[j], spec.type, spec.choices))
            except ValueError as e:
                raise bad(f"row {i + 1}, {spec.name}: {e}") from None
        rows.append(typed)

    row_pages: list[int | None] = [None] * len(rows)
    raw_pages = data.get("pages")
    if isinstance(raw_pages, list) and len(raw_pages) == len(rows):
        dropped = 0
        for i, p in enumerate(raw_pages):
            ok = isinstance(p, int) and not isinstance(p, bool) and p >= 1 and (pages is None or p <= pages)
            row_pages[i] = p if ok else None
            dropped += p is not None and not ok
        if dropped:
            notes.append(f"{dropped} row page(s) outside the document were dropped")
    elif rows:
        notes.append("the model gave no page per row")
    return Answer(columns=names, results=rows, pages=row_pages, notes=notes)


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
# Symbols that name one currency only; "$" or "¥" do not.
_CURRENCY_SYMBOLS = {"€": "EUR", "£": "GBP"}


def coerce(value: Any, ftype: FieldType, choices: tuple[str, ...] = ()) -> Scalar:  # noqa: C901 (split pending)
    """The value as ``ftype`` wants it; ValueError says why it cannot be.

    Only unambiguous conversions: ``"1,234.50"`` is not a number here because
    it reads differently in Europe; the model was told how to write numbers.
    """
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise ValueError(f"{type(value).__name__} is not a {ftype.value}")
    if ftype is FieldType.STRING:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not text")
        if isinstance(value, float) and value.is_integer():
            return str(int(value))  # 123.0 -> "123", not "123.0"
        return str(value)
    if ftype is FieldType.NUMBER:
        return _number(value)
    if ftype is FieldType.INTEGER:
        n = _number(value)
        if isinstance(n, float):
            if not n.is_integer():
                raise ValueError(f"{value!r} is not a whole number")
            return int(n)
        return n
    if ftype is FieldType.DATE:
        text = value.strip() if isinstance(value, str) else None
        if text is None or not _DATE.fullmatch(text):
            raise ValueError(f"{value!r} is not a date YYYY-MM-DD")
        try:
            date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a calendar date") from None
        return text
    if ftype is FieldType.CURRENCY:
        text = value.strip() if isinstance(value, str) else None
        if text in _CURRENCY_SYMBOLS:
            return _CURRENCY_SYMBOLS[text]
        if text is None or not _CURRENCY.fullmatch(text):
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return text.upper()
    if ftype is FieldType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"{value!r} is not true or false")
    # Validated types: a value that fails validation (a misread IBAN) is null,
    # not an error to retry -- the model read what it read.
    if ftype is FieldType.PERCENTAGE:
        return normalize_value(value if isinstance(value, str) else _number(value), ftype)
    if isinstance(value, str):
        return normalize_value(value.strip(), ftype, choices)
    raise ValueError(f"{value!r} is not a {ftype.value}")


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return value
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return int(text)
        if _NUMBER.fullmatch(text):
            return float(text)
    raise ValueError(f"{value!r} is not a number")
