"""Enrichment of a range of rows: read, ask the model a batch at a time, write back, checkpoint.

The unit of work is a range of rows (a work item of an enrich run). Its rows
are read once; they go to the model ``rows_per_call`` at a time, and answered
rows are written back ``rows_per_write`` at a time (Sheets' quotas count
requests). The checkpoint holds the last written row (``written_through``),
the answers saved but not yet written (``pending``, through
``pending_through``) and, while a batch's malformed rows are asked again, that
batch's answers so far (``partial``). The order of effects is what makes a
row answered at most once by the model, whatever stops the worker (crash,
kill -9, pause, redeploy, quota):

1. as soon as a model call returns, its answers are saved in the checkpoint,
   before anything else: before any sheet write, and before a malformed row
   of the batch is asked again (so received answers are never held in memory
   only while the model is asked something else). That save is the one store
   write of a batch; what remains is the few ms between an answer's arrival
   and that save's commit;
2. pending answers are written to the sheet once there are ``rows_per_write``
   of them, at the range's end, and before stopping for a pause (a rewrite of
   the same cells with the same values is harmless);
3. the next save moves ``written_through`` past them (no write of its own).

A resumed attempt carries on from the saved answers: pending ones are written
without asking the model, and a batch cut short asks only its rows without a
saved answer. Only a call whose answer never reached the checkpoint (the
worker died while the model was answering, or in those few ms) is asked again.

A row's entry that breaks the column types is asked again (alone with the
other failed rows of its batch) twice more; then the row gets error cells
and the run goes on.
"""

from __future__ import annotations

import json
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
# Answers saved but not yet written ride in the checkpoint (a Firestore document: 1 MiB at most); past this
# they are written back whatever rows_per_write says, so the next checkpoint stays small.
MAX_PENDING_BYTES = 256_000


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
    state = _Saved.resume(done, save_checkpoint, sheet, cp)
    known = _answers(cp.get("partial"))
    size = settings.rows_per_call
    start = state.answered_through + 1
    rows = {r.number: r for r in sheet.read_rows(start, last)} if start <= last else {}
    while start <= last:
        if should_stop():
            # Stopping is rare: write what is saved, and leave a checkpoint with nothing pending.
            state.flush()
            save_checkpoint({"written_through": done.written_through, "counts": _counts(done)})
            done.stopped = True
            return done
        end = min(last, start + size - 1)
        batch = [rows[n] for n in range(start, end + 1) if n in rows]
        todo = [r for r in batch if settings.overwrite or not is_filled(r.cells, settings.outputs)]
        writes = _answer(model, settings, todo, known, done, state.partial(end)) if todo else []
        done.skipped += len(batch) - len(todo)
        state.add(writes, through=end)
        if len(state.unwritten) >= settings.rows_per_write or state.pending_bytes > MAX_PENDING_BYTES:
            state.flush()
        known = {}
        start = end + 1
    state.flush()
    return done


@dataclass
class _Saved:
    """The answers saved in the checkpoint and not yet written, and their saves."""

    done: RangeOutcome
    save_checkpoint: Callable[[dict[str, Any]], None]
    sheet: Sheet
    answered_through: int
    unwritten: list[RowWrite] = field(default_factory=list)
    pending_bytes: int = 0

    @classmethod
    def resume(
        cls, done: RangeOutcome, save: Callable[[dict[str, Any]], None], sheet: Sheet, cp: Mapping[str, Any]
    ) -> _Saved:
        pending = _pending(cp)
        through = int(cp.get("pending_through", max((w.number for w in pending), default=done.written_through)))
        return cls(done, save, sheet, answered_through=max(done.written_through, through), unwritten=pending)

    def _checkpoint(self) -> dict[str, Any]:
        cp: dict[str, Any] = {"written_through": self.done.written_through, "counts": _counts(self.done)}
        if self.unwritten:
            cp.update(pending=_encode(self.unwritten), pending_through=self.answered_through)
        return cp

    def partial(self, through: int) -> Callable[[Sequence[RowWrite]], None]:
        """Saves the answers so far of the batch ending at ``through``, between its calls."""

        def save(answers: Sequence[RowWrite]) -> None:
            self.save_checkpoint({**self._checkpoint(), "partial": _encode(answers), "partial_through": through})

        return save

    def add(self, writes: Sequence[RowWrite], *, through: int) -> None:
        """A batch is answered (or skipped): save its writes with the others not yet written."""
        self.unwritten.extend(writes)
        self.pending_bytes += len(json.dumps(_encode(writes)))
        self.answered_through = through
        if not self.unwritten:
            self.done.written_through = through  # nothing to write (filled rows): the batch is done
        self.save_checkpoint(self._checkpoint())

    def flush(self) -> None:
        """Write the saved answers; the next save records them as written."""
        if self.unwritten:
            self.sheet.write_rows(self.unwritten)
            self.unwritten = []
            self.pending_bytes = 0
        self.done.written_through = self.answered_through


def _answer(
    model: TextModel,
    settings: EnrichSettings,
    rows: Sequence[SheetRow],
    known: Mapping[int, dict[str, CellValue]],
    done: RangeOutcome,
    save_partial: Callable[[Sequence[RowWrite]], None],
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
            save_partial([RowWrite(n, answers[n]) for n in sorted(answers)])
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


def _answers(raw: Any) -> dict[int, dict[str, CellValue]]:
    """A batch's saved answers (``partial``) by row."""
    return {int(p["row"]): dict(p["values"]) for p in raw or [] if isinstance(p, dict)}
