"""Export destinations beyond the download link: a Drive folder and Gmail
(the :class:`common.ports.google.ExportDestinations` port, ``deps.destinations``).

Exactly once: each side effect carries a stable key derived from the export
id -- the Drive file's ``appProperties.sluiceExportId`` and the e-mail's
``Message-ID`` -- and before acting, the destination is asked whether that key
already exists. A retry after a crash (the export was ``running``, its intent
recorded, the outcome unknown) finds the earlier upload or e-mail instead of
making a second one.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from common.adapters.google.errors import DESTINATION, classify_exception
from common.core.errors import PermanentError
from common.ports.google import DRIVE_FILE, GMAIL_SEND, GoogleAuth

log = logging.getLogger(__name__)

# Gmail accepts messages up to 25 MB of attachments (35 MB encoded).
GMAIL_MAX_ATTACHMENT = 25 * 1024 * 1024
DRIVE_CHUNK = 8 * 1024 * 1024
EXPORT_KEY = "sluiceExportId"


def message_id_for(export_id: str) -> str:
    return f"<sluice-export-{export_id}@sluice.invalid>"


def classify_http_error(exc: Exception, what: str) -> Exception:
    """A failed Drive upload or Gmail send in Sluice's taxonomy (the shared Google classifier);
    anything else as it is."""
    return classify_exception(exc, api=DESTINATION, what=what, now=datetime.now(UTC)) or exc


def _drive(auth: GoogleAuth, owner: str) -> Any:
    from googleapiclient.discovery import build

    return build(
        "drive", "v3", http=auth.authorized_http(owner, [DRIVE_FILE]), cache_discovery=False, static_discovery=True
    )


def _gmail(auth: GoogleAuth, owner: str) -> Any:
    from googleapiclient.discovery import build

    return build(
        "gmail", "v1", http=auth.authorized_http(owner, [GMAIL_SEND]), cache_discovery=False, static_discovery=True
    )


def upload_to_drive(
    auth: GoogleAuth,
    *,
    owner: str,
    export_id: str,
    path: Path,
    filename: str,
    content_type: str,
    folder_id: str | None,
) -> str:
    """Upload (resumable, in chunks) into ``folder_id`` or My Drive's root; return the Drive file id."""
    from googleapiclient.http import MediaFileUpload

    try:
        drive = _drive(auth, owner)
        q = f"appProperties has {{ key='{EXPORT_KEY}' and value='{export_id}' }} and trashed = false"
        found = drive.files().list(q=q, fields="files(id)", pageSize=1, spaces="drive").execute()
        if found.get("files"):
            file_id = str(found["files"][0]["id"])
            log.info("export already on Drive; not uploading again", extra={"fields": {"drive_file_id": file_id}})
            return file_id
        body: dict[str, Any] = {"name": filename, "appProperties": {EXPORT_KEY: export_id}}
        if folder_id:
            body["parents"] = [folder_id]
        media = MediaFileUpload(str(path), mimetype=content_type, resumable=True, chunksize=DRIVE_CHUNK)
        request = drive.files().create(body=body, media_body=media, fields="id", supportsAllDrives=True)
        response = None
        while response is None:
            _status, response = request.next_chunk()
        return str(response["id"])
    except Exception as exc:
        raise classify_http_error(exc, "Drive upload") from exc


def send_by_gmail(
    auth: GoogleAuth,
    *,
    owner: str,
    export_id: str,
    path: Path,
    filename: str,
    content_type: str,
    to: str,
    subject: str,
    body: str,
) -> str:
    """Send the file as an attachment from the owner's Gmail; return the Gmail message id."""
    size = path.stat().st_size
    if size > GMAIL_MAX_ATTACHMENT:
        raise PermanentError(
            f"the export is {size / 1_048_576:.1f} MB; Gmail accepts attachments up to 25 MB",
            code="too_large_for_gmail",
            hint="Export to a download link or to Drive instead.",
        )
    msg_id = message_id_for(export_id)
    try:
        gmail = _gmail(auth, owner)
        found = gmail.users().messages().list(userId="me", q=f"rfc822msgid:{msg_id}", maxResults=1).execute()
        if found.get("messages"):
            sent = str(found["messages"][0]["id"])
            log.info("export already e-mailed; not sending again", extra={"fields": {"gmail_message_id": sent}})
            return sent
        raw = base64.urlsafe_b64encode(
            build_email(
                to=to,
                subject=subject,
                body=body,
                path=path,
                filename=filename,
                content_type=content_type,
                message_id=msg_id,
            )
        ).decode()
        sent_msg = gmail.users().messages().send(userId="me", body={"raw": raw}).execute()
        return str(sent_msg["id"])
    except Exception as exc:
        raise classify_http_error(exc, "Gmail send") from exc


def build_email(
    *, to: str, subject: str, body: str, path: Path, filename: str, content_type: str, message_id: str
) -> bytes:
    """A MIME multipart message with the export attached."""
    msg = EmailMessage()
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    msg.set_content(body)
    maintype, _, subtype = content_type.split(";")[0].partition("/")
    msg.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=filename)
    return bytes(msg)


class GoogleDestinations:
    """The port's implementation: :func:`upload_to_drive` and :func:`send_by_gmail`."""

    def upload_to_drive(
        self,
        auth: GoogleAuth,
        *,
        owner: str,
        export_id: str,
        path: Path,
        filename: str,
        content_type: str,
        folder_id: str | None,
    ) -> str:
        return upload_to_drive(
            auth,
            owner=owner,
            export_id=export_id,
            path=path,
            filename=filename,
            content_type=content_type,
            folder_id=folder_id,
        )

    def send_by_gmail(
        self,
        auth: GoogleAuth,
        *,
        owner: str,
        export_id: str,
        path: Path,
        filename: str,
        content_type: str,
        to: str,
        subject: str,
        body: str,
    ) -> str:
        return send_by_gmail(
            auth,
            owner=owner,
            export_id=export_id,
            path=path,
            filename=filename,
            content_type=content_type,
            to=to,
            subject=subject,
            body=body,
        )
