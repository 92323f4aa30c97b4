"""Run control: cancel, pause, resume and retry runs (and their tasks).

Every change is a store transaction that re-reads what it changes, so it is a
compare-and-set: two users (or a user and a worker) racing on one run cannot
both win, and a task that a worker claimed meanwhile is left to that worker.

* **cancel** -- the run moves to ``cancelled`` at once; its *pending* tasks are
  cancelled in batches (the run's counters are counted from its tasks); *running* tasks finish, and
  the extract stage cancels any task whose message arrives later.
* **pause** -- ``running -> paused``: the extract stage starts no task of a
  paused run (it leaves the task pending and acknowledges its message).
* **resume** -- ``paused -> running``, then the run's ``run.start`` message is
  sent again: the initializer re-sends every pending task (and completes the
  run if its last tasks finished while it was paused). Resuming a run that is
  already running only sends that message again, which recovers tasks whose
  messages were lost.
* **retry** -- a completed or failed run's failed tasks (or all of them) go
  back to ``pending``, the counters are corrected in the same transaction, the
  run and its operation reopen, the run's own exports are forgotten so they
  are produced again on completion, and the tasks are re-sent.

The per-user cap on running extraction tasks lives here too
(:func:`throttle_delay`): the extract stage asks it before starting a task.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal

from common import kinds
from common.core import lifecycle
from common.core.errors import IllegalTransition, NotFound, PermanentError
from common.core.models import Export, ExtractionTask, Operation, Run, RunCounters, format_timestamp
from common.core.progress import Progress, compute_progress
from common.core.states import (
    OPERATION_MOVES,
    RUN_MOVES,
    OperationStatus,
    RunStatus,
    TaskStatus,
    can_move,
    check_transition,
)
from common.ports.store import Filter, Store, Transaction
from common.service import ids, lifecycle_events, repo, tally
from common.service.context import Context, Deps, Sender

log = logging.getLogger(__name__)

RetryScope = Literal["failed", "all"]

# Tasks changed per transaction (Firestore allows 500 writes in one).
BATCH = 200
# Items not yet held by a worker: a cancel cancels them at once.
_WAITING = [TaskStatus.PENDING.value, TaskStatus.QUEUED.value]
# How long a task waits when its owner is at the running-task cap.
THROTTLE_DELAY_S = 2.0


def require_run(store: Store, run_id: str, *, owner: str) -> Run:
    """The run, if ``owner`` owns it; NotFound otherwise (never 'forbidden')."""
    found = repo.get(store, Run, run_id)
    if found is None or found[0].owner != owner:
        raise NotFound(f"run {run_id} not found")
    return found[0]


def _tx_run(t: Transaction, run_id: str, owner: str) -> Run:
    run = repo.tx_get(t, Run, run_id)
    if run is None or run.owner != owner:
        raise NotFound(f"run {run_id} not found")
    return run


def _progress_of(run: Run, counters: RunCounters, now: datetime) -> Progress:
    return compute_progress(
        completed=counters.completed,
        failed=counters.failed + counters.cancelled,
        total=counters.total,
        started_at=run.started_at,
        now=now,
    )


def _op_update(
    op: Operation | None, run: Run, counters: RunCounters, *, stage: str, status: OperationStatus, now: datetime
) -> Operation | None:
    """The run's operation moved to ``status``/``stage``, or None if it cannot move.

    ``counters`` are counted from the tasks before the transaction (a count is
    not a transactional read); they only feed the progress shown.
    """
    if op is None or not can_move(OPERATION_MOVES, op.status, status):
        return None
    progress = _progress_of(run, counters, now)
    return lifecycle.update_operation(op, progress=progress, stage=stage, now=now, status=status)


# -- cancel -------------------------------------------------------------------


def cancel_run(deps: Deps, run_id: str, *, owner: str) -> Run:
    """Cancel a run: pending tasks are cancelled, running ones finish. Idempotent."""
    now = deps.clock.now()

    def stop(t: Transaction) -> tuple[Run, bool]:
        run = _tx_run(t, run_id, owner)
        if run.status is RunStatus.CANCELLED:
            return run, False
        check_transition(RUN_MOVES, run.status, RunStatus.CANCELLED, what="run")
        cancelled = run.model_copy(update={"status": RunStatus.CANCELLED, "finished_at": now, "updated_at": now})
        repo.tx_put(t, cancelled)
        return cancelled, True

    cancelled, moved = deps.store.transaction(stop)
    if moved:
        lifecycle_events.run_ended(cancelled, stage="control")
    while _cancel_pending_batch(deps, run_id, now):
        pass
    counters = tally.live_counters(deps.store, cancelled)

    def finish_op(t: Transaction) -> Run:
        run = _tx_run(t, run_id, owner)
        op = repo.tx_get(t, Operation, run.operation_id)
        updated = _op_update(op, run, counters, stage="cancelled", status=OperationStatus.CANCELLED, now=now)
        if updated is not None:
            repo.tx_put(t, updated)
        return run

    return deps.store.transaction(finish_op)


def _cancel_pending_batch(deps: Deps, run_id: str, now: datetime) -> bool:
    """Cancel up to BATCH pending tasks of a cancelled run; False when none was left."""
    page = deps.store.query(
        ExtractionTask.collection,
        filters=[Filter("run_id", "==", run_id), Filter("status", "in", _WAITING)],
        limit=BATCH,
    )
    wanted = [s.id for s in page.items]
    if not wanted:
        return False

    def tx(t: Transaction) -> int:
        tasks = [repo.tx_get(t, ExtractionTask, tid) for tid in wanted]
        changed = 0
        for task in tasks:
            # A worker may have claimed it meanwhile: it finishes the task itself.
            if task is None or task.status not in (TaskStatus.PENDING, TaskStatus.QUEUED):
                continue
            repo.tx_put(t, lifecycle.cancel_task(task, now=now))
            changed += 1
        return changed

    lifecycle_events.tasks_cancelled(deps.store.transaction(tx))
    return True


# -- pause / resume -------------------------------------------------------------


def pause_run(deps: Deps, run_id: str, *, owner: str) -> Run:
    """``running -> paused``; no new task starts until it is resumed. Idempotent."""
    now = deps.clock.now()
    counters = tally.live_counters(deps.store, require_run(deps.store, run_id, owner=owner))

    def tx(t: Transaction) -> Run:
        run = _tx_run(t, run_id, owner)
        op = repo.tx_get(t, Operation, run.operation_id)
        if run.status is RunStatus.PAUSED:
            return run
        if run.status is not RunStatus.RUNNING:
            raise IllegalTransition(
                f"run {run_id} is {run.status.value}; only a running run can be paused",
                hint="A pending run can be cancelled; a finished one retried.",
            )
        paused = run.model_copy(update={"status": RunStatus.PAUSED, "updated_at": now})
        repo.tx_put(t, paused)
        updated = _op_update(op, paused, counters, stage="paused", status=OperationStatus.RUNNING, now=now)
        if updated is not None and op is not None and op.status is OperationStatus.RUNNING:
            repo.tx_put(t, updated)
        return paused

    return deps.store.transaction(tx)


def resume_run(deps: Deps, sender: Sender, run_id: str, *, owner: str) -> Run:
    """``paused -> running`` and re-send the run's pending tasks (via ``run.start``)."""
    now = deps.clock.now()
    counters = tally.live_counters(deps.store, require_run(deps.store, run_id, owner=owner))

    def tx(t: Transaction) -> Run:
        run = _tx_run(t, run_id, owner)
        op = repo.tx_get(t, Operation, run.operation_id)
        if run.status is RunStatus.RUNNING:
            return run
        if run.status is not RunStatus.PAUSED:
            raise IllegalTransition(f"run {run_id} is {run.status.value}; only a paused run can be resumed")
        resumed = run.model_copy(update={"status": RunStatus.RUNNING, "updated_at": now})
        repo.tx_put(t, resumed)
        if op is not None and op.status is OperationStatus.RUNNING:
            updated = _op_update(op, resumed, counters, stage="extracting", status=OperationStatus.RUNNING, now=now)
            if updated is not None:
                repo.tx_put(t, updated)
        return resumed

    run = deps.store.transaction(tx)
    sender.send(kinds.get(run.kind).start(run), priority=run.priority)
    return run


