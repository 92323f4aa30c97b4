"""The Drive v3 API, as much of it as importing files needs (the :class:`common.ports.google.Drive` port).

One discovery client serves every user and thread: it is built on first use
(never at import) with an http that refuses to send, and each request is
executed with its user's authorized http (``execute(http=...)``), so no
request can leave without a user's token. Every failure is classified by
:mod:`common.adapters.google.errors` (``DRIVE``): the service sees Sluice
errors only.

Downloads stream: :class:`MediaReader` pulls one chunk (one Range request)
at a time and checks Drive's MD5 at the end, so a file of any size costs
about one chunk of memory.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from common.adapters.google.errors import DRIVE, classify_exception
from common.core.errors import ErrorKind, PermanentError, RetryableError

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import WriteableBuffer

PDF = "application/pdf"
T = TypeVar("T")


class _UnboundHttp:
    """The shared client's default http: every request must name its user's http instead."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Drive requests must be executed with the user's authorized http")


class GoogleDrive:
    """The Drive API over google-api-python-client (the shipped discovery document, no network fetch)."""

    def __init__(self) -> None:
        self._service: Any = None
        self._lock = threading.Lock()

    def service(self) -> Any:
        """The Drive v3 discovery client, built once per instance, on first use."""
        if self._service is None:
            with self._lock:
                if self._service is None:
                    from googleapiclient.discovery import build

                    self._service = build(
                        "drive", "v3", http=_UnboundHttp(), static_discovery=True, cache_discovery=False
                    )
        return self._service

    def files(self, http: Any, *, now: Callable[[], datetime]) -> DriveFiles:
        return DriveFiles(self.service().files(), http, now)


class DriveFiles:
    """One user's Drive files: the shared client's requests, executed with that user's http."""

    def __init__(self, files: Any, http: Any, now: Callable[[], datetime]) -> None:
        self._files = files
        self._http = http
        self._now = now

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            mapped = classify_exception(exc, api=DRIVE, what=what, now=self._now())
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc

    def get(self, file_id: str, *, fields: str) -> dict[str, Any]:
        request = self._files.get(fileId=file_id, fields=fields, supportsAllDrives=True)
        found: dict[str, Any] = self._call(f"file {file_id}", lambda: request.execute(http=self._http))
        return found

    def list_folder(self, folder_id: str, *, page_token: str | None, page_size: int, fields: str) -> dict[str, Any]:
        request = self._files.list(
            q=f"'{_quote(folder_id)}' in parents and trashed=false",
            pageSize=page_size,
            pageToken=page_token,
            fields=fields,
            supportsAllDrives=True,
            includeItemsFromAllDrives=True,
        )
        page: dict[str, Any] = self._call(f"folder {folder_id}", lambda: request.execute(http=self._http))
        return page

    def export_pdf(self, file_id: str) -> bytes:
        request = self._files.export(fileId=file_id, mimeType=PDF)
        data = self._call(f"export of {file_id}", lambda: request.execute(http=self._http))
        if not isinstance(data, bytes):
            raise PermanentError(f"Drive's export of {file_id} is not a document", code="drive_export")
        return data

    def download(self, file_id: str, *, chunk_bytes: int, expected_md5: str | None, name: str) -> MediaReader:
        request = self._files.get_media(fileId=file_id, supportsAllDrives=True)
        request.http = self._http  # the client is shared by all users; the request is this user's
        return MediaReader(
            request, chunk_bytes=chunk_bytes, expected_md5=expected_md5, name=name, classify=self._classifier(file_id)
        )

    def _classifier(self, file_id: str) -> Callable[[Exception], Exception]:
        def classify(exc: Exception) -> Exception:
            return classify_exception(exc, api=DRIVE, what=f"download of {file_id}", now=self._now()) or exc

        return classify


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


class _Sink:
    """Where MediaIoBaseDownload writes each chunk: handed to the reader as is, hashed on the way."""

    def __init__(self, reader: MediaReader) -> None:
        self._reader = reader

    def write(self, data: bytes) -> int:
        self._reader._take(data)
        return len(data)


class MediaReader(io.RawIOBase):
    """A readable stream over a Drive media download, pulled one chunk (one Range request) at a time.

    A read asks the downloader for the next chunk only when nothing is left
    over, and hands the downloaded ``bytes`` on without copying when the
    caller reads whole chunks (as ``put_stream`` does with the same chunk
    size), so about one chunk is held however large the file. At the end the
    MD5 Drive reported is checked; a mismatch raises (retryable) before the
    blob store finalizes the object, so a corrupt copy is never registered.
    A failed chunk request raises as ``classify`` maps it.
    """

    def __init__(
        self,
        request: Any,
        *,
        chunk_bytes: int,
        expected_md5: str | None = None,
        name: str = "",
        classify: Callable[[Exception], Exception] = lambda exc: exc,
    ) -> None:
        from googleapiclient.http import MediaIoBaseDownload

        super().__init__()
        self._pending: deque[bytes] = deque()
        self._done = False
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha = hashlib.sha256()
        self._expected_md5 = expected_md5
        self._name = name
        self._classify = classify
        self.size = 0
        self.requests = 0
        self._downloader = MediaIoBaseDownload(_Sink(self), request, chunksize=chunk_bytes)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def readable(self) -> bool:
        return True

    def _take(self, data: bytes) -> None:
        if data:
            self._pending.append(data)
        self._md5.update(data)
        self._sha.update(data)
        self.size += len(data)

    def _next_chunk(self) -> bool:
        try:
            _, done = self._downloader.next_chunk()
        except Exception as exc:
            mapped = self._classify(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return bool(done)

    def read(self, size: int | None = -1) -> bytes:
        while not self._pending and not self._done:
            self.requests += 1
            self._done = self._next_chunk()
            if self._done:
                self._verify()
        if not self._pending:
            return b""
        data = self._pending.popleft()
        if size is not None and 0 <= size < len(data):
            self._pending.appendleft(data[size:])
            data = data[:size]
        return data

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        raise io.UnsupportedOperation("a Drive download is read in chunks, never whole")

    def _verify(self) -> None:
        if self._expected_md5 and self._md5.hexdigest() != self._expected_md5:
            raise RetryableError(
                f"{self._name or 'the file'}: downloaded bytes do not match Drive's MD5 checksum",
                kind=ErrorKind.NETWORK,
            )
