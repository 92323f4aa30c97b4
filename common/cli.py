"""The ``sluice`` command line: the whole pipeline on the embedded backend.

``sluice run`` (in :mod:`common.cli_run`) uploads files, runs every stage
in-process on the local runtime, shows progress, and copies the exports out;
``sluice jobs``, ``runs`` and ``dead-letters`` (:mod:`common.cli_admin`) look
into a data directory. Exit codes are shared by every command and printed by
``sluice --help`` (:mod:`common.cli_support`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.cli_support import (
    DOCUMENTS_FAILED,
    EXIT_CODES,
    INTERRUPTED,
    OK,
    UsageError,
    add_common,
    data_dir_lock,
    exit_code,
    load_settings,
    message,
)
from common.core.errors import SluiceError
from common.core.schema import PRESETS, FieldSpec, fields_from_names, preset

LOCAL_OWNER = "local"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (SluiceError, ValueError, OSError) as err:
        print(f"sluice: error: {message(err)}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        print("\nsluice: interrupted; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sluice")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    from common.cli_admin import add_admin_commands
    from common.cli_enrich import add_enrich_command
    from common.cli_run import add_run_command
    from common.cli_search import add_search_commands

    p = argparse.ArgumentParser(
        prog="sluice",
        description="Documents in, tables out.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"sluice {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_run_command(sub, _schema_args)
    add_search_commands(sub)
    add_enrich_command(sub)

    exp = sub.add_parser("export", help="export a completed run again, in a format, to a destination")
    exp.add_argument(
        "run_id", metavar="RUN_ID", help="the run to export (sluice run prints it; sluice runs lists them)"
    )
    exp.add_argument("--format", choices=["xlsx", "csv"], default="xlsx", help="export format (default: xlsx)")
    exp.add_argument(
        "--to", default="download", metavar="DEST", help="download (default), drive:FOLDER_ID or gmail:ADDRESS"
    )
    exp.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR", help="where a download is written (default: out)"
    )
    add_common(exp)
    exp.set_defaults(func=_cmd_export)

    eml = sub.add_parser("import-eml", help="import the attachments of saved e-mails (.eml) into a job")
    eml.add_argument("paths", nargs="+", type=Path, metavar="EML", help=".eml files")
    eml.add_argument(
        "--job", metavar="JOB_ID", help="the job to import into (default: a new job with the invoice preset)"
    )
    add_common(eml)
    eml.set_defaults(func=_cmd_import_eml)

    add_admin_commands(sub)

    from common.cli_audit import add_audit_command
    from common.cli_research import add_research_command

    add_audit_command(sub)
    add_research_command(sub)

    srv = sub.add_parser("serve", help="run the job API and every stage offline, on localhost")
    _add_serve_arguments(srv)
    srv.set_defaults(func=_cmd_serve)

    from common.automation_cli import add_automation_commands

    add_automation_commands(sub)

    from common.fields_cli import add_fields_command

    add_fields_command(sub)

    ext = sub.add_parser("extract", help="extract fields from documents and print them (no pipeline)")
    ext.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="PDF files, or folders of them")
    _schema_args(ext)
    ext.add_argument("--jsonl", action="store_true", help="one JSON object per document (default: one text line)")
    ext.set_defaults(func=_cmd_extract)
    return p


def _schema_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--fields",
        metavar="NAMES",
        help="comma-separated snake_case field names, e.g. invoice_number,date,due_date:date,iban "
        "(name:type sets a type; `sluice fields` lists known names; default: the --preset)",
    )
    g.add_argument("--preset", help=f"a preset field schema (choices: {', '.join(sorted(PRESETS))}; default: invoice)")


def schema_from_args(args: argparse.Namespace) -> tuple[FieldSpec, ...]:
    """The fields ``--fields`` or ``--preset`` name; a wrong name is one usage error line."""
    from pydantic import ValidationError

    if args.fields:
        names = [n.strip() for n in args.fields.split(",") if n.strip()]
        if not names:
            raise UsageError("--fields needs at least one field name")
        try:
            specs = fields_from_names(names)
        except ValidationError as err:
            raise UsageError(f"--fields: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        except ValueError as err:
            raise UsageError(f"--fields: {err}") from None
        from common.core.field_catalog import field_warnings

        for warning in field_warnings(specs):
            print(f"sluice: warning: {warning}", file=sys.stderr)
        return specs
    try:
        return preset(args.preset or "invoice")
    except ValueError as err:
        raise UsageError(f"--preset: {err}") from None


def _expand(paths: Sequence[Path]) -> list[Path]:
    from common.cli_run import expand

    return [i.path for i in expand(paths)]


# -- sluice extract -------------------------------------------------------------


def _cmd_extract(args: argparse.Namespace) -> int:
    from common.extraction.offline import extract_document

    schema = schema_from_args(args)
    failures = 0
    for path in _expand(args.paths):
        record: dict[str, Any] = {"file": str(path)}
        try:
            result = extract_document(path.read_bytes(), schema, filename=path.name)
            record["fields"] = {name: fv.value for name, fv in result.fields.items()}
            for f in schema:
                record["fields"].setdefault(f.name, None)
            if len(result.results) > 1:
                record["rows"] = [dict(zip(result.columns, row, strict=False)) for row in result.results]
            record["method"] = result.method
        except SluiceError as err:
            failures += 1
            record["error"] = err.to_record()
        if args.jsonl:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        elif "error" in record:
            print(f"{path}: error: {record['error']['message']}")
        else:
            values = ", ".join(f"{k}={v!r}" for k, v in record["fields"].items())
            print(f"{path}: {values}")
    return DOCUMENTS_FAILED if failures else OK


# -- sluice export --------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    import time

    from common.bootstrap import local_app
    from common.cli_run import _failed_note, plural, write_download
    from common.core.models import Destination, Export, ExportFormat, ExportSpec, Job, Run
    from common.core.states import ExportStatus
    from common.obs import logging as slog
    from common.service import exports, repo

    slog.configure(args.log_level, "text")
    try:
        spec = ExportSpec(format=ExportFormat(args.format), destination=Destination.parse(args.to))
    except ValueError as err:
        raise UsageError(f"--to {args.to}: {' '.join(str(err).split())}") from None
    settings = load_settings(args.data_dir)
    with data_dir_lock(args.data_dir):
        app = local_app(settings)
        deps, runtime = app.deps, app.runtime
        found = repo.get(deps.store, Run, args.run_id)
        if found is None:
            raise UsageError(f"run {args.run_id} not found (sluice runs lists the runs)")
        run = found[0]
        job = repo.require(deps.store, Job, run.job_id)[0]
        export = exports.request_export(deps, app.sender, run, spec)
        runtime.start()
        try:
            while export.status not in (ExportStatus.COMPLETED, ExportStatus.FAILED):
                time.sleep(0.05)
                export = repo.require(deps.store, Export, export.id)[0]
        finally:
            runtime.stop()
        if export.status is ExportStatus.FAILED:
            failure = export.error or {}
            raise SluiceError(failure.get("message", "the export failed"), hint=failure.get("hint"))
        if spec.destination.kind == "download" and export.external_id is not None:
            dest = write_download(args.out, deps, job, run, export)
            print(f"{dest}  ({plural(export.row_count or 0, 'row')}{_failed_note(export.failed_count)})")
        else:
            print(f"{spec.destination}: {export.external_id}")
    if export.url and _served(export.url):
        print(f"url: {export.url}")
    return OK


def _served(url: str) -> bool:
    """Whether a server answers for ``url`` now (a download link is printed only then)."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=1.0) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


# -- the others ------------------------------------------------------------------


def _add_serve_arguments(p: argparse.ArgumentParser) -> None:
    from common import serve

    serve.add_arguments(p)


def _cmd_serve(args: argparse.Namespace) -> int:
    from common import serve

    return serve.serve(args)


def _cmd_import_eml(args: argparse.Namespace) -> int:
    from common.imports.eml import cmd_import_eml

    return cmd_import_eml(args)


if __name__ == "__main__":
    raise SystemExit(main())
