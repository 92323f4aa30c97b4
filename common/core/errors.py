"""Sluice's error taxonomy.

Every failure a stage can meet is one of two kinds, and the kind decides what
happens to the message that carried the work:

* :class:`RetryableError` -- the work may succeed later (network, 5xx, 429).
  It carries a classification and, where the server said so, a delay. The
  retry policy (:mod:`common.core.retry`) turns it into "retry after N s" or,
  once attempts run out, a permanent failure.
* :class:`PermanentError` -- retrying cannot help (bad input, unreadable
  document, invalid configuration). The failure is recorded on the entity and
  the message is acknowledged.

Each error says what to do about it in ``hint`` so that an operator reading a
task's recorded error knows the next step.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """Classification used by the retry policy."""

    NETWORK = "network"  # connection reset, DNS, timeout
    SERVER = "server"  # 5xx other than 503
    UNAVAILABLE = "unavailable"  # 503: honours a server-provided delay
    RATE_LIMITED = "rate_limited"  # 429: honours a server-provided delay
    THROTTLED = "throttled"  # Sluice's own pacing (shared rate limiter): wait, attempt not counted
    MALFORMED_OUTPUT = "malformed_output"  # model answered, but not valid JSON / schema
    INVALID_INPUT = "invalid_input"  # the document or request itself is bad
    AUTH = "auth"  # credentials revoked or missing
    CONFLICT = "conflict"  # a precondition failed (concurrent writer)
    INTERNAL = "internal"  # a bug in Sluice


class SluiceError(Exception):
    """Base class: a message for people, a machine-readable code, and a hint."""

    code: str = "internal"
    kind: ErrorKind = ErrorKind.INTERNAL
    hint: str = "This is a bug in Sluice; report it with the log line."

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def to_record(self) -> dict[str, str]:
        """The form stored on a task, file or export that failed."""
        return {
            "code": self.code,
            "kind": str(self.kind),
            "message": self.message,
            "hint": self.hint,
        }


class RetryableError(SluiceError):
    """The work may succeed if tried again later.

    ``retry_after`` is the delay the server asked for (``Retry-After`` or
    ``RetryInfo.retryDelay``), in seconds, or ``None`` to let the policy pick.
    """

    code = "retryable"
    kind = ErrorKind.NETWORK
    hint = "Sluice retries this on its own; if it keeps failing check the service's status."

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind = ErrorKind.NETWORK,
        retry_after: float | None = None,
        hint: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.kind = kind
        self.retry_after = retry_after


class PermanentError(SluiceError):
    """Retrying cannot help; record the failure and acknowledge the message."""

    code = "permanent"
    kind = ErrorKind.INVALID_INPUT
    hint = "Fix the input and retry the task."

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind = ErrorKind.INVALID_INPUT,
        hint: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.kind = kind


class UnreadableDocument(PermanentError):
    """The document cannot be read (corrupt, encrypted, empty, image-only...)."""

    code = "unreadable_document"
    hint = "Check that the file opens in a PDF viewer; re-upload a good copy."


class MalformedModelOutput(RetryableError):
    """The model answered with text that is not valid JSON or breaks the schema.

    Retryable a bounded number of times (see the retry policy), then permanent,
    with ``raw_output`` kept for diagnosis.
    """

    code = "malformed_output"

    def __init__(self, message: str, *, raw_output: str, hint: str | None = None) -> None:
        super().__init__(message, kind=ErrorKind.MALFORMED_OUTPUT, hint=hint)
        self.raw_output = raw_output


class IllegalTransition(SluiceError):
    """A state change that the entity's state machine does not allow."""

    code = "illegal_transition"
    kind = ErrorKind.CONFLICT
    hint = "The entity moved on concurrently; reload it and decide again."


class NotFound(PermanentError):
    """A record (or object) that does not exist: retrying cannot make it appear.

    A message about a deleted run, task or export is dead-lettered on its first
    delivery with this reason; the API answers 404.
    """

    code = "not_found"
    hint = "Check the id; it may belong to another user or have been deleted."

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message, kind=ErrorKind.INVALID_INPUT, hint=hint, code=code)


class BlobNotFound(NotFound):
    """The blob store holds no object at that URI (deleted, or expired by a lifecycle rule)."""

    code = "blob_not_found"
    hint = "The stored file is gone (deleted, or expired by the bucket's lifecycle); upload it again."


class BlobUnavailable(RetryableError):
    """The blob store could not serve the request now: 429, 5xx, a reset
    connection, a timeout, a full or failing disk. Retrying later may work."""

    code = "storage_unavailable"
    hint = "Sluice retries this on its own; if it persists check Cloud Storage's status (or the local disk)."

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind = ErrorKind.UNAVAILABLE,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, kind=kind, retry_after=retry_after)
        self.status = status


class BlobAccessDenied(PermanentError):
    """The blob store refused the credentials (401/403, or file permissions)."""

    code = "storage_access_denied"
    hint = "Grant the function's service account access to the bucket (roles/storage.objectAdmin), then retry."

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, kind=ErrorKind.AUTH, hint=hint)


class AlreadyExists(SluiceError):
    code = "already_exists"
    kind = ErrorKind.CONFLICT
    hint = "The record exists already; treat the request as a duplicate."


class PreconditionFailed(SluiceError):
    """A compare-and-set write found the document changed since it was read."""

    code = "precondition_failed"
    kind = ErrorKind.CONFLICT
    hint = "Reload the document and apply the change again."


class ConfigError(SluiceError):
    code = "config"
    kind = ErrorKind.INVALID_INPUT
    hint = "Fix the setting named in the message (environment variables SLUICE_*)."


class ReadAfterWrite(SluiceError):
    """A transaction read a document after writing: Firestore forbids it, so every backend does."""

    code = "read_after_write"
    kind = ErrorKind.INTERNAL
    hint = "Do every tx.get before the first tx.create/set/delete (Firestore requires it too)."


class ReconnectRequired(PermanentError):
    """The user's Google authorization is gone (revoked, expired, refresh failed)."""

    code = "reconnect_required"
    hint = "Reconnect the Google account in Sluice's integrations, then retry."

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, kind=ErrorKind.AUTH, hint=hint)
