"""A job's files: direct (multipart) uploads, signed upload URLs, listing, deletion."""

from __future__ import annotations

import tempfile
import unicodedata
from datetime import timedelta
from pathlib import Path

from flask import request

from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.errors import ApiError, not_found
from common.api.routes._shared import E404, E_STATE, busy_as_409, owned, page, route
from common.core.models import (
    Job,
    SourceFile,
)
from common.ports.store import Filter
from common.service import deletion, uploads

UPLOAD_URL_TTL = timedelta(minutes=15)
# Parts of one direct upload, at most (their records commit in one transaction).
MAX_UPLOAD_FILES = 100
# The longest file name kept, in bytes of UTF-8 (what file systems and Cloud Storage allow).
MAX_NAME_BYTES = 255
# An extension longer than this is not kept apart when a long name is shortened.
_MAX_EXTENSION_BYTES = 32


def shorten_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """``name`` cut to ``limit`` bytes of UTF-8 at a character boundary, keeping its extension."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = dot + ext if dot and stem and len((dot + ext).encode()) <= _MAX_EXTENSION_BYTES else ""
    head = name[: len(name) - len(suffix)].encode()[: limit - len(suffix.encode())]
    return head.decode("utf-8", "ignore") + suffix


def _upload_name(filename: str | None, *, part: int | None = None) -> str:
    """The name to record for an uploaded file: its last path component, shortened
    to MAX_NAME_BYTES; 422 for control characters or text that is not Unicode."""
    name = Path((filename or "").replace("\\", "/")).name
    invalid = any(unicodedata.category(c) in ("Cc", "Cs") for c in name)
    if invalid:
        where = "" if part is None else f" (file {part + 1})"
        raise ApiError(
            422,
            "invalid_file_name",
            f"the file name {name!r}{where} contains control characters or is not valid Unicode",
            details={"part": part, "hint": "Rename the file; nothing of this request was stored."},
        )
    if name in ("", ".", ".."):
        return "upload"
    return shorten_name(name)


def upload_files(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    cap = call.settings.max_upload_bytes
    if request.content_length is not None and request.content_length > cap + 64 * 1024:
        raise _too_large(cap)
    stored = request.files.getlist("file")
    if not stored:
        raise ApiError(422, "invalid_body", "send the files as multipart/form-data parts named 'file'")
    if len(stored) > MAX_UPLOAD_FILES:
        raise ApiError(422, "too_many_files", f"send at most {MAX_UPLOAD_FILES} files in one request")
    # Every name is checked before anything is stored: the request stores all its files or none.
    names = [_upload_name(storage.filename, part=i) for i, storage in enumerate(stored)]

    def reply(files: list[SourceFile]) -> Reply:
        return Reply(s.FileList(items=[s.FileOut.of(f) for f in files], next_cursor=None), status=201)

    spooled: list[uploads.Spooled] = []
    with tempfile.TemporaryDirectory(prefix="sluice-upload-") as tmp:
        for i, (storage, name) in enumerate(zip(stored, names, strict=True)):
            path = Path(tmp) / f"{i}.part"
            size = 0
            with path.open("wb") as f:
                while chunk := storage.stream.read(1024 * 1024):
                    size += len(chunk)
                    if size > cap:
                        raise _too_large(cap)
                    f.write(chunk)
            mime = storage.mimetype if storage.mimetype and storage.mimetype != "application/octet-stream" else None
            spooled.append(uploads.Spooled(path=path, name=name, mime_type=mime))
        files = uploads.add_uploads(call.deps, job, spooled, guard=call.guard(reply))
    return reply(files)


def _too_large(cap: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"a direct upload may be at most {cap} bytes",
        details={"max_bytes": cap, "hint": "Ask for a signed upload URL (POST /v1/jobs/{job_id}/uploads) instead."},
    )


def create_upload_url(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    body = call.body_as(s.UploadUrlRequest)
    limit = call.deps.settings.max_document_bytes
    if body.size is not None and body.size > limit:
        raise ApiError(
            413, "payload_too_large", f"documents may be at most {limit} bytes", details={"max_bytes": limit}
        )
    made = uploads.create_upload_url(
        call.deps, job, name=_upload_name(body.name), content_type=body.content_type, size=body.size, ttl=UPLOAD_URL_TTL
    )
    return Reply(
        s.UploadUrlOut(
            file_id=made.file_id,
            method="PUT",
            url=made.url,
            headers={"Content-Type": body.content_type},
            expires_at=made.expires_at,
        ),
        status=201,
    )


def list_files(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    q = call.query_as(s.PageQuery)
    found, cursor = page(call, SourceFile, [Filter("job_id", "==", job.id)], [], q)
    return s.FileList(items=[s.FileOut.of(f) for f in found], next_cursor=cursor)


def delete_file(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    f = owned(call, SourceFile, call.params["file_id"])
    if f.job_id != job.id:
        raise not_found("file", f.id)
    with busy_as_409():
        deletion.delete_file(call.deps, job, f)
    return Reply(status=204)


ROUTES: list[Route] = [
    route(
        "POST",
        "/v1/jobs/{job_id}/files",
        upload_files,
        "Upload files (multipart, field 'file')",
        "files",
        response=s.FileList,
        status=201,
        body_kind="multipart",
        errors=(401, 404, 413, 422),
    ),
    route(
        "POST",
        "/v1/jobs/{job_id}/uploads",
        create_upload_url,
        "Get a signed upload URL for one file",
        "files",
        body=s.UploadUrlRequest,
        response=s.UploadUrlOut,
        status=201,
        errors=(401, 404, 413, 422),
    ),
    route(
        "GET",
        "/v1/jobs/{job_id}/files",
        list_files,
        "List a job's files",
        "files",
        query=s.PageQuery,
        response=s.FileList,
        errors=E404,
    ),
    route(
        "DELETE",
        "/v1/jobs/{job_id}/files/{file_id}",
        delete_file,
        "Delete a file and its bytes",
        "files",
        status=204,
        errors=E_STATE,
    ),
]
