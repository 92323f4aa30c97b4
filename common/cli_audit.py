"""``sluice audit``: audit PDFs against rules, end to end on the embedded backend.

    sluice audit a.pdf b.pdf --disclaimer "This document is confidential..." --logo logo.png

Creates an ``audit`` job (documents and the reference logo uploaded), runs it
on the local runtime with one work item per document and auditor, prints the
progress per auditor, then the merged report (``--json``: the report itself).
Running the same command again resumes an interrupted audit and prints the
finished one again (``--rerun`` audits again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from common.audit import AUDITORS
from common.cli_run import expand, plural
from common.cli_support import DOCUMENTS_FAILED, EXIT_CODES, FAILED, OK, UsageError, add_common, data_dir_lock
from common.cli_support import load_settings as _load_settings

if TYPE_CHECKING:
    from common.core.models import Job, Run
    from common.service.context import Deps

LOCAL_OWNER = "local"


def add_audit_command(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="audit PDFs: disclaimers, page format, logo placement, grammar (with a model)",
        description="Check documents against rules; each auditor runs as its own work item, in parallel.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="PDF files, or folders searched for *.pdf")
    p.add_argument(
        "--disclaimer",
        action="append",
        default=[],
        metavar="TEXT",
        help="a text that must be printed; repeatable (default: none)",
    )
    p.add_argument(
        "--disclaimer-pages",
        default="any",
        help="where each disclaimer must be (default: any), or all, first, last, page numbers like 1,3",
    )
    p.add_argument("--logo", type=Path, metavar="IMAGE", help="the reference logo (PNG/JPEG) to find on the pages")
    p.add_argument(
        "--logo-pages", default="first", help="pages the logo must be on (default: first), or all, last, 1,3"
    )
    p.add_argument(
        "--logo-region",
        choices=["top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"],
        help="where on the page the logo belongs (default: anywhere)",
    )
    p.add_argument("--page-size", default="A4", help="required paper size (default: A4), or A3, A5, Letter, Legal, any")
    p.add_argument(
        "--orientation",
        choices=["portrait", "landscape", "any"],
        default="portrait",
        help="page orientation (default: portrait)",
    )
    p.add_argument(
        "--min-margin", type=float, default=10.0, metavar="MM", help="minimum margin on every side (default: 10)"
    )
    p.add_argument(
        "--min-dpi", type=float, default=150.0, help="minimum image resolution (default: 150; 0: not checked)"
    )
    p.add_argument("--allow-unembedded-fonts", action="store_true", help="do not require embedded fonts")
    p.add_argument(
        "--auditors", default=",".join(AUDITORS), help=f"comma-separated, from {', '.join(AUDITORS)} (default: all)"
    )
    p.add_argument("--json", action="store_true", help="print the merged report as JSON")
    p.add_argument("--rerun", action="store_true", help="audit again even if these inputs were audited")
    add_common(p)
    p.set_defaults(func=cmd_audit)


def _pages(text: str) -> Any:
    if text in ("all", "any", "first", "last"):
        return text
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"pages {text!r}: all, any, first, last or numbers like 1,3") from None


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The audit kind's settings (validated by the kind before anything is written)."""
    from pydantic import ValidationError

    from common.audit.settings import AuditSettings

    auditors = [a.strip() for a in args.auditors.split(",") if a.strip()]
    if "logo" in auditors and args.logo is None:
        if args.auditors != ",".join(AUDITORS):
            raise UsageError("the logo auditor needs --logo IMAGE")
        auditors.remove("logo")  # all auditors by default: the logo's only with a logo
    raw = {
        "auditors": auditors,
        "disclaimers": [{"text": t, "pages": _pages(args.disclaimer_pages)} for t in args.disclaimer],
        "format": {
            "page_size": None if args.page_size.lower() == "any" else args.page_size,
            "orientation": None if args.orientation == "any" else args.orientation,
            "margins_mm": dict.fromkeys(("top", "right", "bottom", "left"), args.min_margin or None),
            "embedded_fonts": not args.allow_unembedded_fonts,
            "min_image_dpi": args.min_dpi or None,
        },
        "logo": {"pages": _pages(args.logo_pages), "region": args.logo_region},
        "logo_file": None if args.logo is None else f"logo/{args.logo.name}",
    }
    try:
        return AuditSettings.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise UsageError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def cmd_audit(args: argparse.Namespace) -> int:
    from common.bootstrap import local_app
    from common.obs import logging as slog

    slog.configure(args.log_level, "text")
    settings = settings_from_args(args)
    inputs = expand(args.paths)
    if args.logo is not None and not args.logo.is_file():
        raise UsageError(f"--logo {args.logo}: no such file")
    config = _load_settings(args.data_dir)
    with data_dir_lock(args.data_dir):
        app = local_app(config)
        deps = app.deps
        if "grammar" in settings["auditors"]:
            deps.text_model()  # a text model configured wrongly is one error line now, not failed items later
        job = _job(deps, inputs, settings, args)
        run = _run(deps, app.sender, job, args.rerun)
        app.runtime.start()
        try:
            run = _wait(deps, run, sys.stderr if not args.quiet else None)
        finally:
            app.runtime.stop()
    return _report(run, args.json)


