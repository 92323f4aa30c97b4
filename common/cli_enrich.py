"""``sluice enrich SOURCE``: a model fills typed columns of a sheet or a local CSV/XLSX, row by row, offline.

Running the same command again resumes: the job is found by a key derived
from the command's settings, its run's items keep their checkpoints (the
last written row, and answers saved before they were written), so no row
the first run wrote is asked of the model again. ``sluice runs`` lists it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.cli_kind import LOCAL_OWNER, LiveLine, job_key, resume_or_start, say, unfinished, validated, wait
from common.cli_support import EXIT_CODES, OK, UsageError, add_common, data_dir_lock, load_settings
from common.core.errors import PermanentError

if TYPE_CHECKING:
    from common.core.enrich import EnrichSettings
    from common.core.models import Job, Run
    from common.service.context import Deps


def add_enrich_command(sub: Any) -> None:
    p = sub.add_parser(
        "enrich",
        help="fill columns of a sheet or CSV/XLSX file with a model, row by row (resumable)",
        description=(
            "Ask the text model (SLUICE_TEXT_MODEL) to fill typed output columns of every row. "
            "A local file's results go to NAME.enriched.EXT beside it; a Google Sheet is written in place."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="a local .csv/.xlsx file, or a Google Sheet's URL or id")
    p.add_argument("--prompt", required=True, help="the prompt template; {column} is that row's cell")
    p.add_argument(
        "--output",
        dest="outputs",
        action="append",
        required=True,
        metavar="NAME:TYPE",
        help="an output column: NAME:text, NAME:number, NAME:boolean or NAME:enum[a,b,c]; repeat for several",
    )
    p.add_argument("--model", help="the model to call (default: SLUICE_OPENAI_MODEL or the Gemini model)")
    p.add_argument("--sheet", help="the sheet (tab) of a Google Sheet (default: the first)")
    p.add_argument("--header-row", type=int, default=1, metavar="N", help="the header row (default: 1)")
    p.add_argument("--first-row", type=int, metavar="N", help="the first row to fill (default: after the header)")
    p.add_argument("--rows", type=int, dest="row_count", metavar="N", help="how many rows to fill (default: all)")
    p.add_argument("--overwrite", action="store_true", help="fill rows whose output cells are already filled")
    p.add_argument("--rows-per-call", type=int, default=20, metavar="N", help="rows per model call (default: 20)")
    p.add_argument("--rows-per-item", type=int, default=200, metavar="N", help="rows per work item (default: 200)")
    p.add_argument(
        "--rows-per-write", type=int, default=100, metavar="N", help="rows written back per request (default: 100)"
    )
    add_common(p)
    p.set_defaults(func=cmd_enrich)


def settings_from_args(args: argparse.Namespace) -> EnrichSettings:
    from common.core.enrich import EnrichSettings, is_local_table, parse_output

    source = args.source
    if is_local_table(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise UsageError(f"{source}: no such file")
        source = str(path.resolve())
    outputs = tuple(parse_output(o) for o in args.outputs)
    raw = {
        "source": source,
        "sheet": args.sheet,
        "header_row": args.header_row,
        "first_row": args.first_row,
        "row_count": args.row_count,
        "prompt": args.prompt,
        "outputs": outputs,
        "model": args.model,
        "overwrite": args.overwrite,
        "rows_per_call": args.rows_per_call,
        "rows_per_item": args.rows_per_item,
        "rows_per_write": args.rows_per_write,
    }
    return validated(EnrichSettings, raw)


def cmd_enrich(args: argparse.Namespace) -> int:
    from common.bootstrap import local_app
    from common.obs import logging as slog

    slog.configure(args.log_level, "text")
    wanted = settings_from_args(args)
    settings = load_settings(args.data_dir)
    with data_dir_lock(args.data_dir):
        app = local_app(settings)
        deps = app.deps
        job = _job(deps, wanted)
        run, how = resume_or_start(deps, app.sender, job, keep_finished=False)
        if how == "resumed":
            say(args.quiet, f"resuming run {run.run_number} of job {job.id}")
        elif run.run_number > 1:
            say(args.quiet, f"job {job.id} ran before; starting run {run.run_number} (filled rows are skipped)")
        bar = LiveLine(sys.stderr, enabled=not args.quiet)
        app.runtime.start()
        try:
            run = wait(deps, run, lambda r: bar.show(rows_line(*rows_done(deps, r.id), r.status.value)))
        finally:
            app.runtime.stop()
            bar.close()
    return _report(run, job)


def _job(deps: Deps, wanted: EnrichSettings) -> Job:
    """The job of these settings (found again on a rerun), checked and resolved before it is created."""
    from common import kinds
    from common.service import jobs

    key = job_key("enrich", wanted.model_dump(mode="json"))
    found = jobs.find_job_by_key(deps, owner=LOCAL_OWNER, key=key)
    kind = kinds.get("enrich")
    if found is not None:
        deps.named_text_model(wanted.model)  # the model may have been unset since: one line, before anything runs
        return found
    assert kind.prepare is not None
    try:
        resolved = kind.prepare(deps, LOCAL_OWNER, wanted)
    except PermanentError as err:  # the prompt, the sheet or its rows: nothing ran, the command must change
        raise UsageError(err.message, hint=err.hint) from None
    return jobs.create_job(
        deps,
        owner=LOCAL_OWNER,
        name=Path(wanted.source).name,
        fields=[],
        key=key,
        kind="enrich",
        kind_settings=resolved.model_dump(mode="json"),
    )


def rows_done(deps: Deps, run_id: str) -> tuple[int, int]:
    """(rows done, rows to do) over the run's ranges: a range's checkpoint says how far it got."""
    from common.core.models import WorkItem
    from common.core.states import TaskStatus
    from common.ports.store import Filter
    from common.service import repo

    done = total = 0
    for item in repo.scan(deps.store, WorkItem, filters=[Filter("run_id", "==", run_id)]):
        first, last = int(item.params.get("first", 0)), int(item.params.get("last", -1))
        total += last - first + 1
        if item.status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
            done += last - first + 1
        elif item.checkpoint:
            done += max(0, int(item.checkpoint.get("written_through", first - 1)) - first + 1)
    return done, total


def rows_line(done: int, total: int, status: str) -> str:
    """A progress bar in rows: ``[#####.....] 40/120 rows  running``."""
    width = 30
    filled = int(width * min(done, max(total, 1)) / max(total, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows  {status}"


def _report(run: Run, job: Job) -> int:
    ended = unfinished(run, job)
    if ended is not None:
        return ended
    out = run.outputs or {}
    print(f"run: {run.id} (run {run.run_number}, job {job.id})")
    print(
        f"rows: {out.get('rows_written', 0)} written, {out.get('rows_failed', 0)} failed, "
        f"{out.get('rows_skipped', 0)} skipped (already filled); {out.get('model_calls', 0)} model calls"
    )
    if out.get("output"):
        print(f"output: {out['output']}")
    return OK if not out.get("rows_failed") else 1
