"""Importing e-mail attachments into a job: Gmail messages, and the shared
"attachments of a MIME message -> SourceFiles" path that ``.eml`` files use too.

Flow (topic ``import-gmail``, function ``import_gmail``)::

    start_gmail_import ── Operation(import) + ImportGmail ──▶ start_import
        ── ImportGmailMessage × N ──▶ import_message
              messages.get → attachment parts → attachments.get (lazily)
              → import_attachments → SourceFile per attachment; a zip is kept
                as file_type=archive and its members become their own files

Idempotency under redelivery:

* A file's id derives from its job and its external id (``{messageId}:{partId}``,
  ``…/{member path}`` for archive members, see :mod:`common.adapters.google.gmail`
  for why not the ephemeral ``attachmentId``), so a redelivered message finds
  the files it made; a file already ``uploaded`` is skipped without being
  downloaded again. Object names derive from the same ids (same bytes, same
  name), and ``pending -> uploaded`` is compare-and-set.
* Each message item settles once: a marker document (``gmail_import_items``)
  with the item's counts is created if absent, so a redelivery counts nothing
  twice. No document takes every item's write (Firestore sustains about one
  write a second per document): the import's counts are derived from the
  markers. After its marker commits, an item counts the markers (one count
  query); the Operation shows the progress, written at most about once a
  second, and the item that finds every marker there sums them and finishes
  the Operation with one compare-and-set, writing the final summary
  (``gmail_imports``) in the same transaction. A crash between the marker and
  that check is mended by the redelivery, which finds its marker and checks again.

Errors: the Gmail adapter classifies them; here the retry policy decides with
the delivery's attempt number -- retry (nack with the delay, Retry-After
honoured) or record the item as failed and acknowledge, so one missing message
does not hold up the rest. Gmail calls are paced by the account's leased,
sharded limiter (:mod:`common.service.leased_ratelimit`: no document written
per call); a 429 stamps its slowdown so every instance slows down.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Protocol, cast

from pydantic import BaseModel

from common.core import leases
from common.core.archives import ArchiveLimits, MemberEntry, Reason, Verdict
from common.core.errors import (
    ConfigError,
    ErrorKind,
    NotFound,
    PermanentError,
    RetryableError,
    SluiceError,
)
from common.core.lifecycle import update_operation
from common.core.messages import GmailItem, ImportGmail, ImportGmailMessage, from_continuation
from common.core.models import FileType, Job, Operation, SourceFile, SourceType
from common.core.progress import compute_progress, should_write
from common.core.states import FileStatus, OperationStatus
from common.imports import Attachment, ImportOutcome
from common.imports.archives import CorruptMember, MemberTooLarge, OpenedArchive, open_archive
from common.imports.sniff import HEAD_BYTES, is_archive, sniff
from common.obs.logging import fields
from common.ports.store import Filter, Transaction
from common.service import ids, leased_ratelimit, repo
from common.service.context import Context, Deps, Sender
from common.service.jobs import safe_name

log = logging.getLogger(__name__)

ITEMS = "gmail_import_items"  # one marker per (operation, message item): counted once
SUMMARIES = "gmail_imports"  # per import operation: the exact counts
TOPIC = "import-gmail"

# Gmail allows 250 quota units per user per second (a moving average, so short
# bursts pass; messages.get and attachments.get cost 5 each), shared by every
# instance: 10 shards of 25 units a second (a second's worth held as a burst),
# leased 25 to 75 units at a time, so a shard is written at most about once a
# second whatever the number of instances.
GMAIL_USER_QUOTA = leases.QuotaPlan.per_minute(
    250 * 60, per_shard_per_s=25.0, burst=250, min_lease=25, min_grant=25, max_lease=75
)
_GMAIL_HINT = "Sluice is pacing Gmail calls to stay within the account's quota; the work is retried on its own."


def gmail_limiter(ctx: Context, account: str) -> leased_ratelimit.LeasedRateLimiter:
    """This process's limiter for ``account``'s Gmail quota (one per account: leases outlive a message)."""
    return leased_ratelimit.shared(
        ctx.store, ctx.clock, key=f"gmail:{account}", plan=GMAIL_USER_QUOTA, hint=_GMAIL_HINT
    )


_ARCHIVE_HINT = "The archive is kept as a file but was not expanded; split it or extract it yourself and upload it."
_REJECTED_HINT = "The archive member was refused for safety; if you trust it, extract it yourself and upload it."


# -- the Gmail client the handlers need (implemented by common.adapters.google.gmail) --


class GmailApi(Protocol):
    def attachments(self, message_id: str, *, only: str | None = None) -> list[Attachment]: ...


class GmailConnector(Protocol):
    def connect(self, owner: str, account: str, *, throttle: Callable[[float], object] | None = None) -> GmailApi: ...


def gmail_connector(deps: Deps) -> GmailConnector:
    """The deployment's Gmail access: ``deps.gmail``, which the composition root
    sets to ``common.adapters.google.gmail.GmailConnector(deps.google_auth)``.

    """
    connector = deps.gmail
    if connector is None:
        raise ConfigError(
            "Gmail access is not configured in this deployment",
            hint="The composition root must set Deps.gmail (GmailConnector over the GoogleAuth adapter).",
        )
    return cast(GmailConnector, connector)


# -- ids --------------------------------------------------------------------------


def file_id_for(job_id: str, external_id: str) -> str:
    """A file's id from its job and its source identity: redelivery finds the same record."""
    return "f_" + hashlib.sha256(f"{job_id}\x00{external_id}".encode()).hexdigest()[:24]


