"""Pure state changes on records: each takes a record and returns a new one.

They check the move against the state machine in :mod:`common.core.states`;
the service layer applies the result with a compare-and-set write, so a
transition decided on a stale read is refused by the store, not applied twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from common.core.errors import IllegalTransition, SluiceError
from common.core.models import (
    MAX_ATTEMPT_HISTORY,
    AttemptOutcome,
    AttemptRecord,
    Export,
    ExtractionTask,
    Operation,
    Run,
    RunCounters,
    TaskResult,
    TaskUsage,
)
from common.core.progress import Progress
from common.core.states import (
    EXPORT_MOVES,
    OPERATION_MOVES,
    RUN_MOVES,
    TASK_MOVES,
    TERMINAL_TASK_STATES,
    ExportStatus,
    OperationStatus,
    RunStatus,
    TaskStatus,
    check_transition,
)

# -- tasks --------------------------------------------------------------------


class Claim(StrEnum):
    """What a delivered task message should do, given the task's state."""

    START = "start"  # pending: begin a new attempt
    TAKEOVER = "takeover"  # running, but its attempt died (same delivery again, or lease expired)
    IN_FLIGHT = "in_flight"  # a duplicate message while another attempt holds a live lease
    DONE = "done"  # already terminal: nothing to do but re-emit follow-ups


def claim_decision(task: ExtractionTask, *, message_id: str, now: datetime) -> Claim:
    if task.status in TERMINAL_TASK_STATES:
        return Claim.DONE
    if task.status in (TaskStatus.PENDING, TaskStatus.QUEUED):
        return Claim.START
    # RUNNING. The bus redelivers the *same* message only when the attempt that
    # took it did not acknowledge in time (crash, timeout): take over.
    if task.message_id == message_id:
        return Claim.TAKEOVER
    if task.lease_until is None or task.lease_until <= now:
        return Claim.TAKEOVER
    return Claim.IN_FLIGHT


def _ended(
    task: ExtractionTask,
    outcome: AttemptOutcome,
    now: datetime,
    *,
    error: dict[str, str] | None = None,
    delay_s: float | None = None,
) -> list[AttemptRecord]:
    """The history with its open (running) attempt closed with ``outcome``."""
    history = list(task.history)
    if not history or history[-1].outcome != "running":
        return history
    history[-1] = history[-1].model_copy(
        update={"ended_at": now, "outcome": outcome, "delay_s": delay_s, **AttemptRecord.error_fields(error)}
    )
    return history


def start_attempt(task: ExtractionTask, *, message_id: str, now: datetime, lease_s: float) -> ExtractionTask:
    check_transition(TASK_MOVES, task.status, TaskStatus.RUNNING, what="task")
    # A running task being started again lost its worker: that attempt is abandoned.
    history = _ended(task, "abandoned", now)
    history.append(AttemptRecord(attempt=task.attempts + 1, started_at=now))
    return task.model_copy(
        update={
            "status": TaskStatus.RUNNING,
            "history": history[-MAX_ATTEMPT_HISTORY:],
            "attempts": task.attempts + 1,
            "message_id": message_id,
            "lease_until": now + timedelta(seconds=lease_s),
            "started_at": task.started_at or now,
            "next_attempt_at": None,
            "updated_at": now,
        }
    )


def queue_task(task: ExtractionTask, *, now: datetime, delay_s: float) -> ExtractionTask:
    """Delivered but waiting for capacity (its owner's running-item limit): no attempt is counted."""
    check_transition(TASK_MOVES, task.status, TaskStatus.QUEUED, what="task")
    return task.model_copy(
        update={"status": TaskStatus.QUEUED, "next_attempt_at": now + timedelta(seconds=delay_s), "updated_at": now}
    )


def _check_fence(task: ExtractionTask, attempt: int) -> None:
    if task.status is not TaskStatus.RUNNING or task.attempts != attempt:
        raise IllegalTransition(
            f"task {task.id}: attempt {attempt} no longer holds it "
            f"(status {task.status.value}, attempt {task.attempts})"
        )


