"""Typed access to the store: records in, records out, versions for compare-and-set."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from common.core.errors import AlreadyExists, NotFound
from common.core.models import Record
from common.ports.store import Filter, Order, Store, Transaction

R = TypeVar("R", bound=Record)


def get(store: Store, model: type[R], doc_id: str) -> tuple[R, str] | None:
    snap = store.get(model.collection, doc_id)
    return None if snap is None else (model.from_doc(snap.data), snap.version)


def require(store: Store, model: type[R], doc_id: str) -> tuple[R, str]:
    found = get(store, model, doc_id)
    if found is None:
        raise NotFound(f"{model.__name__.lower()} {doc_id} not found")
    return found


def create(store: Store, record: Record) -> str:
    return store.create(record.collection, record.id, record.to_doc()).version


def create_if_absent(store: Store, record: Record) -> bool:
    """True if created; False if a record with that id already existed."""
    try:
        store.create(record.collection, record.id, record.to_doc())
    except AlreadyExists:
        return False
    return True


# Records created per transaction by create_all_if_absent: one commit each
# (an fsync on the embedded store), well within Firestore's 500 writes.
CREATE_CHUNK = 200


def create_all_if_absent(store: Store, records: Sequence[Record], *, chunk: int = CREATE_CHUNK) -> int:
    """Create each record whose id is absent; return how many were created.

    ``chunk`` records go in one transaction instead of a commit each (a run's
    fan-out of a thousand items is otherwise a thousand commits before its first
    item is sent). A chunk meeting a record that exists already (a redelivered
    fan-out, or a racing one) is written none of, and is created record by record.
    """
    created = 0
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]

        def tx(t: Transaction, part: Sequence[Record] = part) -> int:
            for record in part:
                t.create(record.collection, record.id, record.to_doc())
            return len(part)

        try:
            created += store.transaction(tx)
        except AlreadyExists:
            created += sum(create_if_absent(store, record) for record in part)
    return created


def cas(store: Store, record: Record, version: str) -> str:
    """Replace ``record`` only if it is still at ``version`` (PreconditionFailed otherwise)."""
    return store.set(record.collection, record.id, record.to_doc(), if_version=version).version


def put(store: Store, record: Record) -> str:
    return store.set(record.collection, record.id, record.to_doc()).version


def tx_get(tx: Transaction, model: type[R], doc_id: str) -> R | None:
    snap = tx.get(model.collection, doc_id)
    return None if snap is None else model.from_doc(snap.data)


def tx_require(tx: Transaction, model: type[R], doc_id: str) -> R:
    found = tx_get(tx, model, doc_id)
    if found is None:
        raise NotFound(f"{model.__name__.lower()} {doc_id} not found")
    return found


def tx_put(tx: Transaction, record: Record) -> None:
    tx.set(record.collection, record.id, record.to_doc())


def scan(
    store: Store,
    model: type[R],
    *,
    filters: Sequence[Filter] = (),
    order_by: Sequence[Order] = (),
    page_size: int = 500,
) -> Iterator[R]:
    """Every matching record, fetched a page at a time."""
    cursor: str | None = None
    while True:
        page = store.query(
            model.collection,
            filters=filters,
            order_by=order_by,
            limit=page_size,
            start_after=cursor,
        )
        for snap in page.items:
            yield model.from_doc(snap.data)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
