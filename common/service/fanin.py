"""Fan-in: complete a run once all of its tasks are terminal, exactly once.

A task commits its terminal outcome on its own record (compare-and-set with its
attempt fence) and only then calls :func:`settle_run`. So the last task to
commit always finds every task terminal, and no completion is lost; a
redelivered message whose task is already terminal calls it again, in case the
process died between the task's commit and this check.

The check is one indexed lookup ("is any task still open?"). Only when none is
does it count the tasks by status and complete the run with a compare-and-set
on the run document: exactly one caller wins, records the run's exports in
that same transaction and sends them; a redelivery that finds the run
completed re-sends the export requests (the winner may have died before
sending them), which is safe because the export is idempotent. The run document is thus written once
per run by the fan-in, not once per task, and a conflict in this bookkeeping
never repeats a model call: it is retried on its own.
"""

from __future__ import annotations

import logging
from typing import Any

from common import kinds
from common.core import lifecycle
from common.core.errors import ErrorKind, RetryableError
from common.core.messages import ExportRun
from common.core.models import Export, Run, WorkItem
from common.core.states import ExportStatus, OperationStatus, RunStatus
from common.obs.logging import fields
from common.ports.store import Filter, Transaction
from common.service import cost, ids, lifecycle_events, progress, repo, review, tally
from common.service.context import Context

log = logging.getLogger(__name__)


def settle_run(ctx: Context, run_id: str, *, resend: bool = False) -> Run:
    """After a task of the run became terminal: complete the run if that was the
    last open task, else report progress (coalesced).

    ``resend``: the caller is a redelivery that found its task already terminal;
    if the run is completed, the completing attempt may have died before its
    export requests were sent, so send them again. (A first delivery that finds
    the run completed leaves that to the attempt that completed it.)
    """
    for _ in range(_ROUNDS):
        run, version = repo.require(ctx.store, Run, run_id)
        if run.status is RunStatus.COMPLETED:
            if resend:
                resend_follow_ups(run, ctx)
            return run
        if run.status is not RunStatus.RUNNING:
            # Paused: resuming re-runs this check. Cancelled: nothing follows.
            return run
        if tally.any_open(ctx.store, run.id):
            progress.report_run(ctx, run, stage="extracting" if run.kind == "extract" else "running")
            return run
        if run.finish_outputs is None and kinds.get(run.kind).finish is not None:
            # Its kind finishes the run first (its own message); that finish settles it again.
            writing = request_finish(run, version, ctx, resend=resend)
            if writing is not None:
                return writing
            continue
        done = _complete(run, version, ctx)
        if done is not None:
            return done
    raise RetryableError(
        f"run {run_id} kept changing while its fan-in ran",
        kind=ErrorKind.CONFLICT,
        hint="The message is redelivered and the fan-in runs again.",
    )


# Each round reads the run; another round is needed only if the run document
# changed between that read and the completing compare-and-set (a user's
# control action), which is rare: the run is written once per run by the fan-in.
_ROUNDS = 5


def request_finish(run: Run, version: str, ctx: Context, *, resend: bool) -> Run | None:
    """Every item is terminal and the run's kind has a finish step: phase "writing", and its message sent.

    The phase is set with a compare-and-set on the run, so one caller sends the
    message; a redelivery (``resend``) sends it again, in case that caller died
    before sending (the finish is claimed on the run, so a duplicate is harmless).
    None: the run changed since ``version`` was read (look again).
    """
    kind = kinds.get(run.kind)
    if run.phase == "writing":
        if resend:
            ctx.send(kind.finish_of(run), priority=run.priority)
        return run
    now = ctx.now()

    def tx(t: Transaction) -> Run | None:
        snap = t.get(Run.collection, run.id)
        if snap is None or snap.version != version:
            return None
        writing = Run.from_doc(snap.data).model_copy(update={"phase": "writing", "updated_at": now})
        repo.tx_put(t, writing)
        return writing

    writing: Run | None = ctx.store.transaction(tx)
    if writing is None:
        return None
    log.info("all items are done; the run's finish is sent", extra=fields(kind=kind.name))
    ctx.send(kind.finish_of(writing), priority=writing.priority)
    progress.report_run(ctx, writing, stage="writing")
    return writing


