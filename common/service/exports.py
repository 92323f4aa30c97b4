"""The export stage: a completed run's table, written and delivered once.

A redelivered request for an export already ``completed`` does nothing. The
object name derives from the export id, so a retry after a crash overwrites
the same object instead of leaving a second one.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from common.core import lifecycle
from common.core.errors import PermanentError, PreconditionFailed
from common.core.messages import ExportRun
from common.core.models import Export, ExportFormat, ExportSpec, ExtractionTask, Job, Run
from common.core.states import ExportStatus, OperationStatus, RunStatus
from common.core.table import iter_rows, plan
from common.export.writers import write_csv, write_xlsx
from common.obs.logging import fields
from common.ports.store import Filter, Order, Transaction
from common.service import ids, jobs, lifecycle_events, progress, repo, review
from common.service.context import Context, Deps, Sender

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def export_run(msg: ExportRun, ctx: Context) -> None:
    export, version = repo.require(ctx.store, Export, msg.export_id)
    run, _ = repo.require(ctx.store, Run, export.run_id)
    if export.status is ExportStatus.COMPLETED:
        log.info("export already completed; duplicate request ignored")
        _report(run, ctx)
        return
    if export.status is ExportStatus.FAILED:
        log.info("export already failed; retry it explicitly")
        return
    running = lifecycle.begin_export(export, now=ctx.now())
    repo.cas(ctx.store, running, version)
    lifecycle_events.export_started(resumed=export.status is ExportStatus.RUNNING)
    try:
        delivered: Delivered | PermanentError = _deliver(running, run, ctx)
    except PermanentError as err:
        delivered = err
    if isinstance(delivered, PermanentError):
        failure = delivered
        _finish(running, ctx, lambda e: lifecycle.fail_export(e, error=failure, now=ctx.now()))
        log.warning("export failed", extra=fields(error=str(failure)))
        _report(run, ctx)
        return
    done = delivered
    _finish(
        running,
        ctx,
        lambda e: lifecycle.complete_export(
            e,
            external_id=done.external_id,
            url=done.url,
            url_expires_at=done.url_expires_at,
            row_count=done.row_count,
            failed_count=done.failed_count,
            now=ctx.now(),
        ),
    )
    log.info("export completed", extra=fields(uri=done.external_id, rows=done.row_count))
    _report(run, ctx)


@dataclass(frozen=True)
class Delivered:
    external_id: str
    url: str | None
    row_count: int
    failed_count: int
    url_expires_at: datetime | None = None


def _deliver(export: Export, run: Run, ctx: Context) -> Delivered:
    job, _ = repo.require(ctx.store, Job, run.job_id)

    def tasks() -> Iterator[ExtractionTask]:
        # With the reviewers' corrections in place of the values read.
        return review.corrected(
            ctx.store,
            run.id,
            repo.scan(
                ctx.store,
                ExtractionTask,
                filters=[Filter("run_id", "==", run.id)],
                order_by=[Order("file_name"), Order("file_id")],
            ),
        )

    # Two passes over the run's tasks, page by page: memory stays flat however large the run.
    header = plan(run.frozen(job).fields, tasks())
    filename = file_name(job, run, export.format)
    with tempfile.TemporaryDirectory(prefix="sluice-export-") as tmp:
        path = Path(tmp) / filename
        if export.format is ExportFormat.CSV:
            with path.open("w", encoding="utf-8", newline="") as f:
                rows = write_csv(header, iter_rows(header, tasks()), f, bom=True)
        else:
            rows = write_xlsx(header, iter_rows(header, tasks()), str(path))
        external_id, url = _send(export, job, run, path, filename, ctx)
    expires = (
        ctx.now() + signed_url_ttl(ctx.settings.signed_url_ttl_s) if export.destination.kind == "download" else None
    )
    return Delivered(
        external_id=external_id, url=url, row_count=rows, failed_count=len(header.failures), url_expires_at=expires
    )


def file_name(job: Job, run: Run, fmt: ExportFormat) -> str:
    """An export's file name: the job's name and the run's number, e.g. ``invoices-run3.xlsx``."""
    return f"{jobs.safe_name(job.name)}-run{run.run_number}.{fmt.value}"