def _item_id(operation_id: str, message_id: str, attachment_id: str | None) -> str:
    suffix = "" if attachment_id is None else "--" + hashlib.sha256(attachment_id.encode()).hexdigest()[:16]
    return f"{operation_id}--{message_id}{suffix}"


def _unique(items: Iterable[GmailItem]) -> tuple[GmailItem, ...]:
    seen: set[tuple[str, str | None]] = set()
    out: list[GmailItem] = []
    for item in items:
        key = (item.message_id, item.attachment_id)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return tuple(out)


# -- attachments -> SourceFiles (shared by Gmail and .eml) --------------------------


def import_attachments(
    deps: Deps,
    job: Job,
    attachments: Sequence[Attachment],
    *,
    source_type: SourceType,
    limits: ArchiveLimits | None = None,
) -> list[ImportOutcome]:
    """Every attachment as a SourceFile of ``job`` (zips expanded one level); one
    outcome per attachment and per archive member, in order.

    Idempotent: files already uploaded are skipped (not even loaded). Rejections
    are recorded on the files themselves (status failed, ``error`` with the
    reason's code) and never stop the other attachments or members. Retryable
    errors (fetching, storing) propagate: the caller's retry imports the rest.
    """
    lim = limits or ArchiveLimits()
    out: list[ImportOutcome] = []
    for att in attachments:
        out.extend(_import_attachment(deps, job, att, source_type, lim))
    return out


def _import_attachment(
    deps: Deps, job: Job, att: Attachment, source_type: SourceType, limits: ArchiveLimits
) -> list[ImportOutcome]:
    file_id = file_id_for(job.id, att.external_id)
    done = _already_there(deps, file_id, attachment=att.name, member=None)
    if done is not None:
        return [done]
    now = deps.clock.now()
    try:
        data = att.load()
    except PermanentError as err:
        record = SourceFile(
            id=file_id,
            owner=job.owner,
            job_id=job.id,
            source_type=source_type,
            external_id=att.external_id,
            name=att.name,
            mime_type=att.declared_type,
            size=att.size,
            created_at=now,
            updated_at=now,
        )
        _record_failure(deps, record, err.to_record())
        return [ImportOutcome(att.name, None, "failed", err.message, file_id, err.code)]
    mime = sniff(data[:HEAD_BYTES], declared=att.declared_type, name=att.name)
    archive = is_archive(mime)
    record = SourceFile(
        id=file_id,
        owner=job.owner,
        job_id=job.id,
        source_type=source_type,
        external_id=att.external_id,
        name=att.name,
        mime_type=mime,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        file_type=FileType.ARCHIVE if archive else FileType.DOCUMENT,
        created_at=now,
        updated_at=now,
    )
    repo.create_if_absent(deps.store, record)
    members: list[ImportOutcome] = []
    refused: Verdict | None = None
    if archive:
        # Members first, the archive last: an archive marked uploaded means its
        # expansion finished, so a redelivery may skip the whole thing.
        refused, members = _expand(deps, job, record, data, source_type, limits)
    uri = _blob_uri(deps, record)
    deps.blobs.put_bytes(uri, data, content_type=mime, metadata=_metadata(record))
    note = _error_record(refused.reason, refused.detail, hint=_ARCHIVE_HINT) if refused and refused.reason else None
    _mark_imported(deps, record, uri=uri, note=note)
    head = ImportOutcome(
        att.name,
        None,
        "imported",
        refused.detail if refused else None,
        file_id,
        refused.reason.value if refused and refused.reason else None,
    )
    return [head, *members]


