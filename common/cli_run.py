"""``sluice run``: files (or an existing job) to tables, every stage in-process, offline.

Running the same command again after an interruption resumes the unfinished
job: the job is found by a key derived from the command's inputs, and the bus
still holds its messages. ``--job JOB_ID`` runs a job filled some other way
(``sluice import-eml``, the API).

The terminal tells the whole story: each failed file once, with its reason and
hint; how many input files were byte-identical to another (read once, each
still has its rows, ``duplicate_of`` names the file read); and the exit
status says whether every document made it (see ``sluice --help``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from common.cli_support import (
    DOCUMENTS_FAILED,
    EXIT_CODES,
    FAILED,
    OK,
    UsageError,
    add_common,
    data_dir_lock,
    load_settings,
)
from common.core.errors import NotFound, SluiceError
from common.core.schema import FieldSpec

if TYPE_CHECKING:
    from common.config import Settings
    from common.core.models import Export, ExtractionTask, Job, Run
    from common.service.context import Deps, TopologySender

LOCAL_OWNER = "local"  # the owner of what the CLI creates on the embedded backend


@dataclass(frozen=True)
class Input:
    """One file to upload and the name its rows carry (its path relative to the folder given)."""

    path: Path
    name: str


def add_run_command(sub: Any, schema_args: Any) -> None:
    run = sub.add_parser(
        "run",
        help="extract documents into a table, end to end, offline",
        description="Upload PDF files (or run an existing job), extract every document, export the table.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="PDF files, or folders searched for *.pdf recursively"
    )
    run.add_argument(
        "--job",
        metavar="JOB_ID",
        help="run this existing job (e.g. filled by import-eml or the API); PATHs, if given, are added to it first",
    )
    run.add_argument("--name", help="the new job's name, used in export file names (default: from the PATHs)")
    schema_args(run)
    run.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=["xlsx", "csv"],
        help="export format; repeat for several (default: xlsx, or the job's exports with --job)",
    )
    run.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR", help="where to write the exports (default: out)"
    )
    run.add_argument(
        "--rerun", action="store_true", help="run again even if these inputs ran to completion (default: off)"
    )
    add_common(run)
    run.set_defaults(func=cmd_run)


def expand(paths: Sequence[Path]) -> list[Input]:
    """The files to upload, each named by its path relative to the folder it was found in.

    Names that would collide (``x.pdf`` given in two folders) keep the path as given instead.
    """
    found: list[tuple[Path, str, str]] = []  # file, relative name, path as given
    for arg in paths:
        if arg.is_dir():
            for q in sorted(q for q in arg.rglob("*") if q.is_file() and q.suffix.lower() == ".pdf"):
                rel = q.relative_to(arg).as_posix()
                found.append((q, rel, (arg / rel).as_posix()))
        elif arg.is_file():
            found.append((arg, arg.name, arg.as_posix()))
        else:
            raise UsageError(f"{arg}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for item in found:
        if (r := item[0].resolve()) not in seen:
            seen.add(r)
            unique.append(item)
    if not unique:
        raise UsageError("no PDF files found in the given paths")
    counts: dict[str, int] = {}
    for _, rel, _ in unique:
        counts[rel] = counts.get(rel, 0) + 1
    return [Input(path=f, name=rel if counts[rel] == 1 else given) for f, rel, given in unique]


def _job_name(paths: Sequence[Path]) -> str:
    first = paths[0].resolve()
    name = first.name if first.is_dir() else first.stem
    return name if len(paths) == 1 else f"{name} and {len(paths) - 1} more"


def _job_key(inputs: Sequence[Input], schema: Sequence[FieldSpec], formats: Sequence[str], name: str | None) -> str:
    ident = {
        "files": [[str(i.path.resolve()), i.name, i.path.stat().st_size, i.path.stat().st_mtime_ns] for i in inputs],
        "fields": [s.model_dump(mode="json") for s in schema],
        "formats": list(formats),
        "name": name,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _hide_reported_failures(level: str) -> None:
    """A failed document or export is printed once, by this command: not also as a WARNING log line."""
    if level in ("DEBUG", "INFO"):
        return
    reported = {"task failed", "export failed"}
    for name in ("common.service.runs", "common.service.exports"):
        logging.getLogger(name).addFilter(lambda r: r.getMessage() not in reported)


def cmd_run(args: argparse.Namespace) -> int:
    from common.bootstrap import local_app
    from common.obs import logging as slog
    from common.obs import tracing

    slog.configure(args.log_level, "text")
    _hide_reported_failures(args.log_level)
    if args.job is None and not args.paths:
        raise UsageError("nothing to run: give PDF files or folders, or --job JOB_ID")
    if args.job is not None and (args.fields or args.preset or args.name):
        raise UsageError("--job runs the job with its own fields and name; drop --fields, --preset and --name")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file, not a folder")
    inputs = expand(args.paths) if args.paths else []
    settings = load_settings(args.data_dir)
    with data_dir_lock(args.data_dir):
        app = local_app(settings)
        deps, runtime, sender = app.deps, app.runtime, app.sender
        # One trace from the uploads to the export (spans are ids only unless an exporter is configured).
        with tracing.span("cli.run", parent=None):
            job = _job(args, deps, settings, inputs)
            _upload(args, deps, job, inputs)
            run = _run_to_wait_for(args, deps, sender, job)
        runtime.start()
        try:
            run, exports = _wait(args, deps, run)
            if run.status.value == "completed" and args.formats:
                exports += _export_missing_formats(args, deps, sender, run, exports)
        finally:
            runtime.stop()
    return _report(args, deps, job, run, exports)


# -- the job and its files ------------------------------------------------------------------------------------


def _schema(args: argparse.Namespace) -> tuple[FieldSpec, ...]:
    from common.cli import schema_from_args

    return schema_from_args(args)


def _job(args: argparse.Namespace, deps: Deps, settings: Settings, inputs: Sequence[Input]) -> Job:
    """The job to run, its extractor checked before anything is written."""
    from common.core.models import ExportFormat, ExportSpec, Job
    from common.service import jobs, repo

    if args.job is not None:
        found = repo.get(deps.store, Job, args.job)
        if found is None:
            raise NotFound(f"job {args.job} not found", hint="sluice jobs lists the jobs in this data directory.")
        job = found[0]
        _check_extractor(deps, (job.settings.extractor or settings.extractor).value)
        return job
    schema = _schema(args)
    formats = args.formats or ["xlsx"]
    _check_extractor(deps, settings.extractor.value)
    key = _job_key(inputs, schema, formats, args.name)
    return jobs.find_job_by_key(deps, owner=LOCAL_OWNER, key=key) or jobs.create_job(
        deps,
        owner=LOCAL_OWNER,
        name=args.name or _job_name(args.paths),
        fields=schema,
        exports=[ExportSpec(format=ExportFormat(f)) for f in formats],
        key=key,
    )


def _check_extractor(deps: Deps, name: str) -> None:
    """Build the extractor now: a configuration it lacks is one error line, not a run of failed documents."""
    deps.extractor(name)


def _upload(args: argparse.Namespace, deps: Deps, job: Job, inputs: Sequence[Input]) -> None:
    from common.service import jobs

    identical = sum(1 for i in inputs if jobs.add_upload(deps, job, i.path, name=i.name).name != i.name)
    if identical:
        _say(
            args,
            f"{len(inputs)} files, {len(inputs) - identical} distinct: {identical} are byte-identical to another "
            "file and are read once",
        )


def _run_to_wait_for(args: argparse.Namespace, deps: Deps, sender: TopologySender, job: Job) -> Run:
    """The unfinished run to resume, the finished one to deliver again, or a new run."""
    from common.core.messages import StartRun
    from common.core.states import RunStatus
    from common.service import jobs

    run = jobs.latest_run(deps, job.id)
    if run is not None and _unfinished(deps, run):
        if run.status is RunStatus.PENDING:
            sender.send(StartRun(run_id=run.id, job_id=job.id))  # its first send may have been lost
        _say(args, f"resuming run {run.run_number} of job {job.id}")
        return run
    if run is not None and args.job is None and not args.rerun and run.status is RunStatus.COMPLETED:
        _say(args, f"job {job.id} already ran on these inputs (run {run.run_number}); --rerun runs it again")
        return run
    new = jobs.request_run(deps, sender, job)
    if run is not None and args.job is None:
        _say(args, f"job {job.id} finished before; starting run {new.run_number}")
    return new


def _exports_of(deps: Deps, run_id: str) -> list[Export]:
    from common.core.models import Export
    from common.ports.store import Filter
    from common.service import repo

    return list(repo.scan(deps.store, Export, filters=[Filter("run_id", "==", run_id)]))


def _unfinished(deps: Deps, run: Run) -> bool:
    from common.core.states import ExportStatus, RunStatus

    if run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED):
        return True
    if run.status is not RunStatus.COMPLETED:
        return False
    exports = _exports_of(deps, run.id)
    return len(exports) < len(run.exports) or any(e.status is not ExportStatus.COMPLETED for e in exports)


# -- waiting ------------------------------------------------------------------------------------------------------


def _wait(args: argparse.Namespace, deps: Deps, run: Run) -> tuple[Run, list[Export]]:
    from common.core.models import Run
    from common.core.states import ExportStatus, RunStatus
    from common.service import repo, tally

    bar = _ProgressBar(sys.stderr, enabled=not args.quiet)
    while True:
        run = tally.with_live_counters(deps.store, repo.require(deps.store, Run, run.id)[0])
        exports = _exports_of(deps, run.id)
        bar.show(run)
        exports_done = all(e.status in (ExportStatus.COMPLETED, ExportStatus.FAILED) for e in exports)
        if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            break
        if run.status is RunStatus.COMPLETED and exports_done and len(exports) >= len(run.exports):
            break
        time.sleep(0.1)
    bar.close()
    return run, exports


def _export_missing_formats(
    args: argparse.Namespace, deps: Deps, sender: TopologySender, run: Run, have: Sequence[Export]
) -> list[Export]:
    """``--format`` asked for a download the job's own exports do not include: export it too."""
    from common.core.models import Export, ExportFormat, ExportSpec
    from common.core.states import ExportStatus
    from common.service import exports, repo

    present = {e.format.value for e in have if e.destination.kind == "download" and e.status is ExportStatus.COMPLETED}
    wanted = [f for f in dict.fromkeys(args.formats) if f not in present]
    requested = [exports.request_export(deps, sender, run, ExportSpec(format=ExportFormat(f))) for f in wanted]
    done: list[Export] = []
    for e in requested:
        while e.status not in (ExportStatus.COMPLETED, ExportStatus.FAILED):
            time.sleep(0.05)
            e = repo.require(deps.store, Export, e.id)[0]
        done.append(e)
    return done


