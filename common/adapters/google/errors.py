"""Google API failures (Drive, Gmail, Sheets, and the exports to them) in Sluice's taxonomy.

The one classifier for every googleapiclient-based call. What an answer means
is the same for every Google API; only the words differ, so each API is a
:class:`GoogleApi` value (its name, error-code prefix and hints):

=======================================  ==========================================
answer                                   Sluice error
=======================================  ==========================================
429, or 403 with a quota reason          RetryableError(rate_limited), Retry-After
503                                      RetryableError(unavailable), Retry-After
other 5xx, 408                           RetryableError(server), Retry-After
401 (after the auth adapter's refresh)   ReconnectRequired: the grant is gone
403                                      PermanentError(auth) ``{api}_forbidden``
404                                      PermanentError ``{api}_not_found``
an API-specific reason (export too big)  PermanentError with that API's code
any other 4xx                            PermanentError ``{api}_http_{status}``
transport failure (socket, TLS, DNS)     RetryableError(network)
=======================================  ==========================================

``Retry-After`` is read by :func:`common.core.retry.parse_retry_after`, the
parser every Google adapter shares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common.core.errors import ErrorKind, PermanentError, ReconnectRequired, RetryableError, SluiceError
from common.core.retry import parse_retry_after

# 403 reasons that mean "slow down", not "forbidden" (Drive and Gmail use the same ones).
QUOTA_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "dailyLimitExceeded", "quotaExceeded"})


@dataclass(frozen=True)
class Refusal:
    """A permanent failure an API names with a reason of its own."""

    code: str
    explanation: str
    hint: str


@dataclass(frozen=True)
class GoogleApi:
    """How one Google API's failures read: its name, its error-code prefix, and what to do."""

    name: str
    code: str
    not_found_hint: str
    forbidden_hint: str
    rate_limited_hint: str | None = None
    refusals: Mapping[str, Refusal] = field(default_factory=dict)


DRIVE = GoogleApi(
    name="Drive",
    code="drive",
    not_found_hint="The file was deleted, or is not shared with the connected Google account.",
    forbidden_hint="Check that the connected Google account may read this file (sharing, domain policy).",
    refusals={
        "exportSizeLimitExceeded": Refusal(
            code="export_too_large",
            explanation="Drive cannot export this file as PDF: it is over Drive's 10 MB export limit",
            hint="Download it as PDF from Drive (File > Download) and upload that, or split the document.",
        )
    },
)
GMAIL = GoogleApi(
    name="Gmail",
    code="gmail",
    not_found_hint="The message or attachment no longer exists (deleted, or in another account).",
    forbidden_hint="Reconnect the Google account granting Gmail read access.",
    rate_limited_hint="Gmail's per-user quota is exhausted for now; the import resumes on its own.",
)
SHEETS = GoogleApi(
    name="Sheets",
    code="sheets",
    not_found_hint="The spreadsheet was deleted, or is not shared with the connected Google account.",
    forbidden_hint="Check that the connected Google account may edit this spreadsheet.",
    rate_limited_hint="The Sheets API's per-minute quota is exhausted for now; the job resumes on its own.",
)
# Exports delivered to a user's Drive folder or by Gmail.
DESTINATION = GoogleApi(
    name="Export destination",
    code="destination",
    not_found_hint="Check the Drive folder id, and that the account can write to it.",
    forbidden_hint="Reconnect the Google account with the needed permission.",
)


def classify(
    status: int, headers: Mapping[str, Any], content: bytes | str | None, *, api: GoogleApi, what: str, now: datetime
) -> SluiceError:
    """An HTTP error answer of ``api`` (doing ``what``) as the Sluice error the retry policy understands."""
    delay = parse_retry_after(headers.get("retry-after"), now=now)
    reasons, message = _error_body(content)
    text = f"{api.name} {what}: HTTP {status}{': ' + message if message else ''}"
    refusal = next((api.refusals[r] for r in reasons if r in api.refusals), None)
    if refusal is not None:
        return PermanentError(f"{refusal.explanation} ({text})", code=refusal.code, hint=refusal.hint)
    if status == 429 or (status == 403 and reasons & QUOTA_REASONS):
        return RetryableError(
            text,
            kind=ErrorKind.RATE_LIMITED,
            retry_after=delay,
            code=f"{api.code}_rate_limited",
            hint=api.rate_limited_hint,
        )
    if status == 503:
        return RetryableError(text, kind=ErrorKind.UNAVAILABLE, retry_after=delay, code=f"{api.code}_unavailable")
    if status >= 500 or status == 408:
        return RetryableError(text, kind=ErrorKind.SERVER, retry_after=delay, code=f"{api.code}_server_error")
    if status == 401:
        # The auth adapter already refreshed the token and retried once: the grant no longer works.
        return ReconnectRequired(f"{text} (authorization refused after a token refresh)")
    if status == 403:
        return PermanentError(text, kind=ErrorKind.AUTH, code=f"{api.code}_forbidden", hint=api.forbidden_hint)
    if status == 404:
        return PermanentError(text, code=f"{api.code}_not_found", hint=api.not_found_hint)
    return PermanentError(text, code=f"{api.code}_http_{status}")


def classify_exception(exc: BaseException, *, api: GoogleApi, what: str, now: datetime) -> SluiceError | None:
    """A failed googleapiclient call as a Sluice error; None for anything that is neither an
    HTTP answer nor a transport failure (a bug: the caller decides)."""
    import httplib2
    from googleapiclient.errors import HttpError

    if isinstance(exc, SluiceError):
        return exc
    if isinstance(exc, HttpError):
        return classify(int(exc.resp.status), exc.resp, exc.content, api=api, what=what, now=now)
    if isinstance(exc, OSError | httplib2.HttpLib2Error):  # OSError: timeouts, resets, DNS, TLS
        return RetryableError(f"{api.name} {what}: unreachable: {type(exc).__name__}: {exc}", kind=ErrorKind.NETWORK)
    return None


def _error_body(content: bytes | str | None) -> tuple[frozenset[str], str]:
    """The reasons (``errors[].reason`` and ``details[].reason``) and message of a Google error body."""
    try:
        payload = json.loads(content or b"{}")
    except ValueError:
        return frozenset(), ""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return frozenset(), ""
    entries = [*(error.get("errors") or ()), *(error.get("details") or ())]
    reasons = frozenset(str(e["reason"]) for e in entries if isinstance(e, dict) and e.get("reason"))
    return reasons, str(error.get("message", ""))
