"""Sheet enrichment, the pure part: typed output columns, the prompt template, batches of rows per model call.

A model fills one or more typed columns of a table, row by row. Several rows
go into one model call (one call per row cannot reach the throughput a model
quota allows): the answer is an object ``{"rows": [{"row": 12, "category": ...}, ...]}``
with one entry per row, and each entry is validated on its own, so a bad entry
fails only its row (:func:`parse_batch`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.core import jsonschema_subset
from common.core.errors import PermanentError

ERROR_PREFIX = "#ERROR: "  # an error cell: the row failed, the job went on
ROW_KEY = "row"
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_OUTPUT_SPEC = re.compile(r"^\s*(?P<name>[^:]+?)\s*(?::\s*(?P<type>[a-z]+)\s*(?:\[(?P<values>.*)\])?\s*)?$")


class ColumnType(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    ENUM = "enum"


class OutputColumn(BaseModel):
    """A column the model fills: its header and type (an enum lists its allowed values)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=200)
    type: ColumnType = ColumnType.TEXT
    values: tuple[str, ...] = ()
    description: str = ""

    @model_validator(mode="after")
    def _enum_has_values(self) -> OutputColumn:
        if self.type is ColumnType.ENUM and not self.values:
            raise ValueError(f"enum column {self.name!r} needs its allowed values, e.g. {self.name}:enum[a,b,c]")
        if self.type is not ColumnType.ENUM and self.values:
            raise ValueError(f"only enum columns take values ({self.name!r} is {self.type})")
        if self.name == ROW_KEY:
            raise ValueError(f"{ROW_KEY!r} is reserved for the row number in the model's answer")
        return self

    def value_schema(self) -> dict[str, Any]:
        """The JSON schema of one value of this column."""
        described = {"description": self.description} if self.description else {}
        match self.type:
            case ColumnType.TEXT:
                return {"type": "string", **described}
            case ColumnType.NUMBER:
                return {"type": "number", **described}
            case ColumnType.BOOLEAN:
                return {"type": "boolean", **described}
            case ColumnType.ENUM:
                return {"type": "string", "enum": list(self.values), **described}


def parse_output(spec: str) -> OutputColumn:
    """``category:enum[a,b,c]``, ``price:number``, ``summary:text`` or ``summary`` (text) as a column."""
    m = _OUTPUT_SPEC.match(spec)
    if m is None or not m["name"].strip():
        raise PermanentError(
            f"cannot read the output column {spec!r}",
            code="invalid_output",
            hint="Write NAME:TYPE with TYPE text, number, boolean or enum[a,b,c].",
        )
    kind = m["type"] or "text"
    if kind not in ColumnType.__members__.values():
        raise PermanentError(
            f"unknown column type {kind!r} in {spec!r}",
            code="invalid_output",
            hint="Use text, number, boolean or enum[a,b,c].",
        )
    values = tuple(v.strip() for v in (m["values"] or "").split(",") if v.strip())
    try:
        return OutputColumn(name=m["name"].strip(), type=ColumnType(kind), values=values)
    except ValueError as exc:
        raise PermanentError(str(exc), code="invalid_output", hint="Write NAME:enum[a,b,c].") from None


# -- the prompt template -------------------------------------------------------------


def placeholders(template: str) -> list[str]:
    """The ``{column}`` names a template uses, in order, once each (``{{``/``}}`` are literal braces)."""
    unescaped = template.replace("{{", "").replace("}}", "")
    return list(dict.fromkeys(m.strip() for m in _PLACEHOLDER.findall(unescaped)))


def check_template(template: str, headers: Sequence[str]) -> None:
    """PermanentError ``unknown_placeholder`` when the template names a column the table does not have."""
    known = set(headers)
    unknown = [p for p in placeholders(template) if p not in known]
    if unknown:
        raise PermanentError(
            f"the prompt names {', '.join('{' + u + '}' for u in unknown)}, not a column of the sheet",
            code="unknown_placeholder",
            hint=f"Columns are: {', '.join(h for h in headers if h) or '(none)'}. Placeholders match headers exactly.",
        )


