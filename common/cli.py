"""The ``sluice`` command line: the whole pipeline on the embedded backend.

``sluice run`` uploads files, runs every stage in-process on the local
runtime, shows progress, and copies the exports out. Running the same command
again after an interruption resumes the unfinished job: the job is found by a
key derived from the command's inputs, and the bus still holds its messages.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from common.core.errors import ConfigError, SluiceError
from common.core.schema import FieldSpec, fields_from_names, preset

LOCAL_OWNER = "local"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SluiceError as err:
        hint = f" ({err.hint})" if err.hint else ""
        print(f"sluice: error: {err.message}{hint}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:
        print(f"sluice: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nsluice: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluice", description="Documents in, tables out.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="extract documents into a table, end to end, offline")
    run.add_argument("paths", nargs="+", type=Path, help="PDF files or folders of them")
    _schema_args(run)
    run.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=["xlsx", "csv"],
        help="export format; repeat for several (default: xlsx)",
    )
    run.add_argument("--out", type=Path, default=Path("out"), help="where to write the exports (default: out/)")
    run.add_argument("--rerun", action="store_true", help="run again even if these inputs ran to completion")
    _common_args(run)
    run.set_defaults(func=_cmd_run)

    exp = sub.add_parser("export", help="export a completed run again, in a format, to a destination")
    exp.add_argument("run_id")
    exp.add_argument("--format", choices=["xlsx", "csv"], default="xlsx")
    exp.add_argument("--to", default="download", help="download (default), drive:FOLDER or gmail:ADDRESS")
    exp.add_argument("--out", type=Path, default=Path("out"), help="where a download is written (default: out/)")
    _common_args(exp)
    exp.set_defaults(func=_cmd_export)

    eml = sub.add_parser("import-eml", help="import the attachments of saved e-mails (.eml) into a job")
    eml.add_argument("paths", nargs="+", type=Path, help=".eml files")
    eml.add_argument("--job", help="the job to import into (default: a new job with the invoice preset)")
    _common_args(eml)
    eml.set_defaults(func=_cmd_import_eml)

    srv = sub.add_parser("serve", help="run the job API and every stage offline, on localhost")
    _add_serve_arguments(srv)
    srv.set_defaults(func=_cmd_serve)

    from common.automation_cli import add_automation_commands

    add_automation_commands(sub)

    ext = sub.add_parser("extract", help="extract fields from documents and print them (no pipeline)")
    ext.add_argument("paths", nargs="+", type=Path)
    _schema_args(ext)
    ext.add_argument("--jsonl", action="store_true", help="one JSON object per document")
    ext.set_defaults(func=_cmd_extract)
    return p


def _schema_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fields", help="comma-separated field names, e.g. invoice_number,date,total")
    g.add_argument("--preset", help="a preset field schema, e.g. invoice")


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("SLUICE_DATA_DIR", ".sluice")),
        help="embedded backend's data (default: .sluice, or SLUICE_DATA_DIR)",
    )
    p.add_argument("--log-level", default=os.environ.get("SLUICE_LOG_LEVEL", "WARNING"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _schema(args: argparse.Namespace) -> tuple[FieldSpec, ...]:
    if args.fields:
        names = [n.strip() for n in args.fields.split(",") if n.strip()]
        if not names:
            raise ValueError("--fields needs at least one field name")
        return fields_from_names(names)
    return preset(args.preset or "invoice")


def _expand(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() == ".pdf"))
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    if not files:
        raise ValueError("no documents found in the given paths")
    seen: set[Path] = set()
    unique = []
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique


# -- sluice extract -------------------------------------------------------------


def _cmd_extract(args: argparse.Namespace) -> int:
    from common.extraction.offline import extract_pdf

    schema = _schema(args)
    failures = 0
    for path in _expand(args.paths):
        record: dict[str, Any] = {"file": str(path)}
        try:
            result = extract_pdf(path.read_bytes(), schema, filename=path.name)
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
    return 0 if failures == 0 else 3


# -- sluice run -----------------------------------------------------------------


@contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One embedded runtime per data directory: leases of a dead holder are safe to recover."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another sluice process is using {data_dir}", hint="Wait for it, or pass another --data-dir."
            ) from None
        yield


def _job_key(files: Sequence[Path], schema: Sequence[FieldSpec], formats: Sequence[str]) -> str:
    h = hashlib.sha256()
    ident = {
        "files": [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files],
        "fields": [s.model_dump(mode="json") for s in schema],
        "formats": list(formats),
    }
    h.update(json.dumps(ident, sort_keys=True).encode())
    return h.hexdigest()[:32]


def _cmd_run(args: argparse.Namespace) -> int:
    from common.bootstrap import bootstrap, local_bus
    from common.config import Settings
    from common.core.models import Export, ExportFormat, ExportSpec, Run
    from common.core.states import ExportStatus, RunStatus
    from common.obs import logging as slog
    from common.obs import tracing
    from common.runtime.local import LocalRuntime
    from common.service import jobs, repo
    from common.service.context import TopologySender

    slog.configure(args.log_level, "text")
    schema = _schema(args)
    formats = args.formats or ["xlsx"]
    files = _expand(args.paths)
    settings = Settings(backend="local", data_dir=args.data_dir)
    with _data_dir_lock(args.data_dir):
        deps = bootstrap(settings)
        bus = local_bus(deps)
        runtime = LocalRuntime(deps, bus)
        runtime.declare()
        sender = TopologySender(deps.topology, settings, bus, deps.clock)

        # One trace from the uploads to the export (spans are ids only unless an exporter is configured).
        with tracing.span("cli.run", parent=None):
            key = _job_key(files, schema, formats)
            job = jobs.find_job_by_key(deps, owner=LOCAL_OWNER, key=key)
            resumed = job is not None
            if job is None:
                name = files[0].name if len(files) == 1 else f"{files[0].name} and {len(files) - 1} more"
                job = jobs.create_job(
                    deps,
                    owner=LOCAL_OWNER,
                    name=name,
                    fields=schema,
                    exports=[ExportSpec(format=ExportFormat(f)) for f in formats],
                    key=key,
                )
            for f in files:
                jobs.add_upload(deps, job, f)
            run = jobs.latest_run(deps, job.id)
            if run is not None and not args.rerun and _finished_cleanly(deps, run):
                _say(args, f"job {job.id} already ran on these inputs (run {run.run_number}); --rerun runs it again")
            elif run is not None and _unfinished(deps, run):
                if run.status is RunStatus.PENDING:
                    from common.core.messages import StartRun

                    sender.send(StartRun(run_id=run.id, job_id=job.id))  # its first send may have been lost
                _say(args, f"resuming run {run.run_number} of job {job.id}")
            else:
                run = jobs.request_run(deps, sender, job)
                if resumed:
                    _say(args, f"job {job.id} finished before; starting run {run.run_number}")

        runtime.start()
        try:
            bar = _ProgressBar(sys.stderr, enabled=not args.quiet)
            while True:
                run = repo.require(deps.store, Run, run.id)[0]
                exports = [
                    Export.from_doc(s.data)
                    for s in deps.store.query(Export.collection, filters=[_f("run_id", run.id)]).items
                ]
                bar.show(run, exports)
                exports_done = all(e.status in (ExportStatus.COMPLETED, ExportStatus.FAILED) for e in exports)
                if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
                    break
                if run.status is RunStatus.COMPLETED and exports_done and len(exports) == len(run.exports):
                    break
                time.sleep(0.1)
            bar.close()
        finally:
            runtime.stop()

    if run.status is RunStatus.FAILED:
        err = run.error or {}
        raise SluiceError(err.get("message", "the run failed"), hint=err.get("hint"))
    return _deliver_outputs(args, deps, run, exports)


def _cmd_export(args: argparse.Namespace) -> int:
    from common.bootstrap import bootstrap, local_bus
    from common.config import Settings
    from common.core.models import Destination, Export, ExportFormat, ExportSpec, Run
    from common.core.states import ExportStatus
    from common.obs import logging as slog
    from common.runtime.local import LocalRuntime
    from common.service import exports, repo
    from common.service.context import TopologySender

    slog.configure(args.log_level, "text")
    spec = ExportSpec(format=ExportFormat(args.format), destination=Destination.parse(args.to))
    settings = Settings(backend="local", data_dir=args.data_dir)
    with _data_dir_lock(args.data_dir):
        deps = bootstrap(settings)
        bus = local_bus(deps)
        found = repo.get(deps.store, Run, args.run_id)
        if found is None or found[0].owner != LOCAL_OWNER:
            raise SluiceError(f"run {args.run_id} not found", hint="sluice run prints the run id it created.")
        run = found[0]
        export = exports.request_export(deps, TopologySender(deps.topology, settings, bus, deps.clock), run, spec)
        runtime = LocalRuntime(deps, bus)
        runtime.start()
        try:
            while export.status not in (ExportStatus.COMPLETED, ExportStatus.FAILED):
                time.sleep(0.05)
                export = repo.require(deps.store, Export, export.id)[0]
        finally:
            runtime.stop()
    if export.status is ExportStatus.FAILED:
        err = export.error or {}
        raise SluiceError(err.get("message", "the export failed"), hint=err.get("hint"))
    if spec.destination.kind == "download" and export.external_id is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        dest = args.out / f"sluice-run{run.run_number}-{export.id}.{spec.format.value}"
        with deps.blobs.open(export.external_id) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
        print(f"{dest}  ({export.row_count} rows{_failed_note(export.failed_count)})")
        print(f"url: {export.url}")
    else:
        print(f"{spec.destination}: {export.external_id}")
    return 0


def _add_serve_arguments(p: argparse.ArgumentParser) -> None:
    from common import serve

    serve.add_arguments(p)


def _cmd_serve(args: argparse.Namespace) -> int:
    from common import serve

    return serve.serve(args)


def _cmd_import_eml(args: argparse.Namespace) -> int:
    from common.imports.eml import cmd_import_eml

    return cmd_import_eml(args)


def _f(field: str, value: str) -> Any:
    from common.ports.store import Filter

    return Filter(field, "==", value)


def _unfinished(deps: Any, run: Any) -> bool:
    from common.core.models import Export
    from common.core.states import ExportStatus, RunStatus

    if run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED):
        return True
    if run.status is not RunStatus.COMPLETED:
        return False
    exports = [
        Export.from_doc(s.data) for s in deps.store.query(Export.collection, filters=[_f("run_id", run.id)]).items
    ]
    return len(exports) < len(run.exports) or any(e.status is not ExportStatus.COMPLETED for e in exports)


def _finished_cleanly(deps: Any, run: Any) -> bool:
    from common.core.states import RunStatus

    return bool(run.status is RunStatus.COMPLETED and not _unfinished(deps, run))


def _deliver_outputs(args: argparse.Namespace, deps: Any, run: Any, exports: list[Any]) -> int:
    from common.core.states import ExportStatus

    args.out.mkdir(parents=True, exist_ok=True)
    code = 0
    for e in sorted(exports, key=lambda e: e.id):
        if e.status is not ExportStatus.COMPLETED or e.external_id is None:
            err = e.error or {}
            print(f"sluice: export {e.format.value} failed: {err.get('message', 'unknown error')}", file=sys.stderr)
            code = 1
            continue
        dest = args.out / f"sluice-run{run.run_number}.{e.format.value}"
        with deps.blobs.open(e.external_id) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
        print(f"{dest}  ({e.row_count} rows{_failed_note(e.failed_count)})")
    print(f"run: {run.id} (run {run.run_number}, job {run.job_id})")
    c = run.counters
    if c.failed:
        print(
            f"sluice: {c.failed} of {c.total} documents failed; see the Failures sheet or --log-level INFO",
            file=sys.stderr,
        )
    return code


def _failed_note(n: int | None) -> str:
    return f", {n} documents failed" if n else ""


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

    def show(self, run: Any, exports: list[Any]) -> None:
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


if __name__ == "__main__":
    raise SystemExit(main())
