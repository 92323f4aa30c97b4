"""The import_drive stage: Google Drive files and folders into a job's SourceFiles.

``drive.import`` lists: the first message of an import resolves the selected
item ids (``files.get``); later ones each list *one page* of one folder
(``files.list``). A page fans out one ``drive.file`` message per file and one
``drive.import`` per subfolder, and its next page is a new ``drive.import``
message -- so no invocation walks a whole folder, and a 1,000-file folder
never meets the function timeout. ``drive.file`` copies one file into the
uploads bucket: Google Docs, Sheets, Slides and Drawings exported as PDF,
anything else streamed in chunks (``files.get_media`` + Range requests).

Bookkeeping, in the store:

* ``ImportState`` (id = the operation id): files found, done, failed; folder
  pages still to list; a fatal error (authorization lost, a folder that could
  not be listed). The import is finished when no page is pending and every
  file found is terminal; exactly one transaction sees that happen.
* ``ImportPage`` per listing page, id derived from (operation, folder, page
  token): a page is recorded once, in one transaction that creates its
  children and counts them, and keeps what it found so a redelivery re-sends
  the same follow-ups instead of listing again.
* ``ImportItem`` per (operation, Drive file): status, attempts (the fencing
  token of the current attempt, as for extraction tasks), the last error.

The SourceFile's id derives from (job, Drive file id), so a redelivered
message or a later import of the same file finds it; a file already
``uploaded`` is not fetched again.

Drive itself is behind the :class:`common.ports.google.Drive` port
(``deps.drive``, implemented by :mod:`common.adapters.google.drive`), which
answers in Sluice's errors: 429 and 5xx retryable with Retry-After, 404 and
403 permanent except Drive's 403 rate-limit reasons, 401 (after the
GoogleAuth adapter's refresh) ``ReconnectRequired``. The retry policy
(``ctx.retry_policy``) decides; a retry re-sends the message with a delay.
A lost authorization fails the import with that reason.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, BinaryIO, ClassVar, cast

from pydantic import Field

from common.core import lifecycle
from common.core.errors import (
    ConfigError,
    ErrorKind,
    NotFound,
    PermanentError,
    ReconnectRequired,
    RetryableError,
    SluiceError,
)
from common.core.messages import ImportDrive, ImportDriveFile
from common.core.models import Job, Operation, Record, SourceFile, SourceType, Timestamp
from common.core.progress import compute_progress
from common.core.states import FileStatus, OperationStatus, TaskStatus
from common.obs.logging import fields
from common.ports.google import DRIVE_READONLY, DriveFiles
from common.ports.store import Transaction
from common.service import ids, integrations, repo
from common.service.context import Context, Deps, Sender
from common.service.jobs import safe_name

log = logging.getLogger(__name__)

SCOPES = (DRIVE_READONLY,)

FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"
GOOGLE_APPS = "application/vnd.google-apps."
PDF = "application/pdf"
# Google-native types Drive can export as PDF (Drive caps exports at 10 MB).
EXPORTABLE = frozenset(
    {
        "application/vnd.google-apps.document",
        "application/vnd.google-apps.spreadsheet",
        "application/vnd.google-apps.presentation",
        "application/vnd.google-apps.drawing",
    }
)

PAGE_SIZE = 100  # files per listing page (and per transaction that records them)
ROOT_CHUNK = 100  # selected item ids per first message
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024  # one Range request per chunk when streaming
_ENTRY_FIELDS = "id, name, mimeType, size, md5Checksum, shortcutDetails(targetId, targetMimeType)"
GET_FIELDS = _ENTRY_FIELDS
LIST_FIELDS = f"nextPageToken, files({_ENTRY_FIELDS})"

# A copy of a retry message that arrives this much before the retry is due
# is a duplicate (the real one is scheduled); nearer than this is the retry.
_EARLY = timedelta(seconds=1)


# -- records ------------------------------------------------------------------------


class PageStatus(StrEnum):
    PENDING = "pending"  # to be listed (or waiting for a retry)
    DONE = "done"  # listed; its children are recorded
    FAILED = "failed"  # could not be listed; the import is incomplete


class ImportState(Record):
    """One import's counters and listing progress; its id is the operation's."""

    collection: ClassVar[str] = "imports"

    job_id: str
    pages_pending: int = 0
    found: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0  # of ``done``: already imported before
    error: dict[str, str] | None = None  # why the import as a whole failed (a folder not listed...)
    # Authorization lost (or the like): every remaining file would fail the same
    # way, so they fail at once without calling Drive.
    halted: bool = False
    finished: bool = False


class ImportPage(Record):
    collection: ClassVar[str] = "import_pages"

    operation_id: str
    job_id: str
    folder_id: str | None = None  # None: the first message's selected items
    page_token: str | None = None
    path: str = ""
    item_ids: list[str] = Field(default_factory=list)
    status: PageStatus = PageStatus.PENDING
    attempts: int = 0  # failed attempts so far
    retry_message_id: str | None = None  # the delivery that scheduled the pending retry
    next_attempt_at: Timestamp | None = None
    files: list[str] = Field(default_factory=list)  # ImportItem ids it found
    pages: list[str] = Field(default_factory=list)  # ImportPage ids it found (subfolders, next page)
    error: dict[str, str] | None = None


class ImportItem(Record):
    collection: ClassVar[str] = "import_items"

    operation_id: str
    job_id: str
    drive_file_id: str
    file_id: str  # the SourceFile
    name: str
    mime_type: str | None = None
    size: int | None = None
    md5: str | None = None
    path: str = ""
    status: TaskStatus = TaskStatus.PENDING
    attempts: int = 0  # attempts started; the current one is the fencing token
    message_id: str | None = None
    lease_until: Timestamp | None = None
    next_attempt_at: Timestamp | None = None
    skipped: bool = False
    error: dict[str, str] | None = None


_TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


def page_id(operation_id: str, *, folder_id: str | None, page_token: str | None, item_ids: Sequence[str] = ()) -> str:
    key = f"items:{','.join(item_ids)}" if folder_id is None else f"folder:{folder_id}:{page_token or ''}"
    return f"{operation_id}--p{hashlib.sha256(key.encode()).hexdigest()[:20]}"


def item_id(operation_id: str, drive_file_id: str) -> str:
    return f"{operation_id}--{drive_file_id}"


def source_file_id(job_id: str, drive_file_id: str) -> str:
    return f"f_{hashlib.sha256(f'{job_id}:gdrive:{drive_file_id}'.encode()).hexdigest()[:24]}"


# -- command ------------------------------------------------------------------------


def start_drive_import(deps: Deps, sender: Sender, job: Job, owner: str, item_ids: Sequence[str]) -> Operation:
    """Record an import of Drive ``item_ids`` (files or folders) into ``job`` and send its first message."""
    if job.owner != owner:
        raise NotFound(f"job {job.id} not found")
    wanted = list(dict.fromkeys(i.strip() for i in item_ids if i.strip()))
    if not wanted:
        raise PermanentError("nothing to import", hint="Pick at least one Drive file or folder.")
    integrations.require_connected(deps, owner=owner)
    now = deps.clock.now()
    op_id = ids.new_id("op")
    chunks = [wanted[i : i + ROOT_CHUNK] for i in range(0, len(wanted), ROOT_CHUNK)]
    op = Operation(
        id=op_id,
        owner=owner,
        kind="import",
        target_id=job.id,
        job_id=job.id,
        stage="listing",
        created_at=now,
        updated_at=now,
    )
    state = ImportState(id=op_id, owner=owner, job_id=job.id, pages_pending=len(chunks), created_at=now, updated_at=now)
    pages = [
        ImportPage(
            id=page_id(op_id, folder_id=None, page_token=None, item_ids=chunk),
            owner=owner,
            operation_id=op_id,
            job_id=job.id,
            item_ids=chunk,
            created_at=now,
            updated_at=now,
        )
        for chunk in chunks
    ]

    def tx(t: Transaction) -> None:
        for record in (op, state, *pages):
            t.create(record.collection, record.id, record.to_doc())

    deps.store.transaction(tx)
    for chunk in chunks:
        sender.send(ImportDrive(job_id=job.id, operation_id=op_id, owner=owner, item_ids=tuple(chunk)))
    log.info("drive import requested", extra=fields(operation_id=op_id, items=len(wanted)))
    return op


# -- drive.import: listing ----------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """A file found by a listing (or a selected item that could not be read: ``error``)."""

    id: str
    name: str
    mime_type: str | None
    size: int | None
    md5: str | None
    path: str
    error: dict[str, str] | None = None


@dataclass(frozen=True)
class _Child:
    """A page to list: a subfolder's first page, or this folder's next one."""

    folder_id: str
    page_token: str | None
    path: str


@dataclass
class _Listing:
    entries: list[_Entry]
    children: list[_Child]


def start_import(msg: ImportDrive, ctx: Context) -> None:
    pid = page_id(msg.operation_id, folder_id=msg.folder_id, page_token=msg.page_token, item_ids=msg.item_ids)
    found = repo.get(ctx.store, ImportPage, pid)
    if found is None:
        raise PermanentError(f"import page {pid} is not recorded", code="unknown_import_page")
    page = found[0]
    state = _state(ctx, msg.operation_id)
    if page.status is not PageStatus.PENDING:
        _send_follow_ups(ctx, msg, page)
        _after(ctx, state)
        return
    now = ctx.now()
    if page.next_attempt_at is not None and page.next_attempt_at - now > _EARLY:
        if page.retry_message_id == ctx.message_id:
            # Redelivery of the message that scheduled the retry: its send may have been lost.
            ctx.send(msg, delay_s=(page.next_attempt_at - now).total_seconds())
        return
    attempts = page.attempts
    if state.halted and state.error is not None:
        # The import already failed as a whole (authorization lost): list nothing more.
        _settle_page(ctx, pid, attempts, failure=state.error, fatal=True)
        return
    try:
        listing = _list(ctx, msg)
    except RetryableError as err:
        decision = ctx.retry_policy.decide(err.kind, attempts + 1, server_delay_s=err.retry_after)
        if decision.retry:
            if _requeue_page(ctx, pid, attempts, err, decision.delay_s):
                log.warning("drive listing failed; will retry", extra=fields(error=str(err), delay_s=decision.delay_s))
                ctx.send(msg, delay_s=decision.delay_s)
            return
        _settle_page(ctx, pid, attempts, failure=_listing_error(msg, err, decision.reason), fatal=False)
        return
    except SluiceError as err:
        _settle_page(ctx, pid, attempts, failure=_listing_error(msg, err, None), fatal=_is_fatal(err))
        return
    _record_listing(ctx, msg, pid, listing)


def _state(ctx: Context, operation_id: str) -> ImportState:
    found = repo.get(ctx.store, ImportState, operation_id)
    if found is None:
        raise PermanentError(f"import {operation_id} is not recorded (deleted?)", code="unknown_import")
    return found[0]


def _listing_error(msg: ImportDrive, err: SluiceError, note: str | None) -> dict[str, str]:
    where = f"folder {msg.path or msg.folder_id}" if msg.folder_id else "the selected items"
    record = err.to_record()
    if not isinstance(err, ReconnectRequired):
        record["message"] = f"listing {where} failed: {err.message}" + (f" ({note})" if note else "")
    return record


def _drive_files(ctx: Context, owner: str) -> DriveFiles:
    """``owner``'s Drive (ReconnectRequired if the authorization is gone, ConfigError if none is configured)."""
    http = integrations.google_auth(ctx.deps).authorized_http(owner, SCOPES)
    drive = ctx.deps.drive
    if drive is None:
        raise ConfigError(
            "Drive access is not configured in this deployment",
            hint="The composition root must set Deps.drive (common.adapters.google.drive.GoogleDrive).",
        )
    return drive.files(http, now=ctx.now)


