"""Drive and Gmail destinations through the real google-api-python-client,
with HttpMockSequence answering (requests are built from the discovery
documents the library ships, so a wrong method or parameter fails)."""

from __future__ import annotations

import base64
import email
import json
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from googleapiclient.http import HttpMockSequence

from common.adapters.google.destinations import message_id_for, send_by_gmail, upload_to_drive
from common.core.errors import ErrorKind, PermanentError, RetryableError


class RecordingHttp(HttpMockSequence):  # type: ignore[misc]
    """HttpMockSequence that also keeps what was asked."""

    def __init__(self, iterable: list[tuple[dict[str, str], str]]) -> None:
        super().__init__(iterable)
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, uri: str, method: str = "GET", body: Any = None, headers: Any = None, **kw: Any) -> Any:
        self.requests.append((method, uri, body))
        return super().request(uri, method=method, body=body, headers=headers, **kw)


class StaticAuth:
    def __init__(self, http: Any) -> None:
        self.http = http
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def authorized_http(self, owner: str, scopes: Any, *, account: str | None = None) -> Any:
        self.asked.append((owner, tuple(scopes)))
        return self.http


@pytest.fixture
def export_file(tmp_path: Path) -> Path:
    p = tmp_path / "run.xlsx"
    p.write_bytes(b"PK\x03\x04 fake xlsx bytes")
    return p


def test_drive_upload_creates_the_file_in_the_folder_with_its_export_key(export_file: Path) -> None:
    http = RecordingHttp(
        [
            ({"status": "200"}, json.dumps({"files": []})),
            ({"status": "200", "location": "https://upload.example/session-1"}, ""),
            ({"status": "200"}, json.dumps({"id": "drive-file-1"})),
        ]
    )
    auth = StaticAuth(http)
    file_id = upload_to_drive(
        auth,
        owner="alice",
        export_id="exp-1",
        path=export_file,
        filename="run.xlsx",
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        folder_id="folder-9",
    )
    assert file_id == "drive-file-1"
    assert auth.asked == [("alice", ("https://www.googleapis.com/auth/drive.file",))]
    (_, list_uri, _), (create_method, create_uri, create_body), (put_method, put_uri, _) = http.requests
    assert "appProperties has" in parse_qs(urlparse(list_uri).query)["q"][0]
    assert create_method == "POST" and "uploadType=resumable" in create_uri
    meta = json.loads(create_body)
    assert meta == {"name": "run.xlsx", "appProperties": {"sluiceExportId": "exp-1"}, "parents": ["folder-9"]}
    assert (put_method, put_uri) == ("PUT", "https://upload.example/session-1")


def test_drive_upload_after_a_crash_finds_the_earlier_file_and_uploads_nothing(export_file: Path) -> None:
    http = RecordingHttp([({"status": "200"}, json.dumps({"files": [{"id": "drive-file-1"}]}))])
    file_id = upload_to_drive(
        StaticAuth(http),
        owner="alice",
        export_id="exp-1",
        path=export_file,
        filename="run.xlsx",
        content_type="text/csv",
        folder_id=None,
    )
    assert file_id == "drive-file-1"
    assert len(http.requests) == 1, "only the lookup"


def test_drive_errors_are_classified(export_file: Path) -> None:
    http = RecordingHttp([({"status": "404"}, json.dumps({"error": {"message": "File not found: folder-x"}}))])
    with pytest.raises(PermanentError, match="not found"):
        upload_to_drive(
            StaticAuth(http),
            owner="a",
            export_id="e",
            path=export_file,
            filename="f",
            content_type="text/csv",
            folder_id="folder-x",
        )
    http = RecordingHttp([({"status": "503", "retry-after": "20"}, "{}")])
    with pytest.raises(RetryableError) as info:
        upload_to_drive(
            StaticAuth(http),
            owner="a",
            export_id="e",
            path=export_file,
            filename="f",
            content_type="text/csv",
            folder_id=None,
        )
    assert info.value.kind is ErrorKind.UNAVAILABLE and info.value.retry_after == 20


def test_gmail_sends_a_multipart_message_with_the_export_attached(export_file: Path) -> None:
    http = RecordingHttp([({"status": "200"}, json.dumps({})), ({"status": "200"}, json.dumps({"id": "gm-1"}))])
    auth = StaticAuth(http)
    sent = send_by_gmail(
        auth,
        owner="alice",
        export_id="exp-2",
        path=export_file,
        filename="Invoices run 3.xlsx",
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        to="boss@example.com",
        subject="Sluice: Invoices (run 3)",
        body="Your export is attached.",
    )
    assert sent == "gm-1"
    assert auth.asked == [("alice", ("https://www.googleapis.com/auth/gmail.send",))]
    (_, list_uri, _), (method, send_uri, body) = http.requests
    assert parse_qs(urlparse(list_uri).query)["q"] == [f"rfc822msgid:{message_id_for('exp-2')}"]
    assert method == "POST" and send_uri.endswith("/gmail/v1/users/me/messages/send?alt=json")
    raw = base64.urlsafe_b64decode(json.loads(body)["raw"])
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert (msg["To"], msg["Subject"], msg["Message-ID"]) == (
        "boss@example.com",
        "Sluice: Invoices (run 3)",
        message_id_for("exp-2"),
    )
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "Invoices run 3.xlsx"
    assert attachment.get_content() == export_file.read_bytes()


def test_gmail_after_a_crash_finds_the_sent_message_and_sends_nothing(export_file: Path) -> None:
    http = RecordingHttp([({"status": "200"}, json.dumps({"messages": [{"id": "gm-1", "threadId": "t"}]}))])
    sent = send_by_gmail(
        StaticAuth(http),
        owner="a",
        export_id="exp-2",
        path=export_file,
        filename="f.csv",
        content_type="text/csv",
        to="x@example.com",
        subject="s",
        body="b",
    )
    assert sent == "gm-1" and len(http.requests) == 1


def test_gmail_refuses_an_attachment_over_25_mb(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with big.open("wb") as f:
        f.truncate(26 * 1024 * 1024)
    with pytest.raises(PermanentError, match="25 MB"):
        send_by_gmail(
            StaticAuth(RecordingHttp([])),
            owner="a",
            export_id="e",
            path=big,
            filename="big.csv",
            content_type="text/csv",
            to="x@example.com",
            subject="s",
            body="b",
        )
