"""What the blob adapters share to keep the port's error contract
(:mod:`common.ports.blobs`): the caller's stream failures kept apart from the
store's, and readers whose failures are classified like every other call."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, BinaryIO

# The Sluice error for a store failure, or None to let the exception pass as it is.
Classify = Callable[[Exception], Exception | None]


class SourceFailed(Exception):
    """A failure of the caller's stream inside ``put_stream``, carried past the
    adapter's storage-error mapping and re-raised as the original exception."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


def read_source(stream: BinaryIO, size: int) -> bytes:
    """``stream.read(size)``, with a failure marked as the source's (:class:`SourceFailed`)."""
    try:
        return stream.read(size)
    except Exception as exc:
        raise SourceFailed(exc) from exc


def classified(exc: Exception, classify: Classify) -> Exception:
    """The exception to raise for ``exc``: the source's own, the mapped one, or ``exc``."""
    if isinstance(exc, SourceFailed):
        return exc.original
    mapped = classify(exc)
    return exc if mapped is None else mapped


class ClassifiedReader(io.RawIOBase):
    """A readable (and, if the inner one is, seekable) stream whose failures go
    through ``classify``: a 503 or a reset in the middle of a read is a
    BlobUnavailable, not a transport error, wherever the reader was handed."""

    def __init__(self, inner: Any, classify: Classify) -> None:
        super().__init__()
        self._inner = inner
        self._classify = classify

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            err = classified(exc, self._classify)
            if err is exc:
                raise
            raise err from (None if isinstance(exc, SourceFailed) else exc)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._inner.seekable())

    def read(self, size: int | None = -1) -> bytes:
        return bytes(self._call(lambda: self._inner.read(-1 if size is None else size)))

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._call(lambda: self._inner.seek(offset, whence)))

    def tell(self) -> int:
        return int(self._call(self._inner.tell))

    def close(self) -> None:
        if not self.closed:
            try:
                self._inner.close()
            finally:
                super().close()