def _list(ctx: Context, msg: ImportDrive) -> _Listing:
    files = _drive_files(ctx, msg.owner)
    entries: list[_Entry] = []
    children: list[_Child] = []
    if msg.folder_id is None:
        for drive_id in msg.item_ids:
            try:
                meta = files.get(drive_id, fields=GET_FIELDS)
            except SluiceError as err:
                if isinstance(err, RetryableError) or _is_fatal(err):
                    raise
                # One unreadable selection (deleted, not shared) fails that item, not the import.
                entries.append(_Entry(drive_id, drive_id, None, None, None, msg.path, error=err.to_record()))
                continue
            _classify_meta(meta, msg.path, entries, children)
        return _Listing(entries, children)
    page = files.list_folder(msg.folder_id, page_token=msg.page_token, page_size=PAGE_SIZE, fields=LIST_FIELDS)
    for meta in page.get("files", []):
        _classify_meta(meta, msg.path, entries, children)
    token = page.get("nextPageToken")
    if token:
        children.append(_Child(msg.folder_id, str(token), msg.path))
    return _Listing(entries, children)


def _classify_meta(meta: dict[str, Any], path: str, entries: list[_Entry], children: list[_Child]) -> None:
    drive_id = str(meta["id"])
    name = str(meta.get("name") or drive_id)
    mime = meta.get("mimeType")
    size: int | None = int(meta["size"]) if meta.get("size") is not None else None
    md5 = meta.get("md5Checksum")
    if mime == SHORTCUT:
        target = meta.get("shortcutDetails") or {}
        if not target.get("targetId"):
            return
        drive_id, mime, size, md5 = str(target["targetId"]), target.get("targetMimeType"), None, None
    if mime == FOLDER:
        children.append(_Child(drive_id, None, f"{path}/{name}" if path else name))
        return
    entries.append(_Entry(drive_id, name, mime, size, md5, path))


