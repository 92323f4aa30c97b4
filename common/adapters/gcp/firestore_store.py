"""The document store on Cloud Firestore (native mode).

Versions
    A version is the document's ``update_time`` (RFC 3339 with nanoseconds),
    passed back as a ``last_update_time`` precondition for compare-and-set.
    Firestore keeps ``update_time`` unchanged when a write leaves a document
    as it was, while the port promises a new version on every write; so each
    ``create``/``set``/``update`` also writes a random token in the hidden
    field ``_sluice_w`` (stripped from every read; data may not use that key).
    Commit times of one document only grow, so a document deleted and created
    again never repeats a version.

Transactions
    Optimistic, as the port specifies, and *not* Firestore's server
    transactions. Those lock what they read (pessimistic concurrency in the
    server SDKs): a plain write to a document a transaction has read waits
    for the lock or wounds the transaction, and the emulator's behaviour
    there differs from production. Instead ``tx.get`` is a plain read that
    records ``update_time`` (or absence), writes are buffered, and the commit
    is one atomic batch in which every document read carries a precondition:
    its own write carries ``update_time == read`` (``exists == false`` if it
    was absent), and a document read but not written gets a *verify* write --
    an update with an empty field mask (changes nothing, not even
    ``update_time``) or, for an absent one, a delete with ``exists == false``.
    If anything read has changed meanwhile a precondition fails, nothing is
    written, and ``fn`` runs again after a randomized, growing pause; no
    update is lost and no writer is ever blocked. A read-only transaction with
    several reads checks them with one batch read (a consistent snapshot).
    The same code runs on the emulator and in production.

    ``tx.create`` of a document the transaction did not read fails with
    AlreadyExists (an answer, not a conflict: ``fn`` does not run again);
    one it read as absent conflicts if it appeared, and runs ``fn`` again.

Queries
    Firestore's own semantics are the port's: filters match values of the
    same type, ``== None`` matches null only, ``!=`` skips missing fields and
    nulls, ordering by a field skips documents without it. Two gaps are
    bridged here: ``in`` never matches null (so an ``in`` list holding None
    becomes ``== None OR in [...]``), and an empty ``in`` list matches nothing
    without asking the server. Orders are made explicit -- the given ones,
    then inequality fields (by name) in the last direction, then
    ``__name__`` in that direction -- so ties break by id as on every backend.
    Cursors are urlsafe base64 JSON of the order spec, the last document's
    order values and its id, decoded into ``start_after``. Counts use the
    aggregation query.

Arrays in arrays
    Firestore refuses an array directly inside an array (a table's rows are
    one); such inner arrays are stored as ``{"_sluice_list": [...]}`` maps and
    unwrapped on read, so documents round-trip as on every backend. Filters
    never look inside arrays, so queries are unaffected.

Differences from the embedded store
    Documents over 1 MiB are refused; collection names are the same ``[a-z][a-z0-9_]*`` as locally, with
    an optional ``collection_prefix`` so several deployments (or test runs)
    can share a database.

Composite indexes the handlers' queries need, from ``STORE_INDEXES`` in
``common/bootstrap.py`` (deploy them with the database). An entry that mixes
equality with an order or a range needs a composite index, fields in the
listed order, then ``__name__`` in the last field's direction; descending
where the handler lists newest first. Equality-only entries (``run_id,status``,
``owner,account``, ``job_id,status,file_type``) are served by single-field
indexes and zig-zag merge joins, though a composite makes them cheaper.

    jobs:         owner, created_at | owner, updated_at | owner, name
    runs:         job_id, run_number DESC | owner, created_at | owner, status (+ order)
    tasks:        run_id, file_name, file_id (export row order) | status, lease_until (cleanup)
                  | owner, status, lease_until (count of live attempts)
    exports:      destination.kind, created_at
    operations:   owner, created_at
    automations:  owner, created_at
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from common.adapters.gcp import clients
from common.adapters.optimistic import ReadTracker, RetryTransaction
from common.core.errors import AlreadyExists, NotFound, PreconditionFailed
from common.ports.store import Direction, Filter, Order, Page, Snapshot, Transaction

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_query import BaseFilter
    from google.cloud.firestore_v1.types import Write

    from common.ports.store import Store

T = TypeVar("T")

WRITE_TOKEN: Final = "_sluice_w"
# Firestore refuses an array directly inside an array; such an inner array is
# stored as a one-key map {NESTED_ARRAY: [...]} and turned back on read.
NESTED_ARRAY: Final = "_sluice_list"
_COLLECTION_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
_INEQUALITY: Final = frozenset({"!=", "<", "<=", ">", ">="})
_UPDATE_ATTEMPTS: Final = 100
_encode_json: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

_CREATE, _SET, _DELETE = "create", "set", "delete"


class _CreateCollision(Exception):
    """A transactional create of a document the transaction did not read found it present."""


def _check_collection(collection: str) -> None:
    if not _COLLECTION_RE.fullmatch(collection):
        raise ValueError(f"invalid collection name {collection!r}: expected [a-z][a-z0-9_]*")


def _check_id(doc_id: str) -> None:
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError(f"document id must be a non-empty string, got {doc_id!r}")
    if "/" in doc_id or doc_id in (".", "..") or (doc_id.startswith("__") and doc_id.endswith("__")):
        raise ValueError(f"document id {doc_id!r} is not allowed by Firestore")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "text"
    raise TypeError(f"cannot filter on a {type(value).__name__} value; use str, number, bool or None")


def _version(update_time: Any) -> str:
    """An opaque version from a ``DatetimeWithNanoseconds`` update time."""
    return str(update_time.rfc3339())


def _update_time(version: str) -> Any:
    """The timestamp behind a version, or None if the string is not one of ours."""
    from proto.datetime_helpers import DatetimeWithNanoseconds

    try:
        return DatetimeWithNanoseconds.from_rfc3339(version)
    except (ValueError, TypeError):
        return None


def _to_store(value: Any, in_array: bool = False) -> Any:
    if isinstance(value, Mapping):
        if len(value) == 1 and NESTED_ARRAY in value:
            raise ValueError(f"a map holding only {NESTED_ARRAY!r} is reserved by the Firestore store")
        return {k: _to_store(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_to_store(v, True) for v in value]
        return {NESTED_ARRAY: items} if in_array else items
    return value


def _from_store(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(NESTED_ARRAY), list):
            return [_from_store(v) for v in value[NESTED_ARRAY]]
        return {k: _from_store(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_store(v) for v in value]
    return value


def _payload(data: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form of ``data``: inner arrays wrapped, plus a fresh write token."""
    if WRITE_TOKEN in data:
        raise ValueError(f"field {WRITE_TOKEN!r} is reserved by the Firestore store")
    stored: dict[str, Any] = _to_store(data)
    stored[WRITE_TOKEN] = secrets.token_hex(8)
    return stored


