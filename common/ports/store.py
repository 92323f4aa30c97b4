"""The document store port (Firestore in the cloud, SQLite locally).

Documents are JSON objects in named collections. Every write returns the new
``version``, an opaque string that changes on every write; passing it back as
``if_version`` makes the write a compare-and-set. Transactions are optimistic:
reads record versions, writes are buffered, and the commit fails (and the
function is run again) if anything read has changed meanwhile.

Firestore's rules hold on every backend, so code that works locally works in
the cloud: inside a transaction all reads come before any write (a read after
a write raises); filters match only values of the same type; ``== None``
matches null but not a missing field; ordering by a field drops documents
without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in"]
Direction = Literal["asc", "desc"]


@dataclass(frozen=True)
class Snapshot:
    id: str
    data: dict[str, Any]
    version: str


@dataclass(frozen=True)
class Filter:
    """``field`` may be dotted (``counters.total``) to reach nested values."""

    field: str
    op: Op
    value: Any


@dataclass(frozen=True)
class Order:
    field: str
    direction: Direction = "asc"


@dataclass(frozen=True)
class Page:
    items: list[Snapshot]
    # Opaque; pass as ``start_after`` to get the next page. None: no more.
    next_cursor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Transaction(Protocol):
    def get(self, collection: str, doc_id: str) -> Snapshot | None: ...

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Fails the commit with AlreadyExists if the document exists."""
        ...

    def set(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Create or replace the whole document."""
        ...

    def delete(self, collection: str, doc_id: str) -> None: ...


@runtime_checkable
class ChangeFeed(Protocol):
    """A store that can wake a reader when a write commits, so a progress stream
    need not wait out its poll (the embedded backend; Firestore has none, and its
    streams poll).

    A reader takes ``change_count()`` before it reads, then waits with it.
    """

    def change_count(self) -> int:
        """An opaque counter that moves when a write commits; compare for inequality only."""
        ...

    def wait_for_change(self, seen: int, timeout_s: float) -> int:
        """Return the count once it differs from ``seen``, or after ``timeout_s``.

        Every write committed after ``seen`` was taken moves it: this process's at
        once, other processes' on the same data after a short delay (the embedded
        store's watch interval). A spare wake-up (no visible change) is allowed;
        a missed write is not, apart from the timeout bounding the wait.
        """
        ...


class Store(Protocol):
    def get(self, collection: str, doc_id: str) -> Snapshot | None: ...

    def get_many(self, collection: str, doc_ids: Sequence[str]) -> list[Snapshot]:
        """The documents that exist, in the order asked for."""
        ...

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> Snapshot:
        """Raises AlreadyExists if a document with that id exists."""
        ...

    def set(
        self,
        collection: str,
        doc_id: str,
        data: Mapping[str, Any],
        *,
        if_version: str | None = None,
    ) -> Snapshot:
        """Create or replace. With ``if_version``: only if the document is still
        at that version (PreconditionFailed otherwise, NotFound if gone)."""
        ...

    def update(
        self,
        collection: str,
        doc_id: str,
        changes: Mapping[str, Any],
        *,
        if_version: str | None = None,
    ) -> Snapshot:
        """Merge top-level keys into an existing document (NotFound if absent)."""
        ...

    def delete(self, collection: str, doc_id: str, *, if_version: str | None = None) -> bool:
        """True if a document was deleted."""
        ...

    def query(
        self,
        collection: str,
        *,
        filters: Sequence[Filter] = (),
        order_by: Sequence[Order] = (),
        limit: int | None = None,
        start_after: str | None = None,
    ) -> Page:
        """Documents matching every filter, ordered (ties broken by id), paged."""
        ...

    def count(self, collection: str, *, filters: Sequence[Filter] = ()) -> int: ...

    def sum(self, collection: str, fields: Sequence[str], *, filters: Sequence[Filter] = ()) -> dict[str, float]:
        """Each field's total over the matching documents, as an aggregation (no document is read):
        numbers only, a missing or non-numeric value counts nothing."""
        ...

    def transaction(self, fn: Callable[[Transaction], T], *, max_attempts: int = 10) -> T:
        """Run ``fn`` in an optimistic transaction, retrying it on conflict.

        ``fn`` may run more than once, so it must not have side effects outside
        the transaction. Raises PreconditionFailed after ``max_attempts``.
        """
        ...
