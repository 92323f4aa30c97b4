"""The cleanup stage (hourly): recover what crashed attempts left behind, and forget what is old.

One sweep:

* **stuck tasks** -- a task ``running`` past its lease belonged to a function
  that timed out or died without its message being redelivered; its message is
  sent again and the task's claim logic takes it over (or the retry policy fails it);
* **runs over their timeout** -- a run still ``running`` longer than
  ``SLUICE_RUN_TIMEOUT_S`` after it started is marked ``stalled_at``, logged at
  ERROR and counted (``sluice_runs_total{event="stalled"}``) once: the
  operator's alert, not a state change (its tasks may still finish);
* **automation audit** -- chains whose import, run or exports reached a final
  state have their AutomationRun settled (completed or failed);
* **old downloads** -- download exports created more than
  :data:`EXPORT_RETENTION` ago: the record, then its object;
* **finished operations** -- an Operation final for more than
  ``common.core.models.OPERATION_RETENTION`` (its ``expire_at`` is past),
  with a Gmail import's bookkeeping (item markers, summary). In the cloud a
  Firestore TTL policy on ``operations.expire_at`` deletes the operations
  themselves (this sweep then finds none, and still prunes import
  bookkeeping of operations it sees); on the embedded backend this sweep is what does it;
* **dead Google tokens** -- an integration whose token refresh failed
  :data:`MAX_REFRESH_FAILURES` times or more is marked ``reconnect_required``
  and its sealed refresh token dropped (Google has refused it already, so
  there is nothing left to revoke).

Idempotent, and safe with two sweeps at once: every delete is a
compare-and-set on the version the sweep read (``if_version``), so a record
changed meanwhile is left for the next sweep, and a record already deleted by
the other sweep counts once only, for the sweep whose delete succeeded.
Integration changes are transactions. The counts are logged in one line and
returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

from common import kinds
from common.core.errors import NotFound, PreconditionFailed
from common.core.messages import CleanupSweep
from common.core.models import (
    AutomationRun,
    AutomationRunStatus,
    Export,
    ExtractionTask,
    Integration,
    IntegrationStatus,
    Operation,
    Run,
    format_timestamp,
)
from common.core.states import RunStatus, TaskStatus
from common.obs.logging import fields
from common.ports.store import Filter, Snapshot, Store, Transaction
from common.service import automation, lifecycle_events, repo, watchdog
from common.service.context import Context
from common.service.gmail_import import ITEMS, SUMMARIES

log = logging.getLogger(__name__)

EXPORT_RETENTION = timedelta(days=30)
MAX_REFRESH_FAILURES = 3
_PAGE = 200


def sweep(msg: CleanupSweep, ctx: Context) -> dict[str, int]:
    counts = {
        "stuck_tasks_requeued": _requeue_stuck_tasks(ctx),
        "runs_over_timeout": _report_overdue_runs(ctx),
        "runs_timed_out": _time_out_runs(ctx),
        "automation_runs_settled": _settle_automation_runs(ctx),
        **_delete_old_downloads(ctx),
        **_prune_operations(ctx),
        "processed_messages_pruned": _prune_processed_messages(ctx),
        "tokens_dropped": _drop_dead_tokens(ctx),
    }
    log.info("cleanup done", extra=fields(**counts))
    return counts


def _requeue_stuck_tasks(ctx: Context) -> int:
    now = ctx.now()
    requeued = 0
    for task in repo.scan(
        ctx.store,
        ExtractionTask,
        filters=[Filter("status", "==", TaskStatus.RUNNING.value), Filter("lease_until", "<", format_timestamp(now))],
    ):
        ctx.send(kinds.get(task.kind).item(task), priority=task.priority)
        requeued += 1
    return requeued


def _time_out_runs(ctx: Context) -> int:
    """Backstop for a lost ``run.deadline`` message: fail open runs past their kind's deadline."""
    now = format_timestamp(ctx.now())
    timed_out = 0
    for status in (RunStatus.RUNNING, RunStatus.PAUSED):
        for run in repo.scan(
            ctx.store, Run, filters=[Filter("status", "==", status.value), Filter("deadline_at", "<=", now)]
        ):
            timed_out += watchdog.time_out(ctx, run.id) is not None
    return timed_out


def _report_overdue_runs(ctx: Context) -> int:
    now = ctx.now()
    cutoff = now - timedelta(seconds=ctx.settings.run_timeout_s)
    reported = 0
    for run in repo.scan(ctx.store, Run, filters=[Filter("status", "==", RunStatus.RUNNING.value)]):
        if run.stalled_at is not None or run.started_at is None or run.started_at > cutoff:
            continue

        def mark(t: Transaction, run_id: str = run.id) -> bool:
            current = repo.tx_require(t, Run, run_id)
            if current.stalled_at is not None or current.status is not RunStatus.RUNNING:
                return False
            repo.tx_put(t, current.model_copy(update={"stalled_at": now}))
            return True

        if ctx.store.transaction(mark):
            reported += 1
            lifecycle_events.run_stalled()
            log.error(
                "run over its timeout: still running",
                extra=fields(
                    run_id=run.id,
                    job_id=run.job_id,
                    started_at=run.started_at.isoformat(),
                    timeout_s=ctx.settings.run_timeout_s,
                    counters=run.counters.model_dump(),
                    point="cleanup.runs_over_timeout",
                ),
            )
    return reported