def complete_task(
    task: ExtractionTask,
    *,
    attempt: int,
    result: TaskResult,
    usage: TaskUsage,
    model: str | None,
    model_version: str | None,
    prompt_version: str | None,
    now: datetime,
) -> ExtractionTask:
    _check_fence(task, attempt)
    return task.model_copy(
        update={
            "status": TaskStatus.COMPLETED,
            "history": _ended(task, "completed", now),
            "checkpoint": None,
            "result": result,
            "usage": usage,
            "model": model,
            "model_version": model_version,
            "prompt_version": prompt_version,
            "error": None,
            "lease_until": None,
            "finished_at": now,
            "updated_at": now,
        }
    )


def fail_task(
    task: ExtractionTask,
    *,
    attempt: int,
    error: SluiceError,
    now: datetime,
    raw_output: str | None = None,
) -> ExtractionTask:
    _check_fence(task, attempt)
    return task.model_copy(
        update={
            "status": TaskStatus.FAILED,
            "history": _ended(task, "failed", now, error=error.to_record()),
            "error": error.to_record(),
            "raw_output": raw_output,
            "lease_until": None,
            "finished_at": now,
            "updated_at": now,
        }
    )


def requeue_task(
    task: ExtractionTask,
    *,
    attempt: int,
    error: SluiceError,
    now: datetime,
    delay_s: float,
    refund_attempt: bool = False,
) -> ExtractionTask:
    """Back to pending until ``delay_s`` has passed. ``refund_attempt``: the
    attempt never reached the model (Sluice's own pacing), so it does not
    count against the retry budget."""
    _check_fence(task, attempt)
    outcome: AttemptOutcome = "waiting" if refund_attempt else "retry"
    return task.model_copy(
        update={
            "status": TaskStatus.PENDING,
            "history": _ended(task, outcome, now, error=error.to_record(), delay_s=delay_s),
            "attempts": task.attempts - 1 if refund_attempt else task.attempts,
            "error": error.to_record(),
            "lease_until": None,
            "next_attempt_at": now + timedelta(seconds=delay_s),
            "updated_at": now,
        }
    )


def checkpoint_task(task: ExtractionTask, *, attempt: int, checkpoint: dict[str, Any], now: datetime) -> ExtractionTask:
    """Save the handler's checkpoint; only the attempt holding the item may."""
    _check_fence(task, attempt)
    return task.model_copy(update={"checkpoint": checkpoint, "updated_at": now})


def cancel_task(task: ExtractionTask, *, now: datetime) -> ExtractionTask:
    check_transition(TASK_MOVES, task.status, TaskStatus.CANCELLED, what="task")
    return task.model_copy(
        update={
            "status": TaskStatus.CANCELLED,
            "history": _ended(task, "cancelled", now),
            "lease_until": None,
            "finished_at": now,
            "updated_at": now,
        }
    )


# -- runs ---------------------------------------------------------------------


def begin_run(run: Run, *, total: int, now: datetime, timeout_s: float | None = None) -> Run:
    """The run's transition to running, with the number of items it fanned out to;
    with ``timeout_s``, the run must finish by then (its kind's run timeout)."""
    check_transition(RUN_MOVES, run.status, RunStatus.RUNNING, what="run")
    counters = run.counters.model_copy(update={"total": total})
    return run.model_copy(
        update={
            "status": RunStatus.RUNNING,
            "counters": counters,
            "started_at": now,
            "deadline_at": None if timeout_s is None else now + timedelta(seconds=timeout_s),
            "updated_at": now,
        }
    )


def past_deadline(run: Run, now: datetime) -> bool:
    """Whether an open run (running or paused) has outlived its kind's run timeout."""
    return (
        run.status in (RunStatus.RUNNING, RunStatus.PAUSED) and run.deadline_at is not None and run.deadline_at <= now
    )


def fail_run(run: Run, *, error: SluiceError, now: datetime) -> Run:
    check_transition(RUN_MOVES, run.status, RunStatus.FAILED, what="run")
    return run.model_copy(
        update={
            "status": RunStatus.FAILED,
            "error": error.to_record(),
            "finished_at": now,
            "updated_at": now,
        }
    )