# -- what the terminal says ---------------------------------------------------------------------------------------


@dataclass
class _Tally:
    files: int = 0
    identical: int = 0
    failed: list[tuple[str, str, str]] | None = None  # name, reason, hint


def _tally(deps: Deps, run: Run) -> _Tally:
    from common.core.models import ExtractionTask
    from common.core.states import TaskStatus
    from common.ports.store import Filter, Order
    from common.service import repo

    tally = _Tally(failed=[])
    tasks = repo.scan(
        deps.store,
        ExtractionTask,
        filters=[Filter("run_id", "==", run.id)],
        order_by=[Order("file_name"), Order("file_id")],
    )
    for task in tasks:
        names = [task.file_name, *task.duplicate_names]
        tally.files += len(names)
        tally.identical += len(task.duplicate_names)
        if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            reason, hint = _reason(task)
            assert tally.failed is not None
            tally.failed.extend((n, reason, hint) for n in names)
    return tally


def _reason(task: ExtractionTask) -> tuple[str, str]:
    err = task.error or {}
    reason = err.get("message") or task.status.value
    for prefix in (f"{task.file_name}: ", f"{Path(task.file_name).name}: "):
        reason = reason.removeprefix(prefix)
    return reason, err.get("hint", "")


def _report(args: argparse.Namespace, deps: Deps, job: Job, run: Run, exports: Sequence[Export]) -> int:
    from common.core.states import RunStatus

    if run.status is RunStatus.FAILED:
        err = run.error or {}
        raise SluiceError(err.get("message", f"run {run.run_number} failed"), hint=err.get("hint"))
    if run.status is RunStatus.CANCELLED:
        raise SluiceError(
            f"run {run.run_number} of job {job.id} was cancelled", hint="sluice run --job starts it again."
        )
    code, xlsx = _deliver(args, deps, job, run, exports)
    print(f"run: {run.id} (run {run.run_number}, job {job.id})")
    tally = _tally(deps, run)
    failed = tally.failed or []
    line = f"{plural(tally.files, 'file')}: {tally.files - len(failed)} extracted, {len(failed)} failed"
    if tally.identical:
        line += f"; {tally.identical} byte-identical to another file (read once; duplicate_of names the file read)"
    print(line)
    for name, reason, hint in failed:
        print(f"sluice: failed: {name}: {reason}" + (f" (hint: {hint})" if hint else ""), file=sys.stderr)
    if failed:
        where = f"; see the Failures sheet in {xlsx}" if xlsx is not None else ""
        print(f"sluice: {len(failed)} of {tally.files} files failed{where}", file=sys.stderr)
    if code != OK:
        return code
    return DOCUMENTS_FAILED if failed else OK


