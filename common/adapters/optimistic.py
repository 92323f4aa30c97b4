"""What both optimistic transactions (SQLite, Firestore) share: recording
what ``fn`` read, so the commit can check nothing moved meanwhile."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from common.core.errors import ReadAfterWrite
from common.ports.store import Snapshot


class RetryTransaction(Exception):
    """A read inside the transaction already shows a conflict: run fn again."""


class _Reader(Protocol):
    def get(self, collection: str, doc_id: str) -> Snapshot | None: ...


S = TypeVar("S", bound=_Reader)


class ReadTracker(Generic[S]):
    """Base of a store's Transaction: ``get`` records each document's version
    (None: absent); reading after a write is refused, as Firestore does."""

    __slots__ = ("_open", "_reads", "_store")

    def __init__(self, store: S) -> None:
        self._store = store
        # (collection, id) -> version read, None if the document was absent.
        self._reads: dict[tuple[str, str], str | None] = {}
        self._open = True

    def _has_writes(self) -> bool:
        raise NotImplementedError

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError("transaction used after its function returned")

    def get(self, collection: str, doc_id: str) -> Snapshot | None:
        self._check_open()
        if self._has_writes():
            raise ReadAfterWrite(f"read of {collection}/{doc_id} after a write in the same transaction")
        snap = self._store.get(collection, doc_id)
        version = snap.version if snap is not None else None
        key = (collection, doc_id)
        if key in self._reads and self._reads[key] != version:
            # Read twice and it moved: this attempt cannot commit anyway.
            raise RetryTransaction
        self._reads[key] = version
        return snap