def _record_listing(ctx: Context, msg: ImportDrive, pid: str, listing: _Listing) -> None:
    """Record the page's finds (once) and send them on."""
    op_id = msg.operation_id
    now = ctx.now()
    entries = list({e.id: e for e in listing.entries}.values())
    items = [_new_item(msg, e, now) for e in entries]
    pages = {
        page_id(op_id, folder_id=c.folder_id, page_token=c.page_token): ImportPage(
            id=page_id(op_id, folder_id=c.folder_id, page_token=c.page_token),
            owner=msg.owner,
            operation_id=op_id,
            job_id=msg.job_id,
            folder_id=c.folder_id,
            page_token=c.page_token,
            path=c.path,
            created_at=now,
            updated_at=now,
        )
        for c in listing.children
    }

    def tx(t: Transaction) -> tuple[ImportPage, ImportState, bool]:
        # All reads first (Firestore's rule), then the writes.
        state = repo.tx_require(t, ImportState, op_id)
        page = repo.tx_require(t, ImportPage, pid)
        if page.status is not PageStatus.PENDING:
            return page, state, False  # a concurrent copy recorded it
        known_items = {i.id for i in items if t.get(ImportItem.collection, i.id) is not None}
        known_pages = {p for p in pages if t.get(ImportPage.collection, p) is not None}
        new_items = [i for i in items if i.id not in known_items]
        for item in new_items:
            t.create(ImportItem.collection, item.id, item.to_doc())
        new_pages = [p for p in pages.values() if p.id not in known_pages]
        for child in new_pages:
            t.create(ImportPage.collection, child.id, child.to_doc())
        page = page.model_copy(
            update={
                "status": PageStatus.DONE,
                "files": [i.id for i in items],
                "pages": list(pages),
                "error": None,
                "next_attempt_at": None,
                "updated_at": now,
            }
        )
        repo.tx_put(t, page)
        state = state.model_copy(
            update={
                "found": state.found + len(new_items),
                "failed": state.failed + sum(1 for i in new_items if i.status is TaskStatus.FAILED),
                "pages_pending": state.pages_pending + len(new_pages) - 1,
                "updated_at": now,
            }
        )
        state = _finish_if_complete(state)
        repo.tx_put(t, state)
        return page, state, True

    page, state, recorded = ctx.store.transaction(tx)
    if recorded:
        log.info(
            "drive page listed",
            extra=fields(files=len(items), folders_or_pages=len(pages), path=msg.path or "/"),
        )
    _send_follow_ups(ctx, msg, page)
    _after(ctx, state)