def render(template: str, values: Mapping[str, str]) -> str:
    """The template with each ``{column}`` replaced by the row's value (missing cells are empty)."""

    def sub(m: re.Match[str]) -> str:
        return values.get(m.group(1).strip(), "")

    # Escaped braces are swapped out first so that "{{x}}" stays literal.
    marked = template.replace("{{", "\x00").replace("}}", "\x01")
    return _PLACEHOLDER.sub(sub, marked).replace("\x00", "{").replace("\x01", "}")


# -- one model call for several rows ----------------------------------------------------


def entry_schema(columns: Sequence[OutputColumn]) -> dict[str, Any]:
    """The JSON schema of one row's answer: its row number and one value per output column."""
    return {
        "type": "object",
        "properties": {ROW_KEY: {"type": "integer"}, **{c.name: c.value_schema() for c in columns}},
        "required": [ROW_KEY, *(c.name for c in columns)],
        "additionalProperties": False,
    }


def batch_schema(columns: Sequence[OutputColumn]) -> dict[str, Any]:
    """The JSON schema of a batch answer: ``{"rows": [entry, ...]}``."""
    return {
        "type": "object",
        "properties": {"rows": {"type": "array", "items": entry_schema(columns)}},
        "required": ["rows"],
        "additionalProperties": False,
    }


SYSTEM_INSTRUCTION = (
    "You fill columns of a table. For every row given, answer with one entry in `rows`: "
    "its row number in `row` and a value for each requested column, of the requested type. "
    "Answer every row, each once; never invent rows."
)


def batch_prompt(template: str, rows: Sequence[tuple[int, Mapping[str, str]]], columns: Sequence[OutputColumn]) -> str:
    """The text of one call: the columns wanted, then each row's rendered prompt under its number."""
    wanted = "\n".join(f"- {c.name}: {_describe(c)}" for c in columns)
    blocks = "\n\n".join(f"### Row {number}\n{render(template, values)}" for number, values in rows)
    return f"Columns to fill:\n{wanted}\n\nRows:\n\n{blocks}"


def _describe(column: OutputColumn) -> str:
    what = {
        ColumnType.TEXT: "text",
        ColumnType.NUMBER: "a number",
        ColumnType.BOOLEAN: "true or false",
        ColumnType.ENUM: "one of " + ", ".join(column.values),
    }[column.type]
    return f"{what}. {column.description}" if column.description else what


@dataclass(frozen=True)
class RowAnswer:
    values: dict[str, Any]


@dataclass(frozen=True)
class RowProblem:
    reason: str


RowOutcome = RowAnswer | RowProblem


def parse_batch(answer: Any, rows: Sequence[int], columns: Sequence[OutputColumn]) -> dict[int, RowOutcome]:
    """Each asked row's outcome from a batch answer: its validated values, or why it has none.

    A row's entry that breaks the column types, a row answered twice with
    different values, or a row not answered at all fails that row only;
    entries for rows that were not asked are ignored.
    """
    entries = answer.get("rows") if isinstance(answer, dict) else None
    if not isinstance(entries, list):
        return {r: RowProblem("the answer has no list of rows") for r in rows}
    schema = entry_schema(columns)
    asked = set(rows)
    seen: dict[int, list[Any]] = {}
    for entry in entries:
        number = entry.get(ROW_KEY) if isinstance(entry, dict) else None
        if isinstance(number, int) and not isinstance(number, bool) and number in asked:
            seen.setdefault(number, []).append(entry)
    outcomes: dict[int, RowOutcome] = {}
    for number in rows:
        found = seen.get(number, [])
        if not found:
            outcomes[number] = RowProblem("the model gave no answer for this row")
            continue
        if any(e != found[0] for e in found[1:]):
            outcomes[number] = RowProblem("the model answered this row twice, differently")
            continue
        wrong = jsonschema_subset.problems(found[0], schema, path=f"row {number}")
        if wrong:
            outcomes[number] = RowProblem("; ".join(wrong))
        else:
            outcomes[number] = RowAnswer({c.name: _normalise(c, found[0][c.name]) for c in columns})
    return outcomes