def _expand(
    deps: Deps, job: Job, archive: SourceFile, data: bytes, source_type: SourceType, limits: ArchiveLimits
) -> tuple[Verdict | None, list[ImportOutcome]]:
    """The archive's members as files; or the verdict that refused expanding it at all."""
    opened = open_archive(io.BytesIO(data), limits)
    if isinstance(opened, Verdict):
        log.warning("archive not expanded", extra=fields(file_id=archive.id, reason=opened.detail))
        return opened, []
    outcomes: list[ImportOutcome] = []
    with opened:
        for entry, verdict in opened.plan:
            if verdict.action == "ignore":
                continue
            outcomes.append(_import_member(deps, job, archive, opened, entry, verdict, source_type))
    rejected = sum(1 for o in outcomes if o.status == "rejected")
    log.info("archive expanded", extra=fields(file_id=archive.id, members=len(outcomes), rejected=rejected))
    return None, outcomes


def _member_name(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name or path


def _import_member(
    deps: Deps,
    job: Job,
    archive: SourceFile,
    opened: OpenedArchive,
    entry: MemberEntry,
    verdict: Verdict,
    source_type: SourceType,
) -> ImportOutcome:
    external_id = f"{archive.external_id}/{entry.name}"
    file_id = file_id_for(job.id, external_id)
    done = _already_there(deps, file_id, attachment=archive.name, member=entry.name)
    if done is not None:
        return done
    now = deps.clock.now()
    record = SourceFile(
        id=file_id,
        owner=job.owner,
        job_id=job.id,
        source_type=source_type,
        external_id=external_id,
        name=_member_name(entry.name),
        size=entry.file_size,
        parent_id=archive.id,
        created_at=now,
        updated_at=now,
    )
    if verdict.rejected and verdict.reason is not None:
        return _reject_member(deps, record, archive, entry, verdict.reason, verdict.detail)
    try:
        with opened.open_member(entry) as stream:
            head = stream.peek_head(HEAD_BYTES)
            mime = sniff(head, name=record.name)
            nested = is_archive(mime)
            record = record.model_copy(
                update={"mime_type": mime, "file_type": FileType.ARCHIVE if nested else FileType.DOCUMENT}
            )
            repo.create_if_absent(deps.store, record)
            uri = _blob_uri(deps, record)
            # Streamed: a member never sits in memory whole, and the stream
            # aborts (before the object is committed) past its declared size.
            deps.blobs.put_stream(uri, cast(BinaryIO, stream), content_type=mime, metadata=_metadata(record))
            size, digest = stream.count, stream.sha256
    except CorruptMember as exc:
        return _reject_member(deps, record, archive, entry, Reason.CORRUPT_MEMBER, str(exc))
    except MemberTooLarge as exc:
        return _reject_member(deps, record, archive, entry, Reason.SIZE_LIMIT, str(exc))
    _mark_imported(deps, record.model_copy(update={"size": size, "sha256": digest}), uri=uri)
    if nested:
        detail = f"{entry.name} is itself an archive: kept as a file, not expanded (one level only)"
        return ImportOutcome(archive.name, entry.name, "imported", detail, file_id, Reason.NESTED_ARCHIVE.value)
    return ImportOutcome(archive.name, entry.name, "imported", None, file_id)


def _reject_member(
    deps: Deps, record: SourceFile, archive: SourceFile, entry: MemberEntry, reason: Reason, detail: str
) -> ImportOutcome:
    log.warning("archive member rejected", extra=fields(archive_id=archive.id, member=entry.name, reason=reason.value))
    _record_failure(deps, record, _error_record(reason, detail, hint=_REJECTED_HINT))
    return ImportOutcome(archive.name, entry.name, "rejected", detail, record.id, reason.value)


def _error_record(reason: Reason, detail: str, *, hint: str) -> dict[str, str]:
    return {"code": reason.value, "kind": ErrorKind.INVALID_INPUT.value, "message": detail, "hint": hint}


def _already_there(deps: Deps, file_id: str, *, attachment: str, member: str | None) -> ImportOutcome | None:
    """The outcome for a file a previous delivery settled, or None if there is work to do."""
    found = repo.get(deps.store, SourceFile, file_id)
    if found is None:
        return None
    existing = found[0]
    if existing.status is FileStatus.UPLOADED:
        return ImportOutcome(attachment, member, "skipped", "already imported", file_id)
    if existing.status is FileStatus.DELETED:
        return ImportOutcome(attachment, member, "skipped", "deleted from the job", file_id)
    if existing.status is FileStatus.FAILED and member is not None and existing.error is not None:
        # A rejected member: the same bytes would be rejected again.
        return ImportOutcome(
            attachment, member, "rejected", existing.error.get("message"), file_id, existing.error.get("code")
        )
    return None


def _blob_uri(deps: Deps, record: SourceFile) -> str:
    return deps.bucket_uri("uploads", f"jobs/{record.job_id}/files/{record.id}/{safe_name(record.name)}")


def _metadata(record: SourceFile) -> dict[str, str]:
    return {"job_id": record.job_id, "file_id": record.id, "owner": record.owner, "name": record.name}


def _mark_imported(deps: Deps, record: SourceFile, *, uri: str, note: dict[str, str] | None = None) -> SourceFile:
    """pending/failed -> uploaded with the stored object's facts, once.

    The bucket's finalize event (``import_upload``) may have marked the file
    uploaded first; the facts only this import knows (hash, type) are filled in.
    """
    now = deps.clock.now()
    facts: dict[str, Any] = {
        "blob_uri": uri,
        "size": record.size,
        "sha256": record.sha256,
        "mime_type": record.mime_type,
        "file_type": record.file_type,
        "error": note,
    }

    def tx(t: Transaction) -> SourceFile:
        current = repo.tx_require(t, SourceFile, record.id)
        if current.status is FileStatus.DELETED:
            return current
        if current.status is FileStatus.UPLOADED and current.sha256 == record.sha256 and current.error == note:
            return current
        updated = current.model_copy(update={**facts, "status": FileStatus.UPLOADED, "updated_at": now})
        repo.tx_put(t, updated)
        return updated

    return deps.store.transaction(tx)


def _record_failure(deps: Deps, record: SourceFile, error: dict[str, str]) -> None:
    """The file as failed with ``error`` (created so, or pending -> failed); an uploaded file stays."""
    failed = record.model_copy(update={"status": FileStatus.FAILED, "error": error})
    if repo.create_if_absent(deps.store, failed):
        return

    def tx(t: Transaction) -> None:
        current = repo.tx_require(t, SourceFile, record.id)
        if current.status is not FileStatus.PENDING:
            return
        repo.tx_put(
            t, current.model_copy(update={"status": FileStatus.FAILED, "error": error, "updated_at": deps.clock.now()})
        )

    deps.store.transaction(tx)


# -- progress ---------------------------------------------------------------------


class ImportSummary(BaseModel):
    """Exact counts of one import: messages settled, and what their attachments became."""

    total: int = 0  # message items
    done: int = 0
    failed: int = 0
    imported: int = 0  # files (attachments and members) stored
    members: int = 0  # of which archive members
    skipped: int = 0
    rejected: int = 0
    failed_files: int = 0
    first_error: dict[str, str] | None = None

    @property
    def finished(self) -> bool:
        return self.done + self.failed >= self.total

    @classmethod
    def of_items(cls, total: int, items: Iterable[dict[str, Any]]) -> ImportSummary:
        """The import's counts, summed from its items' markers."""
        summary = cls(total=total)
        for item in items:
            counts = item.get("outcomes") or {}
            error = item.get("error")
            summary = summary.model_copy(
                update={
                    "done": summary.done + int(error is None),
                    "failed": summary.failed + int(error is not None),
                    "imported": summary.imported + int(counts.get("imported", 0)),
                    "members": summary.members + int(counts.get("members", 0)),
                    "skipped": summary.skipped + int(counts.get("skipped", 0)),
                    "rejected": summary.rejected + int(counts.get("rejected", 0)),
                    "failed_files": summary.failed_files + int(counts.get("failed", 0)),
                    "first_error": summary.first_error or error,
                }
            )
        return summary

    def progress_text(self) -> str:
        return f"{self.done + self.failed}/{self.total} messages; {self.failed} failed"

    def text(self) -> str:
        return (
            f"{self.done + self.failed}/{self.total} messages: {self.imported} files imported "
            f"({self.members} from archives), {self.skipped} already there, {self.rejected} rejected, "
            f"{self.failed_files} failed; {self.failed} messages failed"
        )


def _item_counts(outcomes: Sequence[ImportOutcome]) -> dict[str, int]:
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in ("imported", "skipped", "rejected", "failed")}
    counts["members"] = sum(1 for o in outcomes if o.status == "imported" and o.member is not None)
    return counts