# -- retry ----------------------------------------------------------------------


def retry_run(
    deps: Deps,
    sender: Sender,
    run_id: str,
    *,
    owner: str,
    scope: RetryScope = "failed",
    task_ids: Sequence[str] | None = None,
) -> tuple[Run, int]:
    """Put a finished run's failed (``scope="failed"``) or all tasks back to pending
    and run them again; returns the run and how many tasks were re-sent.

    ``task_ids`` narrows the retry to those tasks (each must belong to the run).
    """
    run = require_run(deps.store, run_id, owner=owner)
    if run.status not in (RunStatus.COMPLETED, RunStatus.FAILED):
        raise IllegalTransition(
            f"run {run_id} is {run.status.value}; only a completed or failed run can be retried",
            hint="Wait for the run to finish (or cancel it and start a new run).",
        )
    statuses = (
        {TaskStatus.FAILED} if scope == "failed" else {TaskStatus.FAILED, TaskStatus.COMPLETED, TaskStatus.CANCELLED}
    )
    if task_ids is not None:
        wanted = []
        for tid in task_ids:
            found = repo.get(deps.store, ExtractionTask, tid)
            if found is None or found[0].run_id != run_id:
                raise NotFound(f"task {tid} not found in run {run_id}")
            if found[0].status in statuses:
                wanted.append(tid)
    else:
        wanted = [
            t.id
            for status in sorted(statuses)
            for t in repo.scan(
                deps.store,
                ExtractionTask,
                filters=[Filter("run_id", "==", run_id), Filter("status", "==", status.value)],
            )
        ]
    if not wanted:
        planless = run.plan is None and kinds.get(run.kind).plan is not None
        raise PermanentError(
            f"run {run_id} has no {'failed ' if scope == 'failed' else ''}tasks to retry",
            code="nothing_to_retry",
            # A run that failed while planning made no items: a new run plans again.
            hint="It failed before its plan made any items: start a new run."
            if planless
            else "Only failed tasks are retried unless you ask for all.",
        )
    now = deps.clock.now()
    export_ids = [ids.export_id(run.id, i, spec.format.value) for i, spec in enumerate(run.exports)]
    sent = 0
    for start in range(0, len(wanted), BATCH):
        batch = wanted[start : start + BATCH]
        reopen = start == 0
        reset = deps.store.transaction(_retry_tx(run_id, batch, statuses, reopen, export_ids, now))
        current = require_run(deps.store, run_id, owner=owner)
        item_type = kinds.get(current.kind).item_type
        for task_id in reset:
            sender.send(item_type(task_id=task_id, run_id=run_id, job_id=current.job_id), priority=current.priority)
        sent += len(reset)
    return require_run(deps.store, run_id, owner=owner), sent


