"""Writing exports into the user's ``--out`` folder without ever replacing someone else's file.

An export is named after its job and run (``invoices-run3.csv``). Several jobs,
or several data directories, may write to one folder, and two of them can
want the same name (every first run of a job called "invoices" is
``invoices-run1``). The folder's manifest (``.sluice-exports.json``) records
who wrote each file: the data directory, job and run. A name is reused only
by the run that wrote it (delivering the same run again); otherwise the file
gets a name that also carries the job id. A file the manifest does not know
(written by a person or another tool) is never replaced either.

The manifest is read and rewritten under an exclusive lock on it, so two
``sluice`` processes delivering into one folder at once cannot pick the same
name. Each export is written to a temporary file and renamed into place, so a
crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MANIFEST = ".sluice-exports.json"


@dataclass(frozen=True)
class Writer:
    """Who delivers an export: its data directory, job and run."""

    data_dir: str
    job_id: str
    run_id: str

    def as_record(self) -> dict[str, str]:
        return {"data_dir": self.data_dir, "job_id": self.job_id, "run_id": self.run_id}

    def wrote(self, record: Any) -> bool:
        return isinstance(record, dict) and all(record.get(k) == v for k, v in self.as_record().items())


def candidates(stem: str, job_id: str, run_number: int, suffix: str) -> Iterator[str]:
    """``stem-runN.ext``, then ``stem-JOBID-runN.ext``, then numbered variants of that."""
    yield f"{stem}-run{run_number}.{suffix}"
    yield f"{stem}-{job_id}-run{run_number}.{suffix}"
    n = 2
    while True:
        yield f"{stem}-{job_id}-run{run_number}-{n}.{suffix}"
        n += 1


def deliver(out: Path, names: Iterator[str], writer: Writer, source: IO[bytes], *, fmt: str) -> Path:
    """Copy ``source`` into ``out`` under the first of ``names`` that ``writer`` may use; return the path."""
    out.mkdir(parents=True, exist_ok=True)
    with _manifest(out) as files:
        name = next(n for n in names if not (out / n).exists() or writer.wrote(files.get(n)))
        dest = out / name
        tmp = out / f".{name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(source, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        files[name] = {**writer.as_record(), "format": fmt, "written_at": time.time()}
    return dest


def read_manifest(out: Path) -> dict[str, dict[str, Any]]:
    """The folder's manifest: file name -> who wrote it, in what format, when (empty if none)."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


@contextmanager
def _manifest(out: Path) -> Iterator[dict[str, Any]]:
    fd = os.open(out / MANIFEST, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            data = json.loads(f.read() or "{}")
        except ValueError:
            # Unreadable (a crash mid-write): every file in the folder now counts as someone else's.
            data = {}
        files = data.get("files") if isinstance(data, dict) else None
        files = files if isinstance(files, dict) else {}
        yield files
        f.seek(0)
        f.truncate()
        json.dump({"version": 1, "files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