def _settle_item(
    ctx: Context,
    msg: ImportGmailMessage,
    *,
    outcomes: Sequence[ImportOutcome] = (),
    error: SluiceError | None = None,
) -> None:
    """Record one message item's outcome on its own marker, exactly once; then
    show the import's progress, or finish it if this was the last item."""
    marker_id = _item_id(msg.operation_id, msg.message_id, msg.attachment_id)
    err = error.to_record() if error is not None else None

    def tx(t: Transaction) -> bool:
        if t.get(ITEMS, marker_id) is not None:
            return False
        t.create(
            ITEMS,
            marker_id,
            {
                "operation_id": msg.operation_id,
                "job_id": msg.job_id,
                "message_id": msg.message_id,
                "attachment_id": msg.attachment_id,
                "status": "failed" if err else "done",
                "error": err,
                "outcomes": _item_counts(outcomes),
                "settled_at": ctx.now().isoformat(),
            },
        )
        return True

    if not ctx.store.transaction(tx):
        log.info("message already counted in its import; nothing to do")
    fan_in(ctx, msg.operation_id)


# A round reads the Operation; another is needed only if the Operation changed
# between that read and the finishing compare-and-set (another item's progress).
_ROUNDS = 5


def fan_in(ctx: Context, operation_id: str) -> None:
    """After an item settled: finish the import if every item has, else show
    its progress (at most about every ``progress_min_interval_s``)."""
    for _ in range(_ROUNDS):
        found = repo.get(ctx.store, Operation, operation_id)
        if found is None:
            return
        op, version = found
        if op.status is not OperationStatus.RUNNING:
            _send_continuation(ctx, operation_id)  # the finisher may have died before sending it
            return
        settled = ctx.store.count(ITEMS, filters=[Filter("operation_id", "==", op.id)])
        final = settled >= op.total
        now = ctx.now()
        if not should_write(op.updated_at, now, final=final, min_interval_s=ctx.settings.progress_min_interval_s):
            return
        summary = _tally(ctx, op) if final else _progress(ctx, op, settled)
        if _show(ctx, op, version, summary, now=now):
            if final:
                log.info("gmail import finished", extra=fields(operation_id=op.id, summary=summary.text()))
                _send_continuation(ctx, operation_id)
            return
        if not final:
            return  # another item showed the progress meanwhile
    raise RetryableError(
        f"import {operation_id} kept changing while its last item finished it",
        kind=ErrorKind.CONFLICT,
        hint="The message is redelivered and finishes the import then.",
    )


