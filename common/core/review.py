"""Human review of extracted values: which fields need a look, and what the corrections make of a result.

A job may set ``review_below`` (a confidence between 0 and 1). A completed
task's document-level field whose confidence is below it is *flagged*; a run
with flagged fields that are neither confirmed nor corrected waits in
``needs_review`` and its exports are not made until every one is. A
correction replaces the value everywhere the task's result holds the value
the extractor read (a document-level value repeats on every line-item row);
a confirmation changes nothing but clears the flag.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from common.core.models import ExtractionTask, Record, Timestamp
from common.core.schema import Scalar
from common.core.states import TaskStatus

ReviewAction = Literal["confirmed", "corrected"]


class ReviewEntry(BaseModel):
    """One decision, as kept in a field's history."""

    action: ReviewAction
    old: Scalar = None
    new: Scalar = None
    by: str
    at: Timestamp


class FieldReview(Record):
    """The review of one field of one task: its latest decision and every earlier one."""

    collection: ClassVar[str] = "reviews"

    task_id: str
    run_id: str
    job_id: str
    field: str
    action: ReviewAction
    # What the extractor read, and the value that stands now (``value`` for a confirmation).
    original: Scalar = None
    value: Scalar = None
    by: str
    at: Timestamp
    history: list[ReviewEntry] = Field(default_factory=list)


def review_id(task_id: str, field: str) -> str:
    """A derived id: the same field of the same task always has the same review record."""
    digest = hashlib.sha256(field.encode()).hexdigest()[:16]
    return f"{task_id}.{digest}"


def flagged_fields(task: ExtractionTask, threshold: float | None) -> list[str]:
    """The task's fields read with a confidence under ``threshold`` (none without one)."""
    if threshold is None or task.status is not TaskStatus.COMPLETED or task.result is None:
        return []
    return [name for name, fv in task.result.fields.items() if fv.confidence < threshold]


def unresolved(flagged: Iterable[str], reviewed: Iterable[str]) -> list[str]:
    done = set(reviewed)
    return [f for f in flagged if f not in done]


def apply_reviews(task: ExtractionTask, reviews: Mapping[str, FieldReview]) -> ExtractionTask:
    """``task`` with its corrected values in place of those the extractor read."""
    if task.result is None or not reviews:
        return task
    res = task.result
    fields = dict(res.fields)
    rows = [list(r) for r in res.results]
    changed = False
    for name, review in reviews.items():
        if review.action != "corrected":
            continue
        changed = True
        if name in fields:
            fields[name] = fields[name].model_copy(update={"value": review.value, "confidence": 1.0})
        if name in res.columns:
            col = res.columns.index(name)
            for i, row in enumerate(rows):
                # The document-level value repeats on every row; line-item values are left alone.
                if col < len(row) and (i == 0 or _same(row[col], review.original)):
                    row[col] = review.value
    if not changed:
        return task
    result = res.model_copy(update={"fields": fields, "results": rows})
    return task.model_copy(update={"result": result})


def _same(a: Any, b: Any) -> bool:
    return a == b or (a is not None and b is not None and str(a) == str(b))