def _normalise(column: OutputColumn, value: Any) -> Any:
    if column.type is ColumnType.NUMBER and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def error_cell(reason: str) -> str:
    """What a failed row's output cells hold: visible in the sheet, recognisable, short."""
    return (ERROR_PREFIX + reason)[:500]


def is_filled(cells: Mapping[str, str], columns: Sequence[OutputColumn]) -> bool:
    """Whether every output cell of a row already holds something (such rows are skipped unless overwrite)."""
    return all(str(cells.get(c.name, "")).strip() for c in columns)


# -- the settings of an enrich job ------------------------------------------------------------


class EnrichSettings(BaseModel):
    """What an enrich job does: the table, the prompt, the typed output columns, the model."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(min_length=1, description="A Google Sheet's URL or id, or (embedded backend) a CSV/XLSX path.")
    sheet: str | None = Field(default=None, description="The sheet (tab) name; default the first.")
    header_row: int = Field(default=1, ge=1)
    first_row: int | None = Field(default=None, ge=2, description="First data row (default: after the header).")
    row_count: int | None = Field(default=None, ge=1, description="Rows to fill (default: to the last row).")
    prompt: str = Field(min_length=1, max_length=20_000)
    outputs: tuple[OutputColumn, ...] = Field(min_length=1, max_length=50)
    model: str | None = None
    overwrite: bool = False
    rows_per_call: int = Field(default=20, ge=1, le=200)
    rows_per_item: int = Field(default=200, ge=1, le=5000)
    rows_per_write: int = Field(
        default=100,
        ge=1,
        le=5000,
        description="Answered rows written back to the sheet per request (Sheets' write quota counts requests).",
    )

    @field_validator("outputs")
    @classmethod
    def _unique(cls, outputs: tuple[OutputColumn, ...]) -> tuple[OutputColumn, ...]:
        names = [o.name for o in outputs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"output columns named twice: {', '.join(twice)}")
        return outputs

    @model_validator(mode="after")
    def _first_row_after_header(self) -> EnrichSettings:
        if self.first_row is not None and self.first_row <= self.header_row:
            raise ValueError("first_row must come after header_row")
        return self

    @property
    def start_row(self) -> int:
        return self.first_row if self.first_row is not None else self.header_row + 1


def is_local_table(source: str) -> bool:
    """Whether ``source`` names a local CSV/XLSX file rather than a Google Sheet (URL or id)."""
    return not source.startswith(("http://", "https://")) and source.lower().endswith((".csv", ".xlsx"))


def row_batches(first: int, last: int, size: int) -> list[tuple[int, int]]:
    """Rows ``first..last`` (inclusive) in consecutive ranges of at most ``size`` rows."""
    return [(start, min(last, start + size - 1)) for start in range(first, last + 1, size)]


def item_ranges(settings: EnrichSettings) -> list[tuple[int, int]]:
    """The row ranges an enrich run fans out into (one work item each), from resolved settings.

    ``row_count`` must be known by then: the CLI and the API resolve it from
    the sheet (:func:`common.service.enrich.prepare`) before the job starts,
    which is also when a wrong placeholder is reported.
    """
    if settings.row_count is None:
        raise PermanentError(
            "the enrich job's row_count is not resolved",
            code="enrich_rows_unknown",
            hint="Give row_count, or create the job with `sluice enrich`, which reads it from the sheet.",
        )
    first = settings.start_row
    return row_batches(first, first + settings.row_count - 1, settings.rows_per_item)
