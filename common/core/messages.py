"""Typed messages that stages send each other.

On the wire a message is its JSON payload plus attributes: ``kind`` names the
message type (the topology says which topic carries each kind), and trace and
ids ride along for logs and tracing. Handlers never see raw bytes.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from common.core.errors import PermanentError


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str]

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    def log_labels(self) -> dict[str, str]:
        """Ids worth putting on every log line about this message."""
        labels: dict[str, str] = {}
        for key in ("job_id", "run_id", "task_id", "export_id", "operation_id"):
            value = getattr(self, key, None)
            if isinstance(value, str):
                labels[key] = value
        return labels


class StartRun(Message):
    """Run initializer: fan a pending run out into one extraction task per file."""

    kind: ClassVar[str] = "run.start"
    run_id: str
    job_id: str


class ExtractTask(Message):
    kind: ClassVar[str] = "task.extract"
    task_id: str
    run_id: str
    job_id: str


class ExportRun(Message):
    kind: ClassVar[str] = "export.run"
    export_id: str
    run_id: str
    job_id: str


class BlobFinalized(Message):
    """An object landed in a bucket (GCS OBJECT_FINALIZE or the local blob store)."""

    kind: ClassVar[str] = "blob.finalized"
    bucket: str
    name: str
    size: int | None = None
    content_type: str | None = None
    generation: str | None = None
    metadata: dict[str, str] = {}


class ImportDrive(Message):
    """Import Drive files and folders into a job: folders are listed (recursively,
    paged) and fanned out as one ``drive.file`` message per file."""

    kind: ClassVar[str] = "drive.import"
    job_id: str
    operation_id: str
    owner: str
    item_ids: tuple[str, ...]
    # Continuing a folder listing: the folder and the page token to resume from.
    folder_id: str | None = None
    page_token: str | None = None
    path: str = ""


class ImportDriveFile(Message):
    kind: ClassVar[str] = "drive.file"
    job_id: str
    operation_id: str
    owner: str
    drive_file_id: str
    path: str = ""  # the folder path it was found under, for display


class GmailItem(BaseModel):
    """One message, or one attachment of it (``attachment_id`` None: all attachments)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    message_id: str
    attachment_id: str | None = None


class ImportGmail(Message):
    kind: ClassVar[str] = "gmail.import"
    job_id: str
    operation_id: str
    owner: str
    account: str  # the Gmail address (userId "me" of that integration)
    items: tuple[GmailItem, ...]


class ImportGmailMessage(Message):
    """Fan-out of ``gmail.import``: one message's attachments."""

    kind: ClassVar[str] = "gmail.message"
    job_id: str
    operation_id: str
    owner: str
    account: str
    message_id: str
    attachment_id: str | None = None


class CleanupSweep(Message):
    kind: ClassVar[str] = "cleanup.sweep"


class Noop(Message):
    """Does nothing but pass itself on ``hops`` times: the orchestration benchmark's stage."""

    kind: ClassVar[str] = "bench.noop"
    chain: str
    hops: int
    sent_at: float = 0.0  # wall-clock seconds when sent, to measure dispatch latency


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (
        StartRun,
        ExtractTask,
        ExportRun,
        BlobFinalized,
        ImportDrive,
        ImportDriveFile,
        ImportGmail,
        ImportGmailMessage,
        CleanupSweep,
        Noop,
    )
}


def decode(kind: str, data: bytes) -> Message:
    """Bytes and a kind attribute to a typed message; bad input is permanent."""
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise PermanentError(f"unknown message kind {kind!r}", code="unknown_message")
    try:
        payload: Any = json.loads(data or b"{}")
        return cls.model_validate(payload)
    except (ValueError, ValidationError) as exc:
        raise PermanentError(f"malformed {kind} message: {exc}", code="malformed_message") from exc