def _new_item(msg: ImportDrive, entry: _Entry, now: datetime) -> ImportItem:
    return ImportItem(
        id=item_id(msg.operation_id, entry.id),
        owner=msg.owner,
        operation_id=msg.operation_id,
        job_id=msg.job_id,
        drive_file_id=entry.id,
        file_id=source_file_id(msg.job_id, entry.id),
        name=entry.name,
        mime_type=entry.mime_type,
        size=entry.size,
        md5=entry.md5,
        path=entry.path,
        status=TaskStatus.FAILED if entry.error else TaskStatus.PENDING,
        error=entry.error,
        created_at=now,
        updated_at=now,
    )


def _send_follow_ups(ctx: Context, msg: ImportDrive, page: ImportPage) -> None:
    """Send what a listed page found and is not finished yet (again, on redelivery: sends may have been lost)."""
    for item in (ImportItem.from_doc(s.data) for s in ctx.store.get_many(ImportItem.collection, page.files)):
        if item.status not in _TERMINAL:
            ctx.send(
                ImportDriveFile(
                    job_id=item.job_id,
                    operation_id=item.operation_id,
                    owner=item.owner,
                    drive_file_id=item.drive_file_id,
                    path=item.path,
                )
            )
    for child in (ImportPage.from_doc(s.data) for s in ctx.store.get_many(ImportPage.collection, page.pages)):
        if child.status is PageStatus.PENDING and child.folder_id is not None:
            ctx.send(
                ImportDrive(
                    job_id=child.job_id,
                    operation_id=child.operation_id,
                    owner=msg.owner,
                    item_ids=(),
                    folder_id=child.folder_id,
                    page_token=child.page_token,
                    path=child.path,
                )
            )


