"""State machines for every entity, as data plus one pure function.

Each status enum comes with the set of moves it allows. ``check_transition``
refuses anything else; the store applies a move with compare-and-set ("move
to running only if still queued"), so two workers racing on one task cannot
both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from common.core.errors import IllegalTransition


class FileStatus(StrEnum):
    PENDING = "pending"  # registered; bytes not yet in the blob store
    UPLOADED = "uploaded"  # bytes stored; ready to extract
    FAILED = "failed"  # import failed; ``error`` says why
    DELETED = "deleted"  # removed by the user; kept as a tombstone for idempotency


class RunStatus(StrEnum):
    PENDING = "pending"  # recorded, waiting for the initializer (or its scheduled time)
    RUNNING = "running"  # tasks fanned out
    PAUSED = "paused"  # no new task is started until resumed
    COMPLETED = "completed"  # every task terminal (some may have failed)
    FAILED = "failed"  # the run itself could not proceed (e.g. no files)
    CANCELLED = "cancelled"  # stopped by the user; pending tasks never start
    # Every task terminal, but values under the job's review_below wait for a person;
    # the run's exports are made when every flagged value is confirmed or corrected.
    NEEDS_REVIEW = "needs_review"


class TaskStatus(StrEnum):
    PENDING = "pending"  # waiting for (re)delivery
    QUEUED = "queued"  # delivered, but waiting for capacity (its owner is at the running-item limit)
    RUNNING = "running"  # a worker holds it; ``attempt`` is its fencing token
    COMPLETED = "completed"
    FAILED = "failed"  # permanent failure, or retries exhausted
    CANCELLED = "cancelled"


class ExportStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"  # side effect intent recorded; may be in flight
    COMPLETED = "completed"
    FAILED = "failed"


class OperationStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FILE_MOVES: Mapping[FileStatus, frozenset[FileStatus]] = {
    FileStatus.PENDING: frozenset({FileStatus.UPLOADED, FileStatus.FAILED, FileStatus.DELETED}),
    FileStatus.UPLOADED: frozenset({FileStatus.DELETED}),
    FileStatus.FAILED: frozenset({FileStatus.PENDING, FileStatus.DELETED}),
    FileStatus.DELETED: frozenset(),
}

RUN_MOVES: Mapping[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset(
        {RunStatus.PAUSED, RunStatus.COMPLETED, RunStatus.NEEDS_REVIEW, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.NEEDS_REVIEW: frozenset({RunStatus.COMPLETED, RunStatus.CANCELLED}),
    # A paused run fails when its kind's run timeout passes.
    RunStatus.PAUSED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    # A retry of a finished run's failed tasks reopens it.
    RunStatus.COMPLETED: frozenset({RunStatus.RUNNING}),
    RunStatus.FAILED: frozenset({RunStatus.RUNNING}),
    RunStatus.CANCELLED: frozenset(),
}

TASK_MOVES: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.QUEUED: frozenset({TaskStatus.RUNNING, TaskStatus.PENDING, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    # RUNNING -> RUNNING is a takeover after a crashed attempt (new fencing token).
    TaskStatus.RUNNING: frozenset(
        {
            TaskStatus.RUNNING,
            TaskStatus.PENDING,
            TaskStatus.COMPLETED,
            TaskStatus.FAILED,
            TaskStatus.CANCELLED,
        }
    ),
    TaskStatus.COMPLETED: frozenset({TaskStatus.PENDING}),  # "retry all"
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING}),  # "retry failed"
    TaskStatus.CANCELLED: frozenset({TaskStatus.PENDING}),
}

EXPORT_MOVES: Mapping[ExportStatus, frozenset[ExportStatus]] = {
    ExportStatus.PENDING: frozenset({ExportStatus.RUNNING, ExportStatus.FAILED}),
    # RUNNING -> RUNNING: a redelivery resumes an export whose worker died.
    ExportStatus.RUNNING: frozenset(
        {
            ExportStatus.RUNNING,
            ExportStatus.COMPLETED,
            ExportStatus.FAILED,
            ExportStatus.PENDING,
        }
    ),
    ExportStatus.COMPLETED: frozenset(),
    ExportStatus.FAILED: frozenset({ExportStatus.PENDING}),
}

OPERATION_MOVES: Mapping[OperationStatus, frozenset[OperationStatus]] = {
    OperationStatus.RUNNING: frozenset(
        {
            OperationStatus.RUNNING,
            OperationStatus.DONE,
            OperationStatus.FAILED,
            OperationStatus.CANCELLED,
        }
    ),
    OperationStatus.DONE: frozenset({OperationStatus.RUNNING}),  # a retried run reopens its operation
    OperationStatus.FAILED: frozenset({OperationStatus.RUNNING}),
    OperationStatus.CANCELLED: frozenset(),
}

OPEN_TASK_STATES = frozenset({TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING})
TERMINAL_TASK_STATES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
TERMINAL_RUN_STATES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})

S = TypeVar("S", bound=StrEnum)


def can_move(moves: Mapping[S, frozenset[S]], current: S, target: S) -> bool:
    return target in moves[current]


def check_transition(moves: Mapping[S, frozenset[S]], current: S, target: S, *, what: str = "") -> S:
    """Return ``target`` if ``current -> target`` is allowed, else raise."""
    if target not in moves[current]:
        label = f"{what} " if what else ""
        raise IllegalTransition(f"{label}cannot move from {current.value} to {target.value}")
    return target
