"""``sluice research --collection NAME "question"``: a report with citations from your collections, offline.

The model (SLUICE_TEXT_MODEL) plans sub-questions; each is answered in
parallel from the chunks retrieved for it, citing documents and pages; a last
call writes the report, stored as Markdown and PDF. Progress goes by phase on
stderr (planning, n of m sub-questions answered, writing). Running the same
command again resumes an interrupted run: the plan is kept, and a
sub-question already answered is never asked again. A finished one is printed
again (``--rerun`` researches again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
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
from common.core.errors import PermanentError, SluiceError

if TYPE_CHECKING:
    from common.core.models import Job, Run
    from common.core.research import ResearchSettings
    from common.service.context import Deps, TopologySender

LOCAL_OWNER = "local"


def add_research_command(sub: Any) -> None:
    p = sub.add_parser(
        "research",
        help="answer a question from your collections: a report with citations (Markdown and PDF)",
        description=(
            "The text model (SLUICE_TEXT_MODEL) plans sub-questions, answers each from the chunks retrieved "
            "from the collections (citing document and page), then writes the report."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("question", metavar="QUESTION", help="the question to research")
    p.add_argument(
        "--collection",
        dest="collections",
        action="append",
        required=True,
        metavar="NAME",
        help="a collection to search (sluice ingest makes one); repeat for several",
    )
    p.add_argument("--max-subquestions", type=int, default=5, metavar="N", help="at most N sub-questions (default: 5)")
    p.add_argument("-k", type=int, default=6, metavar="N", help="chunks retrieved per sub-question (default: 6)")
    p.add_argument("--model", help="the model to call (default: SLUICE_OPENAI_MODEL or the Gemini model)")
    p.add_argument("--rerun", action="store_true", help="research again even if this question was answered")
    p.add_argument("--json", action="store_true", help="print the run's outputs as JSON")
    add_common(p)
    p.set_defaults(func=cmd_research)


def settings_from_args(args: argparse.Namespace) -> ResearchSettings:
    from pydantic import ValidationError

    from common.core.research import ResearchSettings

    try:
        return ResearchSettings(
            question=args.question,
            collections=list(args.collections),
            max_subquestions=args.max_subquestions,
            k=args.k,
            model=args.model,
        )
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"{where}: {first['msg']}") from None


def job_key(settings: ResearchSettings) -> str:
    ident = {"kind": "research", "settings": settings.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def cmd_research(args: argparse.Namespace) -> int:
    from common.bootstrap import local_app
    from common.obs import logging as slog

    slog.configure(args.log_level, "text")
    wanted = settings_from_args(args)
    settings = load_settings(args.data_dir)
    with data_dir_lock(args.data_dir):
        app = local_app(settings)
        deps = app.deps
        job = _job(deps, wanted)
        run = _run(args, deps, app.sender, job)
        if run.status.value in ("pending", "running", "paused"):
            app.runtime.start()
            try:
                run = _wait(args, deps, run)
            finally:
                app.runtime.stop()
        return _report(args, deps, run, job)


def _job(deps: Deps, wanted: ResearchSettings) -> Job:
    """The job of this question (found again on a rerun), its model and collections checked first."""
    from common import kinds
    from common.service import jobs

    kind = kinds.get("research")
    assert kind.prepare is not None
    try:
        resolved = kind.prepare(deps, LOCAL_OWNER, wanted)  # no model, or an unknown collection: one line, exit 2
    except PermanentError as err:
        raise UsageError(err.message, hint=err.hint) from None
    key = job_key(wanted)
    found = jobs.find_job_by_key(deps, owner=LOCAL_OWNER, key=key)
    if found is not None:
        return found
    return jobs.create_job(
        deps,
        owner=LOCAL_OWNER,
        name=wanted.question[:80],
        fields=[],
        key=key,
        kind="research",
        kind_settings=resolved.model_dump(mode="json"),
    )


def _run(args: argparse.Namespace, deps: Deps, sender: TopologySender, job: Job) -> Run:
    """The unfinished run to resume (a paused one is resumed), the finished one (unless --rerun), or a new run."""
    from common import kinds
    from common.core.states import RunStatus
    from common.service import control, jobs

    run = jobs.latest_run(deps, job.id)
    if run is not None and run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED):
        if run.status is RunStatus.PAUSED:
            run = control.resume_run(deps, sender, run.id, owner=LOCAL_OWNER)
        elif run.status is RunStatus.PENDING:
            sender.send(kinds.get(run.kind).start(run))  # its first send may have been lost
        _say(args, f"resuming run {run.run_number} of job {job.id}")
        return run
    if run is not None and run.status is RunStatus.COMPLETED and not args.rerun:
        _say(args, f"answered before (run {run.run_number}); --rerun researches again")
        return run
    return jobs.request_run(deps, sender, job)


def _wait(args: argparse.Namespace, deps: Deps, run: Run) -> Run:
    from common.core.models import Run
    from common.core.states import RunStatus
    from common.service import repo, tally

    shown = PhaseLine(sys.stderr, enabled=not args.quiet)
    while True:
        run = repo.require(deps.store, Run, run.id)[0]
        counters = tally.live_counters(deps.store, run)
        shown.show(phase_text(run.phase, counters.completed, counters.failed + counters.cancelled, counters.total))
        if run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED):
            break
        time.sleep(0.2)
    shown.close()
    return run


def phase_text(phase: str | None, answered: int, failed: int, total: int) -> str:
    if phase in (None, "planning") or total == 0:
        return "planning: the model is splitting the question into sub-questions"
    if phase == "writing":
        return f"writing the report ({answered} of {total} sub-questions answered)"
    return f"{answered} of {total} sub-questions answered" + (f", {failed} failed" if failed else "")


def _report(args: argparse.Namespace, deps: Deps, run: Run, job: Job) -> int:
    from common.core.states import RunStatus

    if run.status is RunStatus.FAILED:
        err = run.error or {}
        raise SluiceError(err.get("message", f"run {run.run_number} failed"), hint=err.get("hint"))
    if run.status is RunStatus.CANCELLED:
        raise SluiceError(f"run {run.run_number} of job {job.id} was cancelled")
    if run.status is RunStatus.PAUSED:
        print(f"run: {run.id} paused; run the same command again to resume", file=sys.stderr)
        return FAILED
    out = run.outputs or {}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"run: {run.id} (run {run.run_number}, job {job.id})")
        print(f"title: {out.get('title', '')}")
        print(f"sub-questions: {out.get('answered', 0)} answered, {out.get('failed', 0)} failed")
        for q in out.get("failed_subquestions") or []:
            print(f"  failed: {q}")
        for f in out.get("files") or []:
            print(f"report: {_where(deps, str(f['uri']))}")
    return OK if not out.get("failed") else DOCUMENTS_FAILED


def _where(deps: Deps, uri: str) -> str:
    """A local file path for the report on the embedded backend, else its URI."""
    path_of = getattr(deps.blobs, "path_of", None)
    return str(Path(path_of(uri)).resolve()) if callable(path_of) else uri


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"sluice: {text}", file=sys.stderr)


class PhaseLine:
    """The run's phase, one line rewritten on a terminal; a line per change elsewhere."""

    def __init__(self, out: IO[str], *, enabled: bool) -> None:
        self._out = out
        self._enabled = enabled
        self._tty = out.isatty()
        self._last = ""

    def show(self, line: str) -> None:
        if not self._enabled or line == self._last:
            return
        self._last = line
        self._out.write(("\r\x1b[K" + line) if self._tty else (line + "\n"))
        self._out.flush()

    def close(self) -> None:
        if self._enabled and self._tty:
            self._out.write("\n")
            self._out.flush()