def _requeue_page(ctx: Context, pid: str, attempts: int, err: SluiceError, delay_s: float) -> bool:
    """Count a failed listing attempt; False if another copy of the message counted it first."""
    now = ctx.now()

    def tx(t: Transaction) -> bool:
        page = repo.tx_require(t, ImportPage, pid)
        if page.status is not PageStatus.PENDING or page.attempts != attempts:
            return False
        repo.tx_put(
            t,
            page.model_copy(
                update={
                    # Waiting for Sluice's own pacing or an open circuit is not a failed attempt.
                    "attempts": attempts if err.kind is ErrorKind.THROTTLED else attempts + 1,
                    "error": err.to_record(),
                    "retry_message_id": ctx.message_id,
                    "next_attempt_at": now + timedelta(seconds=delay_s),
                    "updated_at": now,
                }
            ),
        )
        return True

    return ctx.store.transaction(tx)


def _settle_page(ctx: Context, pid: str, attempts: int, *, failure: dict[str, str], fatal: bool) -> None:
    """A page that cannot be listed: the import cannot be complete, so it fails once the rest is done
    (at once for the remaining files too, if ``fatal``)."""
    now = ctx.now()

    def tx(t: Transaction) -> ImportState | None:
        page = repo.tx_require(t, ImportPage, pid)
        state = repo.tx_require(t, ImportState, page.operation_id)
        if page.status is not PageStatus.PENDING or page.attempts != attempts:
            return None
        repo.tx_put(t, page.model_copy(update={"status": PageStatus.FAILED, "error": failure, "updated_at": now}))
        state = state.model_copy(
            update={
                "pages_pending": state.pages_pending - 1,
                "error": state.error or failure,
                "halted": state.halted or fatal,
                "updated_at": now,
            }
        )
        state = _finish_if_complete(state)
        repo.tx_put(t, state)
        return state

    state = ctx.store.transaction(tx)
    if state is not None:
        log.warning("drive listing failed", extra=fields(error=failure.get("message"), code=failure.get("code")))
        _after(ctx, state)