def _progress(ctx: Context, op: Operation, settled: int) -> ImportSummary:
    """Counts for a progress line: items settled and failed (file counts come at the end)."""
    failed = ctx.store.count(ITEMS, filters=[Filter("operation_id", "==", op.id), Filter("status", "==", "failed")])
    return ImportSummary(total=op.total, done=settled - failed, failed=failed)


def _tally(ctx: Context, op: Operation) -> ImportSummary:
    """The exact counts, summed over every item's marker (once, at the end)."""
    return ImportSummary.of_items(op.total, _markers(ctx, op.id))


def _markers(ctx: Context, operation_id: str) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        page = ctx.store.query(
            ITEMS, filters=[Filter("operation_id", "==", operation_id)], limit=500, start_after=cursor
        )
        yield from (snap.data for snap in page.items)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _send_continuation(ctx: Context, operation_id: str) -> None:
    """Send the import's ``then`` if it completed successfully -- read from the stored
    Operation, so a redelivery re-sends what a crash may have lost (receivers are idempotent)."""
    found = repo.get(ctx.store, Operation, operation_id)
    if found is None or found[0].then is None or found[0].status is not OperationStatus.DONE:
        return
    ctx.send(from_continuation(found[0].then))


def _show(ctx: Context, op: Operation, version: str, summary: ImportSummary, *, now: datetime) -> bool:
    """Write the progress (or the end) on the Operation if it is still at
    ``version``, with the final summary in the same transaction; False if it
    changed meanwhile."""
    final = summary.finished
    status = OperationStatus.RUNNING
    if final:
        everything_failed = summary.failed >= summary.total and summary.total > 0
        status = OperationStatus.FAILED if everything_failed else OperationStatus.DONE
    progress = compute_progress(
        completed=summary.done, failed=summary.failed, total=summary.total, started_at=op.created_at, now=now
    )
    updated = update_operation(
        op,
        progress=progress,
        stage="done" if final else "importing",
        now=now,
        message=summary.text() if final else summary.progress_text(),
        status=status,
        error=summary.first_error if status is OperationStatus.FAILED else None,
    )

    def tx(t: Transaction) -> bool:
        snap = t.get(Operation.collection, op.id)
        if snap is None or snap.version != version:
            return False
        repo.tx_put(t, updated)
        if final:
            t.set(SUMMARIES, op.id, summary.model_dump(mode="json"))
        return True

    return ctx.store.transaction(tx)


