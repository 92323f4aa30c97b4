"""Blobs on Cloud Storage, named ``gs://bucket/name`` (``local://`` refused).

Writes
    ``put_bytes`` is one upload, atomic as every GCS write is (readers see
    the old generation or the new one). ``if_generation`` becomes
    ``if_generation_match`` (``"0"``: only if the object does not exist), and a
    412 becomes PreconditionFailed. ``put_stream`` is a resumable upload: the
    source is read ``chunk_size`` bytes at a time and sent in chunks of the
    next multiple of 256 KiB (GCS's unit), so memory stays bounded; an error
    mid-stream abandons the upload and the previous object stays whole.

Reads
    ``open`` looks the object up once and returns a seekable reader pinned to
    the generation it found (``blob.open("rb")`` with ranged reads), so a
    concurrent overwrite cannot mix two versions in one read.

Errors
    Every call's failure is classified at this boundary (the port's contract):
    404 is BlobNotFound; 429, 408 and 5xx (with the server's ``Retry-After``),
    a reset or refused connection, a timeout or a corrupt download are
    BlobUnavailable, which the retry policy retries; 401/403 are
    BlobAccessDenied. Reads and small writes are first retried inside the
    client for at most ``retry_timeout_s`` (a blip costs no task attempt);
    streamed uploads are not, because their source may not rewind. A failure
    of the caller's stream passes through as it is.

Names
    Object names are held to the embedded store's rules (no empty, ``.`` or
    ``..`` segments, no leading ``/``, no backslash or NUL) so a name that works
    locally works here and a download can never escape a directory.

Signed URLs
    V4, for ``GET`` (or another method). With credentials that hold a private
    key (a service-account key) the URL is signed locally. Otherwise (Cloud
    Functions' metadata-server credentials) it is signed by IAM ``signBlob``
    through ``google.auth.impersonated_credentials`` for the service account
    named in ``service_account_email`` (or the one the credentials belong
    to); the runtime account needs ``iam.serviceAccounts.signBlob`` on it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TypeVar, cast

from common.adapters.blob_errors import ClassifiedReader, SourceFailed, classified, read_source
from common.adapters.gcp import clients
from common.core.errors import BlobAccessDenied, BlobNotFound, BlobUnavailable, ErrorKind, PreconditionFailed
from common.core.retry import parse_retry_after
from common.ports.blobs import BlobInfo

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.storage import Blob
    from google.cloud.storage import Client as StorageClient

    from common.ports.blobs import BlobStore

SCHEME: Final = "gs"
GCS_CHUNK_UNIT: Final = 256 * 1024
DEFAULT_ENDPOINT: Final = "https://storage.googleapis.com"
_CLOUD_PLATFORM: Final = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_RETRY_TIMEOUT_S: Final = 10.0
_RETRYABLE_STATUS: Final = frozenset({408, 429})  # and every 5xx
_STATUS_KINDS: Final = {429: ErrorKind.RATE_LIMITED, 503: ErrorKind.UNAVAILABLE}
T = TypeVar("T")


def parse_uri(uri: str) -> tuple[str, str]:
    prefix = f"{SCHEME}://"
    if not uri.startswith(prefix):
        raise ValueError(f"{uri!r} is not a {prefix} URI; this backend stores only {prefix} objects")
    bucket, _, name = uri[len(prefix) :].partition("/")
    if not bucket or not name:
        raise ValueError(f"{uri!r} must name a bucket and an object")
    _check_name(bucket, name)
    return bucket, name


def _check_name(bucket: str, name: str) -> None:
    if PurePosixPath(name).is_absolute() or any(p in ("", ".", "..") for p in name.split("/")):
        raise ValueError(f"object name {name!r} is not a safe relative path")
    if "\\" in name or "\x00" in name:
        raise ValueError(f"object name {name!r} is not a safe relative path")
    if not bucket.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"bucket name {bucket!r} is invalid")


def gcs_chunk_size(chunk_size: int) -> int:
    """The smallest multiple of 256 KiB that holds ``chunk_size`` bytes."""
    return max(GCS_CHUNK_UNIT, -(-chunk_size // GCS_CHUNK_UNIT) * GCS_CHUNK_UNIT)


class _ChunkedReader(io.RawIOBase):
    """Reads the source at most ``chunk_size`` bytes at a time, whatever is asked of it."""

    def __init__(self, source: BinaryIO, chunk_size: int) -> None:
        super().__init__()
        self._source = source
        self._chunk = max(1, chunk_size)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # for tell(); seeking elsewhere needs a seekable source

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._pos + offset if whence == io.SEEK_CUR else -1
        if target != self._pos:
            # Only a failed chunk's recovery seeks back; the source must allow it.
            self._source.seek(target - self._pos, io.SEEK_CUR)
            self._pos = target
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        parts: list[bytes] = []
        want = -1 if size is None else size
        while want < 0 or want > 0:
            piece = read_source(self._source, self._chunk if want < 0 else min(self._chunk, want))
            if not piece:
                break
            parts.append(piece)
            if want > 0:
                want -= len(piece)
        data = b"".join(parts)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class GcsBlobStore:
    scheme = SCHEME

    def __init__(
        self,
        project: str | None = None,
        *,
        signing_credentials: Any = None,
        service_account_email: str | None = None,
        api_access_endpoint: str | None = None,
        retry_timeout_s: float = DEFAULT_RETRY_TIMEOUT_S,
    ) -> None:
        self._project = project
        self._retry_timeout_s = retry_timeout_s
        self._retry_policy: Any = None
        self._signing_credentials = signing_credentials
        self._service_account = service_account_email
        self._endpoint = api_access_endpoint
        self._impersonated: Any = None

    @property
    def client(self) -> StorageClient:
        return clients.storage_client(self._project)

    @property
    def _retry(self) -> Any:
        """The client's own retry, bounded by ``retry_timeout_s`` (0: none)."""
        if self._retry_timeout_s <= 0:
            return None
        if self._retry_policy is None:
            from google.cloud.storage.retry import DEFAULT_RETRY

            self._retry_policy = DEFAULT_RETRY.with_timeout(self._retry_timeout_s)
        return self._retry_policy

    def _call(self, uri: str, fn: Callable[[], T]) -> T:
        """``fn()`` with its failure classified by the port's contract."""
        try:
            return fn()
        except Exception as exc:
            err = classified(exc, lambda e: gcs_error(e, uri))
            if err is exc:
                raise
            raise err from (None if isinstance(exc, SourceFailed) else exc)

    def uri(self, bucket: str, name: str) -> str:
        _check_name(bucket, name)
        return f"{SCHEME}://{bucket}/{name}"

    def _blob(self, uri: str) -> Blob:
        bucket, name = parse_uri(uri)
        return self.client.bucket(bucket).blob(name)

    @staticmethod
    def _info(blob: Blob) -> BlobInfo:
        assert blob.bucket is not None and blob.name is not None and blob.updated is not None
        return BlobInfo(
            uri=f"{SCHEME}://{blob.bucket.name}/{blob.name}",
            bucket=blob.bucket.name,
            name=blob.name,
            size=int(blob.size or 0),
            content_type=blob.content_type,
            updated=blob.updated,
            generation=str(blob.generation),
            metadata=dict(blob.metadata or {}),
        )

    # -- writing --------------------------------------------------------------

    def put_bytes(
        self,
        uri: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        if_generation: str | None = None,
    ) -> BlobInfo:
        from google.api_core import exceptions as gexc

        generation: int | None = None
        if if_generation is not None:
            if not if_generation.isdigit():
                raise PreconditionFailed(f"{uri}: {if_generation!r} is not a generation")
            generation = int(if_generation)
        blob = self._blob(uri)
        blob.metadata = dict(metadata or {})
        try:
            # Retried inside as a whole: the same bytes again (and a precondition, if any, holds).
            self._call(
                uri,
                lambda: blob.upload_from_string(
                    data,
                    content_type=content_type or "application/octet-stream",
                    if_generation_match=generation,
                    retry=self._retry,
                ),
            )
        except gexc.PreconditionFailed:
            raise PreconditionFailed(f"{uri}: generation is not {if_generation}") from None
        return self._info(blob)

    def put_stream(
        self,
        uri: str,
        stream: BinaryIO,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        chunk_size: int = 8 * 1024 * 1024,
    ) -> BlobInfo:
        blob = self._blob(uri)
        blob.chunk_size = gcs_chunk_size(chunk_size)
        blob.metadata = dict(metadata or {})
        reader = _ChunkedReader(stream, chunk_size)
        # Not retried inside: a chunk's retry rewinds the source, which may not
        # rewind (a Drive download, an archive member). The policy retries the copy.
        self._call(
            uri,
            lambda: blob.upload_from_file(reader, content_type=content_type or "application/octet-stream", retry=None),
        )
        return self._info(blob)

    # -- reading --------------------------------------------------------------

    def _lookup(self, uri: str) -> Blob | None:
        bucket, name = parse_uri(uri)
        return self._call(uri, lambda: self.client.bucket(bucket).get_blob(name, retry=self._retry))

    def _existing(self, uri: str) -> Blob:
        blob = self._lookup(uri)
        if blob is None:
            raise BlobNotFound(f"no object at {uri}")
        return blob

    def open(self, uri: str) -> BinaryIO:
        # get_blob sets the generation: every ranged read is of that generation.
        blob = self._existing(uri)
        reader = self._call(uri, lambda: blob.open("rb", retry=self._retry))
        return cast(BinaryIO, io.BufferedReader(ClassifiedReader(reader, lambda e: gcs_error(e, uri))))

    def get_bytes(self, uri: str, *, max_bytes: int | None = None) -> bytes:
        blob = self._existing(uri)
        if max_bytes is not None and (blob.size or 0) > max_bytes:
            raise ValueError(f"{uri} is larger than {max_bytes} bytes")
        return bytes(self._call(uri, lambda: blob.download_as_bytes(retry=self._retry)))

    def stat(self, uri: str) -> BlobInfo | None:
        blob = self._lookup(uri)
        return None if blob is None else self._info(blob)

    def delete(self, uri: str) -> bool:
        blob = self._blob(uri)
        try:
            self._call(uri, lambda: blob.delete(retry=self._retry))
        except BlobNotFound:
            return False
        return True

    def list(self, bucket: str, prefix: str = "") -> Iterator[BlobInfo]:
        where = f"{SCHEME}://{bucket}/{prefix}"
        pages = self._call(
            where, lambda: iter(self.client.list_blobs(bucket, prefix=prefix or None, retry=self._retry))
        )
        while True:
            blob = self._call(where, lambda: next(pages, None))
            if blob is None:
                return
            yield self._info(blob)

    # -- signed URLs ----------------------------------------------------------

    def _signer(self) -> Any:
        """Credentials that can sign: a key held locally, else IAM signBlob by impersonation."""
        from google.auth import credentials as ga_credentials

        creds = self._signing_credentials or self.client._credentials
        if isinstance(creds, ga_credentials.Signing) and not isinstance(creds, ga_credentials.AnonymousCredentials):
            return creds
        if self._impersonated is None:
            from google.auth import impersonated_credentials
            from google.auth.transport.requests import Request

            email = self._service_account or getattr(creds, "service_account_email", None)
            if not email or email == "default":
                creds.refresh(Request())  # metadata-server credentials learn their account on refresh
                email = getattr(creds, "service_account_email", None)
            if not email or email == "default":
                raise PermissionError(
                    "cannot sign URLs: the credentials hold no private key and name no service account "
                    "(set the signing service account)"
                )
            self._impersonated = impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
                source_credentials=creds, target_principal=email, target_scopes=[_CLOUD_PLATFORM]
            )
        return self._impersonated

    def signed_url(self, uri: str, *, expires: timedelta, method: str = "GET") -> str:
        endpoint = self._endpoint or os.environ.get("STORAGE_EMULATOR_HOST") or DEFAULT_ENDPOINT
        return str(
            self._blob(uri).generate_signed_url(
                version="v4",
                expiration=expires,
                method=method,
                credentials=self._signer(),
                api_access_endpoint=endpoint,
            )
        )