def _send(export: Export, job: Job, run: Run, path: Path, filename: str, ctx: Context) -> tuple[str, str | None]:
    """Deliver the written file; returns (external id, URL if any)."""
    content_type = CONTENT_TYPES[export.format]
    dest = export.destination
    if dest.kind == "download":
        uri = ctx.deps.bucket_uri("exports", f"runs/{run.id}/{export.id}.{export.format.value}")
        with path.open("rb") as f:
            ctx.blobs.put_stream(uri, f, content_type=content_type)
        # Signed once, for the configured TTL (7 days by default); readers get this link as stored.
        return uri, ctx.blobs.signed_url(uri, expires=signed_url_ttl(ctx.settings.signed_url_ttl_s))
    auth, destinations = ctx.deps.google_auth, ctx.deps.destinations
    if auth is None or destinations is None:
        raise PermanentError(
            f"export destination {dest} needs Google access, which this deployment has not configured",
            code="destination_unavailable",
            hint="Configure the Google OAuth client (SLUICE_GOOGLE_*), or export to download.",
        )
    if dest.kind == "drive":
        file_id = destinations.upload_to_drive(
            auth,
            owner=export.owner,
            export_id=export.id,
            path=path,
            filename=filename,
            content_type=content_type,
            folder_id=dest.target,
        )
        return file_id, f"https://drive.google.com/file/d/{file_id}/view"
    assert dest.target is not None, "a gmail destination names its address"
    message_id = destinations.send_by_gmail(
        auth,
        owner=export.owner,
        export_id=export.id,
        path=path,
        filename=filename,
        content_type=content_type,
        to=dest.target,
        subject=f"Sluice export: {job.name} (run {run.run_number})",
        body=(
            f"The export of {job.name}, run {run.run_number}, is attached: "
            f"{run.counters.completed} documents extracted, {run.counters.failed} failed."
        ),
    )
    return message_id, None


def signed_url_ttl(seconds: int) -> timedelta:
    return timedelta(seconds=seconds)


# A stored link is handed out until this close to its expiry (at most half its lifetime),
# so whoever receives it has at least that long to use it.
RESIGN_BEFORE = timedelta(days=1)


def download_url(deps: Deps, export: Export) -> tuple[str | None, datetime | None]:
    """A completed download export's signed link and its expiry: the stored one while it has
    time left, else a new one for the configured TTL, stored for the next reader."""
    if export.status is not ExportStatus.COMPLETED or export.destination.kind != "download" or not export.external_id:
        return export.url, export.url_expires_at
    now = deps.clock.now()
    ttl = signed_url_ttl(deps.settings.signed_url_ttl_s)
    margin = min(RESIGN_BEFORE, ttl / 2)
    if export.url and export.url_expires_at is not None and export.url_expires_at - now > margin:
        return export.url, export.url_expires_at
    url = deps.blobs.signed_url(export.external_id, expires=ttl)
    found = repo.get(deps.store, Export, export.id)
    if found is not None:
        stored, version = found
        refreshed = stored.model_copy(update={"url": url, "url_expires_at": now + ttl, "updated_at": now})
        # Another reader may have stored its own fresh link first; this one is as good.
        with contextlib.suppress(PreconditionFailed):
            repo.cas(deps.store, refreshed, version)
    return url, now + ttl


def _finish(export: Export, ctx: Context, change: Callable[[Export], Export]) -> None:
    """Write the outcome only if this attempt still holds the export."""

    def tx(t: Transaction) -> Export | None:
        current = repo.tx_require(t, Export, export.id)
        if current.status is not ExportStatus.RUNNING or current.attempts != export.attempts:
            log.info("stale export attempt: another attempt finished it")
            return None
        finished = change(current)
        repo.tx_put(t, finished)
        return finished

    finished = ctx.store.transaction(tx)
    if finished is not None:
        lifecycle_events.export_ended(finished)


def _report(run: Run, ctx: Context) -> None:
    """The run's operation is final once every export of the run is."""
    exports = list(repo.scan(ctx.store, Export, filters=[Filter("run_id", "==", run.id)]))
    pending = [e for e in exports if e.status not in (ExportStatus.COMPLETED, ExportStatus.FAILED)]
    if pending:
        progress.report_run(ctx, run, stage="exporting")
        return
    failed = [e for e in exports if e.status is ExportStatus.FAILED]
    if failed:
        err = failed[0].error or {}
        progress.report_run(
            ctx,
            run,
            stage="done",
            status=OperationStatus.FAILED,
            message=f"{len(failed)} of {len(exports)} exports failed: {err.get('message', '')}",
            error=err,
        )
    else:
        progress.report_run(ctx, run, stage="done", status=OperationStatus.DONE, message="exported")


def request_export(deps: Deps, sender: Sender, run: Run, spec: ExportSpec) -> Export:
    """Record a new export of a completed run and ask the export stage for it."""
    if run.status is not RunStatus.COMPLETED:
        raise PermanentError(
            f"run {run.id} is {run.status.value}; only a completed run can be exported",
            code="run_not_completed",
            hint="Wait for the run to complete, or retry its failed tasks.",
        )
    now = deps.clock.now()
    export = Export(
        id=ids.new_id("exp"),
        owner=run.owner,
        run_id=run.id,
        job_id=run.job_id,
        format=spec.format,
        destination=spec.destination,
        created_at=now,
        updated_at=now,
    )
    repo.create(deps.store, export)
    sender.send(ExportRun(export_id=export.id, run_id=run.id, job_id=run.job_id))
    return export
