"""Uploads: registering uploaded objects as SourceFiles (the uploads bucket's
finalize event), and storing a direct multi-file upload all or none.

Uploads land at ``jobs/{job_id}/files/{file_id}/{name}`` (the API hands out
signed URLs for exactly that name, and the CLI writes there). Registration is
idempotent: a file already ``uploaded`` is left as it is.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from common.core.errors import PermanentError
from common.core.messages import BlobFinalized
from common.core.models import Job, SourceFile, SourceType
from common.core.states import FileStatus
from common.ports.store import Transaction
from common.service import ids, jobs, repo
from common.service.context import Context, Deps
from common.service.effects import EffectGuard

log = logging.getLogger(__name__)


def _is_derived(name: str) -> bool:
    """Objects Sluice writes beside an upload (``NAME.parts/...``) are not uploads, nor are
    documents stored for search collections (``collections/...``)."""
    if name.startswith("collections/"):
        return True
    parts = name.split("/")
    return len(parts) > 5 and parts[0] == "jobs" and parts[2] == "files" and parts[4].endswith(".parts")


def parse_upload_name(name: str) -> tuple[str, str, str]:
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != "jobs" or parts[2] != "files" or not all(parts):
        raise PermanentError(
            f"object {name!r} is not an upload (expected jobs/JOB/files/FILE/NAME)", code="not_an_upload"
        )
    return parts[1], parts[3], parts[4]


def register_upload(msg: BlobFinalized, ctx: Context) -> None:
    if _is_derived(msg.name):
        log.debug("derived object (e.g. a split document's part); not an upload")
        return
    job_id, file_id, file_name = parse_upload_name(msg.name)
    found_job = repo.get(ctx.store, Job, job_id)
    if found_job is None:
        raise PermanentError(f"upload {msg.name!r} names job {job_id}, which does not exist", code="unknown_job")
    job = found_job[0]
    uri = ctx.blobs.uri(msg.bucket, msg.name)
    if ctx.blobs.stat(uri) is None:
        # Removed since it was written (e.g. a direct upload that failed and undid
        # itself): there is nothing to register.
        log.info("uploaded object no longer exists; not registered")
        return
    now = ctx.now()
    record = SourceFile(
        id=file_id,
        owner=job.owner,
        job_id=job.id,
        source_type=SourceType.UPLOAD,
        external_id=f"upload:{msg.generation or msg.name}",
        name=msg.metadata.get("name", file_name),
        mime_type=msg.content_type,
        size=msg.size,
        created_at=now,
        updated_at=now,
    )
    created = repo.create_if_absent(ctx.store, record)
    existing = repo.require(ctx.store, SourceFile, file_id)[0]
    if existing.job_id != job.id:
        raise PermanentError(f"file id {file_id} belongs to another job", code="file_conflict")
    jobs.mark_uploaded(ctx.deps, file_id, uri=uri, size=msg.size)
    log.info("upload registered", extra={"fields": {"created": created, "file_name": record.name}})


# -- direct multi-file uploads (the API), all or none ------------------------------------------


@dataclass(frozen=True)
class Spooled:
    """One file of a direct upload, spooled to local disk, with the name to record."""

    path: Path
    name: str
    mime_type: str | None = None


@dataclass
class _Planned:
    record: SourceFile
    source: Spooled
    existing: SourceFile | None
    uri: str
    # Every name these bytes came under in the request (the first is the record's).
    names: list[str]


def add_uploads(
    deps: Deps, job: Job, files: Sequence[Spooled], *, guard: EffectGuard[list[SourceFile]] | None = None
) -> list[SourceFile]:
    """Store ``files`` as uploads of ``job``: all of them, or none if any fails.

    The records are created *pending* in one transaction (a run reads only
    uploaded files), then the bytes are stored, then one transaction marks
    them all uploaded (with ``guard``: only while it holds, recording the
    result). A failure on the way removes the records and bytes this call
    created. Same bytes twice (in the request or already in the job) are one
    file whose other names are kept in ``duplicate_names``, as with
    :func:`common.service.jobs.add_upload`.
    """
    planned = _plan(deps, job, files)
    created: list[str] = []
    try:
        created = deps.store.transaction(lambda t: _create_pending(t, job, planned))
        for p in planned:
            if p.existing is None or p.existing.status is not FileStatus.UPLOADED:
                _put(deps, job, p)
        return deps.store.transaction(lambda t: _mark_all_uploaded(t, deps, planned, guard))
    except BaseException:
        _undo(deps, [p for p in planned if p.record.id in created])
        raise


def _plan(deps: Deps, job: Job, files: Sequence[Spooled]) -> list[_Planned]:
    now = deps.clock.now()
    planned: dict[str, _Planned] = {}
    for f in files:
        digest, size = jobs.content_digest(f.path)
        file_id, found = jobs.upload_file_id(deps, job, digest)
        if file_id in planned:
            planned[file_id].names.append(f.name)
            continue
        record = SourceFile(
            id=file_id,
            owner=job.owner,
            job_id=job.id,
            source_type=SourceType.UPLOAD,
            external_id=f"sha256:{digest}",
            name=f.name,
            mime_type=f.mime_type or mimetypes.guess_type(f.name)[0] or "application/octet-stream",
            size=size,
            sha256=digest,
            created_at=now,
            updated_at=now,
        )
        uri = deps.bucket_uri("uploads", f"jobs/{job.id}/files/{file_id}/{jobs.safe_name(f.name)}")
        existing = found[0] if found is not None else None
        if existing is not None and existing.blob_uri:
            uri = existing.blob_uri
        planned[file_id] = _Planned(record, f, existing, uri, [f.name])
    return list(planned.values())


def _create_pending(t: Transaction, job: Job, planned: Sequence[_Planned]) -> list[str]:
    current = {p.record.id: repo.tx_get(t, SourceFile, p.record.id) for p in planned}
    created: list[str] = []
    for p in planned:
        found = current[p.record.id]
        if found is None:
            t.create(SourceFile.collection, p.record.id, p.record.to_doc())
            created.append(p.record.id)
        elif found.job_id != job.id:
            raise PermanentError(f"file id {p.record.id} belongs to another job", code="file_conflict")
    return created


def _put(deps: Deps, job: Job, p: _Planned) -> None:
    metadata = {"job_id": job.id, "file_id": p.record.id, "owner": job.owner, "name": p.record.name}
    with p.source.path.open("rb") as f:
        deps.blobs.put_stream(p.uri, f, content_type=p.record.mime_type, metadata=metadata)


def _mark_all_uploaded(
    t: Transaction, deps: Deps, planned: Sequence[_Planned], guard: EffectGuard[list[SourceFile]] | None
) -> list[SourceFile]:
    if guard is not None:
        guard.check(t)
    now = deps.clock.now()
    stored = [repo.tx_require(t, SourceFile, p.record.id) for p in planned]  # every read before any write
    out: list[SourceFile] = []
    for p, current in zip(planned, stored, strict=True):
        changes: dict[str, Any] = {}
        if current.status is not FileStatus.UPLOADED:
            changes.update(status=FileStatus.UPLOADED, blob_uri=p.uri, size=p.record.size, error=None)
        more = [n for n in dict.fromkeys(p.names) if n != current.name and n not in current.duplicate_names]
        if more:
            changes["duplicate_names"] = [*current.duplicate_names, *more]
        if changes:
            current = current.model_copy(update={**changes, "updated_at": now})
            repo.tx_put(t, current)
        out.append(current)
    if guard is not None:
        guard.record(t, out)
    return out


def _undo(deps: Deps, created: Sequence[_Planned]) -> None:
    """Remove the records (and their bytes) a failed upload created; files that
    were there before it are left as they were. Best effort: the failure is
    what the caller hears of."""
    for p in created:
        try:
            deps.store.delete(SourceFile.collection, p.record.id)
            deps.blobs.delete(p.uri)
        except Exception:
            log.exception("could not undo a failed upload", extra={"fields": {"file_id": p.record.id}})


@dataclass(frozen=True)
class UploadUrl:
    file_id: str
    url: str
    expires_at: datetime


def create_upload_url(
    deps: Deps, job: Job, *, name: str, content_type: str, size: int | None, ttl: timedelta
) -> UploadUrl:
    """Record a pending file for ``job`` and a signed PUT URL for its bytes (valid for
    ``ttl``); the uploads bucket's finalize event registers it once the bytes land."""
    now = deps.clock.now()
    file_id = ids.new_id("f")
    record = SourceFile(
        id=file_id,
        owner=job.owner,
        job_id=job.id,
        source_type=SourceType.UPLOAD,
        external_id=f"upload:{file_id}",
        name=name,
        mime_type=content_type,
        size=size,
        created_at=now,
        updated_at=now,
    )
    repo.create(deps.store, record)
    uri = deps.bucket_uri("uploads", f"jobs/{job.id}/files/{file_id}/{jobs.safe_name(name)}")
    url = deps.blobs.signed_url(uri, expires=ttl, method="PUT")
    return UploadUrl(file_id=file_id, url=url, expires_at=now + ttl)


def receive_signed_upload(deps: Deps, uri: str, stream: BinaryIO, *, content_type: str | None) -> None:
    """Store the bytes a client PUT to a signed upload URL (its signature already checked)."""
    deps.blobs.put_stream(uri, stream, content_type=content_type)