def _deliver(
    args: argparse.Namespace, deps: Deps, job: Job, run: Run, exports: Sequence[Export]
) -> tuple[int, Path | None]:
    """Copy each completed download into ``--out``; returns the exit code so far and the XLSX with failures."""
    from common.core.states import ExportStatus

    code = OK
    xlsx: Path | None = None
    for e in sorted(exports, key=lambda e: e.id):
        if e.status is not ExportStatus.COMPLETED or e.external_id is None:
            err = e.error or {}
            print(f"sluice: export {e.format.value} failed: {err.get('message', 'unknown error')}", file=sys.stderr)
            code = FAILED
            continue
        if e.destination.kind != "download":
            print(f"{e.destination}: {e.external_id}" + (f"  {e.url}" if e.url else ""))
            continue
        dest = write_download(args.out, deps, job, run, e)
        print(f"{dest}  ({plural(e.row_count or 0, 'row')}{_failed_note(e.failed_count)})")
        if e.format.value == "xlsx" and e.failed_count:
            xlsx = dest
    return code, xlsx


def write_download(out: Path, deps: Deps, job: Job, run: Run, export: Export) -> Path:
    """Copy a completed download export into ``out``, named after the job and run, replacing no one's file."""
    from common import cli_outputs
    from common.service.exports import file_name

    stem = file_name(job, run, export.format).rsplit(f"-run{run.run_number}.", 1)[0]
    writer = cli_outputs.Writer(data_dir=str(deps.settings.data_dir.resolve()), job_id=job.id, run_id=run.id)
    names = cli_outputs.candidates(stem, job.id, run.run_number, export.format.value)
    assert export.external_id is not None
    with deps.blobs.open(export.external_id) as src:
        return cli_outputs.deliver(out, names, writer, src, fmt=export.format.value)


def _failed_note(n: int | None) -> str:
    return f", {plural(n, 'file')} failed" if n else ""


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"sluice: {text}", file=sys.stderr)


class _ProgressBar:
    """A one-line progress bar on a terminal; sparse lines elsewhere."""

    def __init__(self, out: IO[str], *, enabled: bool) -> None:
        self._out = out
        self._enabled = enabled
        self._tty = out.isatty()
        self._last = ""

    def show(self, run: Run) -> None:
        if not self._enabled:
            return
        c = run.counters
        done = c.completed + c.failed + c.cancelled
        total = max(c.total, 1)
        width = 30
        filled = int(width * min(done, total) / total)
        stage = "exporting" if run.status.value == "completed" else run.status.value
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{c.total} documents"
            f" ({c.completed} ok, {c.failed} failed)  {stage}"
        )
        if line == self._last:
            return
        self._last = line
        if self._tty:
            self._out.write("\r" + line)
        else:
            self._out.write(line + "\n")
        self._out.flush()

    def close(self) -> None:
        if self._enabled and self._tty:
            self._out.write("\n")
            self._out.flush()