def _retry_tx(
    run_id: str,
    batch: Sequence[str],
    statuses: set[TaskStatus],
    reopen: bool,
    export_ids: Sequence[str],
    now: datetime,
) -> Callable[[Transaction], list[str]]:
    def tx(t: Transaction) -> list[str]:
        return _retry_batch(t, run_id, batch, statuses, reopen, export_ids, now)

    return tx


def _retry_batch(
    t: Transaction,
    run_id: str,
    batch: Sequence[str],
    statuses: set[TaskStatus],
    reopen: bool,
    export_ids: Sequence[str],
    now: datetime,
) -> list[str]:
    run = repo.tx_require(t, Run, run_id)
    op = repo.tx_get(t, Operation, run.operation_id) if reopen else None
    exports = [eid for eid in export_ids if t.get(Export.collection, eid) is not None] if reopen else []
    tasks = [repo.tx_get(t, ExtractionTask, tid) for tid in batch]
    if reopen:
        if run.status in (RunStatus.COMPLETED, RunStatus.FAILED):
            check_transition(RUN_MOVES, run.status, RunStatus.RUNNING, what="run")
        elif run.status is not RunStatus.RUNNING:
            raise IllegalTransition(f"run {run_id} is {run.status.value}; it cannot be retried now")
    counters = run.counters
    reset: list[str] = []
    for task in tasks:
        if task is None or task.status not in statuses:
            continue
        field = {TaskStatus.FAILED: "failed", TaskStatus.COMPLETED: "completed", TaskStatus.CANCELLED: "cancelled"}[
            task.status
        ]
        counters = counters.model_copy(update={field: max(0, getattr(counters, field) - 1)})
        repo.tx_put(
            t,
            task.model_copy(
                update={
                    "status": TaskStatus.PENDING,
                    "attempts": 0,
                    "message_id": None,
                    "lease_until": None,
                    "error": None,
                    "raw_output": None,
                    "result": None if task.status is TaskStatus.COMPLETED else task.result,
                    "next_attempt_at": None,
                    "finished_at": None,
                    "updated_at": now,
                }
            ),
        )
        reset.append(task.id)
    if not reset:
        return reset
    update: dict[str, object] = {"counters": counters, "updated_at": now}
    if reopen:
        update.update({"status": RunStatus.RUNNING, "finished_at": None, "error": None})
        if run.finish_step is not None or run.finish_outputs is not None:
            # The kind's finish is made again over the retried items (a report that includes them).
            update.update({"finish_outputs": None, "finish_step": None, "phase": "running"})
        if run.started_at is None:
            update["started_at"] = now
    reopened = run.model_copy(update=update)
    repo.tx_put(t, reopened)
    for eid in exports:
        # The run's own exports are produced again when it completes again.
        t.delete(Export.collection, eid)
    if op is not None and op.status in (OperationStatus.DONE, OperationStatus.FAILED, OperationStatus.RUNNING):
        updated = lifecycle.update_operation(
            op,
            progress=_progress_of(reopened, reopened.counters, now),
            stage="extracting",
            now=now,
            status=OperationStatus.RUNNING,
        )
        repo.tx_put(t, updated)
    return reset