def _job(deps: Deps, inputs: Sequence[Any], settings: dict[str, Any], args: argparse.Namespace) -> Job:
    from common.service import jobs

    files = [[str(i.path.resolve()), i.name, i.path.stat().st_size, i.path.stat().st_mtime_ns] for i in inputs]
    if args.logo is not None:
        files.append([str(args.logo.resolve()), settings["logo_file"], args.logo.stat().st_size, 0])
    key = hashlib.sha256(json.dumps({"audit": files, "settings": settings}, sort_keys=True).encode()).hexdigest()[:32]
    job = jobs.find_job_by_key(deps, owner=LOCAL_OWNER, key=key)
    if job is not None:
        return job
    name = inputs[0].path.stem if len(inputs) == 1 else f"{inputs[0].path.stem} and {len(inputs) - 1} more"
    job = jobs.create_job(
        deps, owner=LOCAL_OWNER, name=f"audit {name}", fields=[], kind="audit", kind_settings=settings, key=key
    )
    for i in inputs:
        jobs.add_upload(deps, job, i.path, name=i.name)
    if args.logo is not None:
        jobs.add_upload(deps, job, args.logo, name=settings["logo_file"])
    return job


def _run(deps: Deps, sender: Any, job: Job, rerun: bool) -> Run:
    from common import kinds
    from common.core.states import RunStatus
    from common.service import jobs

    run = jobs.latest_run(deps, job.id)
    if run is not None and run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED):
        if run.status is RunStatus.PENDING:
            sender.send(kinds.get("audit").start(run))  # its first send may have been lost
        return run
    if run is not None and run.status is RunStatus.COMPLETED and not rerun:
        return run
    return jobs.request_run(deps, sender, job)


def _wait(deps: Deps, run: Run, out: IO[str] | None) -> Run:
    from common.core.models import Run, WorkItem
    from common.core.states import RunStatus
    from common.kinds.audit import progress_by_auditor
    from common.ports.store import Filter
    from common.service import repo

    last = ""
    while True:
        run = repo.require(deps.store, Run, run.id)[0]
        items = list(repo.scan(deps.store, WorkItem, filters=[Filter("run_id", "==", run.id)]))
        line = "  ".join(
            f"{auditor} {c['done'] + c['failed']}/{c['total']}" for auditor, c in progress_by_auditor(items).items()
        )
        if out is not None and line and line != last:
            print(f"sluice: audit {line}", file=out, flush=True)
            last = line
        if run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
            return run
        time.sleep(0.1)


def _report(run: Run, as_json: bool) -> int:
    report = run.outputs or {}
    if run.status.value != "completed":
        error = (run.error or {}).get("message", run.status.value)
        print(f"sluice: error: the audit {run.status.value}: {error}", file=sys.stderr)
        return FAILED
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_report(report)
    return DOCUMENTS_FAILED if report.get("verdict") != "passed" else OK


def _print_report(report: dict[str, Any]) -> None:
    for doc in report.get("documents", []):
        counts = doc["by_severity"]
        print(
            f"{doc['document']}: {doc['verdict'].upper()}  ({plural(counts['error'], 'error')}, "
            f"{plural(counts['warning'], 'warning')})"
        )
        for auditor, result in doc["auditors"].items():
            why = f" ({result['reason']})" if result.get("reason") else ""
            print(f"  {auditor:<10} {result['status']}{why}")
            for f in result["findings"]:
                if f["severity"] == "info":
                    continue
                where = f"p{f['page']}" if f.get("page") else "doc"
                quote = f'  "{f["quote"]}"' if f.get("quote") and auditor == "grammar" else ""
                hint = f" -> {f['suggestion']}" if f.get("suggestion") and auditor == "grammar" else ""
                print(f"    {f['severity']:<7} {where:<4} {f['message']}{quote}{hint}")
