"""The Gmail API, as much of it as importing attachments and automations need.

:class:`GmailConnector` (built once, over the :class:`GoogleAuth` port) gives a
:class:`GmailClient` per user. The client

* reads a message with ``users.messages.get(format="full")`` and walks its MIME
  part tree for attachments (a part with a file name and either an
  ``attachmentId`` or, for small bodies, inline ``data``);
* fetches each attachment's bytes with ``users.messages.attachments.get`` only
  when asked (a redelivered import does not download again);
* for automations: lists what was added since a history id
  (``users.history.list``), searches (``users.messages.list(q=...)``), reads
  headers (``format=metadata``), and starts or stops push notifications
  (``users.watch`` / ``users.stop``);
* turns every failure into Sluice's taxonomy with the shared classifier
  (:mod:`common.adapters.google.errors`, ``GMAIL``): 429 (and 403 quota
  reasons) and 5xx retryable with the server's ``Retry-After``; 404, 400 and
  other 403s permanent; 401 after the auth adapter's own refresh-and-retry
  means the grant is gone (``ReconnectRequired``); transport errors retryable.

Attachment identity: Gmail's ``attachmentId`` is *not* stable -- each
``messages.get`` returns fresh ids for the same attachment -- so an id derived
from it would make a redelivered import create a second file. Messages are
immutable, so the part's ``partId`` is stable: attachments are identified as
``"{messageId}:{partId}"``. An ``attachmentId`` handed in to select one
attachment is matched against the parts too, as is a part id.

Requests never retry inside the client (``num_retries=0``): Sluice's retry
policy is the one place that decides. The discovery document is the one
google-api-python-client ships (no network fetch); it is read once per
process, on first use, and the client library is imported then too.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.adapters.google.errors import GMAIL, classify_exception
from common.core.errors import ErrorKind, PermanentError, RetryableError, SluiceError
from common.imports import Attachment
from common.ports.google import GMAIL_READONLY, GoogleAuth

# Quota units per call (Gmail API usage limits): messages.get and attachments.get cost 5 each.
UNITS_MESSAGES_GET = 5.0
UNITS_ATTACHMENTS_GET = 5.0
UNITS_MESSAGES_LIST = 5.0
UNITS_HISTORY_LIST = 2.0
UNITS_WATCH = 100.0
UNITS_STOP = 50.0

# history.list answered 404: the start history id is older than Gmail keeps (about a week).
HISTORY_EXPIRED = "gmail_history_expired"

Throttle = Callable[[float], object]

_discovery: str | None = None
_discovery_lock = threading.Lock()


def _discovery_document() -> str:
    """The shipped gmail v1 discovery document's text, read once per process.

    Kept as text, not parsed: ``build_from_document`` fixes up the method
    descriptions it is given in place, so a parsed document shared between
    threads building clients at once would be mutated under their feet.
    """
    global _discovery
    if _discovery is None:
        with _discovery_lock:
            if _discovery is None:
                from googleapiclient import discovery_cache

                text = discovery_cache.get_static_doc("gmail", "v1")
                if text is None:
                    raise SluiceError("google-api-python-client ships no gmail v1 discovery document")
                _discovery = text
    return _discovery


def _b64url(data: str) -> bytes:
    """Gmail's base64url, padded or not."""
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@dataclass(frozen=True)
class AttachmentPart:
    """An attachment as the message's part tree describes it."""

    part_id: str
    filename: str
    mime_type: str | None
    size: int | None
    attachment_id: str | None  # fetch with attachments.get
    inline_data: str | None  # small bodies come inline (base64url)


def attachment_parts(payload: Mapping[str, Any]) -> list[AttachmentPart]:
    """Every part with a file name and content, depth first (the order mail clients show)."""
    found: list[AttachmentPart] = []

    def walk(part: Mapping[str, Any]) -> None:
        body = part.get("body") or {}
        filename = part.get("filename") or ""
        if filename and (body.get("attachmentId") or body.get("data") is not None):
            found.append(
                AttachmentPart(
                    part_id=str(part.get("partId", "")),
                    filename=filename,
                    mime_type=part.get("mimeType"),
                    size=body.get("size"),
                    attachment_id=body.get("attachmentId"),
                    inline_data=body.get("data") if not body.get("attachmentId") else None,
                )
            )
        for child in part.get("parts") or ():
            walk(child)

    walk(payload)
    return found