def _visible(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The port's form of a stored document: token dropped, inner arrays unwrapped."""
    out: dict[str, Any] = _from_store(dict(data or {}))
    out.pop(WRITE_TOKEN, None)
    return out


def _effective_order(filters: Sequence[Filter], order_by: Sequence[Order]) -> list[tuple[str, Direction]]:
    orders: list[tuple[str, Direction]] = []
    for o in order_by:
        if o.direction not in ("asc", "desc"):
            raise ValueError(f"unknown order direction {o.direction!r}")
        orders.append((o.field, o.direction))
    last: Direction = orders[-1][1] if orders else "asc"
    ordered = {f for f, _ in orders}
    inequality = sorted({f.field for f in filters if f.op in _INEQUALITY} - ordered)
    orders.extend((f, last) for f in inequality)
    return orders


def _encode_cursor(orders: list[tuple[str, Direction]], values: Sequence[Any], doc_id: str) -> str:
    raw = _encode_json({"o": orders, "v": list(values), "id": doc_id})
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii")


def _decode_cursor(cursor: str, orders: list[tuple[str, Direction]]) -> tuple[list[Any], str]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        spec = [(f, d) for f, d in payload["o"]]
        values, doc_id = payload["v"], payload["id"]
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise ValueError("invalid cursor") from exc
    if spec != orders or not isinstance(values, list) or len(values) != len(orders) or not isinstance(doc_id, str):
        raise ValueError("cursor does not belong to this query (different order)")
    return values, doc_id


def _nested_get(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        value = value[part]
    return value


def _nested_set(target: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _is_conflict(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.FailedPrecondition | gexc.AlreadyExists | gexc.NotFound | gexc.Aborted)


class FirestoreTransaction(ReadTracker["FirestoreStore"]):
    """The ``Transaction`` handed to ``fn``: reads recorded, writes built and buffered."""

    __slots__ = ("_writes",)

    def __init__(self, store: FirestoreStore) -> None:
        super().__init__(store)
        # (op, collection, id, the write without its precondition)
        self._writes: list[tuple[str, str, str, Write]] = []

    def _has_writes(self) -> bool:
        return bool(self._writes)

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        self._buffer(_CREATE, collection, doc_id, data)

    def set(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        self._buffer(_SET, collection, doc_id, data)

    def delete(self, collection: str, doc_id: str) -> None:
        self._buffer(_DELETE, collection, doc_id, None)

    def _buffer(self, op: str, collection: str, doc_id: str, data: Mapping[str, Any] | None) -> None:
        # Built now: encoding errors surface inside fn, and later changes to
        # ``data`` by the caller do not leak into the commit.
        self._check_open()
        self._writes.append((op, collection, doc_id, self._store._write_pb(op, collection, doc_id, data)))


class FirestoreStore:
    """The ``Store`` port on Firestore; the client is built on first use.

    Picklable (it holds only its settings), so a process can be handed a
    ``functools.partial(FirestoreStore, ...)`` and open its own.
    """

    def __init__(
        self,
        project: str | None = None,
        *,
        database: str = "(default)",
        collection_prefix: str = "",
    ) -> None:
        self._project = project
        self._database = database
        self._prefix = collection_prefix

    # -- plumbing -------------------------------------------------------------

    @property
    def client(self) -> firestore.Client:
        return clients.firestore_client(self._project, self._database)

    def _ref(self, collection: str, doc_id: str) -> Any:
        _check_collection(collection)
        _check_id(doc_id)
        return self.client.collection(self._prefix + collection).document(doc_id)

    def _write_pb(
        self, op: str, collection: str, doc_id: str, data: Mapping[str, Any] | None, precondition: Any = None
    ) -> Write:
        # pbs_for_set_no_merge is the library's own encoder for set(); the
        # precondition is added here because DocumentReference.set takes none.
        from google.cloud.firestore_v1 import _helpers
        from google.cloud.firestore_v1.types import Precondition, Write

        ref = self._ref(collection, doc_id)
        if op == _DELETE:
            pb = Write(delete=ref._document_path)
        else:
            assert data is not None
            (pb,) = _helpers.pbs_for_set_no_merge(ref._document_path, _payload(data))
            if op == _CREATE:
                pb.current_document = Precondition(exists=False)
        if precondition is not None:
            pb.current_document = precondition
        return pb

    def _commit(self, writes: Sequence[Write]) -> list[Any]:
        batch = self.client.batch()
        batch._add_write_pbs(list(writes))
        return list(batch.commit())

    @staticmethod
    def _snapshot(snap: Any) -> Snapshot:
        return Snapshot(snap.id, _visible(snap.to_dict()), _version(snap.update_time))

    # -- single documents -----------------------------------------------------

    def get(self, collection: str, doc_id: str) -> Snapshot | None:
        snap = self._ref(collection, doc_id).get()
        return self._snapshot(snap) if snap.exists else None

    def get_many(self, collection: str, doc_ids: Sequence[str]) -> list[Snapshot]:
        """The documents that exist, in the order asked for (repeats repeated)."""
        if not doc_ids:
            return []
        unique = list(dict.fromkeys(doc_ids))
        refs = [self._ref(collection, d) for d in unique]
        found = {s.id: self._snapshot(s) for s in self.client.get_all(refs) if s.exists}
        return [found[d] for d in doc_ids if d in found]

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> Snapshot:
        from google.api_core import exceptions as gexc

        try:
            return self._write_one(_CREATE, collection, doc_id, data, None)
        except gexc.AlreadyExists:
            raise AlreadyExists(f"{collection}/{doc_id} already exists") from None

    def set(
        self,
        collection: str,
        doc_id: str,
        data: Mapping[str, Any],
        *,
        if_version: str | None = None,
    ) -> Snapshot:
        if if_version is None:
            return self._write_one(_SET, collection, doc_id, data, None)
        return self._cas_set(collection, doc_id, data, if_version)

    def _write_one(self, op: str, collection: str, doc_id: str, data: Mapping[str, Any], precondition: Any) -> Snapshot:
        pb = self._write_pb(op, collection, doc_id, data, precondition)
        (result,) = self._commit([pb])
        # Decoded from what was sent, so the snapshot is what a get returns and
        # shares nothing with ``data``.
        return Snapshot(doc_id, _visible_from_pb(pb), _version(result.update_time))

    def _cas_set(self, collection: str, doc_id: str, data: Mapping[str, Any], if_version: str) -> Snapshot:
        from google.cloud.firestore_v1.types import Precondition

        expected = _update_time(if_version)
        if expected is None:
            raise self._cas_error(collection, doc_id, if_version)
        try:
            return self._write_one(_SET, collection, doc_id, data, Precondition(update_time=expected))
        except Exception as exc:
            if _is_conflict(exc):
                raise self._cas_error(collection, doc_id, if_version) from None
            raise

    def _cas_error(self, collection: str, doc_id: str, if_version: str) -> NotFound | PreconditionFailed:
        current = self.get(collection, doc_id)
        if current is None:
            return NotFound(f"{collection}/{doc_id} does not exist")
        return PreconditionFailed(f"{collection}/{doc_id} is at version {current.version}, not {if_version}")

    def update(
        self,
        collection: str,
        doc_id: str,
        changes: Mapping[str, Any],
        *,
        if_version: str | None = None,
    ) -> Snapshot:
        """Merge top-level keys: read, merge, compare-and-set on the version read."""
        for _ in range(_UPDATE_ATTEMPTS):
            current = self.get(collection, doc_id)
            if current is None:
                raise NotFound(f"{collection}/{doc_id} does not exist")
            if if_version is not None and current.version != if_version:
                raise PreconditionFailed(f"{collection}/{doc_id} is at version {current.version}, not {if_version}")
            merged = {**current.data, **changes}
            try:
                return self._cas_set(collection, doc_id, merged, current.version)
            except PreconditionFailed:
                continue  # changed between our read and write: merge again onto the newer one
            except NotFound:
                raise NotFound(f"{collection}/{doc_id} does not exist") from None
        raise PreconditionFailed(f"{collection}/{doc_id} changed under {_UPDATE_ATTEMPTS} updates in a row")

    def delete(self, collection: str, doc_id: str, *, if_version: str | None = None) -> bool:
        """True if a document was deleted. With ``if_version``: PreconditionFailed
        if the document is at another version; False if it is already gone."""
        from google.api_core import exceptions as gexc
        from google.cloud.firestore_v1.types import Precondition

        if if_version is None:
            try:
                self._commit([self._write_pb(_DELETE, collection, doc_id, None, Precondition(exists=True))])
            except gexc.NotFound:
                return False
            return True
        expected = _update_time(if_version)
        if expected is not None:
            try:
                self._commit([self._write_pb(_DELETE, collection, doc_id, None, Precondition(update_time=expected))])
            except Exception as exc:
                if not _is_conflict(exc):
                    raise
            else:
                return True
        if self.get(collection, doc_id) is None:
            return False
        raise self._cas_error(collection, doc_id, if_version)

    # -- queries --------------------------------------------------------------

    def _filter(self, flt: Filter) -> BaseFilter | None:
        """A Firestore filter for ``flt``; None if it can match nothing."""
        from google.cloud.firestore_v1.base_query import FieldFilter, Or

        field, op, value = flt.field, flt.op, flt.value
        if op in ("==", "!="):
            _kind(value)
            return FieldFilter(field, op, value)
        if op in ("<", "<=", ">", ">="):
            if _kind(value) == "null":
                raise ValueError(f"cannot compare {field!r} {op} None")
            return FieldFilter(field, op, value)
        if op == "in":
            if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
                raise TypeError(f"'in' needs a list of values, got {type(value).__name__}")
            items = list(value)
            for item in items:
                _kind(item)
            rest = [item for item in items if item is not None]
            if len(rest) == len(items):
                return FieldFilter(field, "in", rest) if rest else None
            # Firestore's `in` never matches null: ask for it separately.
            is_null = FieldFilter(field, "==", None)
            return Or([is_null, FieldFilter(field, "in", rest)]) if rest else is_null
        raise ValueError(f"unknown filter operator {op!r}")

    def _base_query(self, collection: str, filters: Sequence[Filter]) -> Any | None:
        _check_collection(collection)
        query: Any = self.client.collection(self._prefix + collection)
        for flt in filters:
            built = self._filter(flt)
            if built is None:
                return None
            query = query.where(filter=built)
        return query

    def query(
        self,
        collection: str,
        *,
        filters: Sequence[Filter] = (),
        order_by: Sequence[Order] = (),
        limit: int | None = None,
        start_after: str | None = None,
    ) -> Page:
        from google.cloud.firestore_v1 import Query

        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        orders = _effective_order(filters, order_by)
        cursor_values = _decode_cursor(start_after, orders) if start_after is not None else None
        query = self._base_query(collection, filters)
        if query is None:
            return Page([])
        id_dir: Direction = orders[-1][1] if orders else "asc"
        for field, direction in [*orders, ("__name__", id_dir)]:
            query = query.order_by(field, direction=Query.DESCENDING if direction == "desc" else Query.ASCENDING)
        if cursor_values is not None:
            values, last_id = cursor_values
            position: dict[str, Any] = {}
            for (field, _), value in zip(orders, values, strict=True):
                _nested_set(position, field, value)
            position["__name__"] = self.client.collection(self._prefix + collection).document(last_id)
            query = query.start_after(position)
        if limit is not None:
            query = query.limit(limit + 1)  # one more than asked tells whether another page exists
        snaps = list(query.stream())
        cursor = None
        if limit is not None and len(snaps) > limit:
            snaps = snaps[:limit]
            last = snaps[-1].to_dict() or {}
            cursor = _encode_cursor(orders, [_nested_get(last, f) for f, _ in orders], snaps[-1].id)
        return Page([self._snapshot(s) for s in snaps], cursor)

    def count(self, collection: str, *, filters: Sequence[Filter] = ()) -> int:
        query = self._base_query(collection, filters)
        if query is None:
            return 0
        result = query.count(alias="n").get()
        return int(result[0][0].value)

    def sum(self, collection: str, fields: Sequence[str], *, filters: Sequence[Filter] = ()) -> dict[str, float]:
        totals = dict.fromkeys(fields, 0.0)
        query = self._base_query(collection, filters)
        if query is None or not fields:
            return totals
        names = list(fields)
        # Firestore takes at most five aggregations in one request.
        for start in range(0, len(names), 5):
            group = names[start : start + 5]
            aggregation = query.sum(group[0], alias="s0")
            for i, name in enumerate(group[1:], start=1):
                aggregation = aggregation.sum(name, alias=f"s{i}")
            for result in aggregation.get()[0]:
                totals[group[int(result.alias[1:])]] = float(result.value or 0)
        return totals

    # -- transactions ---------------------------------------------------------

    def transaction(self, fn: Callable[[Transaction], T], *, max_attempts: int = 10) -> T:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for attempt in range(max_attempts):
            tx = FirestoreTransaction(self)
            try:
                result = fn(tx)
            except RetryTransaction:
                pass
            else:
                if self._commit_transaction(tx):
                    return result
            finally:
                tx._open = False
            # Randomized, growing backoff so that colliding writers spread out.
            time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
        raise PreconditionFailed(
            f"transaction conflicted {max_attempts} times in a row",
            hint="Contention on the same documents: retry later or spread the writes.",
        )

    def _commit_transaction(self, tx: FirestoreTransaction) -> bool:  # noqa: C901 (split pending)
        """Commit ``tx`` if everything it read is unchanged; False on conflict."""
        from google.cloud.firestore_v1.types import DocumentMask, Precondition, Write
        from google.cloud.firestore_v1.types import document as document_pb

        if not tx._writes:
            return self._reads_current(tx._reads)

        def read_precondition(key: tuple[str, str]) -> Any:
            version = tx._reads[key]
            if version is None:
                return Precondition(exists=False)
            expected = _update_time(version)
            if expected is None:  # cannot happen: versions come from this store
                raise RetryTransaction
            return Precondition(update_time=expected)

        writes: list[Write] = []
        guarded: set[tuple[str, str]] = set()
        unread_creates: list[tuple[str, str]] = []
        for op, collection, doc_id, pb in tx._writes:
            key = (collection, doc_id)
            if op == _CREATE and tx._reads.get(key, None) is not None:
                raise AlreadyExists(f"{collection}/{doc_id} already exists")
            if key in tx._reads and key not in guarded:
                pb.current_document = read_precondition(key)
                guarded.add(key)
            elif op == _CREATE:
                unread_creates.append(key)
            writes.append(pb)
        for key in tx._reads:
            if key in guarded:
                continue
            path = self._ref(*key)._document_path
            if tx._reads[key] is None:
                writes.append(Write(delete=path, current_document=Precondition(exists=False)))
            else:
                # Verify: an update of no fields changes nothing, but checks the precondition.
                writes.append(
                    Write(
                        update=document_pb.Document(name=path),
                        update_mask=DocumentMask(field_paths=[]),
                        current_document=read_precondition(key),
                    )
                )
        try:
            self._commit(writes)
        except Exception as exc:
            if not _is_conflict(exc):
                raise
            for collection, doc_id in unread_creates:
                if self.get(collection, doc_id) is not None:
                    raise AlreadyExists(f"{collection}/{doc_id} already exists") from None
            return False
        return True

    def _reads_current(self, reads: Mapping[tuple[str, str], str | None]) -> bool:
        """Whether every read is still current, checked at one instant (a batch read)."""
        if len(reads) < 2:
            return True  # a single read is consistent with itself
        refs = [self._ref(c, d) for c, d in reads]
        now: dict[str, str | None] = {}
        for snap in self.client.get_all(refs):
            now[snap.reference.path] = _version(snap.update_time) if snap.exists else None
        return all(now.get(ref.path) == version for ref, version in zip(refs, reads.values(), strict=True))


def _visible_from_pb(pb: Any) -> dict[str, Any]:
    """The data of a set write, decoded back (so the snapshot equals a later get)."""
    from google.cloud.firestore_v1 import _helpers

    decoded: Any = _helpers.decode_dict(pb.update.fields, None)
    return _visible(decoded)


if TYPE_CHECKING:

    def _conforms(store: FirestoreStore, tx: FirestoreTransaction) -> tuple[Store, Transaction]:
        """mypy checks here that the classes satisfy the port's protocols."""
        return store, tx
