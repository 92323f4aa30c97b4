"""Corrections applied to a task's result (what exports write), and which fields wait for review."""

from __future__ import annotations

from typing import Any

from common.core.models import ExtractionTask, TaskResult
from common.core.review import FieldReview, apply_reviews, flagged_fields, review_id, unresolved
from common.core.schema import FieldValue
from common.core.states import TaskStatus
from tests.unit.core.conftest import T0, _task


def _read(rows: list[list[Any]], **fields: tuple[Any, float]) -> ExtractionTask:
    result = TaskResult(
        columns=["invoice_number", "total", "item"],
        results=rows,
        fields={k: FieldValue(value=v, confidence=c) for k, (v, c) in fields.items()},
        method="offline-text",
    )
    return _task(status=TaskStatus.COMPLETED, result=result)


def _review(field: str, action: str, original: Any, value: Any) -> FieldReview:
    return FieldReview(
        id=review_id("task-1", field),
        owner="alice",
        task_id="task-1",
        run_id="run-1",
        job_id="job-1",
        field=field,
        action=action,
        original=original,
        value=value,
        by="bob",
        at=T0,
        created_at=T0,
        updated_at=T0,
    )


ROWS = [["INV-1", "12.50", "pens"], ["INV-1", "12.50", "ink"], ["INV-1", "3", "paper"]]


def test_a_correction_replaces_the_field_and_its_value_on_every_row_that_repeats_it() -> None:
    task = _read(ROWS, total=("12.50", 0.4))
    out = apply_reviews(task, {"total": _review("total", "corrected", "12.50", 15)})
    assert out.result is not None
    assert out.result.fields["total"].value == 15
    assert out.result.fields["total"].confidence == 1.0
    # The first row always, and rows holding what was read; a line item's other value is left alone.
    assert [r[1] for r in out.result.results] == [15, 15, "3"]
    assert [r[2] for r in out.result.results] == ["pens", "ink", "paper"]


def test_a_correction_matches_the_read_value_as_text() -> None:
    task = _read([["INV-1", 12.5, "a"], ["INV-1", 12.5, "b"]], total=(12.5, 0.4))
    out = apply_reviews(task, {"total": _review("total", "corrected", "12.5", 20)})
    assert out.result is not None and [r[1] for r in out.result.results] == [20, 20]


def test_a_confirmation_leaves_the_result_as_read() -> None:
    task = _read(ROWS, total=("12.50", 0.4))
    assert apply_reviews(task, {"total": _review("total", "confirmed", "12.50", "12.50")}) is task


def test_the_task_is_not_changed_in_place() -> None:
    task = _read(ROWS, invoice_number=("INV-1", 0.3))
    out = apply_reviews(task, {"invoice_number": _review("invoice_number", "corrected", "INV-1", "INV-9")})
    assert task.result is not None and task.result.results[0][0] == "INV-1"
    assert task.result.fields["invoice_number"].value == "INV-1"
    assert out.result is not None and [r[0] for r in out.result.results] == ["INV-9", "INV-9", "INV-9"]


def test_a_correction_of_a_column_without_a_document_level_field_changes_only_rows() -> None:
    task = _read(ROWS, total=("12.50", 0.4))
    out = apply_reviews(task, {"item": _review("item", "corrected", None, "stationery")})
    assert out.result is not None
    assert [r[2] for r in out.result.results] == ["stationery", "ink", "paper"]
    assert set(out.result.fields) == {"total"}


def test_a_task_without_a_result_or_reviews_is_returned_as_is() -> None:
    bare = _task()
    assert apply_reviews(bare, {"total": _review("total", "corrected", "1", "2")}) is bare
    task = _read(ROWS, total=("12.50", 0.4))
    assert apply_reviews(task, {}) is task


def test_fields_under_the_threshold_are_flagged_only_on_completed_tasks() -> None:
    task = _read(ROWS, total=("12.50", 0.4), invoice_number=("INV-1", 0.95))
    assert flagged_fields(task, 0.9) == ["total"]
    assert flagged_fields(task, 0.99) == ["total", "invoice_number"]
    assert flagged_fields(task, None) == []
    assert flagged_fields(task.model_copy(update={"status": TaskStatus.FAILED}), 0.9) == []


def test_reviewed_fields_no_longer_wait() -> None:
    assert unresolved(["total", "date", "number"], ["date"]) == ["total", "number"]


def test_a_fields_review_id_is_derived_from_the_task_and_field() -> None:
    assert review_id("t", "total") == review_id("t", "total")
    assert review_id("t", "total") != review_id("t", "date") != review_id("u", "total")