def _complete(run: Run, version: str, ctx: Context) -> Run | None:
    """Complete the run (no task is open): one compare-and-set on the run.

    Returns the run as it stands after, or None if the run changed since
    ``version`` was read (the counts may then be stale: look again).
    """
    # While the run stays at ``version`` its tasks are terminal for good (only
    # a retry, which writes the run, reopens them), so counts taken now are final.
    counters = tally.count_tasks(ctx.store, run)
    # Values under the job's review threshold hold the run (and its exports) for a person.
    held = bool(review.pending(ctx.store, run))
    outputs = _outputs(run, ctx)
    # Its actual cost, summed over its items once, under the same guarantee.
    usage = cost.tasks_usage(ctx.deps, run.id)
    now = ctx.now()

    def tx(t: Transaction) -> tuple[Run, bool, int] | None:
        snap = t.get(Run.collection, run.id)
        if snap is None or snap.version != version:
            return None
        current = Run.from_doc(snap.data)
        existing = {eid for eid in _export_ids(current) if t.get(Export.collection, eid) is not None}
        done, finished = lifecycle.complete_run(current, counters, now=now, outputs=outputs)
        created = 0
        if finished:
            done = done.model_copy(update={"usage": usage + cost.steps_usage(ctx.deps, current)})
        if finished and held:
            done = lifecycle.hold_for_review(done)
            repo.tx_put(t, done)
        elif finished:
            repo.tx_put(t, done)
            created = create_exports(t, done, existing)
        return done, finished, created

    outcome = ctx.store.transaction(tx)
    if outcome is None:
        return None
    done, finished, created = outcome
    if finished and done.status is RunStatus.NEEDS_REVIEW:
        progress.report_run(ctx, done, stage="needs_review", message="values under the review threshold wait")
        # A reviewer may have decided the last waiting value after ``held`` was read but before
        # the hold committed; that reviewer saw the run running and released nothing. Looking
        # again now (after the hold) closes the gap: whichever looks last releases the run.
        return review.release_if_reviewed(ctx.deps, ctx.sender, run.id)
    elif finished:
        lifecycle_events.exports_created(created)
        after_run_finished(done, ctx)
    # A loser leaves the export requests to the winner, whose message is
    # redelivered (and re-sends them) if it dies before they are sent.
    return done


def _outputs(run: Run, ctx: Context) -> dict[str, Any] | None:
    """The kind's fan-in over the run's items, with its finish outputs (None: the kind has neither).

    Computed before the completing compare-and-set, like the counts: while the
    run stays at the version read, its items are terminal for good, and only
    the winner's outputs are stored.
    """
    kind = kinds.get(run.kind)
    if kind.fan_in is None:
        return None if run.finish_outputs is None else dict(run.finish_outputs)
    items = repo.scan(ctx.store, WorkItem, filters=[Filter("run_id", "==", run.id)])
    # A kind's finish outputs (saved once by its finish step) go with its fan-in's.
    return {**kind.fan_in(run, items), **(run.finish_outputs or {})}


def _export_ids(run: Run) -> list[str]:
    return [ids.export_id(run.id, i, spec.format.value) for i, spec in enumerate(run.exports)]


def create_exports(t: Transaction, run: Run, existing: set[str]) -> int:
    """Record the run's exports (deterministic ids) in the transaction that completes it; how many were new."""
    created = 0
    for export_id, spec in zip(_export_ids(run), run.exports, strict=True):
        if export_id in existing:
            continue
        created += 1
        export = Export(
            id=export_id,
            owner=run.owner,
            run_id=run.id,
            job_id=run.job_id,
            format=spec.format,
            destination=spec.destination,
            created_at=run.updated_at,
            updated_at=run.updated_at,
        )
        t.create(Export.collection, export.id, export.to_doc())
    return created


def _run_exports(run: Run, ctx: Context) -> list[Export]:
    return [Export.from_doc(s.data) for s in ctx.store.get_many(Export.collection, _export_ids(run))]


def after_run_finished(run: Run, ctx: Context) -> None:
    lifecycle_events.run_ended(run)
    log.info(
        "run completed",
        extra=fields(completed=run.counters.completed, failed=run.counters.failed, total=run.counters.total),
    )
    exports = _run_exports(run, ctx)
    for export in exports:
        ctx.send(ExportRun(export_id=export.id, run_id=run.id, job_id=run.job_id))
    if exports:
        progress.report_run(ctx, run, stage="exporting")
    else:
        progress.report_run(ctx, run, stage="done", status=OperationStatus.DONE)


def resend_follow_ups(run: Run, ctx: Context) -> None:
    """The run is completed: make sure what follows was sent.

    The run may have completed in a transaction whose follow-up sends were
    lost to a crash; sending again is safe because the export is idempotent.
    """
    if run.status is not RunStatus.COMPLETED:
        return
    for export in _run_exports(run, ctx):
        if export.status is not ExportStatus.COMPLETED:
            ctx.send(ExportRun(export_id=export.id, run_id=run.id, job_id=run.job_id))