def gcs_error(exc: Exception, uri: str) -> Exception | None:
    """Cloud Storage's failure as the port's error, or None for anything else."""
    import requests
    import urllib3
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from google.cloud.storage import exceptions as storage_exc

    if isinstance(exc, gexc.RetryError) and isinstance(exc.cause, Exception):
        return gcs_error(exc.cause, uri)  # the client's own retries ran out: what failed last
    if isinstance(exc, auth_exc.RefreshError):
        return BlobAccessDenied(f"the credentials for Cloud Storage were refused ({exc}) reading {uri}")
    if isinstance(exc, storage_exc.InvalidResponse):  # an answer the client did not re-wrap
        exc = gexc.from_http_status(exc.response.status_code, str(exc), response=exc.response)  # type: ignore[no-untyped-call]
    if isinstance(exc, gexc.Unauthorized | gexc.Forbidden):
        return BlobAccessDenied(f"Cloud Storage refused access to {uri}: {exc.message}")
    if isinstance(exc, gexc.NotFound):
        return BlobNotFound(f"no object at {uri}")
    if isinstance(exc, gexc.GoogleAPICallError) and (
        exc.code in _RETRYABLE_STATUS or isinstance(exc, gexc.ServerError)
    ):
        status = int(exc.code or 500)
        return BlobUnavailable(
            f"Cloud Storage answered {status} for {uri}: {exc.message}",
            kind=_STATUS_KINDS.get(status, ErrorKind.SERVER if status >= 500 else ErrorKind.NETWORK),
            retry_after=_retry_after(exc),
            status=status,
        )
    transient = (
        ConnectionError,  # reset, refused, aborted (the builtin family)
        TimeoutError,
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.HTTPError,
        auth_exc.TransportError,  # the token endpoint or metadata server did not answer
        storage_exc.DataCorruption,  # a checksum mismatch: the next download may be whole
    )
    if isinstance(exc, transient):
        return BlobUnavailable(
            f"Cloud Storage unreachable for {uri}: {type(exc).__name__}: {exc}", kind=ErrorKind.NETWORK
        )
    return None


def _retry_after(exc: Any) -> float | None:
    """The ``Retry-After`` of the answer behind ``exc`` (seconds or an HTTP date), if any."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    return parse_retry_after(headers.get("retry-after") if headers is not None else None, now=datetime.now(UTC))


if TYPE_CHECKING:

    def _conforms(store: GcsBlobStore) -> BlobStore:
        return store
