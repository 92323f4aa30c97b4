"""Writes Operation progress, coalesced to about one write per second.

Whether a write is due is the deps' :class:`common.service.coalesce.ProgressGate`.
"""

from __future__ import annotations

from common import kinds
from common.core import lifecycle
from common.core.errors import PermanentError
from common.core.models import Operation, Run, WorkItem
from common.core.progress import compute_progress
from common.core.states import OperationStatus, TaskStatus
from common.ports.store import Filter, Transaction
from common.service import repo, tally
from common.service.context import Context


def report_run(
    ctx: Context,
    run: Run,
    *,
    stage: str,
    status: OperationStatus = OperationStatus.RUNNING,
    message: str = "",
    error: dict[str, str] | None = None,
) -> bool:
    """Update the run's operation; returns whether a write happened."""
    now = ctx.now()
    final = status is not OperationStatus.RUNNING
    if not ctx.deps.progress_gate.due(
        run.operation_id, now, final=final, min_interval_s=ctx.settings.progress_min_interval_s
    ):
        return False
    # Counted from the tasks only when a write is due (about once a second).
    counters = tally.live_counters(ctx.store, run)
    progress = compute_progress(
        completed=counters.completed,
        failed=counters.failed + counters.cancelled,
        total=counters.total,
        started_at=run.started_at,
        now=now,
    )
    counts = kind_counts(ctx, run)

    def write(tx: Transaction) -> None:
        op = repo.tx_get(tx, Operation, run.operation_id)
        if op is None:
            return
        # A final state is final (a retried run reopens its operation explicitly),
        # and a late, coalesced update must not move progress back.
        if op.status is not OperationStatus.RUNNING:
            return
        if not final and op.done + op.failed > progress.done + progress.failed:
            return
        updated = lifecycle.update_operation(
            op,
            progress=progress,
            stage=stage,
            now=now,
            message=message,
            status=status,
            error=error,
            counts=counts,
        )
        repo.tx_put(tx, updated)

    ctx.store.transaction(write)
    return True


def kind_counts(ctx: Context, run: Run) -> dict[str, int] | None:
    """The totals of the run's kind's own figures over its completed items (None: the kind declares none).

    A sum aggregation in the store (Firestore ``sum()``, SQLite ``total()``), read only when a
    progress write is due: no item is read, whatever the size of the run.
    """
    try:
        names = kinds.get(run.kind).figures
    except PermanentError:
        return None  # a kind this process does not know: its progress is reported without its figures
    if not names:
        return None
    done = [Filter("run_id", "==", run.id), Filter("status", "==", TaskStatus.COMPLETED.value)]
    totals = ctx.store.sum(WorkItem.collection, [f"result.figures.{n}" for n in names], filters=done)
    return {n: int(totals[f"result.figures.{n}"]) for n in names}
