"""Writes Operation progress, coalesced to about one write per second.

The decision is the pure :func:`common.core.progress.should_write`; this module
only remembers, per process, when each operation was last written.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

from common.core import lifecycle
from common.core.models import Operation, Run
from common.core.progress import compute_progress, should_write
from common.core.states import OperationStatus
from common.ports.store import Transaction
from common.service import repo, tally
from common.service.context import Context

# When this process last wrote each operation; bounded, oldest forgotten first
# (forgetting only costs one early write).
_last_written: OrderedDict[str, datetime] = OrderedDict()
_MAX_TRACKED = 10_000
_lock = threading.Lock()


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
    with _lock:
        if not should_write(
            _last_written.get(run.operation_id),
            now,
            final=final,
            min_interval_s=ctx.settings.progress_min_interval_s,
        ):
            return False
        _last_written[run.operation_id] = now
        _last_written.move_to_end(run.operation_id)
        while len(_last_written) > _MAX_TRACKED:
            _last_written.popitem(last=False)
    # Counted from the tasks only when a write is due (about once a second).
    counters = tally.live_counters(ctx.store, run)
    progress = compute_progress(
        completed=counters.completed,
        failed=counters.failed + counters.cancelled,
        total=counters.total,
        started_at=run.started_at,
        now=now,
    )

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
        )
        repo.tx_put(tx, updated)

    ctx.store.transaction(write)
    return True
