"""Typed messages that stages send each other.

On the wire a message is its JSON payload plus attributes: ``kind`` names the
message type (the topology says which topic carries each kind), and trace and
ids ride along for logs and tracing. Handlers never see raw bytes.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from common.core.errors import PermanentError


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str]

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    def log_labels(self) -> dict[str, str]:
        """Ids worth putting on every log line about this message."""
        labels: dict[str, str] = {}
        # The fields themselves: getattr on a field a model lacks raises (and
        # catches) an AttributeError inside pydantic, a cost paid on every send
        # and every delivery.
        fields = self.__dict__
        for key in ("job_id", "run_id", "task_id", "export_id", "operation_id"):
            value = fields.get(key)
            if isinstance(value, str):
                labels[key] = value
        return labels


class StartRun(Message):
    """Run initializer: fan a pending run out into one extraction task per file."""

    kind: ClassVar[str] = "run.start"
    run_id: str
    job_id: str


class FinishRun(Message):
    """A kind's finish step, once every item of the run is terminal (each kind has its ``<kind>.finish``)."""

    kind: ClassVar[str] = "run.finish"
    run_id: str
    job_id: str


class ExtractTask(Message):
    kind: ClassVar[str] = "task.extract"
    task_id: str
    run_id: str
    job_id: str


class RunDeadline(Message):
    """A run's timeout has come (sent delayed when the run starts): fail it if still open."""

    kind: ClassVar[str] = "run.deadline"
    run_id: str
    job_id: str


class ItemLeaseCheck(Message):
    """Sent delayed by the item's lease when an attempt starts: if that attempt
    still holds the item after its lease, the item is dispatched again."""

    kind: ClassVar[str] = "item.lease_check"
    task_id: str
    run_id: str
    job_id: str
    attempt: int


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


class GmailNotification(Message):
    """A Gmail push (``users.watch``): ``account``'s mailbox changed up to ``history_id``.

    Gmail publishes ``{"emailAddress", "historyId"}`` with no ``kind`` attribute;
    :func:`common.core.envelopes.normalise` turns it into this message.
    """

    kind: ClassVar[str] = "gmail.notification"
    account: str
    history_id: str  # Gmail's history ids are unsigned 64-bit integers, sent as strings or numbers

    @field_validator("history_id", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> str:
        text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
        if not text.isdigit():
            raise ValueError(f"historyId {value!r} is not a non-negative integer")
        return str(int(text))


class AutomationImported(Message):
    """An automation's import finished: start the job's run (the chain's next step)."""

    kind: ClassVar[str] = "automation.imported"
    automation_run_id: str

    def log_labels(self) -> dict[str, str]:
        return {"automation_run_id": self.automation_run_id}


class RenewGmailWatches(Message):
    """Daily: renew the Gmail watch of every account with an enabled automation, stop the others."""

    kind: ClassVar[str] = "gmail.renew_watches"


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
        GmailNotification,
        AutomationImported,
        RenewGmailWatches,
        Noop,
        RunDeadline,
        ItemLeaseCheck,
    )
}


def register(cls: type[Message]) -> type[Message]:
    """Make ``cls`` decodable (a job kind's own start and item messages)."""
    known = MESSAGE_TYPES.get(cls.kind)
    if known is not None and known is not cls:
        raise ValueError(f"message kind {cls.kind!r} is already {known.__name__}")
    MESSAGE_TYPES[cls.kind] = cls
    return cls


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


def continuation(message: Message) -> dict[str, Any]:
    """``message`` in the form an ``Operation.then`` stores: its kind and its payload."""
    return {"kind": message.kind, "payload": message.model_dump(mode="json")}


def from_continuation(then: dict[str, Any]) -> Message:
    """The message an ``Operation.then`` describes (PermanentError if it is not one)."""
    kind = then.get("kind")
    payload = then.get("payload")
    if not isinstance(kind, str) or not isinstance(payload, dict):
        raise PermanentError(f"malformed continuation {then!r}", code="malformed_message")
    return decode(kind, json.dumps(payload).encode())
