"""The one classifier for Google API answers, and the one Retry-After parser."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httplib2
import pytest
from googleapiclient.errors import HttpError

from common.adapters.google.errors import DESTINATION, DRIVE, GMAIL, GoogleApi, classify, classify_exception
from common.core.errors import ErrorKind, PermanentError, ReconnectRequired, RetryableError
from common.core.retry import parse_retry_after

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _body(reason: str, *, details: bool = False) -> bytes:
    key = "details" if details else "errors"
    return json.dumps({"error": {"code": 0, "message": f"because {reason}", key: [{"reason": reason}]}}).encode()


# -- Retry-After --------------------------------------------------------------------


def test_retry_after_in_seconds() -> None:
    assert parse_retry_after(" 12 ", now=NOW) == 12.0


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), now=NOW) == 90.0


def test_retry_after_in_the_past_is_zero_not_negative() -> None:
    assert parse_retry_after(format_datetime(NOW - timedelta(hours=1), usegmt=True), now=NOW) == 0.0
    assert parse_retry_after("-5", now=NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "  ", "soon", 12])
def test_an_absent_or_unreadable_retry_after_leaves_the_delay_to_the_policy(value: object) -> None:
    assert parse_retry_after(value, now=NOW) is None


# -- classification -------------------------------------------------------------------


@pytest.mark.parametrize("api", [DRIVE, GMAIL, DESTINATION])
def test_every_api_maps_an_answer_the_same_way_with_its_own_codes(api: GoogleApi) -> None:
    limited = classify(429, {"retry-after": "7"}, b"", api=api, what="x", now=NOW)
    assert isinstance(limited, RetryableError)
    assert (limited.kind, limited.retry_after, limited.code) == (
        ErrorKind.RATE_LIMITED,
        7.0,
        f"{api.code}_rate_limited",
    )
    down = classify(503, {"retry-after": "3"}, b"", api=api, what="x", now=NOW)
    assert isinstance(down, RetryableError) and (down.kind, down.retry_after) == (ErrorKind.UNAVAILABLE, 3.0)
    for status in (500, 502, 408):
        assert classify(status, {}, b"", api=api, what="x", now=NOW).kind is ErrorKind.SERVER
    assert isinstance(classify(401, {}, b"", api=api, what="x", now=NOW), ReconnectRequired)
    forbidden = classify(403, {}, _body("insufficientPermissions"), api=api, what="x", now=NOW)
    assert isinstance(forbidden, PermanentError) and forbidden.kind is ErrorKind.AUTH
    assert (forbidden.code, forbidden.hint) == (f"{api.code}_forbidden", api.forbidden_hint)
    missing = classify(404, {}, b"", api=api, what="x", now=NOW)
    assert isinstance(missing, PermanentError) and (missing.code, missing.hint) == (
        f"{api.code}_not_found",
        api.not_found_hint,
    )
    assert classify(400, {}, b"", api=api, what="x", now=NOW).code == f"{api.code}_http_400"


@pytest.mark.parametrize("details", [False, True])
@pytest.mark.parametrize("reason", ["rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"])
def test_a_403_with_a_quota_reason_is_rate_limited_in_either_error_format(reason: str, details: bool) -> None:
    err = classify(403, {}, _body(reason, details=details), api=DRIVE, what="x", now=NOW)
    assert isinstance(err, RetryableError) and err.kind is ErrorKind.RATE_LIMITED


def test_an_api_specific_reason_names_its_own_refusal() -> None:
    err = classify(403, {}, _body("exportSizeLimitExceeded"), api=DRIVE, what="export of f", now=NOW)
    assert isinstance(err, PermanentError) and err.code == "export_too_large"
    assert "10 MB" in err.message and "Download it as PDF" in (err.hint or "")
    # Gmail knows no such reason: the same answer is an ordinary 403 there.
    assert classify(403, {}, _body("exportSizeLimitExceeded"), api=GMAIL, what="x", now=NOW).code == "gmail_forbidden"


def test_the_message_says_which_api_did_what_and_what_it_answered() -> None:
    err = classify(404, {}, _body("notFound"), api=GMAIL, what="message m42", now=NOW)
    assert err.message == "Gmail message m42: HTTP 404: because notFound"


def test_a_client_library_error_is_classified_and_a_bug_is_not() -> None:
    resp = httplib2.Response({"status": "429", "retry-after": "9"})
    err = classify_exception(HttpError(resp, _body("rateLimitExceeded")), api=DRIVE, what="x", now=NOW)
    assert isinstance(err, RetryableError) and err.retry_after == 9.0
    reset = classify_exception(ConnectionResetError("reset"), api=DRIVE, what="x", now=NOW)
    assert isinstance(reset, RetryableError) and reset.kind is ErrorKind.NETWORK
    assert classify_exception(KeyError("id"), api=DRIVE, what="x", now=NOW) is None
