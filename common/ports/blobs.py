"""The blob store port (Cloud Storage in the cloud, files locally).

Objects are named by URI: ``gs://bucket/name`` in the cloud and
``local://bucket/name`` on the embedded backend. An adapter refuses the other
backend's URIs instead of guessing.

Errors (every adapter, proven by one contract suite for all of them):

* :class:`~common.core.errors.BlobNotFound` (permanent) -- no object at the
  URI (``open``, ``get_bytes``); ``stat`` answers ``None`` and ``delete``
  ``False`` instead.
* :class:`~common.core.errors.BlobUnavailable` (retryable) -- the store could
  not serve the request now: 429 or 5xx (with the server's ``Retry-After``
  when it sent one), a reset connection, a timeout, a failing disk. It reaches
  the retry policy like any other transient failure.
* :class:`~common.core.errors.BlobAccessDenied` (permanent) -- credentials or
  permissions refused.
* ``ValueError`` -- a malformed URI or name, or ``max_bytes`` exceeded;
  :class:`~common.core.errors.PreconditionFailed` -- ``if_generation`` did
  not hold.
* An exception raised by the *caller's* stream during ``put_stream`` is
  re-raised as it is (it is the source's failure, not the store's), and the
  previous object stays whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class BlobInfo:
    uri: str
    bucket: str
    name: str
    size: int
    content_type: str | None
    updated: datetime
    generation: str
    metadata: dict[str, str] = field(default_factory=dict)


class BlobStore(Protocol):
    scheme: str

    def uri(self, bucket: str, name: str) -> str: ...

    def put_bytes(
        self,
        uri: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        if_generation: str | None = None,
    ) -> BlobInfo:
        """Write atomically: readers see the old object or the new one, never half.

        ``if_generation="0"`` writes only if the object does not exist yet.
        """
        ...

    def put_stream(
        self,
        uri: str,
        stream: BinaryIO,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        chunk_size: int = 8 * 1024 * 1024,
    ) -> BlobInfo:
        """Write from a stream in chunks; never holds the whole object in memory."""
        ...

    def open(self, uri: str) -> BinaryIO:
        """A readable stream (BlobNotFound if absent); its reads raise BlobUnavailable, not transport errors."""
        ...

    def get_bytes(self, uri: str, *, max_bytes: int | None = None) -> bytes:
        """The whole object (BlobNotFound if absent); with ``max_bytes``, refuse (ValueError) a larger one."""
        ...

    def stat(self, uri: str) -> BlobInfo | None: ...

    def delete(self, uri: str) -> bool: ...

    def list(self, bucket: str, prefix: str = "") -> Iterator[BlobInfo]: ...

    def signed_url(self, uri: str, *, expires: timedelta, method: str = "GET") -> str: ...
