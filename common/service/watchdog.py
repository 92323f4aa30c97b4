"""Deadlines the run machinery sets for itself, checked when they come.

* ``run.deadline``: sent delayed by a kind's run timeout when the run starts.
  A run still open (running or paused) at its deadline fails with
  ``run_timeout``; its items not yet finished are cancelled (an attempt still
  working is fenced out: its outcome is not recorded).
* ``item.lease_check``: sent delayed by the item's lease when an attempt
  starts (for kinds whose lease is shorter than their subscription's ack
  deadline). If that attempt still holds the item and its lease has passed,
  the item's message is sent again: the new delivery takes the item over
  (a new attempt, the stalled one recorded ``abandoned``), within one lease
  rather than at the hourly sweep.

Both are idempotent: a check that finds nothing to do does nothing.
"""

from __future__ import annotations

import logging

from common import kinds
from common.core import lifecycle
from common.core.errors import PermanentError
from common.core.messages import ItemLeaseCheck, RunDeadline
from common.core.models import Operation, Run, WorkItem
from common.core.progress import compute_progress
from common.core.states import OPEN_TASK_STATES, OPERATION_MOVES, OperationStatus, RunStatus, TaskStatus, can_move
from common.obs.logging import fields
from common.ports.store import Filter, Transaction
from common.service import lifecycle_events, repo, tally
from common.service.context import Context

log = logging.getLogger(__name__)

_BATCH = 200
_OPEN = sorted(s.value for s in OPEN_TASK_STATES)


def run_deadline(msg: RunDeadline, ctx: Context) -> None:
    found = repo.get(ctx.store, Run, msg.run_id)
    if found is None:
        return  # deleted with its job: nothing is left to time out
    run = found[0]
    now = ctx.now()
    if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED) or run.deadline_at is None:
        return
    if not lifecycle.past_deadline(run, now):
        # Early (a clock ahead of ours, or a deadline moved): look again then.
        ctx.send(msg, delay_s=(run.deadline_at - now).total_seconds())
        return
    time_out(ctx, run.id)


def time_out(ctx: Context, run_id: str) -> Run | None:
    """Fail a run past its deadline and cancel its open items; the run, or None if it was not due."""
    now = ctx.now()
    run = repo.require(ctx.store, Run, run_id)[0]
    kind = kinds.get(run.kind)
    limit = "" if run.deadline_at is None else f" (it was due by {run.deadline_at.isoformat()})"
    err = PermanentError(
        f"run {run_id} did not finish within the {kind.name} kind's run timeout{limit}",
        code="run_timeout",
        hint="Items not finished were cancelled; retry the run (scope all) or raise the kind's timeout "
        "(SLUICE_RUN_TIMEOUTS).",
    )

    def fail(t: Transaction) -> Run | None:
        current = repo.tx_require(t, Run, run_id)
        if not lifecycle.past_deadline(current, now):
            return None
        failed = lifecycle.fail_run(current, error=err, now=now)
        repo.tx_put(t, failed)
        return failed

    failed = ctx.store.transaction(fail)
    if failed is None:
        return None
    lifecycle_events.run_ended(failed, stage="watchdog", kind=kind.name)
    while _cancel_open_batch(ctx, run_id):
        pass
    counters = tally.count_tasks(ctx.store, failed)

    def settle(t: Transaction) -> Run:
        current = repo.tx_require(t, Run, run_id)
        op = repo.tx_get(t, Operation, current.operation_id)  # every read before the writes
        final = current.model_copy(update={"counters": counters})
        repo.tx_put(t, final)
        if op is not None and can_move(OPERATION_MOVES, op.status, OperationStatus.FAILED):
            progress = compute_progress(
                completed=counters.completed,
                failed=counters.failed + counters.cancelled,
                total=counters.total,
                started_at=current.started_at,
                now=now,
            )
            repo.tx_put(
                t,
                lifecycle.update_operation(
                    op,
                    progress=progress,
                    stage="failed",
                    now=now,
                    message=err.message,
                    status=OperationStatus.FAILED,
                    error=err.to_record(),
                ),
            )
        return final

    final = ctx.store.transaction(settle)
    log.error(
        "run timed out",
        extra=fields(code="run_timeout", cancelled=counters.cancelled, completed=counters.completed, kind=kind.name),
    )
    return final


def _cancel_open_batch(ctx: Context, run_id: str) -> bool:
    page = ctx.store.query(
        WorkItem.collection, filters=[Filter("run_id", "==", run_id), Filter("status", "in", _OPEN)], limit=_BATCH
    )
    wanted = [s.id for s in page.items]
    if not wanted:
        return False
    now = ctx.now()

    def tx(t: Transaction) -> int:
        changed = 0
        for item in [repo.tx_get(t, WorkItem, tid) for tid in wanted]:
            if item is None or item.status not in OPEN_TASK_STATES:
                continue
            repo.tx_put(t, lifecycle.cancel_task(item, now=now))
            changed += 1
        return changed

    lifecycle_events.tasks_cancelled(ctx.store.transaction(tx))
    return True


def item_lease_check(msg: ItemLeaseCheck, ctx: Context) -> None:
    found = repo.get(ctx.store, WorkItem, msg.task_id)
    if found is None:
        return
    item = found[0]
    if item.status is not TaskStatus.RUNNING or item.attempts != msg.attempt or item.lease_until is None:
        return  # that attempt ended (or another took over): nothing stalled
    now = ctx.now()
    if item.lease_until > now:
        ctx.send(msg, delay_s=(item.lease_until - now).total_seconds())
        return
    run = repo.get(ctx.store, Run, item.run_id)
    kind = kinds.get(run[0].kind if run is not None else item.kind)
    log.warning(
        "item stalled: its lease passed while its attempt still held it; dispatching it again",
        extra=fields(attempt=item.attempts, lease_until=item.lease_until.isoformat(), kind=kind.name),
    )
    ctx.send(kind.item(item), priority=item.priority)
