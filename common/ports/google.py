"""Per-user Google access for the Drive and Gmail clients.

The adapter keeps each user's refresh token encrypted at rest and hands out an
httplib2-compatible ``http`` object for ``googleapiclient.discovery.build``
that adds the user's access token, refreshes it when expired, and on a 401
refreshes once and retries once. A refresh that fails because the grant was
revoked marks the integration ``reconnect_required`` and raises
:class:`common.core.errors.ReconnectRequired`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

DRIVE_READONLY = "https://www.googleapis.com/auth/drive.readonly"
DRIVE_FILE = "https://www.googleapis.com/auth/drive.file"
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"


class GoogleAuth(Protocol):
    def authorized_http(self, owner: str, scopes: Sequence[str], *, account: str | None = None) -> Any:
        """An authorized http for ``owner``'s Google account (ReconnectRequired if none works)."""
        ...
