"""Registering uploaded objects as SourceFiles (the uploads bucket's finalize event).

Uploads land at ``jobs/{job_id}/files/{file_id}/{name}`` (the API hands out
signed URLs for exactly that name, and the CLI writes there). Registration is
idempotent: a file already ``uploaded`` is left as it is.
"""

from __future__ import annotations

import logging

from common.core.errors import PermanentError
from common.core.messages import BlobFinalized
from common.core.models import Job, SourceFile, SourceType
from common.service import jobs, repo
from common.service.context import Context

log = logging.getLogger(__name__)


def _is_derived(name: str) -> bool:
    """Objects Sluice writes beside an upload (``NAME.parts/...``) are not uploads."""
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