# -- drive.file: one file -------------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    uri: str | None
    size: int | None
    sha256: str | None
    skipped: bool = False


def import_file(msg: ImportDriveFile, ctx: Context) -> None:
    iid = item_id(msg.operation_id, msg.drive_file_id)
    found = repo.get(ctx.store, ImportItem, iid)
    if found is None:
        raise PermanentError(f"import item {iid} is not recorded", code="unknown_import_item")
    item, version = found
    state = _state(ctx, msg.operation_id)
    now = ctx.now()
    if item.status in _TERMINAL:
        _after(ctx, state)  # the finishing write may have been lost with its worker
        return
    if item.status is TaskStatus.RUNNING:
        # The same delivery again means its attempt died: take over. Another
        # message while the attempt's lease is live is a duplicate.
        if item.message_id != ctx.message_id and item.lease_until is not None and item.lease_until > now:
            log.info("duplicate delivery while another attempt holds the file; dropping it")
            return
    elif item.next_attempt_at is not None and item.next_attempt_at - now > _EARLY:
        if item.message_id == ctx.message_id:
            ctx.send(msg, delay_s=(item.next_attempt_at - now).total_seconds())
        return
    started = item.model_copy(
        update={
            "status": TaskStatus.RUNNING,
            "attempts": item.attempts + 1,
            "message_id": ctx.message_id,
            "lease_until": now + timedelta(seconds=ctx.settings.task_lease_s),
            "next_attempt_at": None,
            "updated_at": now,
        }
    )
    repo.cas(ctx.store, started, version)  # a racing copy loses here (PreconditionFailed)
    attempt = started.attempts
    if state.halted and state.error is not None:
        _settle_item(ctx, iid, attempt, failure=state.error)
        return
    outcome = _transfer(ctx, started)
    if isinstance(outcome, RetryableError):
        decision = ctx.retry_policy.decide(outcome.kind, attempt, server_delay_s=outcome.retry_after)
        if decision.retry:
            log.warning("drive file failed; will retry", extra=fields(error=str(outcome), delay_s=decision.delay_s))
            if _settle_item(ctx, iid, attempt, retry=(outcome, decision.delay_s)):
                ctx.send(msg, delay_s=decision.delay_s)
            return
        record = outcome.to_record()
        record["message"] = f"{outcome.message} ({decision.reason})"
        _settle_item(ctx, iid, attempt, failure=record)
        return
    if isinstance(outcome, SluiceError):
        log.warning("drive file failed", extra=fields(error=str(outcome), code=outcome.code))
        _settle_item(ctx, iid, attempt, failure=outcome.to_record(), fatal=_is_fatal(outcome))
        return
    _settle_item(ctx, iid, attempt, stored=outcome)


def _is_fatal(err: SluiceError) -> bool:
    """Errors that doom every file of the import, not just this one."""
    return isinstance(err, ReconnectRequired | ConfigError) or err.code == "oauth_client_rejected"


def _transfer(ctx: Context, item: ImportItem) -> _Stored | SluiceError:
    """Copy the file into the uploads bucket; the error that stopped it is returned, not raised."""
    try:
        return _copy(ctx, item)
    except SluiceError as err:
        return err
    except Exception as exc:
        # A bug or an unforeseen answer must fail this file with its reason,
        # not loop its message until the dead-letter topic.
        log.exception("drive file import crashed")
        return PermanentError(
            f"importing {item.name} crashed: {type(exc).__name__}: {exc}",
            kind=ErrorKind.INTERNAL,
            code="import_crashed",
            hint="Report this with the log line; re-import the file after a fix.",
        )