class GmailClient:
    """One user's Gmail (``userId="me"`` of the authorized account)."""

    def __init__(self, service: Any, *, throttle: Throttle | None = None) -> None:
        self._service = service
        self._throttle = throttle

    def _execute(self, request: Any, *, units: float, what: str, empty_ok: bool = False) -> dict[str, Any]:
        if self._throttle is not None:
            self._throttle(units)
        try:
            result = request.execute(num_retries=0)
        except Exception as err:
            mapped = classify_exception(err, api=GMAIL, what=what, now=datetime.now(UTC))
            if mapped is None or mapped is err:
                raise
            raise mapped from err
        if empty_ok and result in ("", b"", None):
            return {}  # a method without a response body (the client returns its raw, empty content)
        if not isinstance(result, dict):
            raise RetryableError(f"Gmail {what}: unexpected answer", kind=ErrorKind.SERVER)
        return result

    def get_message(self, message_id: str) -> dict[str, Any]:
        request = self._service.users().messages().get(userId="me", id=message_id, format="full")
        return self._execute(request, units=UNITS_MESSAGES_GET, what=f"message {message_id}")

    def get_attachment(self, message_id: str, attachment_id: str) -> bytes:
        request = (
            self._service.users().messages().attachments().get(userId="me", messageId=message_id, id=attachment_id)
        )
        body = self._execute(request, units=UNITS_ATTACHMENTS_GET, what=f"attachment of message {message_id}")
        data = body.get("data")
        if not isinstance(data, str):
            raise PermanentError(f"Gmail returned no data for an attachment of message {message_id}")
        return _b64url(data)

    def attachments(self, message_id: str, *, only: str | None = None) -> list[Attachment]:
        """The message's attachments, bytes fetched lazily; ``only``: one of them
        (matched by attachment id or part id), PermanentError if it has no such one."""
        message = self.get_message(message_id)
        parts = attachment_parts(message.get("payload") or {})
        if only is not None:
            parts = [p for p in parts if only in (p.attachment_id, p.part_id)]
            if not parts:
                raise PermanentError(
                    f"message {message_id} has no attachment {only[:40]}",
                    code="gmail_attachment_not_found",
                    hint="Gmail attachment ids change between fetches; select the attachment again.",
                )
        return [self._attachment(message_id, p) for p in parts]

    # -- automation: what changed, search, push notifications -----------------------

    def added_message_ids(self, start_history_id: str, *, max_results: int = 25) -> tuple[list[str], str, bool]:
        """One page of ``users.history.list(historyTypes=messageAdded)`` after ``start_history_id``:
        the ids of the messages added (oldest first, each once, drafts left out), the history
        id this page brings a reader up to, and whether that is everything.

        When more pages follow, the id returned is the page's last record, so the next
        listing starts after it (``startHistoryId`` pages as well as a page token, and
        survives between invocations); otherwise it is the mailbox's current history id.
        A 404 (the id is older than Gmail keeps) is a PermanentError with code
        :data:`HISTORY_EXPIRED`.
        """
        request = (
            self._service.users()
            .history()
            .list(userId="me", startHistoryId=start_history_id, historyTypes="messageAdded", maxResults=max_results)
        )
        try:
            page = self._execute(request, units=UNITS_HISTORY_LIST, what="history")
        except PermanentError as err:
            if err.code == "gmail_not_found":
                raise PermanentError(
                    f"Gmail no longer has history from {start_history_id}",
                    code=HISTORY_EXPIRED,
                    hint="Recent messages are re-read instead (a bounded full sync).",
                ) from err
            raise
        found: list[str] = []
        last_record = start_history_id
        for record in page.get("history") or ():
            last_record = str(record.get("id") or last_record)
            for added in record.get("messagesAdded") or ():
                msg = added.get("message") or {}
                mid = msg.get("id")
                if isinstance(mid, str) and mid not in found and "DRAFT" not in (msg.get("labelIds") or ()):
                    found.append(mid)
        if page.get("nextPageToken"):
            return found, last_record, False
        return found, str(page.get("historyId") or last_record), True

    def search(self, query: str, *, limit: int = 100) -> list[str]:
        """Ids of the messages ``users.messages.list(q=query)`` finds, newest first, at most ``limit``."""
        ids: list[str] = []
        token: str | None = None
        while len(ids) < limit:
            kwargs: dict[str, Any] = {"userId": "me", "q": query, "maxResults": min(500, limit - len(ids))}
            if token:
                kwargs["pageToken"] = token
            request = self._service.users().messages().list(**kwargs)
            page = self._execute(request, units=UNITS_MESSAGES_LIST, what="message search")
            ids.extend(str(m["id"]) for m in page.get("messages") or () if isinstance(m, dict) and "id" in m)
            token = page.get("nextPageToken")
            if not token:
                break
        return ids[:limit]

    def message_headers(self, message_id: str, names: Sequence[str]) -> tuple[dict[str, str], int | None]:
        """The named headers of a message (``format=metadata``) and its ``internalDate`` (ms)."""
        request = (
            self._service.users()
            .messages()
            .get(userId="me", id=message_id, format="metadata", metadataHeaders=list(names))
        )
        message = self._execute(request, units=UNITS_MESSAGES_GET, what=f"message {message_id}")
        wanted = {n.lower(): n for n in names}
        headers: dict[str, str] = {}
        for header in (message.get("payload") or {}).get("headers") or ():
            name = str(header.get("name", "")).lower()
            if name in wanted and wanted[name] not in headers:
                headers[wanted[name]] = str(header.get("value", ""))
        internal = message.get("internalDate")
        return headers, int(internal) if isinstance(internal, int | str) and str(internal).isdigit() else None

    def watch(self, topic_name: str, *, label_ids: Sequence[str] = ("INBOX",)) -> tuple[str, datetime]:
        """Start (or renew) push notifications to ``topic_name``; the history id and expiry Gmail gives."""
        body = {"topicName": topic_name, "labelIds": list(label_ids), "labelFilterBehavior": "include"}
        request = self._service.users().watch(userId="me", body=body)
        answer = self._execute(request, units=UNITS_WATCH, what="watch")
        history, expiration = answer.get("historyId"), answer.get("expiration")
        if history is None or not str(expiration or "").isdigit():
            raise RetryableError("Gmail watch: answer without historyId or expiration", kind=ErrorKind.SERVER)
        return str(history), datetime.fromtimestamp(int(str(expiration)) / 1000, tz=UTC)

    def stop(self) -> None:
        """Stop push notifications for the mailbox."""
        self._execute(self._service.users().stop(userId="me"), units=UNITS_STOP, what="stop", empty_ok=True)

    def _attachment(self, message_id: str, part: AttachmentPart) -> Attachment:
        def load() -> bytes:
            if part.inline_data is not None:
                return _b64url(part.inline_data)
            assert part.attachment_id is not None
            return self.get_attachment(message_id, part.attachment_id)

        return Attachment(
            external_id=f"{message_id}:{part.part_id}",
            name=part.filename,
            declared_type=part.mime_type,
            load=load,
            size=part.size,
        )


class GmailConnector:
    """Builds a :class:`GmailClient` for a user from the GoogleAuth port."""

    def __init__(self, auth: GoogleAuth, *, scopes: Sequence[str] = (GMAIL_READONLY,)) -> None:
        self._auth = auth
        self._scopes = tuple(scopes)

    def connect(self, owner: str, account: str, *, throttle: Throttle | None = None) -> GmailClient:
        """A client for ``owner``'s ``account`` (ReconnectRequired from the port if access is gone)."""
        from googleapiclient.discovery import build_from_document

        http = self._auth.authorized_http(owner, self._scopes, account=account)
        service = build_from_document(_discovery_document(), http=http)
        return GmailClient(service, throttle=throttle)