# -- commands ---------------------------------------------------------------------


def start_gmail_import(
    deps: Deps,
    sender: Sender,
    job: Job,
    owner: str,
    account: str,
    items: Sequence[GmailItem],
    *,
    operation_id: str | None = None,
    then: dict[str, Any] | None = None,
) -> Operation:
    """Record an import Operation for ``items`` of ``account``'s mailbox and start it.

    ``then``: a continuation sent once the import completes successfully (see
    ``Operation.then``). ``operation_id``: a caller-derived id, which makes the
    call idempotent -- an existing operation is kept and the import re-sent
    (its handlers skip what is settled).
    """
    if job.owner != owner:
        raise NotFound(f"job {job.id} not found")
    unique = _unique(items)
    if not unique:
        raise PermanentError("no Gmail messages to import", code="empty_import", hint="Select at least one message.")
    now = deps.clock.now()
    op = Operation(
        id=operation_id or ids.new_id("op"),
        owner=owner,
        kind="import",
        target_id=job.id,
        job_id=job.id,
        stage="queued",
        total=len(unique),
        message=f"0/{len(unique)} messages",
        then=then,
        created_at=now,
        updated_at=now,
    )

    def tx(t: Transaction) -> Operation:
        existing = repo.tx_get(t, Operation, op.id) if operation_id is not None else None
        if existing is not None:
            return existing
        t.create(Operation.collection, op.id, op.to_doc())
        t.create(SUMMARIES, op.id, ImportSummary(total=len(unique)).model_dump(mode="json"))
        return op

    op = deps.store.transaction(tx)
    sender.send(ImportGmail(job_id=job.id, operation_id=op.id, owner=owner, account=account, items=unique))
    return op


# -- handlers ---------------------------------------------------------------------


