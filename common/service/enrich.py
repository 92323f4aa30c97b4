"""Enrichment of a range of rows: read, ask the model a batch at a time, write back, checkpoint.

The unit of work is a range of rows (a work item of an enrich run). Within
it, rows go to the model ``rows_per_call`` at a time. The checkpoint is the
last written row (``written_through``) plus the answers received for the
batch after it (``pending``). The order of effects is what makes a row
answered at most once by the model, whatever stops the worker (crash,
kill -9, pause, redeploy, quota):

1. as soon as a model call returns, its answers are saved in the checkpoint
   (``pending``), before anything else: before the sheet write, and before
   a malformed row of the batch is asked again (so a retry never holds
   received answers in memory only). That save is the one store write of a
   batch; the window in which a received answer can be lost is the time it
   takes (measured in ``bench/enrich.py``'s notes: a few ms typically);
2. the batch is written to the sheet (a rewrite of the same cells with the
   same values is harmless);
3. the next batch's save moves ``written_through`` past it (no write of its
   own: one checkpoint write per batch keeps the store's write lock free for
   the other ranges' answers).

A resumed attempt first writes a complete ``pending`` batch without asking
the model; for a batch that was still being retried (``pending_complete``
false) it asks only its rows without a saved answer. Only a call whose
answer never reached the checkpoint (the worker died while the model was
answering, or in the few ms before the save) is asked again.

A row's entry that breaks the column types is asked again (alone with the
other failed rows of its batch) twice more; then the row gets error cells
and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.core.enrich import (
    SYSTEM_INSTRUCTION,
    EnrichSettings,
    OutputColumn,
    RowAnswer,
    RowProblem,
    batch_prompt,
    batch_schema,
    check_template,
    error_cell,
    is_filled,
    parse_batch,
)
from common.core.errors import MalformedModelOutput, PermanentError
from common.ports.sheets import CellValue, RowWrite, Sheet, SheetRow
from common.ports.textmodel import TextModel

log = logging.getLogger(__name__)

MAX_ATTEMPTS_PER_ROW = 3  # the first answer and two retries of a malformed one


@dataclass
class RangeOutcome:
    """What one attempt at a range did."""

    written: int = 0  # rows written with the model's values
    failed: int = 0  # rows written with error cells
    skipped: int = 0  # rows already filled (not overwritten)
    calls: int = 0
    rows_asked: int = 0  # rows sent to the model, retries included
    input_tokens: int = 0
    output_tokens: int = 0
    written_through: int = 0
    stopped: bool = False  # stopped early (pause, cancel): the checkpoint says where
    errors: list[str] = field(default_factory=list)  # a few failed rows' reasons, for the record


def prepare(sheet: Sheet, settings: EnrichSettings) -> tuple[int, int]:
    """Check the prompt against the headers, add the output columns, and return the rows to fill.

    Run before a job's rows fan out (and by the CLI before creating it), so a
    wrong placeholder is an error before the job starts.
    """
    headers = sheet.headers()
    if not headers:
        raise PermanentError(
            f"{sheet.title} has no header row (row {settings.header_row} is empty)",
            code="enrich_no_header",
            hint="Put column names in the header row, or give --header-row.",
        )
    check_template(settings.prompt, headers)
    sheet.add_columns([c.name for c in settings.outputs])
    first = settings.start_row
    last = sheet.last_row()
    if settings.row_count is not None:
        last = min(last, first + settings.row_count - 1)
    return first, last


def enrich_range(
    sheet: Sheet,
    model: TextModel,
    settings: EnrichSettings,
    *,
    first: int,
    last: int,
    checkpoint: Mapping[str, Any] | None,
    save_checkpoint: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> RangeOutcome:
    """Fill rows ``first..last`` from where ``checkpoint`` left off (see the module docstring)."""
    cp = dict(checkpoint or {})
    done = RangeOutcome(written_through=int(cp.get("written_through", first - 1)))
    _restore_counts(done, cp)
    known = _resume(sheet, cp, done)
    size = settings.rows_per_call
    start = done.written_through + 1
    while start <= last:
        if should_stop():
            done.stopped = True
            # Stopping is rare: leave a checkpoint with nothing pending, so the place is plain to see.
            save_checkpoint({"written_through": done.written_through, "counts": _counts(done)})
            break
        end = min(last, start + size - 1)
        rows = sheet.read_rows(start, end)
        todo = [r for r in rows if settings.overwrite or not is_filled(r.cells, settings.outputs)]
        batch = _Batch(done, save_checkpoint, through=end)
        if todo:
            writes = _answer(model, settings, todo, {n: v for n, v in known.items() if start <= n <= end}, batch)
        else:
            writes = []
        done.skipped += len(rows) - len(todo)
        batch.save(writes, complete=True)
        if writes:
            sheet.write_rows(writes)
        done.written_through = end
        known = {}
        start = end + 1
    return done


def _resume(sheet: Sheet, cp: Mapping[str, Any], done: RangeOutcome) -> dict[int, dict[str, CellValue]]:
    """Write a saved batch whose answers are all in (never asking again); the answers of a batch cut short."""
    pending = _pending(cp)
    if not pending:
        return {}
    if not cp.get("pending_complete", True):
        # The worker stopped between a batch's calls: its rows with an answer are not asked again.
        return {w.number: dict(w.values) for w in pending}
    sheet.write_rows(pending)
    done.written_through = max(done.written_through, int(cp.get("pending_through", max(w.number for w in pending))))
    return {}


@dataclass
class _Batch:
    """Saves a batch's answers the moment they are received (see the module docstring)."""

    done: RangeOutcome
    save_checkpoint: Callable[[dict[str, Any]], None]
    through: int

    def save(self, writes: Sequence[RowWrite], *, complete: bool) -> None:
        if not writes and not complete:
            return
        cp: dict[str, Any] = {"written_through": self.done.written_through, "counts": _counts(self.done)}
        if writes:
            cp.update(pending=_encode(writes), pending_through=self.through, pending_complete=complete)
        elif self.through > self.done.written_through:
            cp["written_through"] = self.through  # nothing to write (filled rows): the batch is done
        self.save_checkpoint(cp)


