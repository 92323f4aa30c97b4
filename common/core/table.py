"""Build one table from a run's extraction results, pure.

Columns: the job's fields in their order, then any extra columns a result
carried in first-seen order, then ``source_file`` and ``page``. One row per
result row. Failed tasks are never dropped silently: they come back as
``failures`` for the writer to list (a sheet in XLSX, a count for CSV).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from common.core.models import ExtractionTask
from common.core.schema import FieldSpec, FieldType, Scalar
from common.core.states import TaskStatus

SOURCE_FILE = "source_file"
PAGE = "page"


class Failure(BaseModel):
    model_config = ConfigDict(frozen=True)

    source_file: str
    status: str
    error: str
    hint: str = ""


class Table(BaseModel):
    columns: list[str]
    types: dict[str, FieldType]
    rows: list[list[Scalar]]
    failures: list[Failure]


def _cell(value: Any) -> Scalar:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def build_table(fields: Sequence[FieldSpec], tasks: Iterable[ExtractionTask]) -> Table:
    columns = [f.name for f in fields]
    types = {f.name: f.type for f in fields}
    known = set(columns)
    extra: list[str] = []
    collected: list[tuple[dict[str, Any], str, int | None]] = []
    failures: list[Failure] = []
    for task in tasks:
        if task.status is TaskStatus.COMPLETED and task.result is not None:
            res = task.result
            for i, row in enumerate(res.results):
                record = dict(zip(res.columns, row, strict=False))
                for col in res.columns:
                    if col not in known and col not in (SOURCE_FILE, PAGE):
                        known.add(col)
                        extra.append(col)
                page = res.row_pages[i] if i < len(res.row_pages) else None
                collected.append((record, task.file_name, page))
        elif task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            err = task.error or {}
            failures.append(
                Failure(
                    source_file=task.file_name,
                    status=task.status.value,
                    error=err.get("message", task.status.value),
                    hint=err.get("hint", ""),
                )
            )
    all_columns = [*columns, *extra, SOURCE_FILE, PAGE]
    for col in extra:
        types[col] = FieldType.STRING
    types[SOURCE_FILE] = FieldType.STRING
    types[PAGE] = FieldType.INTEGER
    value_columns = [*columns, *extra]
    rows = [[*(_cell(rec.get(c)) for c in value_columns), name, page] for rec, name, page in collected]
    return Table(columns=all_columns, types=types, rows=rows, failures=failures)
