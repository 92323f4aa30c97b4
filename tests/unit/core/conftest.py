"""Record factories for the core's unit tests.

Every factory builds a valid record at a fixed UTC instant (``T0``) with the
smallest set of required fields; a test passes only what it is about.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.core.models import (
    Destination,
    Export,
    ExportFormat,
    ExtractionTask,
    Operation,
    Run,
    TaskResult,
)
from common.core.states import TaskStatus

T0 = datetime(2024, 5, 10, 10, 0, 0, tzinfo=UTC)  # a Friday


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def _base(record_id: str) -> dict[str, Any]:
    return {"id": record_id, "owner": "alice", "created_at": T0, "updated_at": T0}


def _task(**overrides: Any) -> ExtractionTask:
    fields = {
        **_base("task-1"),
        "run_id": "run-1",
        "job_id": "job-1",
        "file_id": "file-1",
        "file_name": "a.pdf",
    }
    return ExtractionTask(**{**fields, **overrides})


def _running_task(**overrides: Any) -> ExtractionTask:
    """A task whose attempt 2 holds a lease until ``T0 + 60 s``, from message ``m-2``."""
    fields = {
        "status": TaskStatus.RUNNING,
        "attempts": 2,
        "message_id": "m-2",
        "lease_until": at(60),
        "started_at": at(-120),
    }
    return _task(**{**fields, **overrides})


def _completed_task(
    columns: list[str], rows: list[list[Any]], *, row_pages: list[int | None] | None = None, **overrides: Any
) -> ExtractionTask:
    result = TaskResult(columns=columns, results=rows, row_pages=row_pages or [], method="offline-text")
    return _task(status=TaskStatus.COMPLETED, result=result, **overrides)


def _run(**overrides: Any) -> Run:
    fields = {**_base("run-1"), "job_id": "job-1", "run_number": 1, "operation_id": "op-1"}
    return Run(**{**fields, **overrides})


def _export(**overrides: Any) -> Export:
    fields = {
        **_base("export-1"),
        "run_id": "run-1",
        "job_id": "job-1",
        "format": ExportFormat.CSV,
        "destination": Destination(),
    }
    return Export(**{**fields, **overrides})


def _operation(**overrides: Any) -> Operation:
    fields = {**_base("op-1"), "kind": "run", "target_id": "run-1", "job_id": "job-1"}
    return Operation(**{**fields, **overrides})


@pytest.fixture
def make_task() -> Callable[..., ExtractionTask]:
    return _task


@pytest.fixture
def make_running_task() -> Callable[..., ExtractionTask]:
    return _running_task


@pytest.fixture
def make_completed_task() -> Callable[..., ExtractionTask]:
    return _completed_task


@pytest.fixture
def make_run() -> Callable[..., Run]:
    return _run


@pytest.fixture
def make_export() -> Callable[..., Export]:
    return _export


@pytest.fixture
def make_operation() -> Callable[..., Operation]:
    return _operation
