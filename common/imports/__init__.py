"""Importing files that arrive inside other things: e-mail attachments and zip members.

Gmail messages (:mod:`common.adapters.google.gmail`) and saved ``.eml`` files
(:mod:`common.imports.eml`) both reduce to a list of :class:`Attachment`; one
code path (:func:`common.service.gmail_import.import_attachments`) turns those
into SourceFiles, expanding zips safely (:mod:`common.imports.archives`) and
typing files by content (:mod:`common.imports.sniff`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

OutcomeStatus = Literal["imported", "skipped", "rejected", "failed"]


@dataclass(frozen=True)
class Attachment:
    """One attachment of a MIME message, wherever the message came from.

    ``external_id`` is stable across fetches of the same message: the file's id
    derives from it, which is what makes a redelivered import find its files.
    ``load`` fetches the bytes; it is called only for attachments not imported
    yet, so a redelivery does not download again.
    """

    external_id: str
    name: str
    declared_type: str | None
    load: Callable[[], bytes]
    size: int | None = None  # as the source declares it, if it does


@dataclass(frozen=True)
class ImportOutcome:
    """What happened to one attachment or archive member."""

    attachment: str  # the attachment's file name
    member: str | None  # the member's path inside the attachment (an archive), or None
    status: OutcomeStatus
    reason: str | None = None
    file_id: str | None = None
    code: str | None = None  # machine-readable reason (e.g. "unsafe_path"), when there is one

    def to_json(self, **extra: Any) -> dict[str, Any]:
        return {
            **extra,
            "attachment": self.attachment,
            "member": self.member,
            "status": self.status,
            "reason": self.reason,
            "file_id": self.file_id,
        }