def _copy(ctx: Context, item: ImportItem) -> _Stored:
    mime = item.mime_type or "application/octet-stream"
    exporting = mime in EXPORTABLE
    name = item.name if not exporting or item.name.lower().endswith(".pdf") else f"{item.name}.pdf"
    stored_mime = PDF if exporting else mime
    now = ctx.now()
    record = SourceFile(
        id=item.file_id,
        owner=item.owner,
        job_id=item.job_id,
        source_type=SourceType.GDRIVE,
        external_id=item.drive_file_id,
        name=name,
        mime_type=stored_mime,
        size=None if exporting else item.size,
        created_at=now,
        updated_at=now,
    )
    if not repo.create_if_absent(ctx.store, record):
        existing = repo.require(ctx.store, SourceFile, item.file_id)[0]
        if existing.status in (FileStatus.UPLOADED, FileStatus.DELETED):
            # Imported before (redelivery, or an earlier import into this job): nothing to fetch.
            return _Stored(existing.blob_uri, existing.size, existing.sha256, skipped=True)
    if mime.startswith(GOOGLE_APPS) and not exporting:
        raise PermanentError(
            f"{item.name} is a {mime.removeprefix(GOOGLE_APPS)}, which Drive cannot export as a document",
            code="drive_unsupported_type",
            hint="Only files, Docs, Sheets, Slides and Drawings can be imported.",
        )
    uri = ctx.deps.bucket_uri("uploads", f"jobs/{item.job_id}/files/{item.file_id}/{safe_name(name)}")
    metadata = {
        "job_id": item.job_id,
        "file_id": item.file_id,
        "owner": item.owner,
        "name": name,
        "source": "gdrive",
        "drive_file_id": item.drive_file_id,
    }
    files = _drive_files(ctx, item.owner)
    if exporting:
        # Drive exports at most 10 MB, so holding the PDF in memory is bounded.
        data = files.export_pdf(item.drive_file_id)
        info = ctx.blobs.put_bytes(uri, data, content_type=PDF, metadata=metadata)
        return _Stored(info.uri, info.size, hashlib.sha256(data).hexdigest())
    chunk = _chunk_bytes(ctx)
    reader = files.download(item.drive_file_id, chunk_bytes=chunk, expected_md5=item.md5, name=item.name)
    info = ctx.blobs.put_stream(
        uri, cast(BinaryIO, reader), content_type=stored_mime, metadata=metadata, chunk_size=chunk
    )
    return _Stored(info.uri, info.size, reader.sha256)


def _chunk_bytes(ctx: Context) -> int:
    return ctx.settings.drive_chunk_bytes