# -- per-user cap on running tasks (asked by the extract stage) ---------------------


def running_tasks(store: Store, owner: str, now: datetime) -> int:
    """Tasks of ``owner`` held by a live attempt (an expired lease is not counted)."""
    return store.count(
        ExtractionTask.collection,
        filters=[
            Filter("owner", "==", owner),
            Filter("status", "==", TaskStatus.RUNNING.value),
            Filter("lease_until", ">", format_timestamp(now)),
        ],
    )


def task_cap(ctx: Context) -> int:
    """The per-user cap on running tasks; 0 means none.

    Read from ``Settings.max_running_tasks_per_user`` when the deployment's
    settings have that field (``SLUICE_MAX_RUNNING_TASKS_PER_USER``).
    """
    value = ctx.settings.max_running_tasks_per_user
    return int(value) if isinstance(value, int) else 0


def throttle_delay(ctx: Context, task: ExtractionTask) -> float | None:
    """Seconds ``task`` should wait because its owner already has the cap of
    tasks running, or None to start it now.

    The check and the claim are not one transaction, so under a burst the cap
    can be exceeded by the number of workers racing; it is a fairness bound,
    not a hard limit.
    """
    cap = task_cap(ctx)
    if cap <= 0:
        return None
    if running_tasks(ctx.store, task.owner, ctx.now()) < cap:
        return None
    return THROTTLE_DELAY_S + random.uniform(0.0, THROTTLE_DELAY_S / 2)


def runs_cap_delay(ctx: Context, task: ExtractionTask, cap: int) -> float | None:
    """Seconds ``task`` should wait because its owner already has ``cap`` other runs of its kind working.

    A run is working while one of its items is held by a live attempt; the
    task's own run never waits on itself. Like :func:`throttle_delay`, a
    fairness bound checked before the claim, not a transaction.
    """
    if cap <= 0:
        return None
    page = ctx.store.query(
        ExtractionTask.collection,
        filters=[
            Filter("owner", "==", task.owner),
            Filter("status", "==", TaskStatus.RUNNING.value),
            Filter("lease_until", ">", format_timestamp(ctx.now())),
        ],
        limit=500,
    )
    working = {str(s.data.get("run_id")) for s in page.items if s.data.get("kind") == task.kind}
    if task.run_id in working or len(working) < cap:
        return None
    return THROTTLE_DELAY_S + random.uniform(0.0, THROTTLE_DELAY_S / 2)
