"""The job API's routes: the table (``ROUTES``) and the handlers it names.

Handlers are plain functions over a :class:`common.api.app.Call`; they find
records through :func:`owned`, which answers 404 for another user's ids as for
ids that do not exist, and they change state only through the services
(:mod:`common.service.jobs`, :mod:`~common.service.control`,
:mod:`~common.service.exports`, the import services).
"""

from __future__ import annotations

import mimetypes
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar, cast, runtime_checkable

from flask import Response, request, send_file

from common import kinds
from common.api import schemas as s
from common.api.app import Call, Reply, Result, Route, iter_sse
from common.api.errors import ApiError, not_found
from common.api.sse import operation_events as sse_events
from common.core.breaker import CircuitState
from common.core.errors import NotFound
from common.core.messages import GmailItem
from common.core.models import (
    Automation,
    Export,
    ExtractionTask,
    Job,
    JobSettings,
    Operation,
    Record,
    Run,
    SourceFile,
    SourceType,
    format_timestamp,
)
from common.core.progress import compute_progress
from common.core.schema import preset
from common.core.states import (
    OperationStatus,
    RunStatus,
    TaskStatus,
)
from common.ports.store import Filter, Order, Page, Transaction
from common.service import control, exports, ids, integrations, jobs, oauth_flow, repo, tally, uploads

R = TypeVar("R", bound=Record)

# How many records a filtered job listing examines per request, at most.
SCAN_BUDGET = 2000
UPLOAD_URL_TTL = timedelta(minutes=15)
# Parts of one direct upload, at most (their records commit in one transaction).
MAX_UPLOAD_FILES = 100
# The longest file name kept, in bytes of UTF-8 (what file systems and Cloud Storage allow).
MAX_NAME_BYTES = 255
# An extension longer than this is not kept apart when a long name is shortened.
_MAX_EXTENSION_BYTES = 32


# -- helpers ------------------------------------------------------------------------


def owned(call: Call, model: type[R], ident: str) -> R:
    found = repo.get(call.deps.store, model, ident)
    if found is None or not call.owns(found[0].owner):
        raise not_found(model.__name__.lower().replace("sourcefile", "file").replace("extractiontask", "task"), ident)
    return found[0]


def _page(
    call: Call, model: type[R], filters: Sequence[Filter], order_by: Sequence[Order], q: s.PageQuery
) -> tuple[list[R], str | None]:
    limit = min(q.limit, call.settings.max_page_size)
    try:
        page: Page = call.deps.store.query(
            model.collection, filters=filters, order_by=order_by, limit=limit, start_after=q.cursor
        )
    except ValueError as exc:
        raise ApiError(400, "invalid_cursor", f"the cursor does not belong to this listing: {exc}") from exc
    return [model.from_doc(snap.data) for snap in page.items], page.next_cursor


def _mine(call: Call) -> Filter:
    if len(call.owners) == 1:
        return Filter("owner", "==", call.owner)
    return Filter("owner", "in", list(call.owners))


def _active_runs(call: Call, job_id: str) -> list[Run]:
    return [
        r
        for r in repo.scan(call.deps.store, Run, filters=[Filter("job_id", "==", job_id)])
        if r.status in jobs.ACTIVE_RUN_STATES
    ]