def _settle_item(
    ctx: Context,
    iid: str,
    attempt: int,
    *,
    stored: _Stored | None = None,
    failure: dict[str, str] | None = None,
    fatal: bool = False,
    retry: tuple[SluiceError, float] | None = None,
) -> bool:
    """Apply an attempt's outcome -- item, SourceFile and counters in one transaction -- if the
    attempt still holds the item. Returns whether it did."""
    now = ctx.now()

    def tx(t: Transaction) -> ImportState | None:
        item = repo.tx_require(t, ImportItem, iid)
        state = repo.tx_require(t, ImportState, item.operation_id)
        source = repo.tx_get(t, SourceFile, item.file_id)
        if item.status is not TaskStatus.RUNNING or item.attempts != attempt:
            return None  # another attempt took over; its outcome stands
        if retry is not None:
            err, delay_s = retry
            repo.tx_put(
                t,
                item.model_copy(
                    update={
                        "status": TaskStatus.PENDING,
                        # Waiting for Sluice's own pacing or an open circuit is not a failed attempt.
                        "attempts": item.attempts - 1 if err.kind is ErrorKind.THROTTLED else item.attempts,
                        "error": err.to_record(),
                        "lease_until": None,
                        "next_attempt_at": now + timedelta(seconds=delay_s),
                        "updated_at": now,
                    }
                ),
            )
            return state
        if stored is not None:
            item = item.model_copy(update={"status": TaskStatus.COMPLETED, "skipped": stored.skipped, "error": None})
            state = state.model_copy(update={"done": state.done + 1, "skipped": state.skipped + int(stored.skipped)})
            if source is not None and source.status in (FileStatus.PENDING, FileStatus.FAILED):
                repo.tx_put(
                    t,
                    source.model_copy(
                        update={
                            "status": FileStatus.UPLOADED,
                            "blob_uri": stored.uri,
                            "size": stored.size,
                            "sha256": stored.sha256,
                            "error": None,
                            "updated_at": now,
                        }
                    ),
                )
            elif source is not None and source.status is FileStatus.UPLOADED and source.sha256 is None:
                # The bucket's finalize event registered it first; add what only we know.
                repo.tx_put(t, source.model_copy(update={"sha256": stored.sha256, "updated_at": now}))
        else:
            assert failure is not None
            item = item.model_copy(update={"status": TaskStatus.FAILED, "error": failure})
            state = state.model_copy(
                update={
                    "failed": state.failed + 1,
                    "error": state.error or (failure if fatal else None),
                    "halted": state.halted or fatal,
                }
            )
            if source is not None and source.status is FileStatus.PENDING:
                repo.tx_put(
                    t, source.model_copy(update={"status": FileStatus.FAILED, "error": failure, "updated_at": now})
                )
        repo.tx_put(t, item.model_copy(update={"lease_until": None, "updated_at": now}))
        state = _finish_if_complete(state.model_copy(update={"updated_at": now}))
        repo.tx_put(t, state)
        return state

    state = ctx.store.transaction(tx)
    if state is None:
        log.info("stale attempt: the file moved on without it")
        return False
    if retry is None:
        _after(ctx, state)
    return True


# -- progress -------------------------------------------------------------------------


def _finish_if_complete(state: ImportState) -> ImportState:
    if state.finished or state.pages_pending > 0 or state.done + state.failed < state.found:
        return state
    return state.model_copy(update={"finished": True})


def _after(ctx: Context, state: ImportState) -> None:
    """Reflect ``state`` on the operation: coalesced while running, always when finished."""
    final = state.finished
    now = ctx.now()
    if not ctx.deps.progress_gate.due(state.id, now, final=final, min_interval_s=ctx.settings.progress_min_interval_s):
        return

    def write(t: Transaction) -> None:
        op = repo.tx_get(t, Operation, state.id)
        current = repo.tx_get(t, ImportState, state.id)
        if op is None or current is None or op.status is not OperationStatus.RUNNING:
            return  # a final state is final
        progress = compute_progress(
            completed=current.done, failed=current.failed, total=current.found, started_at=current.created_at, now=now
        )
        if not current.finished:
            if op.done + op.failed > progress.done + progress.failed:
                return  # a late write must not move progress back
            if current.pages_pending > 0:
                # More files may still be found: never show 100 % while listing.
                progress = progress.model_copy(update={"pct": min(progress.pct, 99.0), "eta_seconds": None})
            stage = "listing" if current.pages_pending > 0 else "importing"
            updated = lifecycle.update_operation(op, progress=progress, stage=stage, now=now, message=_summary(current))
        else:
            failed = current.error is not None
            updated = lifecycle.update_operation(
                op,
                progress=progress,
                stage="failed" if failed else "done",
                now=now,
                message=(current.error or {}).get("message", "") if failed else _summary(current),
                status=OperationStatus.FAILED if failed else OperationStatus.DONE,
                error=current.error,
            )
        repo.tx_put(t, updated)

    ctx.store.transaction(write)
    if final:
        log.info(
            "drive import finished",
            extra=fields(found=state.found, done=state.done, failed=state.failed, skipped=state.skipped),
        )


def _summary(state: ImportState) -> str:
    text = f"{state.done} of {state.found} files imported"
    if state.skipped:
        text += f" ({state.skipped} already there)"
    if state.failed:
        text += f", {state.failed} failed"
    return text