def tally(total: int, terminal: Mapping[TaskStatus, int]) -> RunCounters:
    """A run's counters derived from how many of its tasks are in each terminal state.

    Counters are not incremented per task: each task commits its outcome on its
    own record, and the run's counters are counted from the tasks, so no task's
    bookkeeping writes the run document (Firestore sustains about one write per
    second per document).
    """
    for status in terminal:
        if status not in TERMINAL_TASK_STATES:
            raise ValueError(f"{status.value} is not a terminal task outcome")
    return RunCounters(
        total=total,
        completed=terminal.get(TaskStatus.COMPLETED, 0),
        failed=terminal.get(TaskStatus.FAILED, 0),
        cancelled=terminal.get(TaskStatus.CANCELLED, 0),
    )


def counters_settled(run: Run) -> bool:
    """Whether the counters stored on the run are final (written when it finished).

    Otherwise they are a snapshot and readers derive them from the tasks.
    """
    return run.status in (RunStatus.COMPLETED, RunStatus.FAILED)


def complete_run(
    run: Run, counters: RunCounters, *, now: datetime, outputs: dict[str, Any] | None = None
) -> tuple[Run, bool]:
    """Fan-in: complete a running run whose tasks are all terminal, with its final counters.

    ``counters`` are derived from the tasks (:func:`tally`). Returns the run and
    whether *this* call completed it: the caller writes it with compare-and-set
    on the run, so exactly one caller wins and creates the exports.
    """
    if run.status is not RunStatus.RUNNING or counters.terminal < run.counters.total:
        return run, False
    check_transition(RUN_MOVES, run.status, RunStatus.COMPLETED, what="run")
    final = counters.model_copy(update={"total": run.counters.total})
    update = {"status": RunStatus.COMPLETED, "counters": final, "finished_at": now, "updated_at": now}
    if outputs is not None:
        update["outputs"] = outputs
    return run.model_copy(update=update), True


def hold_for_review(done: Run) -> Run:
    """A run just completed by the fan-in, held in needs_review (values under the job's threshold)."""
    check_transition(RUN_MOVES, RunStatus.RUNNING, RunStatus.NEEDS_REVIEW, what="run")
    return done.model_copy(update={"status": RunStatus.NEEDS_REVIEW})


# -- exports ------------------------------------------------------------------


def begin_export(export: Export, *, now: datetime) -> Export:
    check_transition(EXPORT_MOVES, export.status, ExportStatus.RUNNING, what="export")
    return export.model_copy(
        update={
            "status": ExportStatus.RUNNING,
            "attempts": export.attempts + 1,
            "updated_at": now,
        }
    )


def complete_export(
    export: Export,
    *,
    external_id: str,
    url: str | None,
    row_count: int,
    failed_count: int,
    now: datetime,
    url_expires_at: datetime | None = None,
) -> Export:
    check_transition(EXPORT_MOVES, export.status, ExportStatus.COMPLETED, what="export")
    return export.model_copy(
        update={
            "status": ExportStatus.COMPLETED,
            "external_id": external_id,
            "url": url,
            "url_expires_at": url_expires_at,
            "row_count": row_count,
            "failed_count": failed_count,
            "error": None,
            "finished_at": now,
            "updated_at": now,
        }
    )


def fail_export(export: Export, *, error: SluiceError, now: datetime) -> Export:
    check_transition(EXPORT_MOVES, export.status, ExportStatus.FAILED, what="export")
    return export.model_copy(
        update={
            "status": ExportStatus.FAILED,
            "error": error.to_record(),
            "finished_at": now,
            "updated_at": now,
        }
    )


# -- operations ---------------------------------------------------------------


def update_operation(
    op: Operation,
    *,
    progress: Progress,
    stage: str,
    now: datetime,
    message: str = "",
    status: OperationStatus = OperationStatus.RUNNING,
    error: dict[str, str] | None = None,
    counts: dict[str, int] | None = None,
) -> Operation:
    check_transition(OPERATION_MOVES, op.status, status, what="operation")
    final = status is not OperationStatus.RUNNING
    return op.model_copy(
        update={
            "status": status,
            "stage": stage,
            "message": message,
            "pct": progress.pct,
            "done": progress.done,
            "failed": progress.failed,
            "total": progress.total,
            "eta_seconds": progress.eta_seconds,
            "error": error,
            "counts": op.counts if counts is None else counts,
            "finished_at": now if final else None,
            "updated_at": now,
        }
    )