def _bucket_and_name(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, name = rest.partition("/")
    return bucket, name


# -- jobs ------------------------------------------------------------------------------


def create_job(call: Call) -> Result:
    body = call.body_as(s.JobCreate)
    kind_settings = kinds.get(body.kind).validate_settings(body.settings).model_dump(mode="json")
    if body.fields is not None:
        fields = body.fields
    elif body.preset is None:
        fields = []  # a kind other than extract
    else:
        try:
            fields = list(preset(body.preset or ""))
        except ValueError as exc:
            raise ApiError(422, "unknown_preset", str(exc)) from exc
    specs = None if body.exports is None else [e.spec() for e in body.exports]

    def reply(job: Job) -> Reply:
        return Reply(s.JobOut.of(job), headers={"Location": f"/v1/jobs/{job.id}"})

    job = jobs.create_job(
        call.deps,
        owner=call.owner,
        name=body.name,
        fields=fields,
        prompt=body.prompt,
        exports=specs,
        extractor=body.extractor,
        concurrent_runs=bool(body.concurrent_runs),
        review_below=body.review_below,
        kind=body.kind,
        kind_settings=kind_settings,
        guard=call.guard(reply),
    )
    return reply(job)


def list_jobs(call: Call) -> Result:
    q = call.query_as(s.JobQuery)
    field, direction = (q.sort[1:], "desc") if q.sort.startswith("-") else (q.sort, "asc")
    filters = [_mine(call)]
    if q.created_after is not None:
        filters.append(Filter("created_at", ">=", format_timestamp(q.created_after)))
    if q.created_before is not None:
        filters.append(Filter("created_at", "<", format_timestamp(q.created_before)))
    if len(filters) > 1 and field != "created_at":
        raise ApiError(
            422, "invalid_query", "a created_at range can only be combined with sort=created_at or -created_at"
        )
    order = [Order(field, "desc" if direction == "desc" else "asc")]
    limit = min(q.limit, call.settings.max_page_size)
    if q.status is None:
        found, cursor = _page(call, Job, filters, order, q)
        return s.JobList(items=[s.JobOut.of(j, jobs.latest_run(call.deps, j.id)) for j in found], next_cursor=cursor)
    # Filter by the latest run's status: examine whole pages so the cursor stays exact;
    # a page may hold fewer items than asked, with a cursor to go on.
    items: list[s.JobOut] = []
    cursor = q.cursor
    examined = 0
    while len(items) < limit and examined < SCAN_BUDGET:
        sub = s.PageQuery(limit=limit - len(items), cursor=cursor)
        found, cursor = _page(call, Job, filters, order, sub)
        examined += len(found)
        for job in found:
            latest = jobs.latest_run(call.deps, job.id)
            status = "idle" if latest is None else latest.status.value
            if status == q.status:
                items.append(s.JobOut.of(job, latest))
        if cursor is None:
            break
    return s.JobList(items=items, next_cursor=cursor)


def get_job(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    return s.JobOut.of(job, jobs.latest_run(call.deps, job.id))


def update_job(call: Call) -> Result:
    body = call.body_as(s.JobUpdate)
    job_id = call.params["job_id"]
    owned(call, Job, job_id)
    now = call.deps.clock.now()

    def tx(t: Transaction) -> Job:
        job = repo.tx_get(t, Job, job_id)
        if job is None or not call.owns(job.owner):
            raise not_found("job", job_id)
        changes: dict[str, Any] = {"updated_at": now}
        settings: JobSettings = job.settings
        if body.name is not None:
            changes["name"] = body.name
        if body.fields is not None:
            changes["fields"] = body.fields
        if body.prompt is not None:
            changes["prompt"] = body.prompt
        if body.exports is not None:
            settings = settings.model_copy(update={"exports": [e.spec() for e in body.exports]})
        if "extractor" in body.model_fields_set:
            settings = settings.model_copy(update={"extractor": body.extractor})
        if body.concurrent_runs is not None:
            settings = settings.model_copy(update={"concurrent_runs": body.concurrent_runs})
        if "review_below" in body.model_fields_set:
            settings = settings.model_copy(update={"review_below": body.review_below})
        changes["settings"] = settings
        updated = job.model_copy(update=changes)
        repo.tx_put(t, updated)
        return updated

    job = call.deps.store.transaction(tx)
    return s.JobOut.of(job, jobs.latest_run(call.deps, job.id))


def delete_job(call: Call) -> Result:
    """Delete a job with its files (and their blobs), runs, tasks (results), exports and operations.

    Children go first and the job last, so a failed delete can simply be repeated.
    """
    job = owned(call, Job, call.params["job_id"])
    if _active_runs(call, job.id):
        raise ApiError(409, "job_busy", f"job {job.id} has a run in progress", details={"hint": "Cancel it first."})
    store, blobs = call.deps.store, call.deps.blobs
    users = [a.id for a in repo.scan(store, Automation, filters=[_mine(call), Filter("job_id", "==", job.id)])]
    if users:
        raise ApiError(
            409,
            "job_busy",
            f"job {job.id} is used by automations",
            details={"automations": users, "hint": "Delete them first."},
        )
    by_job = [Filter("job_id", "==", job.id)]
    for export in list(repo.scan(store, Export, filters=by_job)):
        if export.destination.kind == "download" and export.external_id:
            blobs.delete(export.external_id)
        store.delete(Export.collection, export.id)
    for task in list(repo.scan(store, ExtractionTask, filters=by_job)):
        store.delete(ExtractionTask.collection, task.id)
    for op in list(repo.scan(store, Operation, filters=[_mine(call), *by_job])):
        store.delete(Operation.collection, op.id)
    for run in list(repo.scan(store, Run, filters=by_job)):
        store.delete(Run.collection, run.id)
    buckets: set[str] = set()
    for f in list(repo.scan(store, SourceFile, filters=by_job)):
        if f.blob_uri:
            buckets.add(_bucket_and_name(f.blob_uri)[0])
            blobs.delete(f.blob_uri)
        store.delete(SourceFile.collection, f.id)
    for bucket in buckets:  # what Sluice wrote beside the uploads (split parts)
        for info in list(blobs.list(bucket, prefix=f"jobs/{job.id}/")):
            blobs.delete(info.uri)
    store.delete(Job.collection, job.id)
    return Reply(status=204)


# -- files ------------------------------------------------------------------------------


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
    now = call.deps.clock.now()
    file_id = ids.new_id("f")
    name = _upload_name(body.name)
    record = SourceFile(
        id=file_id,
        owner=job.owner,
        job_id=job.id,
        source_type=SourceType.UPLOAD,
        external_id=f"upload:{file_id}",
        name=name,
        mime_type=body.content_type,
        size=body.size,
        created_at=now,
        updated_at=now,
    )
    repo.create(call.deps.store, record)
    uri = call.deps.bucket_uri("uploads", f"jobs/{job.id}/files/{file_id}/{jobs.safe_name(name)}")
    url = call.deps.blobs.signed_url(uri, expires=UPLOAD_URL_TTL, method="PUT")
    return Reply(
        s.UploadUrlOut(
            file_id=file_id,
            method="PUT",
            url=url,
            headers={"Content-Type": body.content_type},
            expires_at=now + UPLOAD_URL_TTL,
        ),
        status=201,
    )


def list_files(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    q = call.query_as(s.PageQuery)
    found, cursor = _page(call, SourceFile, [Filter("job_id", "==", job.id)], [], q)
    return s.FileList(items=[s.FileOut.of(f) for f in found], next_cursor=cursor)


def delete_file(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    f = owned(call, SourceFile, call.params["file_id"])
    if f.job_id != job.id:
        raise not_found("file", f.id)
    if _active_runs(call, job.id):
        raise ApiError(409, "job_busy", f"job {job.id} has a run in progress", details={"hint": "Cancel it first."})
    # The record goes (so the same bytes can be uploaded again), then its bytes.
    call.deps.store.delete(SourceFile.collection, f.id)
    if f.blob_uri:
        call.deps.blobs.delete(f.blob_uri)
    return Reply(status=204)


# -- runs ----------------------------------------------------------------------------------


def start_run(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    body = call.body_as(s.RunCreate)
    now = call.deps.clock.now()
    if body.schedule_time is not None:
        if body.schedule_time <= now:
            raise ApiError(
                422,
                "invalid_schedule_time",
                "schedule_time must be in the future",
                details={"now": format_timestamp(now), "schedule_time": format_timestamp(body.schedule_time)},
            )
        horizon = now + timedelta(days=call.settings.max_schedule_days)
        if body.schedule_time > horizon:
            raise ApiError(
                422,
                "invalid_schedule_time",
                f"schedule_time may be at most {call.settings.max_schedule_days} days ahead",
                details={"latest": format_timestamp(horizon)},
            )

    def reply(run: Run) -> Reply:
        return Reply(_run_out(call, run), status=202, headers={"Location": f"/v1/operations/{run.operation_id}"})

    try:
        run = jobs.request_run(
            call.deps,
            call.sender,
            job,
            priority=body.priority,
            schedule_time=body.schedule_time,
            guard=call.guard(reply),
        )
    except jobs.RunActive as err:
        active = err.run
        raise ApiError(
            409,
            "run_active",
            err.message,
            details={
                "active_run_id": active.id,
                "active_run_status": active.status.value,
                "operation_id": active.operation_id,
                "hint": err.hint,
            },
            headers={"Location": f"/v1/runs/{active.id}"},
        ) from err
    return reply(run)


def list_job_runs(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    q = call.query_as(s.PageQuery)
    found, cursor = _page(call, Run, [Filter("job_id", "==", job.id)], [Order("run_number", "desc")], q)
    return s.RunList(items=[_run_out(call, r) for r in found], next_cursor=cursor)


def list_runs(call: Call) -> Result:
    q = call.query_as(s.RunQuery)
    filters = [_mine(call)]
    if q.status is not None:
        filters.append(Filter("status", "==", q.status.value))
    if q.job_id is not None:
        filters.append(Filter("job_id", "==", q.job_id))
    found, cursor = _page(call, Run, filters, [Order("created_at", "desc")], q)
    return s.RunList(items=[_run_out(call, r) for r in found], next_cursor=cursor)


def _run_out(call: Call, run: Run) -> s.RunOut:
    """A run as clients see it: exact counters, counted from its tasks while it runs."""
    return s.RunOut.of(tally.with_live_counters(call.deps.store, run))


def get_run(call: Call) -> Result:
    return _run_out(call, owned(call, Run, call.params["run_id"]))


def cancel_run(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    return _run_out(call, control.cancel_run(call.deps, run.id, owner=run.owner))


def pause_run(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    return _run_out(call, control.pause_run(call.deps, run.id, owner=run.owner))


def resume_run(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    return _run_out(call, control.resume_run(call.deps, call.sender, run.id, owner=run.owner))


def retry_run(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    body = call.body_as(s.RetryRequest)
    updated, n = control.retry_run(
        call.deps, call.sender, run.id, owner=run.owner, scope=body.scope, task_ids=body.task_ids
    )
    return Reply(s.RetryOut(run=_run_out(call, updated), retried=n), status=202)


def list_tasks(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    q = call.query_as(s.TaskQuery)
    filters = [Filter("run_id", "==", run.id)]
    if q.status is not None:
        filters.append(Filter("status", "==", q.status.value))
    found, cursor = _page(call, ExtractionTask, filters, [], q)
    return s.TaskList(items=[s.TaskOut.of(t) for t in found], next_cursor=cursor)


def get_task(call: Call) -> Result:
    return s.TaskOut.of(owned(call, ExtractionTask, call.params["task_id"]))


# -- exports ----------------------------------------------------------------------------------


def _export_out(call: Call, e: Export) -> s.ExportOut:
    return s.ExportOut.of(e, *exports.download_url(call.deps, e))


def create_export(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    body = call.body_as(s.ExportCreate)
    export = exports.request_export(call.deps, call.sender, run, body.spec())
    return Reply(_export_out(call, export), status=202, headers={"Location": f"/v1/exports/{export.id}"})


def get_export(call: Call) -> Result:
    return _export_out(call, owned(call, Export, call.params["export_id"]))


def list_run_exports(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    q = call.query_as(s.PageQuery)
    found, cursor = _page(call, Export, [Filter("run_id", "==", run.id)], [], q)
    return s.ExportList(items=[_export_out(call, e) for e in found], next_cursor=cursor)


# -- operations ----------------------------------------------------------------------------------


def live_operation(call: Call, op_id: str) -> s.OperationOut:
    """The operation as stored, with a run's exact counters and state merged in
    (the stored progress is coalesced to about one write a second)."""
    op = owned(call, Operation, op_id)
    cancelled = 0
    if op.kind == "run":
        found = repo.get(call.deps.store, Run, op.target_id)
        if found is not None:
            run = found[0]
            now = call.deps.clock.now()
            c = tally.live_counters(call.deps.store, run)
            p = compute_progress(
                completed=c.completed, failed=c.failed + c.cancelled, total=c.total, started_at=run.started_at, now=now
            )
            cancelled = c.cancelled
            update: dict[str, Any] = {"done": c.completed, "failed": c.failed, "total": c.total, "pct": p.pct}
            if op.status is OperationStatus.RUNNING:
                update["eta_seconds"] = p.eta_seconds
                if run.status is RunStatus.PAUSED:
                    update["stage"] = "paused"
                elif run.status is RunStatus.PENDING:
                    scheduled = run.schedule_time is not None and run.schedule_time > now
                    update["stage"] = "scheduled" if scheduled else "queued"
                elif run.status is RunStatus.CANCELLED:
                    update.update({"status": OperationStatus.CANCELLED, "stage": "cancelled"})
                elif run.status is RunStatus.FAILED:
                    update.update({"status": OperationStatus.FAILED, "stage": "failed", "error": run.error})
                elif run.status is RunStatus.RUNNING and op.stage in ("queued", "scheduled"):
                    update["stage"] = "extracting"
            op = op.model_copy(update=update)
    return s.OperationOut.of(op, cancelled=cancelled)


def get_operation(call: Call) -> Result:
    return live_operation(call, call.params["operation_id"])


def list_operations(call: Call) -> Result:
    q = call.query_as(s.PageQuery)
    found, cursor = _page(call, Operation, [_mine(call)], [Order("created_at", "desc")], q)
    return s.OperationList(items=[live_operation(call, op.id) for op in found], next_cursor=cursor)


def operation_events(call: Call) -> Result:
    op_id = call.params["operation_id"]
    live_operation(call, op_id)  # 404 before the stream starts
    api = call.api
    chunks = sse_events(
        lambda: live_operation(call, op_id),
        poll_s=api.settings.sse_poll_s,
        max_s=api.settings.sse_max_s,
        sleep=api.sleep or time.sleep,
    )
    return iter_sse(chunks)


# -- blobs (the embedded backend's signed URLs) ---------------------------------------------------


@runtime_checkable
class SignedBlobs(Protocol):
    def verify_signature(self, method: str, bucket: str, name: str, expires: int, signature: str) -> bool: ...

    def path_of(self, uri: str) -> Path: ...


def _signed(call: Call, method: str) -> tuple[SignedBlobs, str]:
    blobs = call.deps.blobs
    if not isinstance(blobs, SignedBlobs):
        raise ApiError(404, "not_found", "this deployment serves no blobs (use the storage URL)")
    bucket, name = call.params["bucket"], call.params["name"]
    try:
        expires = int(request.args.get("expires", ""))
    except ValueError:
        raise ApiError(403, "invalid_signature", "the URL's expiry is missing or invalid") from None
    signature = request.args.get("signature", "")
    try:
        uri = call.deps.blobs.uri(bucket, name)
        valid = blobs.verify_signature(method, bucket, name, expires, signature)
    except ValueError:
        valid = False
    if not valid:
        raise ApiError(403, "invalid_signature", "the signed URL is invalid or has expired")
    return blobs, uri


def download_blob(call: Call) -> Result:
    blobs, uri = _signed(call, "GET")
    info = call.deps.blobs.stat(uri)
    if info is None:
        raise not_found("object", call.params["name"])
    return send_file(
        blobs.path_of(uri),
        mimetype=info.content_type or mimetypes.guess_type(uri)[0] or "application/octet-stream",
        as_attachment=True,
        download_name=Path(info.name).name,
    )


def upload_blob(call: Call) -> Result:
    _, uri = _signed(call, "PUT")
    limit = call.deps.settings.max_document_bytes
    if request.content_length is None:
        raise ApiError(411, "length_required", "send Content-Length with the upload")
    if request.content_length > limit:
        raise ApiError(
            413, "payload_too_large", f"documents may be at most {limit} bytes", details={"max_bytes": limit}
        )
    call.deps.blobs.put_stream(uri, cast(BinaryIO, request.stream), content_type=request.mimetype or None)
    return Reply(status=204)


# -- imports --------------------------------------------------------------------------------------


def _not_built(what: str) -> ApiError:
    return ApiError(
        501, "not_implemented", f"{what} is not available in this build", details={"hint": "Upload files instead."}
    )


def import_drive(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    body = call.body_as(s.DriveImportRequest)
    try:
        from common.service.drive_import import start_drive_import
    except ImportError:
        raise _not_built("Drive import") from None
    op = start_drive_import(call.deps, call.sender, job, job.owner, body.item_ids)
    return Reply(s.OperationOut.of(op), status=202, headers={"Location": f"/v1/operations/{op.id}"})


def import_gmail(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    body = call.body_as(s.GmailImportRequest)
    try:
        from common.service.gmail_import import start_gmail_import
    except ImportError:
        raise _not_built("Gmail import") from None
    items = [GmailItem(message_id=i.message_id, attachment_id=i.attachment_id) for i in body.items]
    op = start_gmail_import(call.deps, call.sender, job, job.owner, body.account, items)
    return Reply(s.OperationOut.of(op), status=202, headers={"Location": f"/v1/operations/{op.id}"})


# -- automations ------------------------------------------------------------------------------------


def create_automation(call: Call) -> Result:
    body = call.body_as(s.AutomationCreate)
    job = owned(call, Job, body.job_id)
    now = call.deps.clock.now()
    auto = Automation(
        id=ids.new_id("auto"),
        owner=job.owner,  # an automation acts for its job's owner (and that owner's Google connection)
        name=body.name,
        enabled=body.enabled,
        account=integrations.normalize_account(body.account),
        query=body.query,
        job_id=job.id,
        export=body.export.spec(),
        created_at=now,
        updated_at=now,
    )

    def reply(created: Automation) -> Reply:
        return Reply(s.AutomationOut.of(created), status=201, headers={"Location": f"/v1/automations/{created.id}"})

    guard = call.guard(reply)

    def tx(t: Transaction) -> Automation:
        if guard is not None:
            guard.check(t)
        t.create(Automation.collection, auto.id, auto.to_doc())
        if guard is not None:
            guard.record(t, auto)
        return auto

    return reply(call.deps.store.transaction(tx))


def list_automations(call: Call) -> Result:
    q = call.query_as(s.PageQuery)
    found, cursor = _page(call, Automation, [_mine(call)], [Order("created_at", "desc")], q)
    return s.AutomationList(items=[s.AutomationOut.of(a) for a in found], next_cursor=cursor)


def get_automation(call: Call) -> Result:
    return s.AutomationOut.of(owned(call, Automation, call.params["automation_id"]))


def update_automation(call: Call) -> Result:
    auto_id = call.params["automation_id"]
    body = call.body_as(s.AutomationUpdate)
    now = call.deps.clock.now()

    def tx(t: Transaction) -> Automation:
        auto = repo.tx_get(t, Automation, auto_id)
        if auto is None or not call.owns(auto.owner):
            raise not_found("automation", auto_id)
        changes: dict[str, Any] = {"updated_at": now}
        for name in ("name", "query", "enabled"):
            value = getattr(body, name)
            if value is not None:
                changes[name] = value
        if body.export is not None:
            changes["export"] = body.export.spec()
        updated = auto.model_copy(update=changes)
        repo.tx_put(t, updated)
        return updated

    return s.AutomationOut.of(call.deps.store.transaction(tx))


def delete_automation(call: Call) -> Result:
    auto = owned(call, Automation, call.params["automation_id"])
    call.deps.store.delete(Automation.collection, auto.id)
    return Reply(status=204)


# -- integrations ------------------------------------------------------------------------------------


def list_integrations(call: Call) -> Result:
    found = [i for owner in call.owners for i in integrations.status(call.deps, owner=owner)]
    return s.IntegrationList(items=[s.IntegrationOut.model_validate(i.model_dump()) for i in found])


def connect_google(call: Call) -> Result:
    body = call.body_as(s.GoogleConnectIn)
    url, flow = oauth_flow.start(call.deps, owner=call.owner, features=body.features)
    return s.GoogleConnectOut(authorization_url=url, expires_at=flow.expires_at)


def google_callback(call: Call) -> Result:
    q = call.query_as(s.GoogleCallbackQuery)
    if q.error is not None or q.code is None:
        raise ApiError(400, "oauth_refused", f"Google did not grant access: {q.error or 'no code'}")
    info = oauth_flow.complete(call.deps, state=q.state, code=q.code)
    return s.IntegrationOut.model_validate(info.model_dump())


def disconnect_integration(call: Call) -> Result:
    account = call.params["account"]
    for owner in call.owners[1:]:  # a connection made before owner ids were qualified
        if integrations.status(call.deps, owner=owner, account=account):
            info = integrations.disconnect(call.deps, owner=owner, account=account)
            return s.IntegrationOut.model_validate(info.model_dump())
    info = integrations.disconnect(call.deps, owner=call.owner, account=account)
    return s.IntegrationOut.model_validate(info.model_dump())


# -- stats and dead letters ------------------------------------------------------------------------------


@runtime_checkable
class QueueInspector(Protocol):
    def depth(self, subscription: str) -> int: ...

    def oldest_age_s(self, subscription: str) -> float | None: ...

    def dead_letters(self, subscription: str | None = None, *, limit: int = 100) -> list[Any]: ...

    def replay_dead_letter(self, seq: int) -> str: ...


def _bus(call: Call) -> QueueInspector:
    bus = call.deps.publisher
    if not isinstance(bus, QueueInspector):
        raise ApiError(501, "not_implemented", "queue inspection needs the embedded backend's bus in this build")
    return bus


def _subscriptions(call: Call) -> list[str]:
    from common.runtime.local import subscription_name

    settings = call.deps.settings
    return [
        subscription_name(settings.topic_name(topic), spec.function)
        for topic, spec in call.deps.topology.subscribed_topics().items()
    ]


def stats(call: Call) -> Result:
    store = call.deps.store
    mine = [_mine(call)]
    runs = {
        st.value: store.count(Run.collection, filters=[*mine, Filter("status", "==", st.value)]) for st in RunStatus
    }
    tasks = {
        st.value: store.count(ExtractionTask.collection, filters=[*mine, Filter("status", "==", st.value)])
        for st in TaskStatus
    }
    pages = input_tokens = output_tokens = 0
    done = [*mine, Filter("status", "==", TaskStatus.COMPLETED.value)]
    for task in repo.scan(store, ExtractionTask, filters=done):
        pages += task.result.pages if task.result is not None else 0
        input_tokens += task.usage.input_tokens or 0
        output_tokens += task.usage.output_tokens or 0
    queues: list[s.QueueStats] = []
    bus = call.deps.publisher
    if isinstance(bus, QueueInspector):
        for sub in _subscriptions(call):
            queues.append(
                s.QueueStats(
                    subscription=sub,
                    depth=bus.depth(sub),
                    oldest_age_s=bus.oldest_age_s(sub),
                    dead_lettered=sum(1 for d in bus.dead_letters(sub, limit=100_000) if d.replayed_at is None),
                )
            )
    return s.StatsOut(
        jobs=store.count(Job.collection, filters=mine),
        runs=runs,
        tasks=tasks,
        pages=pages,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        queues=queues,
        circuits=_circuits(call),
    )


def _circuits(call: Call) -> list[s.CircuitStats]:
    """The shared breakers' states; health of the dependencies, no user's data."""

    def at(epoch: float | None) -> datetime | None:
        return datetime.fromtimestamp(epoch, UTC) if epoch else None

    return [
        s.CircuitStats(
            dependency=dependency,
            state=state.state.value,
            consecutive_failures=state.failures,
            open_until=at(state.open_until) if state.state is not CircuitState.CLOSED else None,
            opened_at=at(state.opened_at),
            opens=state.opens,
            last_error=state.last_error,
        )
        for dependency, state in call.deps.breakers.snapshot().items()
    ]


def _my_dead_letters(call: Call) -> list[s.DeadLetterOut]:
    bus = _bus(call)
    owners: dict[str, bool] = {}

    def mine(job_id: str | None) -> bool:
        if job_id is None:
            return False
        if job_id not in owners:
            found = repo.get(call.deps.store, Job, job_id)
            owners[job_id] = found is not None and call.owns(found[0].owner)
        return owners[job_id]

    out: list[s.DeadLetterOut] = []
    for d in bus.dead_letters(limit=100_000):
        attrs: dict[str, str] = d.attributes
        if not mine(attrs.get("job_id")):
            continue
        out.append(
            s.DeadLetterOut(
                seq=d.seq,
                subscription=d.subscription,
                message_id=d.message_id,
                kind=attrs.get("kind"),
                job_id=attrs.get("job_id"),
                run_id=attrs.get("run_id"),
                task_id=attrs.get("task_id"),
                attempts=d.attempts,
                last_error=d.last_error,
                dead_lettered_at=d.dead_lettered_at,
                replayed_at=d.replayed_at,
            )
        )
    return out


def list_dead_letters(call: Call) -> Result:
    return s.DeadLetterList(items=_my_dead_letters(call))


def replay_dead_letter(call: Call) -> Result:
    try:
        seq = int(call.params["seq"])
    except ValueError:
        raise not_found("dead letter", call.params["seq"]) from None
    if not any(d.seq == seq for d in _my_dead_letters(call)):
        raise not_found("dead letter", str(seq))
    try:
        message_id = _bus(call).replay_dead_letter(seq)
    except NotFound:
        raise not_found("dead letter", str(seq)) from None
    return Reply(s.ReplayOut(seq=seq, message_id=message_id), status=202)


# -- the document -----------------------------------------------------------------------------------------


def openapi_document(call: Call) -> Result:
    from common.api.openapi import document

    body = document(ROUTES)
    return Response(body, mimetype="application/json")


# -- the table ----------------------------------------------------------------------------------------------

E404 = (401, 404)
E_BODY = (401, 404, 422)
E_STATE = (401, 404, 409)


def _r(method: Any, path: str, handler: Callable[[Call], Result], summary: str, tag: str, **kw: Any) -> Route:
    return Route(method=method, path=path, handler=handler, summary=summary, tag=tag, **kw)


ROUTES: list[Route] = [
    # jobs
    _r(
        "POST",
        "/v1/jobs",
        create_job,
        "Create a job",
        "jobs",
        body=s.JobCreate,
        response=s.JobOut,
        status=201,
        errors=(401, 422),
    ),
    _r("GET", "/v1/jobs", list_jobs, "List jobs", "jobs", query=s.JobQuery, response=s.JobList, errors=(400, 401, 422)),
    _r("GET", "/v1/jobs/{job_id}", get_job, "Get a job", "jobs", response=s.JobOut, errors=E404),
    _r(
        "PATCH",
        "/v1/jobs/{job_id}",
        update_job,
        "Update a job",
        "jobs",
        body=s.JobUpdate,
        response=s.JobOut,
        errors=E_BODY,
    ),
    _r(
        "DELETE",
        "/v1/jobs/{job_id}",
        delete_job,
        "Delete a job, its files, results and exports",
        "jobs",
        status=204,
        errors=E_STATE,
    ),
    # files
    _r(
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
    _r(
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
    _r(
        "GET",
        "/v1/jobs/{job_id}/files",
        list_files,
        "List a job's files",
        "files",
        query=s.PageQuery,
        response=s.FileList,
        errors=E404,
    ),
    _r(
        "DELETE",
        "/v1/jobs/{job_id}/files/{file_id}",
        delete_file,
        "Delete a file and its bytes",
        "files",
        status=204,
        errors=E_STATE,
    ),
    # runs
    _r(
        "POST",
        "/v1/jobs/{job_id}/runs",
        start_run,
        "Start a run now or at schedule_time",
        "runs",
        body=s.RunCreate,
        response=s.RunOut,
        status=202,
        errors=E_BODY,
    ),
    _r(
        "GET",
        "/v1/jobs/{job_id}/runs",
        list_job_runs,
        "List a job's runs",
        "runs",
        query=s.PageQuery,
        response=s.RunList,
        errors=E404,
    ),
    _r("GET", "/v1/runs", list_runs, "List runs", "runs", query=s.RunQuery, response=s.RunList, errors=(400, 401, 422)),
    _r("GET", "/v1/runs/{run_id}", get_run, "Get a run with its counters", "runs", response=s.RunOut, errors=E404),
    _r("POST", "/v1/runs/{run_id}/cancel", cancel_run, "Cancel a run", "runs", response=s.RunOut, errors=E_STATE),
    _r("POST", "/v1/runs/{run_id}/pause", pause_run, "Pause a running run", "runs", response=s.RunOut, errors=E_STATE),
    _r(
        "POST", "/v1/runs/{run_id}/resume", resume_run, "Resume a paused run", "runs", response=s.RunOut, errors=E_STATE
    ),
    _r(
        "POST",
        "/v1/runs/{run_id}/retry",
        retry_run,
        "Retry a finished run's failed (or all) tasks",
        "runs",
        body=s.RetryRequest,
        response=s.RetryOut,
        status=202,
        errors=(401, 404, 409, 422),
    ),
    _r(
        "GET",
        "/v1/runs/{run_id}/tasks",
        list_tasks,
        "List a run's tasks",
        "runs",
        query=s.TaskQuery,
        response=s.TaskList,
        errors=E404,
    ),
    _r(
        "GET",
        "/v1/tasks/{task_id}",
        get_task,
        "Get a task with its attempts (start, end, outcome, error, delay chosen)",
        "runs",
        response=s.TaskOut,
        errors=E404,
    ),
    # exports
    _r(
        "POST",
        "/v1/runs/{run_id}/exports",
        create_export,
        "Export a completed run",
        "exports",
        body=s.ExportCreate,
        response=s.ExportOut,
        status=202,
        errors=(401, 404, 409, 422),
    ),
    _r(
        "GET",
        "/v1/runs/{run_id}/exports",
        list_run_exports,
        "List a run's exports",
        "exports",
        query=s.PageQuery,
        response=s.ExportList,
        errors=E404,
    ),
    _r(
        "GET",
        "/v1/exports/{export_id}",
        get_export,
        "Get an export (with a signed URL when done)",
        "exports",
        response=s.ExportOut,
        errors=E404,
    ),
    # operations
    _r(
        "GET",
        "/v1/operations",
        list_operations,
        "List operations",
        "operations",
        query=s.PageQuery,
        response=s.OperationList,
        errors=(401,),
    ),
    _r(
        "GET",
        "/v1/operations/{operation_id}",
        get_operation,
        "Poll an operation",
        "operations",
        response=s.OperationOut,
        errors=E404,
    ),
    _r(
        "GET",
        "/v1/operations/{operation_id}/events",
        operation_events,
        "Stream an operation's progress (SSE)",
        "operations",
        reply="sse",
        errors=E404,
    ),
    # imports
    _r(
        "POST",
        "/v1/jobs/{job_id}/imports/drive",
        import_drive,
        "Import Drive files or folders",
        "imports",
        body=s.DriveImportRequest,
        response=s.OperationOut,
        status=202,
        errors=(401, 404, 409, 422, 501),
    ),
    _r(
        "POST",
        "/v1/jobs/{job_id}/imports/gmail",
        import_gmail,
        "Import Gmail attachments",
        "imports",
        body=s.GmailImportRequest,
        response=s.OperationOut,
        status=202,
        errors=(401, 404, 409, 422, 501),
    ),
    # automations
    _r(
        "POST",
        "/v1/automations",
        create_automation,
        "Create an automation",
        "automations",
        body=s.AutomationCreate,
        response=s.AutomationOut,
        status=201,
        errors=E_BODY,
    ),
    _r(
        "GET",
        "/v1/automations",
        list_automations,
        "List automations",
        "automations",
        query=s.PageQuery,
        response=s.AutomationList,
        errors=(401,),
    ),
    _r(
        "GET",
        "/v1/automations/{automation_id}",
        get_automation,
        "Get an automation",
        "automations",
        response=s.AutomationOut,
        errors=E404,
    ),
    _r(
        "PATCH",
        "/v1/automations/{automation_id}",
        update_automation,
        "Update an automation",
        "automations",
        body=s.AutomationUpdate,
        response=s.AutomationOut,
        errors=E_BODY,
    ),
    _r(
        "DELETE",
        "/v1/automations/{automation_id}",
        delete_automation,
        "Delete an automation",
        "automations",
        status=204,
        errors=E404,
    ),
    # integrations
    _r(
        "GET",
        "/v1/integrations",
        list_integrations,
        "List connected Google accounts",
        "integrations",
        response=s.IntegrationList,
        errors=(401,),
    ),
    _r(
        "POST",
        "/v1/integrations/google",
        connect_google,
        "Start connecting a Google account (OAuth consent URL)",
        "integrations",
        body=s.GoogleConnectIn,
        response=s.GoogleConnectOut,
        status=201,
        errors=(400, 401, 422, 501),
    ),
    _r(
        "GET",
        "/v1/integrations/google/callback",
        google_callback,
        "Google's redirect after consent: stores the account's refresh token, encrypted",
        "integrations",
        query=s.GoogleCallbackQuery,
        response=s.IntegrationOut,
        auth=False,
        errors=(400, 409, 422, 501, 503),
    ),
    _r(
        "DELETE",
        "/v1/integrations/{account}",
        disconnect_integration,
        "Disconnect a Google account",
        "integrations",
        response=s.IntegrationOut,
        errors=E404,
    ),
    # stats and dead letters
    _r(
        "GET", "/v1/stats", stats, "Counts, pages, tokens and queue health", "stats", response=s.StatsOut, errors=(401,)
    ),
    _r(
        "GET",
        "/v1/dead-letters",
        list_dead_letters,
        "List your dead-lettered messages",
        "stats",
        response=s.DeadLetterList,
        errors=(401, 501),
    ),
    _r(
        "POST",
        "/v1/dead-letters/{seq}/replay",
        replay_dead_letter,
        "Replay a dead-lettered message",
        "stats",
        response=s.ReplayOut,
        status=202,
        errors=(401, 404, 501),
    ),
    # blobs and the document (no bearer token: the signature or nothing is the credential)
    _r(
        "GET",
        "/v1/blobs/{bucket}/{name}",
        download_blob,
        "Download through a signed URL",
        "blobs",
        auth=False,
        reply="file",
        slash_params=("name",),
        errors=(403, 404),
    ),
    _r(
        "PUT",
        "/v1/blobs/{bucket}/{name}",
        upload_blob,
        "Upload through a signed URL",
        "blobs",
        auth=False,
        body_kind="raw",
        status=200,
        slash_params=("name",),
        errors=(403, 411, 413),
    ),
    _r("GET", "/v1/openapi.json", openapi_document, "This document", "meta", auth=False),
]


__all__ = ["ROUTES", "live_operation", "owned"]

# Review routes live in their own module (they import this one's helpers' neighbours, not the table).
from common.api.review_routes import ROUTES as _REVIEW_ROUTES  # noqa: E402

ROUTES.extend(_REVIEW_ROUTES)