def _settle_automation_runs(ctx: Context) -> int:
    settled = 0
    for status in (AutomationRunStatus.IMPORTING, AutomationRunStatus.RUNNING):
        for record in repo.scan(ctx.store, AutomationRun, filters=[Filter("status", "==", status.value)]):
            if automation.settle(ctx.deps, record.id).status is not status:
                settled += 1
    return settled


def _delete_old_downloads(ctx: Context) -> dict[str, int]:
    cutoff = format_timestamp(ctx.now() - EXPORT_RETENTION)
    records = blobs = 0
    for snap in _snapshots(
        ctx.store,
        Export.collection,
        [Filter("destination.kind", "==", "download"), Filter("created_at", "<", cutoff)],
    ):
        export = Export.from_doc(snap.data)
        # The record first: a record never points at a missing object. A crash
        # between the two leaves an object the exports bucket's lifecycle removes.
        if not _delete(ctx.store, Export.collection, snap):
            continue
        records += 1
        uris = {export.external_id} if export.external_id else set()
        uris.add(_download_uri(ctx, export))
        blobs += sum(1 for uri in uris if ctx.blobs.delete(uri))
    return {"exports_deleted": records, "export_blobs_deleted": blobs}


def _download_uri(ctx: Context, export: Export) -> str:
    """Where the export stage writes a download (also for one that failed half-way)."""
    return ctx.deps.bucket_uri("exports", f"runs/{export.run_id}/{export.id}.{export.format.value}")


def _prune_operations(ctx: Context) -> dict[str, int]:
    """Final operations past their ``expire_at``, with a Gmail import's bookkeeping (first,
    so a sweep that dies half-way finds the operation again next time)."""
    now = format_timestamp(ctx.now())
    operations = items = summaries = 0
    for snap in _snapshots(ctx.store, Operation.collection, [Filter("expire_at", "<", now)]):
        op = Operation.from_doc(snap.data)
        if op.expire_at is None or format_timestamp(op.expire_at) >= now:
            continue  # not final after all (the stored field is derived; trust the record)
        if op.kind == "import":
            for item in _snapshots(ctx.store, ITEMS, [Filter("operation_id", "==", op.id)]):
                items += int(_delete(ctx.store, ITEMS, item))
            summary = ctx.store.get(SUMMARIES, op.id)
            if summary is not None:
                summaries += int(_delete(ctx.store, SUMMARIES, summary))
        operations += int(_delete(ctx.store, Operation.collection, snap))
    return {"operations_pruned": operations, "import_items_pruned": items, "import_summaries_pruned": summaries}


def _prune_processed_messages(ctx: Context) -> int:
    """Message-id markers past their week (a Firestore TTL policy does this in the cloud)."""
    from common.service.dedup import ProcessedMessage

    now = format_timestamp(ctx.now())
    expired = _snapshots(ctx.store, ProcessedMessage.collection, [Filter("expire_at", "<", now)])
    return sum(int(_delete(ctx.store, ProcessedMessage.collection, snap)) for snap in expired)


def _drop_dead_tokens(ctx: Context) -> int:
    dropped = 0
    for record in repo.scan(ctx.store, Integration, filters=[Filter("refresh_failures", ">=", MAX_REFRESH_FAILURES)]):
        if record.token_ciphertext is None:
            continue
        dropped += int(ctx.store.transaction(_token_dropper(record.id, ctx)))
    return dropped


def _token_dropper(doc_id: str, ctx: Context) -> Callable[[Transaction], bool]:
    return lambda t: _drop_token(t, doc_id, ctx)


def _drop_token(t: Transaction, doc_id: str, ctx: Context) -> bool:
    current = repo.tx_get(t, Integration, doc_id)
    if current is None or current.token_ciphertext is None or current.refresh_failures < MAX_REFRESH_FAILURES:
        return False
    repo.tx_put(
        t,
        current.model_copy(
            update={
                "status": IntegrationStatus.RECONNECT_REQUIRED,
                "token_ciphertext": None,
                "status_reason": (
                    f"Google refused the stored authorization {current.refresh_failures} times; "
                    "the token was deleted -- connect the account again"
                ),
                "updated_at": ctx.now(),
            }
        ),
    )
    return True


def _snapshots(store: Store, collection: str, filters: Sequence[Filter]) -> Iterator[Snapshot]:
    """Every matching document with its version, a page at a time."""
    cursor: str | None = None
    while True:
        page = store.query(collection, filters=filters, limit=_PAGE, start_after=cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _delete(store: Store, collection: str, snap: Snapshot) -> bool:
    """Delete the document as it was read; False if another sweep got there first or it changed."""
    try:
        return store.delete(collection, snap.id, if_version=snap.version)
    except (PreconditionFailed, NotFound):
        return False
