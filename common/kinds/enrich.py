"""The ``enrich`` kind: a model fills typed columns of a sheet (Google Sheet, or a local CSV/XLSX), row by row.

A run fans out into ranges of rows (``rows_per_item`` each, one work item
per range); an item's handler is the row-range service
(:func:`common.service.enrich.enrich_range`), which asks the model several
rows per call and keeps its checkpoint (the last written row, and answers
saved before they are written) on the item through the platform's fenced
``save_checkpoint``. A retried, resumed or taken-over attempt carries on at
the next unwritten row and never asks the model again for a written row.

When a job is created, :func:`prepare` checks that a text model is
configured, reads the sheet's header row (a wrong ``{placeholder}`` is an
error then), adds the output columns and resolves the rows to fill, so the
fan-out stays pure. At most ``SLUICE_ENRICH_SHEETS_PER_USER`` runs (sheets) of
one owner work at once; items of further runs wait ``queued``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from common.config import Settings
from common.core.enrich import EnrichSettings, item_ranges
from common.core.errors import ErrorKind, PermanentError, RetryableError, SluiceError
from common.core.models import Job, Run, SourceFile, TaskResult, TaskUsage, WorkItem
from common.core.states import RunStatus, TaskStatus
from common.kinds import Estimate, ItemCall, ItemDone, ItemSpec, Kind, register
from common.ports.sheets import Sheet
from common.service import enrich as rows
from common.service import repo
from common.service.context import Context, Deps

# How soon a range stopped by a pause is delivered again (it then waits for resume, not counting an attempt).
STOPPED_RETRY_S = 1.0
RESULT_COLUMNS = ["first_row", "last_row", "written", "failed", "skipped", "model_calls", "rows_asked", "output"]


def open_sheet(deps: Deps, owner: str, settings: EnrichSettings) -> Sheet:
    return deps.sheets(settings.source).open(
        settings.source, owner=owner, sheet=settings.sheet, header_row=settings.header_row
    )


def prepare(deps: Deps, owner: str, settings: EnrichSettings) -> EnrichSettings:
    """The settings with the rows to fill resolved, once the model and the sheet are known to work.

    ConfigError when no text model is configured; PermanentError for a sheet
    without header, a placeholder naming no column, or no rows to fill.
    """
    deps.named_text_model(settings.model)  # no model configured: say so before the job exists
    first, last = rows.prepare(open_sheet(deps, owner, settings), settings)
    if last < first:
        raise PermanentError(
            f"{settings.source} has no rows to fill from row {first}",
            code="enrich_no_rows",
            hint="Check the source, its header row and first row.",
        )
    return settings.model_copy(update={"first_row": first, "row_count": last - first + 1})


def fan_out(job: Job, inputs: Sequence[SourceFile], settings: EnrichSettings) -> list[ItemSpec]:
    """One item per range of ``rows_per_item`` rows (the job's uploads are not this kind's inputs)."""
    return [
        ItemSpec(key=f"rows-{first}-{last}", name=f"rows {first}-{last}", params={"first": first, "last": last})
        for first, last in item_ranges(settings)
    ]


def _stopped(ctx: Context, run_id: str) -> bool:
    """Whether the run was paused, cancelled or failed since the item started (checked between model calls)."""
    found = repo.get(ctx.store, Run, run_id)
    return found is None or found[0].status in (RunStatus.PAUSED, RunStatus.CANCELLED, RunStatus.FAILED)


def handle(call: ItemCall) -> ItemDone | SluiceError:
    settings = call.settings
    assert isinstance(settings, EnrichSettings)
    ctx = call.ctx
    first, last = int(call.item.params["first"]), int(call.item.params["last"])
    sheet = open_sheet(ctx.deps, call.job.owner, settings)
    model = ctx.deps.named_text_model(settings.model)
    done = rows.enrich_range(
        sheet,
        model,
        settings,
        first=first,
        last=last,
        checkpoint=call.checkpoint,
        save_checkpoint=call.save_checkpoint,
        should_stop=lambda: _stopped(ctx, call.run.id),
    )
    if done.stopped:
        # Paused (or cancelled) mid-range: the checkpoint holds the place; the redelivery waits for resume.
        return RetryableError(
            f"run stopped at row {done.written_through}; the range resumes at the next row",
            kind=ErrorKind.THROTTLED,
            retry_after=STOPPED_RETRY_S,
            code="enrich_stopped",
        )
    row = [first, last, done.written, done.failed, done.skipped, done.calls, done.rows_asked, sheet.output]
    return ItemDone(
        result=TaskResult(columns=RESULT_COLUMNS, results=[row], method="enrich", notes=done.errors[:5]),
        usage=TaskUsage(input_tokens=done.input_tokens, output_tokens=done.output_tokens),
        model=model.model,
    )


def fan_in(run: Run, items: Iterable[WorkItem]) -> dict[str, Any]:
    """The run's row counts over its completed ranges, and where the results are."""
    totals = dict.fromkeys(("rows_written", "rows_failed", "rows_skipped", "model_calls", "rows_asked"), 0)
    output = None
    for item in items:
        if item.status is not TaskStatus.COMPLETED or item.result is None or not item.result.results:
            continue
        row = dict(zip(item.result.columns, item.result.results[0], strict=False))
        totals["rows_written"] += int(row["written"])
        totals["rows_failed"] += int(row["failed"])
        totals["rows_skipped"] += int(row["skipped"])
        totals["model_calls"] += int(row["model_calls"])
        totals["rows_asked"] += int(row["rows_asked"])
        output = output or row.get("output")
    return {**totals, "output": output}


def item_units(item: WorkItem) -> tuple[int, int] | None:
    """A range's rows done (written, failed or skipped) and its rows, from its params and checkpoint."""
    try:
        first, last = int(item.params["first"]), int(item.params["last"])
    except (KeyError, TypeError, ValueError):
        return None
    total = last - first + 1
    if item.status is TaskStatus.COMPLETED:
        return total, total
    through = int((item.checkpoint or {}).get("written_through", first - 1))
    return max(0, min(total, through - first + 1)), total


def estimate(job: Job, inputs: Sequence[SourceFile], settings: EnrichSettings) -> Estimate:
    return Estimate(items=len(item_ranges(settings)))


def sheets_per_user(settings: Settings) -> int:
    return settings.enrich_sheets_per_user


KIND = register(
    Kind(
        name="enrich",
        settings_model=EnrichSettings,
        fan_out=fan_out,
        handle=handle,
        fan_in=fan_in,
        function="enrich",
        unit="rows",
        item_units=item_units,
        quota="model",
        estimate=estimate,
        uses_uploads=False,
        prepare=prepare,
        runs_per_user=sheets_per_user,
    )
)
