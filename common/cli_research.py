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
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.cli_kind import LOCAL_OWNER, LiveLine, job_key, resume_or_start, say, unfinished, validated, wait
from common.cli_support import DOCUMENTS_FAILED, EXIT_CODES, OK, UsageError, add_common, data_dir_lock, load_settings
from common.core.errors import PermanentError

if TYPE_CHECKING:
    from common.core.models import Job, Run
    from common.core.research import ResearchSettings
    from common.service.context import Deps


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
    from common.core.research import ResearchSettings

    raw = {
        "question": args.question,
        "collections": list(args.collections),
        "max_subquestions": args.max_subquestions,
        "k": args.k,
        "model": args.model,
    }
    return validated(ResearchSettings, raw)


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
        run, how = resume_or_start(deps, app.sender, job, keep_finished=not args.rerun)
        if how == "finished":
            say(args.quiet, f"answered before (run {run.run_number}); --rerun researches again")
        else:
            if how == "resumed":
                say(args.quiet, f"resuming run {run.run_number} of job {job.id}")
            line = LiveLine(sys.stderr, enabled=not args.quiet)
            app.runtime.start()
            try:
                run = wait(deps, run, lambda r: line.show(_phase_of(deps, r)))
            finally:
                app.runtime.stop()
                line.close()
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
    key = job_key("research", wanted.model_dump(mode="json"))
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


def _phase_of(deps: Deps, run: Run) -> str:
    from common.service import tally

    counters = tally.live_counters(deps.store, run)
    return phase_text(run.phase, counters.completed, counters.failed + counters.cancelled, counters.total)


def phase_text(phase: str | None, answered: int, failed: int, total: int) -> str:
    if phase in (None, "planning") or total == 0:
        return "planning: the model is splitting the question into sub-questions"
    if phase == "writing":
        return f"writing the report ({answered} of {total} sub-questions answered)"
    return f"{answered} of {total} sub-questions answered" + (f", {failed} failed" if failed else "")


def _report(args: argparse.Namespace, deps: Deps, run: Run, job: Job) -> int:
    ended = unfinished(run, job)
    if ended is not None:
        return ended
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