def _answer(
    model: TextModel,
    settings: EnrichSettings,
    rows: Sequence[SheetRow],
    known: Mapping[int, dict[str, CellValue]],
    batch: _Batch,
) -> list[RowWrite]:
    """Each row's values from the model (asking again for rows whose entry was malformed), or error cells.

    Rows in ``known`` were answered before a restart and are not asked. After
    a call that leaves rows to ask again, the answers so far are saved at
    once; the caller saves the batch's final answers.
    """
    columns = settings.outputs
    schema = batch_schema(columns)
    by_number = {r.number: r for r in rows}
    answers: dict[int, dict[str, CellValue]] = {n: dict(v) for n, v in known.items() if n in by_number}
    reasons: dict[int, str] = {}
    asking = [n for n in by_number if n not in answers]
    done = batch.done
    for attempt in range(MAX_ATTEMPTS_PER_ROW):
        if not asking:
            break
        prompt = batch_prompt(settings.prompt, [(n, by_number[n].cells) for n in asking], columns)
        done.calls += 1
        done.rows_asked += len(asking)
        try:
            gen = model.generate(prompt, schema, system=SYSTEM_INSTRUCTION, strict=False)
        except MalformedModelOutput as exc:  # not JSON at all: every row of the call failed
            reasons.update({n: str(exc) for n in asking})
            continue
        done.input_tokens += gen.usage.input_tokens or 0
        done.output_tokens += gen.usage.output_tokens or 0
        for number, outcome in parse_batch(gen.value, asking, columns).items():
            if isinstance(outcome, RowAnswer):
                answers[number] = outcome.values
                reasons.pop(number, None)
            elif isinstance(outcome, RowProblem):
                reasons[number] = outcome.reason
        asking = [n for n in asking if n not in answers]
        if asking and attempt + 1 < MAX_ATTEMPTS_PER_ROW:
            batch.save([RowWrite(n, answers[n]) for n in sorted(answers)], complete=False)
    writes = [RowWrite(n, answers[n]) for n in sorted(answers)]
    done.written += len(writes)
    for number in asking:
        reason = reasons.get(number, "no valid answer")
        done.failed += 1
        if len(done.errors) < 20:
            done.errors.append(f"row {number}: {reason}")
        writes.append(RowWrite(number, _error_values(columns, reason)))
    if asking:
        log.info("rows failed after %d attempts", MAX_ATTEMPTS_PER_ROW, extra={"fields": {"rows": asking}})
    return sorted(writes, key=lambda w: w.number)


_COUNTS = ("written", "failed", "skipped", "calls", "rows_asked", "input_tokens", "output_tokens")


def _counts(done: RangeOutcome) -> dict[str, int]:
    """The range's totals so far, kept in the checkpoint so an attempt that resumes reports the whole range."""
    return {name: int(getattr(done, name)) for name in _COUNTS}


def _restore_counts(done: RangeOutcome, cp: Mapping[str, Any]) -> None:
    counts = cp.get("counts") or {}
    for name in _COUNTS:
        setattr(done, name, int(counts.get(name, 0)))


def _error_values(columns: Sequence[OutputColumn], reason: str) -> dict[str, CellValue]:
    cell = error_cell(reason)
    return {c.name: cell for c in columns}


def _encode(writes: Sequence[RowWrite]) -> list[dict[str, Any]]:
    return [{"row": w.number, "values": dict(w.values)} for w in writes]


def _pending(cp: Mapping[str, Any]) -> list[RowWrite]:
    raw = cp.get("pending") or []
    return [RowWrite(int(p["row"]), dict(p["values"])) for p in raw if isinstance(p, dict)]
