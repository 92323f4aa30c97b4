"""Commands the CLI and the API issue: create jobs, add uploads, request runs.

They only record and publish; the stages do the work.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from common import kinds
from common.core.cost import Estimate
from common.core.errors import NotFound, PermanentError
from common.core.models import (
    DEFAULT_KIND,
    ExportSpec,
    ExtractorName,
    Job,
    JobSettings,
    Operation,
    Priority,
    Run,
    SourceFile,
    SourceType,
)
from common.core.schema import FieldSpec
from common.core.states import FileStatus, RunStatus
from common.ports.store import Filter, Order, Transaction
from common.service import cost, ids, lifecycle_events, repo
from common.service.context import Deps, Sender
from common.service.effects import EffectGuard

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def create_job(
    deps: Deps,
    *,
    owner: str,
    name: str,
    fields: Sequence[FieldSpec],
    prompt: str = "",
    exports: Sequence[ExportSpec] | None = None,
    key: str | None = None,
    extractor: ExtractorName | None = None,
    concurrent_runs: bool = False,
    review_below: float | None = None,
    kind: str = DEFAULT_KIND,
    kind_settings: dict[str, Any] | None = None,
    guard: EffectGuard[Job] | None = None,
) -> Job:
    """Record a new job. With ``guard``, the job is created only while the guard
    holds, and the guard records it in the same transaction."""
    now = deps.clock.now()
    settings = JobSettings(extractor=extractor, concurrent_runs=concurrent_runs, review_below=review_below)
    if exports is not None:
        settings = settings.model_copy(update={"exports": list(exports)})
    job = Job(
        id=ids.new_id("job"),
        owner=owner,
        name=name,
        kind=kinds.get(kind).name,
        kind_settings=dict(kind_settings or {}),
        fields=list(fields),
        prompt=prompt,
        settings=settings,
        key=key,
        created_at=now,
        updated_at=now,
    )
    if guard is None:
        repo.create(deps.store, job)
    else:

        def tx(t: Transaction) -> Job:
            guard.check(t)
            t.create(Job.collection, job.id, job.to_doc())
            guard.record(t, job)
            return job

        deps.store.transaction(tx)
    lifecycle_events.job_created()
    return job


def find_job_by_key(deps: Deps, *, owner: str, key: str) -> Job | None:
    page = deps.store.query(
        Job.collection,
        filters=[Filter("owner", "==", owner), Filter("key", "==", key)],
        limit=1,
    )
    return Job.from_doc(page.items[0].data) if page.items else None


def safe_name(name: str) -> str:
    """A file name that is safe as the last part of an object name."""
    cleaned = _UNSAFE.sub("_", Path(name).name).strip("._") or "file"
    return cleaned[:150]


def _sha256(stream: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := stream.read(1024 * 1024):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def content_digest(path: Path) -> tuple[str, int]:
    """The SHA-256 (hex) and size of a local file."""
    with path.open("rb") as f:
        return _sha256(f)


def upload_file_id(deps: Deps, job: Job, digest: str) -> tuple[str, tuple[SourceFile, str] | None]:
    """The id of the upload of ``job`` with content ``digest``, and its record if stored."""
    file_id = f"f_{digest[:24]}"
    found = repo.get(deps.store, SourceFile, file_id)
    if found is not None and found[0].job_id != job.id:
        # Same bytes in another job: a distinct record (ids are global).
        file_id = f"f_{hashlib.sha256((job.id + digest).encode()).hexdigest()[:24]}"
        found = repo.get(deps.store, SourceFile, file_id)
    return file_id, found


def add_upload(
    deps: Deps, job: Job, path: Path, *, name: str | None = None, mime_type: str | None = None
) -> SourceFile:
    """Store a local file as an uploaded SourceFile of ``job``, named ``name`` (default: the file's name).

    Idempotent: the file id derives from the content hash, so adding the same
    bytes again (a re-run after an interruption) finds the existing file. The
    same bytes under another name are not stored or read again: the name is
    recorded in the file's ``duplicate_names`` so that it still gets its rows.
    """
    name = name or path.name
    with path.open("rb") as f:
        digest, size = _sha256(f)
    file_id, found = upload_file_id(deps, job, digest)
    now = deps.clock.now()
    if found is not None and found[0].status is FileStatus.UPLOADED:
        return _add_duplicate_name(deps, found[0].id, name)
    record = SourceFile(
        id=file_id,
        owner=job.owner,
        job_id=job.id,
        source_type=SourceType.UPLOAD,
        external_id=f"sha256:{digest}",
        name=name,
        mime_type=mime_type or _guess_mime(path),
        size=size,
        sha256=digest,
        created_at=now,
        updated_at=now,
    )
    repo.create_if_absent(deps.store, record)
    uri = deps.bucket_uri("uploads", f"jobs/{job.id}/files/{file_id}/{safe_name(path.name)}")
    with path.open("rb") as f:
        deps.blobs.put_stream(
            uri,
            f,
            content_type=record.mime_type,
            metadata={
                "job_id": job.id,
                "file_id": file_id,
                "owner": job.owner,
                "name": name,
            },
        )
    return mark_uploaded(deps, file_id, uri=uri, size=size)


def _add_duplicate_name(deps: Deps, file_id: str, name: str) -> SourceFile:
    def tx(t: Transaction) -> SourceFile:
        current = repo.tx_require(t, SourceFile, file_id)
        if name == current.name or name in current.duplicate_names:
            return current
        updated = current.model_copy(
            update={"duplicate_names": [*current.duplicate_names, name], "updated_at": deps.clock.now()}
        )
        repo.tx_put(t, updated)
        return updated

    return deps.store.transaction(tx)


def mark_uploaded(deps: Deps, file_id: str, *, uri: str, size: int | None) -> SourceFile:
    """pending/failed -> uploaded, once; a file already uploaded is left as it is."""

    def tx(t: Transaction) -> SourceFile:
        current = repo.tx_require(t, SourceFile, file_id)
        if current.status is FileStatus.UPLOADED:
            return current
        if current.status is FileStatus.FAILED:
            current = current.model_copy(update={"status": FileStatus.PENDING})
        if current.status is not FileStatus.PENDING:
            raise PermanentError(f"file {file_id} is {current.status.value}; it cannot be uploaded")
        updated = current.model_copy(
            update={
                "status": FileStatus.UPLOADED,
                "blob_uri": uri,
                "size": size if size is not None else current.size,
                "error": None,
                "updated_at": deps.clock.now(),
            }
        )
        repo.tx_put(t, updated)
        return updated

    return deps.store.transaction(tx)


def _guess_mime(path: Path) -> str:
    import mimetypes

    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def new_run_records(
    job: Job,
    *,
    run_id: str,
    now: datetime,
    exports: Sequence[ExportSpec] | None = None,
    priority: Priority = Priority.NORMAL,
    schedule_time: datetime | None = None,
    estimate: Estimate | None = None,
    kind_settings: dict[str, Any] | None = None,
) -> tuple[Run, Operation, Job]:
    """A job's next run, its Operation, and the job with its run counter moved on.

    Pure: callers write all three in one transaction (with whatever else that
    transaction must change), so run numbers never repeat. ``kind_settings``:
    this run's own (what it works on), instead of the job's.
    """
    op_id = ids.operation_id_for_run(run_id)
    run = Run(
        id=run_id,
        owner=job.owner,
        job_id=job.id,
        run_number=job.next_run_number,
        kind=job.kind,
        kind_settings=dict(job.kind_settings if kind_settings is None else kind_settings),
        priority=priority,
        schedule_time=schedule_time,
        operation_id=op_id,
        exports=list(job.settings.exports if exports is None else exports),
        # Frozen now: a job edited while this run goes on changes later runs only.
        fields=list(job.fields),
        prompt=job.prompt,
        settings=job.settings.model_copy(deep=True),
        estimate=estimate,
        created_at=now,
        updated_at=now,
    )
    op = Operation(
        id=op_id,
        owner=job.owner,
        kind="run",
        target_id=run_id,
        job_id=job.id,
        stage="queued",
        created_at=now,
        updated_at=now,
    )
    moved = job.model_copy(
        update={"next_run_number": job.next_run_number + 1, "active_run_id": run_id, "updated_at": now}
    )
    return run, op, moved


ACTIVE_RUN_STATES = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED})


class RunActive(PermanentError):
    """The job has a run that has not finished, and does not allow concurrent runs."""

    def __init__(self, job_id: str, run: Run) -> None:
        super().__init__(
            f"job {job_id} has an active run {run.id} (run {run.run_number}, {run.status.value})",
            code="run_active",
            hint="Wait for it to finish or cancel it; or allow concurrent runs on the job (concurrent_runs).",
        )
        self.run = run


def tx_check_no_active_run(t: Transaction, job: Job) -> None:
    """Raise RunActive if ``job`` has an active run and allows only one (a read:
    call it before the transaction writes). Every run start records itself as
    the job's ``active_run_id`` in the same transaction, so two racing starts
    both read the job document and only one of them commits."""
    if job.settings.concurrent_runs or job.active_run_id is None:
        return
    active = repo.tx_get(t, Run, job.active_run_id)
    if active is not None and active.status in ACTIVE_RUN_STATES:
        raise RunActive(job.id, active)


def request_run(
    deps: Deps,
    sender: Sender,
    job: Job,
    *,
    priority: Priority = Priority.NORMAL,
    schedule_time: datetime | None = None,
    guard: EffectGuard[Run] | None = None,
    kind_settings: dict[str, Any] | None = None,
) -> Run:
    """Record a new run (run_number from the job's counter) and ask for it to start.

    Raises RunActive if the job has an active run and allows only one. With
    ``guard``, the run is recorded only while the guard holds, and the guard
    records it in the same transaction. ``kind_settings``: the run's own
    (a collection's ingest run names its documents), else the job's.
    """
    # The estimate (page counts) is made once; the budget is decided inside the
    # transaction, serialised per owner, so racing starts cannot both pass it.
    planned = job if kind_settings is None else job.model_copy(update={"kind_settings": kind_settings})
    budgeted = cost.budget_estimate(deps, planned)
    estimate = budgeted.estimate
    now = deps.clock.now()
    run_id = ids.new_id("run")

    def tx(t: Transaction) -> Run:
        current = repo.tx_require(t, Job, job.id)
        if guard is not None:
            guard.check(t)
        tx_check_no_active_run(t, current)
        cost.tx_require_budget(t, deps, current.owner, budgeted)
        run, op, moved = new_run_records(
            current,
            run_id=run_id,
            now=now,
            priority=priority,
            schedule_time=schedule_time,
            estimate=estimate,
            kind_settings=kind_settings,
        )
        repo.tx_put(t, moved)
        t.create(Run.collection, run.id, run.to_doc())
        t.create(Operation.collection, op.id, op.to_doc())
        if guard is not None:
            guard.record(t, run)
        return run

    run = deps.store.transaction(tx)
    lifecycle_events.run_created()
    start = kinds.get(run.kind).start(run)
    if schedule_time is not None and schedule_time > now:
        deps.scheduler.schedule(start, at=schedule_time, name=f"run-start-{run.id}", queue=priority.value)
    else:
        sender.send(start, priority=priority)
    return run


def latest_run(deps: Deps, job_id: str) -> Run | None:
    page = deps.store.query(
        Run.collection,
        filters=[Filter("job_id", "==", job_id)],
        order_by=[Order("run_number", "desc")],
        limit=1,
    )
    return Run.from_doc(page.items[0].data) if page.items else None


def require_job(deps: Deps, job_id: str, *, owner: str) -> Job:
    found = repo.get(deps.store, Job, job_id)
    if found is None or found[0].owner != owner:
        raise NotFound(f"job {job_id} not found")
    return found[0]


def update_job(
    deps: Deps,
    job_id: str,
    *,
    owners: Sequence[str],
    changes: dict[str, Any],
    settings_changes: dict[str, Any],
) -> Job:
    """Apply ``changes`` to the job's fields and ``settings_changes`` to its settings, in
    one transaction. NotFound when the job is gone or none of ``owners`` owns it. Runs
    already recorded keep what they froze when they started."""
    now = deps.clock.now()

    def tx(t: Transaction) -> Job:
        job = repo.tx_get(t, Job, job_id)
        if job is None or job.owner not in owners:
            raise NotFound(f"job {job_id} not found")
        settings = job.settings.model_copy(update=settings_changes)
        updated = job.model_copy(update={**changes, "settings": settings, "updated_at": now})
        repo.tx_put(t, updated)
        return updated

    return deps.store.transaction(tx)
