"""Build one table from a run's extraction results, pure and streaming.

Columns: the job's fields in their order, then any extra columns a result
carried in first-seen order, then ``source_file``, ``page`` and
``duplicate_of``. One row per result row. A document added under several
names (byte-identical files) is read once, and each other name gets the same
rows with ``duplicate_of`` naming the file that was read: every input file is
in the table. Failed tasks are never dropped silently: they come back as
``failures`` (one per name) for the writer to list (a sheet in XLSX, a count
for CSV).

Large runs are written in two passes so memory stays flat: :func:`plan`
reads every task once to fix the columns (and notes which columns ever hold
text, so writers only inspect those for formula injection);
:func:`iter_rows` then yields rows one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from common.core.models import ExtractionTask
from common.core.schema import FieldSpec, FieldType, Scalar
from common.core.states import TaskStatus

SOURCE_FILE = "source_file"
PAGE = "page"
DUPLICATE_OF = "duplicate_of"
_PROVENANCE = (SOURCE_FILE, PAGE, DUPLICATE_OF)


class Failure(BaseModel):
    model_config = ConfigDict(frozen=True)

    source_file: str
    status: str
    error: str
    hint: str = ""
    duplicate_of: str = ""


class TableHeader(BaseModel):
    model_config = ConfigDict(frozen=True)

    columns: list[str]
    types: dict[str, FieldType]
    # Positions of columns that ever hold a text value; None: treat all as text.
    text_positions: tuple[int, ...] | None = None
    failures: list[Failure] = []
    row_count: int = 0


@dataclass(frozen=True)
class Table:
    """A header and its rows (a list, from :func:`build_table`)."""

    header: TableHeader
    rows: list[list[Scalar]]

    @property
    def columns(self) -> list[str]:
        return self.header.columns

    @property
    def types(self) -> dict[str, FieldType]:
        return self.header.types

    @property
    def failures(self) -> list[Failure]:
        return self.header.failures


def _cell(value: Any) -> Scalar:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _failures(task: ExtractionTask) -> list[Failure]:
    err = task.error or {}
    first = Failure(
        source_file=task.file_name,
        status=task.status.value,
        error=err.get("message", task.status.value),
        hint=err.get("hint", ""),
    )
    dups = [first.model_copy(update={"source_file": n, "duplicate_of": task.file_name}) for n in task.duplicate_names]
    return [first, *dups]


def plan(fields: Sequence[FieldSpec], tasks: Iterable[ExtractionTask]) -> TableHeader:
    """First pass: the columns, their types, which hold text, the failures, the row count."""
    columns = [f.name for f in fields]
    types = {f.name: f.type for f in fields}
    index = {c: i for i, c in enumerate(columns)}
    extra: list[str] = []
    text: set[str] = set()
    failures: list[Failure] = []
    rows = 0
    for task in tasks:
        if task.status is TaskStatus.COMPLETED and task.result is not None:
            res = task.result
            for col in res.columns:
                if col not in index and col not in _PROVENANCE:
                    index[col] = len(columns) + len(extra)
                    extra.append(col)
            rows += len(res.results) * (1 + len(task.duplicate_names))
            for row in res.results:
                for col, value in zip(res.columns, row, strict=False):
                    if isinstance(value, str) or (value is not None and not isinstance(value, int | float)):
                        text.add(col)
        elif task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            failures.extend(_failures(task))
    all_columns = [*columns, *extra, *_PROVENANCE]
    for col in extra:
        types[col] = FieldType.STRING
    types[SOURCE_FILE] = FieldType.STRING
    types[PAGE] = FieldType.INTEGER
    types[DUPLICATE_OF] = FieldType.STRING
    text.update((SOURCE_FILE, DUPLICATE_OF))
    positions = tuple(i for i, c in enumerate(all_columns) if c in text)
    return TableHeader(columns=all_columns, types=types, text_positions=positions, failures=failures, row_count=rows)


def iter_rows(header: TableHeader, tasks: Iterable[ExtractionTask]) -> Iterator[list[Scalar]]:
    """Second pass: one row per result row and name, in the header's column order."""
    value_columns = header.columns[: -len(_PROVENANCE)]
    for task in tasks:
        if task.status is not TaskStatus.COMPLETED or task.result is None:
            continue
        res = task.result
        values = []
        for i, row in enumerate(res.results):
            record = dict(zip(res.columns, row, strict=False))
            page = res.row_pages[i] if i < len(res.row_pages) else None
            values.append((page, [_cell(record.get(c)) for c in value_columns]))
        for page, cells in values:
            yield [*cells, task.file_name, page, None]
        for name in task.duplicate_names:
            for page, cells in values:
                yield [*cells, name, page, task.file_name]


def build_table(fields: Sequence[FieldSpec], tasks: Iterable[ExtractionTask]) -> Table:
    """Both passes over an in-memory list of tasks (small runs, tests)."""
    materialised = list(tasks)
    header = plan(fields, materialised)
    return Table(header=header, rows=list(iter_rows(header, materialised)))
