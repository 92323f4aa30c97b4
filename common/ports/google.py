"""Per-user Google access for the Drive and Gmail clients, and the Drive port.

The adapter keeps each user's refresh token encrypted at rest and hands out an
httplib2-compatible ``http`` object for ``googleapiclient.discovery.build``
that adds the user's access token, refreshes it when expired, and on a 401
refreshes once and retries once. A refresh that fails because the grant was
revoked marks the integration ``reconnect_required`` and raises
:class:`common.core.errors.ReconnectRequired`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

DRIVE_READONLY = "https://www.googleapis.com/auth/drive.readonly"
DRIVE_FILE = "https://www.googleapis.com/auth/drive.file"
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"


class GoogleAuth(Protocol):
    def authorized_http(self, owner: str, scopes: Sequence[str], *, account: str | None = None) -> Any:
        """An authorized http for ``owner``'s Google account (ReconnectRequired if none works)."""
        ...


class DriveDownload(Protocol):
    """A Drive file's bytes, read in chunks; ``sha256`` and ``size`` are known once it is read to the end."""

    @property
    def sha256(self) -> str: ...

    size: int

    def read(self, size: int | None = -1, /) -> bytes: ...


class DriveFiles(Protocol):
    """One user's Drive (read-only); failures are already Sluice errors (see common.adapters.google.errors)."""

    def get(self, file_id: str, *, fields: str) -> dict[str, Any]:
        """``files.get``: one file's metadata."""
        ...

    def list_folder(self, folder_id: str, *, page_token: str | None, page_size: int, fields: str) -> dict[str, Any]:
        """``files.list``: one page of a folder's children (not trashed), all drives included."""
        ...

    def export_pdf(self, file_id: str) -> bytes:
        """``files.export`` as PDF (Drive caps exports at 10 MB, so the bytes are held)."""
        ...

    def download(self, file_id: str, *, chunk_bytes: int, expected_md5: str | None, name: str) -> DriveDownload:
        """``files.get_media``, one Range request per chunk, the MD5 Drive reported checked at the end."""
        ...


class Drive(Protocol):
    """The Drive API (``common.adapters.google.drive.GoogleDrive``): one client shared by every user."""

    def files(self, http: Any, *, now: Callable[[], datetime]) -> DriveFiles:
        """The files of the user whose authorized ``http`` (from :class:`GoogleAuth`) is given;
        ``now`` reads Retry-After dates."""
        ...


class ExportDestinations(Protocol):
    """Delivering an export file to the owner's Google account, exactly once per ``export_id``
    (``common.adapters.google.destinations``); failures are Sluice errors."""

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
        """Upload into ``folder_id`` (or My Drive's root); the Drive file id."""
        ...

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
        """Send the file as an attachment from the owner's Gmail; the Gmail message id."""
        ...