def start_import(msg: ImportGmail, ctx: Context) -> None:
    """Fan out one ``gmail.message`` per item not settled yet (a redelivery re-sends only those)."""
    if repo.get(ctx.store, Job, msg.job_id) is None:
        raise PermanentError(f"job {msg.job_id} does not exist", code="unknown_job")
    unique = _unique(msg.items)
    now = ctx.now()

    def ensure(t: Transaction) -> None:
        # Another producer (an automation) may send gmail.import without an Operation.
        op = repo.tx_get(t, Operation, msg.operation_id)
        if t.get(SUMMARIES, msg.operation_id) is None:
            t.set(SUMMARIES, msg.operation_id, ImportSummary(total=len(unique)).model_dump(mode="json"))
        if op is None:
            t.create(
                Operation.collection,
                msg.operation_id,
                Operation(
                    id=msg.operation_id,
                    owner=msg.owner,
                    kind="import",
                    target_id=msg.job_id,
                    job_id=msg.job_id,
                    stage="importing",
                    total=len(unique),
                    created_at=now,
                    updated_at=now,
                ).to_doc(),
            )
        elif op.status is OperationStatus.RUNNING and op.stage == "queued":
            repo.tx_put(t, op.model_copy(update={"stage": "importing", "updated_at": now}))

    ctx.store.transaction(ensure)
    settled = {
        s.id
        for s in ctx.store.get_many(ITEMS, [_item_id(msg.operation_id, i.message_id, i.attachment_id) for i in unique])
    }
    sent = 0
    for item in unique:
        if _item_id(msg.operation_id, item.message_id, item.attachment_id) in settled:
            continue
        ctx.send(
            ImportGmailMessage(
                job_id=msg.job_id,
                operation_id=msg.operation_id,
                owner=msg.owner,
                account=msg.account,
                message_id=item.message_id,
                attachment_id=item.attachment_id,
            )
        )
        sent += 1
    log.info("gmail import fanned out", extra=fields(items=len(unique), sent=sent))


def import_message(msg: ImportGmailMessage, ctx: Context) -> None:
    """Import one message's attachments (or the one selected) into the job."""
    if ctx.store.get(ITEMS, _item_id(msg.operation_id, msg.message_id, msg.attachment_id)) is not None:
        log.info("message already imported for this operation; checking the import is finished")
        fan_in(ctx, msg.operation_id)  # the first delivery may have died before it looked
        return
    found = repo.get(ctx.store, Job, msg.job_id)
    if found is None:
        _settle_item(ctx, msg, error=PermanentError(f"job {msg.job_id} does not exist", code="unknown_job"))
        return
    job = found[0]
    limiter = gmail_limiter(ctx, msg.account)
    try:
        client = gmail_connector(ctx.deps).connect(
            msg.owner, msg.account, throttle=lambda units: limiter.acquire(units)
        )
        attachments = client.attachments(msg.message_id, only=msg.attachment_id)
        outcomes = import_attachments(ctx.deps, job, attachments, source_type=SourceType.GMAIL)
    except RetryableError as err:
        _retry_or_fail(msg, ctx, err, limiter)
        return
    except PermanentError as err:
        log.warning("gmail message failed", extra=fields(error=str(err), code=err.code))
        _settle_item(ctx, msg, error=err)
        return
    _settle_item(ctx, msg, outcomes=outcomes)


def _retry_or_fail(
    msg: ImportGmailMessage, ctx: Context, err: RetryableError, limiter: leased_ratelimit.LeasedRateLimiter
) -> None:
    if err.kind is ErrorKind.THROTTLED:
        # Sluice's own pacing (or an open circuit) is not a failure: come back later
        # as a fresh message, so waiting does not use up delivery attempts.
        ctx.send(msg, delay_s=err.retry_after)
        return
    if err.kind is ErrorKind.RATE_LIMITED:
        limiter.penalise(duration_s=err.retry_after)
    decision = ctx.retry_policy.decide(err.kind, ctx.attempt, server_delay_s=err.retry_after)
    # The subscription dead-letters after its max delivery attempts; give up
    # (and record why) on the last one rather than lose the failure.
    last = _max_attempts(ctx)
    if decision.retry and ctx.attempt < last:
        log.warning("gmail message will be retried", extra=fields(error=str(err), delay_s=decision.delay_s))
        raise RetryableError(
            err.message, kind=err.kind, retry_after=decision.delay_s, code=err.code, hint=err.hint
        ) from err
    log.warning("gmail message failed after retries", extra=fields(error=str(err), reason=decision.reason))
    _settle_item(ctx, msg, error=err)


def _max_attempts(ctx: Context) -> int:
    spec = ctx.deps.topology.topics.get(TOPIC)
    if spec is None or spec.subscription is None:
        return 5
    return spec.subscription.max_delivery_attempts
