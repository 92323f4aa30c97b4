"""An operation as clients see it: the stored record with its run's live state merged in.

Pure: the caller reads the operation, its run and the run's exact counters;
:func:`live_operation` only combines them. The stored progress of a run's
operation is coalesced (about one write a second), so the counters and the
run's status are the fresher truth while the operation says "running".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common.core.models import Operation, Run, RunCounters
from common.core.progress import compute_progress
from common.core.states import OperationStatus, RunStatus


def live_operation(op: Operation, run: Run | None, counters: RunCounters | None, now: datetime) -> Operation:
    """``op`` with ``run``'s counters, percentage, ETA and state merged in (``op`` as
    stored when it is not a run's or its run is gone)."""
    if op.kind != "run" or run is None or counters is None:
        return op
    c = counters
    p = compute_progress(
        completed=c.completed, failed=c.failed + c.cancelled, total=c.total, started_at=run.started_at, now=now
    )
    update: dict[str, Any] = {"done": c.completed, "failed": c.failed, "total": c.total, "pct": p.pct}
    if op.status is OperationStatus.RUNNING:
        update["eta_seconds"] = p.eta_seconds
        update.update(_running_state(op, run, now))
    return op.model_copy(update=update)


def _running_state(op: Operation, run: Run, now: datetime) -> dict[str, Any]:
    """What a still-running operation says, given its run's status."""
    if run.status is RunStatus.PAUSED:
        return {"stage": "paused"}
    if run.status is RunStatus.PENDING:
        scheduled = run.schedule_time is not None and run.schedule_time > now
        return {"stage": "scheduled" if scheduled else "queued"}
    if run.status is RunStatus.CANCELLED:
        return {"status": OperationStatus.CANCELLED, "stage": "cancelled"}
    if run.status is RunStatus.FAILED:
        return {"status": OperationStatus.FAILED, "stage": "failed", "error": run.error}
    if run.status is RunStatus.RUNNING and op.stage in ("queued", "scheduled"):
        return {"stage": "extracting"}
    return {}
