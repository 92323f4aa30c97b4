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
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.audit import AUDITORS
from common.cli_kind import LOCAL_OWNER, LiveLine, job_key, resume_or_start, unfinished, validated, wait
from common.cli_run import expand, plural
from common.cli_support import DOCUMENTS_FAILED, EXIT_CODES, OK, UsageError, add_common, data_dir_lock
from common.cli_support import load_settings as _load_settings

if TYPE_CHECKING:
    from common.core.models import Job, Run
    from common.service.context import Deps


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
    return validated(AuditSettings, raw).model_dump(mode="json")


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
        run, how = resume_or_start(deps, app.sender, job, keep_finished=not args.rerun)
        if how != "finished":
            line = LiveLine(sys.stderr, enabled=not args.quiet)
            app.runtime.start()
            try:
                run = wait(deps, run, lambda r: line.show(_progress_line(deps, r)))
            finally:
                app.runtime.stop()
                line.close()
    return _report(run, job, args.json)


def _job(deps: Deps, inputs: Sequence[Any], settings: dict[str, Any], args: argparse.Namespace) -> Job:
    from common.service import jobs

    files = [[str(i.path.resolve()), i.name, i.path.stat().st_size, i.path.stat().st_mtime_ns] for i in inputs]
    if args.logo is not None:
        files.append([str(args.logo.resolve()), settings["logo_file"], args.logo.stat().st_size, 0])
    key = job_key("audit", {"files": files, "settings": settings})
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


def _progress_line(deps: Deps, run: Run) -> str:
    """Progress per auditor: ``sluice: audit disclaimer 2/3  format 3/3 ...``."""
    from common.core.models import WorkItem
    from common.kinds.audit import progress_by_auditor
    from common.ports.store import Filter
    from common.service import repo

    items = list(repo.scan(deps.store, WorkItem, filters=[Filter("run_id", "==", run.id)]))
    counts = progress_by_auditor(items).items()
    line = "  ".join(f"{auditor} {c['done'] + c['failed']}/{c['total']}" for auditor, c in counts)
    return f"sluice: audit {line}" if line else ""


def _report(run: Run, job: Job, as_json: bool) -> int:
    ended = unfinished(run, job)
    if ended is not None:
        return ended
    report = run.outputs or {}
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
