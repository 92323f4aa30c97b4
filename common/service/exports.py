"""The export stage: a completed run's table, written and delivered once.

A redelivered request for an export already ``completed`` does nothing. The
object name derives from the export id, so a retry after a crash overwrites
the same object instead of leaving a second one.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from common.core import lifecycle
from common.core.errors import PermanentError
from common.core.messages import ExportRun
from common.core.models import Export, ExportFormat, ExtractionTask, Job, Run
from common.core.states import ExportStatus, OperationStatus
from common.core.table import Table, build_table
from common.export.writers import write_csv, write_xlsx
from common.obs.logging import fields
from common.ports.store import Filter, Order, Transaction
from common.service import progress, repo
from common.service.context import Context

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


def _deliver(export: Export, run: Run, ctx: Context) -> Delivered:
    if export.destination.kind != "download":
        raise PermanentError(
            f"export destination {export.destination} is not available on this deployment",
            hint="Export to download, or connect a Google account for Drive and Gmail.",
            code="destination_unavailable",
        )
    job, _ = repo.require(ctx.store, Job, run.job_id)
    tasks = repo.scan(
        ctx.store,
        ExtractionTask,
        filters=[Filter("run_id", "==", run.id)],
        order_by=[Order("file_name"), Order("file_id")],
    )
    table = build_table(job.fields, tasks)
    uri = ctx.deps.bucket_uri("exports", f"runs/{run.id}/{export.id}.{export.format.value}")
    _write(table, export.format, uri, ctx)
    url = ctx.blobs.signed_url(uri, expires=timedelta(seconds=ctx.settings.signed_url_ttl_s))
    return Delivered(external_id=uri, url=url, row_count=len(table.rows), failed_count=len(table.failures))


def _write(table: Table, fmt: ExportFormat, uri: str, ctx: Context) -> None:
    fd, path = tempfile.mkstemp(suffix=f".{fmt.value}")
    os.close(fd)
    try:
        if fmt is ExportFormat.CSV:
            with open(path, "w", encoding="utf-8", newline="") as f:
                write_csv(table, f, bom=True)
        else:
            write_xlsx(table, path)
        with open(path, "rb") as f:
            ctx.blobs.put_stream(uri, f, content_type=CONTENT_TYPES[fmt])
    finally:
        os.unlink(path)


def _finish(export: Export, ctx: Context, change: Callable[[Export], Export]) -> None:
    """Write the outcome only if this attempt still holds the export."""

    def tx(t: Transaction) -> None:
        current = repo.tx_require(t, Export, export.id)
        if current.status is not ExportStatus.RUNNING or current.attempts != export.attempts:
            log.info("stale export attempt: another attempt finished it")
            return
        repo.tx_put(t, change(current))

    ctx.store.transaction(tx)


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
