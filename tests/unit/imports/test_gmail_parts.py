"""The Gmail adapter's pure halves: finding attachment parts, and classifying HTTP errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from common.adapters.google.errors import GMAIL, classify
from common.adapters.google.gmail import attachment_parts
from common.core.errors import ErrorKind, PermanentError, ReconnectRequired, RetryableError, SluiceError


def _part(part_id: str, filename: str = "", **body: Any) -> dict[str, Any]:
    return {"partId": part_id, "mimeType": "application/pdf", "filename": filename, "body": {"size": 3, **body}}


def test_attachment_parts_are_found_depth_first_through_nested_multiparts() -> None:
    payload = {
        "partId": "",
        "mimeType": "multipart/mixed",
        "filename": "",
        "body": {"size": 0},
        "parts": [
            {
                "partId": "0",
                "mimeType": "multipart/alternative",
                "filename": "",
                "body": {"size": 0},
                "parts": [_part("0.0", data="aGk"), _part("0.1", "logo.png", attachmentId="L")],
            },
            _part("1", "a.pdf", attachmentId="A"),
            {
                "partId": "2",
                "mimeType": "message/rfc822",
                "filename": "",
                "body": {"size": 0},
                "parts": [_part("2.1", "forwarded.pdf", attachmentId="F")],
            },
            _part("3", "inline.txt", data="aGVsbG8"),
            _part("4", "", attachmentId="nameless"),
            _part("5", "empty.pdf"),
        ],
    }
    found = attachment_parts(payload)
    assert [(p.part_id, p.filename) for p in found] == [
        ("0.1", "logo.png"),
        ("1", "a.pdf"),
        ("2.1", "forwarded.pdf"),
        ("3", "inline.txt"),
    ]
    assert found[3].inline_data == "aGVsbG8" and found[3].attachment_id is None


def classify_http_error(status: int, headers: dict[str, str], content: bytes, *, what: str) -> SluiceError:
    return classify(status, headers, content, api=GMAIL, what=what, now=datetime.now(UTC))


def _body(reason: str) -> bytes:
    return json.dumps({"error": {"code": 0, "message": reason, "errors": [{"reason": reason}]}}).encode()


def test_429_is_rate_limited_with_the_servers_delay() -> None:
    err = classify_http_error(429, {"retry-after": "12"}, _body("rateLimitExceeded"), what="message m")
    assert isinstance(err, RetryableError)
    assert (err.kind, err.retry_after) == (ErrorKind.RATE_LIMITED, 12.0)


def test_a_403_for_quota_is_rate_limited_not_forbidden() -> None:
    err = classify_http_error(403, {}, _body("userRateLimitExceeded"), what="message m")
    assert isinstance(err, RetryableError) and err.kind is ErrorKind.RATE_LIMITED


def test_another_403_is_permanent() -> None:
    err = classify_http_error(403, {}, _body("insufficientPermissions"), what="message m")
    assert isinstance(err, PermanentError) and err.kind is ErrorKind.AUTH


def test_401_after_the_auth_adapters_refresh_means_reconnect() -> None:
    assert isinstance(classify_http_error(401, {}, b"", what="message m"), ReconnectRequired)


@pytest.mark.parametrize(
    ("status", "kind"), [(500, ErrorKind.SERVER), (502, ErrorKind.SERVER), (503, ErrorKind.UNAVAILABLE)]
)
def test_5xx_is_retryable(status: int, kind: ErrorKind) -> None:
    err = classify_http_error(status, {"retry-after": "3"}, b"<html>oops</html>", what="message m")
    assert isinstance(err, RetryableError) and err.kind is kind and err.retry_after == 3.0


def test_404_is_permanent_and_says_what_was_missing() -> None:
    err = classify_http_error(404, {}, _body("notFound"), what="message m42")
    assert isinstance(err, PermanentError) and err.code == "gmail_not_found"
    assert "message m42" in err.message
