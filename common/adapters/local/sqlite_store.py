"""The document store on SQLite: the embedded stand-in for Firestore.

Layout
    One table per collection, ``doc_<collection>`` (``id``, ``data`` as compact
    JSON text, ``version``), so that an expression index on a collection is an
    ordinary index the planner uses with the collection bound in the SQL text;
    a single table with a ``WHERE collection = 'tasks'`` partial index is not
    used when the collection arrives as a parameter. Collection names are
    therefore restricted to ``^[a-z][a-z0-9_]*$``.

Versions
    A per-document counter, bumped by every write. A plain counter would start
    again at 1 for a document deleted and created anew, and a transaction that
    read the old version 1 would then commit on a different document. So each
    collection keeps, in ``_sluice_meta``, the highest version it ever deleted,
    and a new document starts above it: a document's versions never repeat.
    This costs a second row write on delete only; a store-wide sequence would
    cost it on every write.

Concurrency
    WAL journal, one connection per thread (opened lazily), a busy timeout for
    other processes. A single-document write is one statement (its own
    implicit transaction; compare-and-set is in its WHERE clause); multi-
    statement writes run in ``BEGIN IMMEDIATE`` so the write lock is taken up
    front and a read never has to be upgraded (which fails with SQLITE_BUSY
    without waiting). Writers of one process also queue on a Python lock,
    because SQLite's busy handler polls with sleeps of 1 ms and more, far
    slower than a handover between threads.

Group commit
    Every write, single-document or transaction, runs in ``BEGIN IMMEDIATE``
    through ``_write``. Writers that arrive while a commit is in progress queue
    their work; the next one to take the lock commits every queued write in
    one transaction, each in its own savepoint (one writer's failure rolls
    back only its own writes and is raised in its own thread), so one fsync
    serves them all. Each writer returns only after that commit: a returned
    write is as durable as before (``synchronous=FULL``). Writes of one batch
    apply in queue order, so a transaction's read check sees the writes
    committed ahead of it in the same batch, as it would have one commit later.

Transactions
    Optimistic, as the port says. ``tx.get`` reads committed data and records
    the version (or that the document was absent); writes are buffered. At
    commit the write lock is taken, every read is checked to be unchanged, the
    writes are applied and committed; if a read changed, ``fn`` runs again.
    Reads after a write in the same transaction raise (code
    ``read_after_write``), as in Firestore, so code that runs here runs there.

Change feed
    ``change_count`` / ``wait_for_change`` let a reader (an SSE stream) wake
    when a write commits instead of polling. This store's own commits notify
    at once. Commits by other processes (``sluice serve --processes N``'s
    workers) are seen by a watcher thread polling ``PRAGMA data_version`` on
    a connection of its own every ``watch_interval_s``: that value changes
    whenever another connection commits. The watcher runs only while a caller
    waits (and a second after, so a stream between two waits keeps it), so
    nobody streaming costs nothing. Its connection outlives it: a commit made
    while no watcher ran still differs from the value last read, and wakes
    the next waiter at the watcher's first poll.

Queries
    Filters and orders follow Firestore: a filter matches values of the same
    type only (``x > 5`` never matches a string, ``x == 1`` never matches
    ``true``), ``== None`` matches null but not a missing field, ``!=`` matches
    neither missing fields nor nulls, ordering by a field excludes documents
    without it, and ties are broken by id in the direction of the last order.
    Cursors are urlsafe base64 of JSON holding the order spec, the last item's
    order values and its id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import random
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from common.adapters.local.sqlite_wal import use_wal
from common.adapters.optimistic import ReadTracker, RetryTransaction
from common.core.errors import AlreadyExists, NotFound, PreconditionFailed
from common.ports.store import Direction, Filter, Order, Page, Snapshot, Transaction

if TYPE_CHECKING:
    from common.ports.store import Store

T = TypeVar("T")

log = logging.getLogger("sluice.store")

BUSY_TIMEOUT_S: Final = 30.0
# Distinct SQL texts: a handful per collection plus one per query shape.
_STATEMENT_CACHE: Final = 512

_COLLECTION_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
_SEGMENT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# One encoder for every write: json.dumps with keyword arguments builds a new
# encoder per call. NaN and infinities are not JSON; SQLite's JSON functions
# would reject the row later, so refuse them at the write.
_encode: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_decode: Final = json.loads

# json_type() values of each comparable kind of filter value.
_TYPES: Final = {
    "bool": "('true','false')",
    "num": "('integer','real')",
    "text": "('text')",
}

_CREATE, _SET, _DELETE = 0, 1, 2

# update() merges and compare-and-sets; this many lost races in a row means
# something rewrites the document in a tight loop.
_UPDATE_ATTEMPTS: Final = 100

# The change feed's watcher of other processes' commits: how often it polls by
# default, and how long it stays after the last waiter left (an SSE stream
# leaves between two waits for the length of one reload).
WATCH_INTERVAL_S: Final = 0.02
_WATCH_LINGER_S: Final = 1.0


# -- fork safety --------------------------------------------------------------
# A connection (or a held lock) inherited across fork() must not be used by the
# child. Bumping a generation in the child makes every store open fresh
# connections there and replace its write lock.
_fork_generation = 0
_live_stores: weakref.WeakSet[SqliteStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1
    for store in list(_live_stores):
        store._write_lock = threading.Lock()
        store._queue_lock = threading.Lock()
        store._pending = []
        # The parent's waiters and watcher thread do not exist here; its
        # watch connection is replaced (by generation) when first needed.
        store._change_cond = threading.Condition()
        store._watch_lock = threading.Lock()
        store._waiters = 0
        store._watcher = None
        store._closing = threading.Event()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _ConnHolder:
    """Owns one thread's connection; closes it when the thread goes away.

    It lives in a ``threading.local``, which drops it when its thread ends, so
    a pool that replaces threads does not leak connections.
    """

    __slots__ = ("__weakref__", "conn", "generation")

    def __init__(self, conn: sqlite3.Connection, generation: int) -> None:
        self.conn = conn
        self.generation = generation

    def close(self) -> None:
        self.conn.close()

    def __del__(self) -> None:
        # Only in the process that opened it: closing an inherited connection
        # in a forked child could disturb the parent's locks.
        if self.generation == _fork_generation:
            self.conn.close()


class _Local(threading.local):
    holder: _ConnHolder | None = None


@dataclass(eq=False, slots=True)
class _Write:
    """One writer's share of a group commit."""

    fn: Callable[[sqlite3.Connection], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _TableSql:
    """The SQL texts of one collection, built once."""

    collection: str
    table: str
    get: str
    get_many: str
    version: str
    insert: str  # -> new version; IntegrityError if the id exists
    upsert: str  # -> new version
    cas_update: str  # (data, id, expected version) -> new version, or no row
    delete: str  # -> deleted version, or no row
    cas_delete: str  # (id, expected version) -> deleted version, or no row
    tombstone: str  # (deleted version): raise the collection's high-water mark


def _check_collection(collection: str) -> str:
    if not _COLLECTION_RE.fullmatch(collection):
        raise ValueError(f"invalid collection name {collection!r}: expected [a-z][a-z0-9_]*")
    return collection


def _check_id(doc_id: str) -> None:
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError(f"document id must be a non-empty string, got {doc_id!r}")


def _version_param(version: str) -> int:
    """A version string as the stored integer; -1 (never stored) if it is not
    one of ours. Bound as text, SQLite would coerce "3.0" or " 3" to 3."""
    if version.isascii() and version.isdigit() and str(int(version)) == version:
        return int(version)
    return -1


def _json_path(field: str) -> str:
    """``counters.total`` -> ``$.counters.total``, checked so it can be inlined.

    Paths are written into the SQL text (not bound) because an expression
    index is only used when the query's expression is textually the same.
    """
    segments = field.split(".")
    if not all(_SEGMENT_RE.fullmatch(s) for s in segments):
        raise ValueError(f"invalid field path {field!r}: expected dotted identifiers")
    return "$." + field


def _extract(field: str) -> str:
    return f"json_extract(data, '{_json_path(field)}')"


def _type_of(field: str) -> str:
    return f"json_type(data, '{_json_path(field)}')"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "text"
    raise TypeError(f"cannot filter on a {type(value).__name__} value; use str, number, bool or None")


def _equals(field: str, value: Any, params: list[Any]) -> str:
    """``field == value``, matching only values of the same JSON type."""
    kind = _kind(value)
    if kind == "null":
        # json_extract gives NULL for a missing field too; json_type tells them apart.
        return f"({_extract(field)} IS NULL AND {_type_of(field)} = 'null')"
    params.append(value)
    return f"({_extract(field)} = ? AND {_type_of(field)} IN {_TYPES[kind]})"


def _condition(flt: Filter, params: list[Any]) -> str:
    field, op, value = flt.field, flt.op, flt.value
    if op == "==":
        return _equals(field, value, params)
    if op == "!=":
        # Firestore: != matches only documents where the field exists and is
        # not null (json_type is NULL for a missing field, so != drops it).
        return f"({_type_of(field)} != 'null' AND NOT {_equals(field, value, params)})"
    if op in ("<", "<=", ">", ">="):
        kind = _kind(value)
        if kind == "null":
            raise ValueError(f"cannot compare {field!r} {op} None")
        params.append(value)
        return f"({_extract(field)} {op} ? AND {_type_of(field)} IN {_TYPES[kind]})"
    if op == "in":
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
            raise TypeError(f"'in' needs a list of values, got {type(value).__name__}")
        # One IN (...) per type: the common case (a list of statuses) is a
        # single indexable IN.
        groups: dict[str, list[Any]] = {}
        for item in value:
            groups.setdefault(_kind(item), []).append(item)
        terms = []
        if groups.pop("null", None):
            terms.append(_equals(field, None, params))
        for kind, items in groups.items():
            params.extend(items)
            marks = ",".join("?" * len(items))
            terms.append(f"({_extract(field)} IN ({marks}) AND {_type_of(field)} IN {_TYPES[kind]})")
        return "(" + " OR ".join(terms) + ")" if terms else "0"
    raise ValueError(f"unknown filter operator {op!r}")


def _effective_order(filters: Sequence[Filter], order_by: Sequence[Order]) -> list[tuple[str, Direction]]:
    """Firestore's implicit ordering: the explicit orders, then inequality
    fields not yet ordered (by name), all in the last explicit direction; the
    id is appended by the caller in that same direction."""
    orders: list[tuple[str, Direction]] = [(o.field, o.direction) for o in order_by]
    for o in order_by:
        if o.direction not in ("asc", "desc"):
            raise ValueError(f"unknown order direction {o.direction!r}")
    last: Direction = orders[-1][1] if orders else "asc"
    ordered = {f for f, _ in orders}
    inequality = sorted({f.field for f in filters if f.op in ("!=", "<", "<=", ">", ">=")} - ordered)
    orders.extend((f, last) for f in inequality)
    return orders


def _encode_cursor(orders: list[tuple[str, Direction]], values: Sequence[Any], doc_id: str) -> str:
    raw = _encode({"o": orders, "v": list(values), "id": doc_id})
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii")


def _decode_cursor(cursor: str, orders: list[tuple[str, Direction]]) -> tuple[list[Any], str]:
    try:
        payload = _decode(base64.urlsafe_b64decode(cursor.encode("ascii")))
        spec = [(f, d) for f, d in payload["o"]]
        values, doc_id = payload["v"], payload["id"]
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise ValueError("invalid cursor") from exc
    if spec != orders or not isinstance(values, list) or len(values) != len(orders) or not isinstance(doc_id, str):
        raise ValueError("cursor does not belong to this query (different order)")
    return values, doc_id


def _after(expr: str, direction: Direction, value: Any, params: list[Any]) -> str:
    """Rows strictly after ``value`` in ``direction`` (SQLite sorts NULL first)."""
    if value is None:
        return f"{expr} IS NOT NULL" if direction == "asc" else "0"
    params.append(value)
    if direction == "asc":
        return f"{expr} > ?"
    return f"({expr} < ? OR {expr} IS NULL)"


def _same(expr: str, value: Any, params: list[Any]) -> str:
    if value is None:
        return f"{expr} IS NULL"
    params.append(value)
    return f"{expr} = ?"


class SqliteTransaction(ReadTracker["SqliteStore"]):
    """The ``Transaction`` handed to ``fn``: reads recorded, writes buffered."""

    __slots__ = ("_writes",)

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self._writes: list[tuple[int, _TableSql, str, str | None]] = []

    def _has_writes(self) -> bool:
        return bool(self._writes)

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        self._buffer(_CREATE, collection, doc_id, _encode(dict(data)))

    def set(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        self._buffer(_SET, collection, doc_id, _encode(dict(data)))

    def delete(self, collection: str, doc_id: str) -> None:
        self._buffer(_DELETE, collection, doc_id, None)

    def _buffer(self, op: int, collection: str, doc_id: str, text: str | None) -> None:
        # Encoded now: errors surface inside fn, and later changes by the
        # caller to ``data`` do not leak into the commit.
        self._check_open()
        _check_id(doc_id)
        self._writes.append((op, self._store._sql(collection), doc_id, text))


class SqliteStore:
    """The ``Store`` port on a SQLite file; safe across threads and processes.

    ``indexes`` maps a collection to the fields to index, e.g.
    ``{"tasks": ["run_id", "status", "run_id,status"]}``: each entry is a
    (dotted) field path, or comma-separated paths for a composite index in
    that order. Every index ends with the id, so a query filtered by equality
    on the indexed fields and ordered by id needs no sort.

    ``watch_interval_s``: how often, while someone waits in
    :meth:`wait_for_change`, the store looks for commits of other processes.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        durable: bool = True,
        indexes: Mapping[str, Sequence[str]] | None = None,
        watch_interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        if watch_interval_s <= 0:
            raise ValueError("watch_interval_s must be positive")
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise ValueError("SqliteStore needs a file path: every thread opens its own connection")
        self.path = Path(path)
        self.durable = durable
        self._indexes: dict[str, list[tuple[str, ...]]] = {}
        for collection, specs in (indexes or {}).items():
            _check_collection(collection)
            if isinstance(specs, str):
                raise TypeError(f"indexes[{collection!r}] must be a list of field specs, not a string")
            parsed = [tuple(f.strip() for f in spec.split(",")) for spec in specs]
            for fields in parsed:
                for f in fields:
                    _json_path(f)
            self._indexes[collection] = parsed
        self._local = _Local()
        self._holders: weakref.WeakSet[_ConnHolder] = weakref.WeakSet()
        self._holders_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._pending: list[_Write] = []
        self._change_cond = threading.Condition()
        self._change_count = 0
        self.watch_interval_s = watch_interval_s
        self._waiters = 0  # callers in wait_for_change; guarded by _change_cond
        self._idle_since = 0.0  # when the last of them left
        self._watcher: threading.Thread | None = None
        self._closing = threading.Event()  # ends the watcher's sleep at close()
        self._watch_lock = threading.Lock()  # the watch connection: one user at a time, and close()
        self._watch_holder: _ConnHolder | None = None
        self._watch_version: int | None = None
        self._tables: dict[str, _TableSql] = {}
        self._closed = False
        _live_stores.add(self)

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # key: a collection; value: the highest version it ever deleted.
        self._write(
            lambda conn: conn.execute(
                "CREATE TABLE IF NOT EXISTS _sluice_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
            )
        )
        for collection in self._indexes:
            self._sql(collection)

    # -- connections ----------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        holder = self._local.holder
        if holder is None or holder.generation != _fork_generation or self._closed:
            return self._open_connection()
        return holder.conn

    def _open_connection(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"store {self.path} is closed")
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,  # only so close() can close every thread's connection
            cached_statements=_STATEMENT_CACHE,
        )
        use_wal(conn, BUSY_TIMEOUT_S)
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        holder = _ConnHolder(conn, _fork_generation)
        with self._holders_lock:
            self._holders.add(holder)
        self._local.holder = holder
        return conn

    def close(self) -> None:
        """Close every thread's connection; the store cannot be used afterwards."""
        self._closed = True
        self._closing.set()
        with self._holders_lock:
            holders = list(self._holders)
            self._holders.clear()
        for holder in holders:
            if holder.generation == _fork_generation:
                holder.close()
        with self._watch_lock:
            watch, self._watch_holder = self._watch_holder, None
            if watch is not None and watch.generation == _fork_generation:
                watch.close()
        with self._change_cond:
            watcher = self._watcher
            self._change_cond.notify_all()  # waiters return (their count unchanged)
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()  # woken by _closing, it sees _closed at once

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction (group-committed, see the module
        docstring), committed before this returns; ``fn``'s exception is
        raised here with its writes rolled back. ``fn`` must use the
        connection it is given: it may run on another writer's thread."""
        item = _Write(fn)
        with self._queue_lock:
            self._pending.append(item)
        with self._write_lock:
            if not item.done:
                with self._queue_lock:
                    batch, self._pending = self._pending, []
                self._commit_batch(batch)
        if item.error is not None:
            raise item.error
        result: T = item.result
        return result

    def _commit_batch(self, batch: list[_Write]) -> None:
        conn: sqlite3.Connection | None = None
        committed = False
        try:
            # Inside the try: every writer of the batch must hear how it ended, even
            # if this thread cannot open its connection (the store was closed).
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:
                batch[0].result = batch[0].fn(conn)
            else:
                for w in batch:
                    self._run_in_savepoint(conn, w)
            conn.execute("COMMIT")
            committed = True
        except BaseException as exc:
            if conn is not None and conn.in_transaction:
                conn.execute("ROLLBACK")
            for w in batch:
                w.result = None
                if w.error is None:
                    w.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for w in batch:
                w.done = True
        if committed:
            self._changed(sum(w.error is None for w in batch))

    @staticmethod
    def _run_in_savepoint(conn: sqlite3.Connection, w: _Write) -> None:
        conn.execute("SAVEPOINT w")
        try:
            w.result = w.fn(conn)
        except Exception as exc:  # noqa: BLE001  (re-raised in the writer's own thread)
            w.error = exc
            conn.execute("ROLLBACK TO w")
        conn.execute("RELEASE w")

    def _write_one(self, statement: str, params: Sequence[Any]) -> Any:
        """One write statement; its RETURNING value (None if it matched no row)."""

        def run(conn: sqlite3.Connection) -> Any:
            # fetchone runs the statement to completion, so it does not stay
            # active (and hold the write lock) in the statement cache.
            row = conn.execute(statement, params).fetchone()
            return None if row is None else row[0]

        return self._write(run)

    # -- change feed ------------------------------------------------------------

    def _changed(self, n: int = 1) -> None:
        if n < 1:
            return
        with self._change_cond:
            self._change_count += n
            self._change_cond.notify_all()

    def change_count(self) -> int:
        """A counter that moves whenever a write commits: at once for this store's own
        writes, and while someone waits in :meth:`wait_for_change`, within
        ``watch_interval_s`` for other processes' (see the module docstring)."""
        holder = self._watch_holder
        if holder is None or holder.generation != _fork_generation:
            # The watcher's baseline, taken now: a commit by another process
            # between this count and the wait that follows is then not missed.
            with self._watch_lock:
                self._look()
        with self._change_cond:
            return self._change_count

    def wait_for_change(self, seen: int, timeout_s: float) -> int:
        """Block until a write commits after ``seen`` (a :meth:`change_count`), in this
        process or another, at most ``timeout_s``; return the count."""
        with self._change_cond:
            if self._change_count != seen:
                return self._change_count
            self._waiters += 1
            try:
                if self._watcher is None and not self._closed:
                    name = f"sluice-store-watch {self.path}"
                    self._watcher = threading.Thread(target=self._watch, name=name, daemon=True)
                    self._watcher.start()
                self._change_cond.wait_for(lambda: self._change_count != seen or self._closed, timeout=timeout_s)
                return self._change_count
            finally:
                self._waiters -= 1
                if self._waiters == 0:
                    self._idle_since = time.monotonic()

    def _watch(self) -> None:
        """The watcher thread: polls for other connections' commits until nobody has
        waited for ``_WATCH_LINGER_S`` (or the store closes)."""
        try:
            while self._keep_watching():
                if self._others_committed():
                    self._changed()
                self._closing.wait(self.watch_interval_s)
        except Exception:
            # Waiters still wake by their timeout (the SSE poll); the next waiter starts a new watcher.
            log.exception("the store's watcher of other processes' writes failed; streams fall back to polling")
            with self._change_cond:
                self._watcher = None

    def _keep_watching(self) -> bool:
        """Whether the watcher goes on; if not, it is unregistered in the same step,
        so that a waiter arriving now starts a new one."""
        with self._change_cond:
            idle = self._waiters == 0 and time.monotonic() - self._idle_since >= _WATCH_LINGER_S
            if self._closed or idle:
                self._watcher = None
                return False
            return True

    def _others_committed(self) -> bool:
        """Whether another connection committed since the last look."""
        with self._watch_lock:
            holder = self._watch_holder
            before = self._watch_version if holder is not None and holder.generation == _fork_generation else None
            after = self._look()
            return before is not None and after is not None and after != before

    def _look(self) -> int | None:
        """Read ``data_version`` on the watch connection (opened on first use); None once closed.

        Caller holds ``_watch_lock``. data_version moves when any other connection
        commits, never for this one's own (it only reads), so this process's own
        writes move it too: they cost a spare wake-up, never a missed one.
        """
        if self._closed:
            return None
        holder = self._watch_holder
        if holder is None or holder.generation != _fork_generation:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            holder = self._watch_holder = _ConnHolder(conn, _fork_generation)
            self._watch_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            return self._watch_version  # the baseline: later commits differ from it
        self._watch_version = int(holder.conn.execute("PRAGMA data_version").fetchone()[0])
        return self._watch_version

    # -- schema ---------------------------------------------------------------

    def _sql(self, collection: str) -> _TableSql:
        sql = self._tables.get(collection)
        if sql is None:
            sql = self._create_collection(collection)
        return sql

    def _create_collection(self, collection: str) -> _TableSql:
        table = f'"doc_{_check_collection(collection)}"'

        def create(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY NOT NULL,"
                " data TEXT NOT NULL, version INTEGER NOT NULL)"
            )
            conn.execute(
                "INSERT OR IGNORE INTO _sluice_meta (key, value) VALUES (?, 0)",
                (collection,),
            )
            for fields in self._indexes.get(collection, []):
                readable = "__".join(fields).replace(".", "_")
                digest = hashlib.sha1(",".join(fields).encode()).hexdigest()[:8]
                columns = ", ".join([_extract(f) for f in fields] + ["id"])
                conn.execute(
                    f'CREATE INDEX IF NOT EXISTS "ix_{collection}__{readable}_{digest}" ON {table} ({columns})'
                )

        self._write(create)
        # The collection name is checked above, so it can be a literal.
        first_version = f"(SELECT value + 1 FROM _sluice_meta WHERE key = '{collection}')"
        sql = _TableSql(
            collection=collection,
            table=table,
            get=f"SELECT data, version FROM {table} WHERE id = ?",
            get_many=f"SELECT id, data, version FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
            version=f"SELECT version FROM {table} WHERE id = ?",
            insert=f"INSERT INTO {table} (id, data, version) VALUES (?, ?, {first_version}) RETURNING version",
            upsert=(
                f"INSERT INTO {table} (id, data, version)"
                f" VALUES (?, ?, {first_version}) ON CONFLICT (id) DO UPDATE"
                " SET data = excluded.data, version = version + 1 RETURNING version"
            ),
            cas_update=(
                f"UPDATE {table} SET data = ?, version = version + 1 WHERE id = ? AND version = ? RETURNING version"
            ),
            delete=f"DELETE FROM {table} WHERE id = ? RETURNING version",
            cas_delete=f"DELETE FROM {table} WHERE id = ? AND version = ? RETURNING version",
            tombstone=f"UPDATE _sluice_meta SET value = max(value, ?) WHERE key = '{collection}'",
        )
        self._tables[collection] = sql
        return sql

    # -- single-document operations -----------------------------------------

    def get(self, collection: str, doc_id: str) -> Snapshot | None:
        sql = self._tables.get(collection) or self._sql(collection)
        row = self._conn().execute(sql.get, (doc_id,)).fetchone()
        if row is None:
            return None
        return Snapshot(doc_id, _decode(row[0]), str(row[1]))

    def get_many(self, collection: str, doc_ids: Sequence[str]) -> list[Snapshot]:
        """The documents that exist, in the order asked for (repeats repeated)."""
        if not doc_ids:
            return []
        sql = self._sql(collection)
        # One bound JSON array instead of N placeholders: one cached statement
        # for any number of ids, and no SQLITE_MAX_VARIABLE_NUMBER limit.
        rows = self._conn().execute(sql.get_many, (_encode(list(doc_ids)),))
        found = {row[0]: (row[1], row[2]) for row in rows}
        out = []
        for doc_id in doc_ids:
            hit = found.get(doc_id)
            if hit is not None:
                out.append(Snapshot(doc_id, _decode(hit[0]), str(hit[1])))
        return out

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> Snapshot:
        _check_id(doc_id)
        text = _encode(dict(data))
        sql = self._sql(collection)
        try:
            version = self._write_one(sql.insert, (doc_id, text))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"{collection}/{doc_id} already exists") from None
        # Decoded from the stored text, so the snapshot is what a get returns
        # (tuples as lists, keys as strings) and shares nothing with ``data``.
        return Snapshot(doc_id, _decode(text), str(version))

    def set(
        self,
        collection: str,
        doc_id: str,
        data: Mapping[str, Any],
        *,
        if_version: str | None = None,
    ) -> Snapshot:
        _check_id(doc_id)
        text = _encode(dict(data))
        sql = self._sql(collection)
        if if_version is None:
            version = self._write_one(sql.upsert, (doc_id, text))
        else:
            version = self._write_one(sql.cas_update, (text, doc_id, _version_param(if_version)))
            if version is None:
                raise self._cas_error(sql, doc_id, if_version)
        return Snapshot(doc_id, _decode(text), str(version))

    def update(
        self,
        collection: str,
        doc_id: str,
        changes: Mapping[str, Any],
        *,
        if_version: str | None = None,
    ) -> Snapshot:
        """Merge top-level keys into an existing document (NotFound if absent).

        Read, merge, then compare-and-set on the version read: no lock is
        held while merging, and a concurrent write makes it merge again onto
        the newer document (or, with ``if_version``, fail).
        """
        _check_id(doc_id)
        sql = self._sql(collection)
        for _ in range(_UPDATE_ATTEMPTS):
            current = self.get(collection, doc_id)
            if current is None:
                raise NotFound(f"{collection}/{doc_id} does not exist")
            if if_version is not None and current.version != if_version:
                raise PreconditionFailed(f"{collection}/{doc_id} is at version {current.version}, not {if_version}")
            data = current.data
            data.update(changes)
            text = _encode(data)
            version = self._write_one(sql.cas_update, (text, doc_id, current.version))
            if version is not None:
                return Snapshot(doc_id, _decode(text), str(version))
        raise PreconditionFailed(f"{collection}/{doc_id} changed under {_UPDATE_ATTEMPTS} updates in a row")

    def delete(self, collection: str, doc_id: str, *, if_version: str | None = None) -> bool:
        """True if a document was deleted. With ``if_version``: PreconditionFailed
        if the document is at another version; False if it is already gone."""
        sql = self._sql(collection)

        def delete(conn: sqlite3.Connection) -> bool:
            if if_version is None:
                row = conn.execute(sql.delete, (doc_id,)).fetchone()
            else:
                row = conn.execute(sql.cas_delete, (doc_id, _version_param(if_version))).fetchone()
                if row is None and conn.execute(sql.version, (doc_id,)).fetchone():
                    raise self._cas_error(sql, doc_id, if_version, conn)
            if row is None:
                return False
            conn.execute(sql.tombstone, (row[0],))
            return True

        return self._write(delete)

    def _cas_error(
        self, sql: _TableSql, doc_id: str, if_version: str, conn: sqlite3.Connection | None = None
    ) -> NotFound | PreconditionFailed:
        """Why a compare-and-set on ``if_version`` matched no row."""
        row = (conn or self._conn()).execute(sql.version, (doc_id,)).fetchone()
        if row is None:
            return NotFound(f"{sql.collection}/{doc_id} does not exist")
        return PreconditionFailed(f"{sql.collection}/{doc_id} is at version {row[0]}, not {if_version}")

    # -- queries --------------------------------------------------------------

    def _select(
        self,
        collection: str,
        filters: Sequence[Filter],
        order_by: Sequence[Order],
        limit: int | None,
        start_after: str | None,
    ) -> tuple[str, list[Any], list[tuple[str, Direction]]]:
        sql = self._sql(collection)
        params: list[Any] = []
        where = [_condition(f, params) for f in filters]
        orders = _effective_order(filters, order_by)
        # Firestore: ordering by a field excludes documents that lack it (a
        # filter on the field already does).
        filtered = {f.field for f in filters}
        where.extend(f"{_type_of(f)} IS NOT NULL" for f, _ in orders if f not in filtered)
        id_dir: Direction = orders[-1][1] if orders else "asc"
        keys = [(_extract(f), d) for f, d in orders] + [("id", id_dir)]
        if start_after is not None:
            # Keyset pagination: rows after the cursor's position in the sort,
            # i.e. (k1 after v1) OR (k1 = v1 AND k2 after v2) OR ...
            values, last_id = _decode_cursor(start_after, orders)
            position = [*values, last_id]
            alternatives = []
            for i, (expr, direction) in enumerate(keys):
                terms = [_same(keys[j][0], position[j], params) for j in range(i)]
                terms.append(_after(expr, direction, position[i], params))
                alternatives.append("(" + " AND ".join(terms) + ")")
            where.append("(" + " OR ".join(alternatives) + ")")
        columns = "".join(f", {expr}" for expr, _ in keys[:-1])
        text = f"SELECT id, data, version{columns} FROM {sql.table}"
        if where:
            text += " WHERE " + " AND ".join(where)
        text += " ORDER BY " + ", ".join(f"{expr} {d.upper()}" for expr, d in keys)
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be at least 1, got {limit}")
            # One row more than asked tells whether another page exists.
            text += " LIMIT ?"
            params.append(limit + 1)
        return text, params, orders

    def query(
        self,
        collection: str,
        *,
        filters: Sequence[Filter] = (),
        order_by: Sequence[Order] = (),
        limit: int | None = None,
        start_after: str | None = None,
    ) -> Page:
        text, params, orders = self._select(collection, filters, order_by, limit, start_after)
        rows = self._conn().execute(text, params).fetchall()
        cursor = None
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            cursor = _encode_cursor(orders, last[3:], last[0])
        return Page([Snapshot(r[0], _decode(r[1]), str(r[2])) for r in rows], cursor)

    def count(self, collection: str, *, filters: Sequence[Filter] = ()) -> int:
        sql = self._sql(collection)
        params: list[Any] = []
        where = [_condition(f, params) for f in filters]
        text = f"SELECT count(*) FROM {sql.table}"
        if where:
            text += " WHERE " + " AND ".join(where)
        return int(self._conn().execute(text, params).fetchone()[0])

    def sum(self, collection: str, fields: Sequence[str], *, filters: Sequence[Filter] = ()) -> dict[str, float]:
        if not fields:
            return {}
        sql = self._sql(collection)
        params: list[Any] = []
        where = [_condition(f, params) for f in filters]
        # As Firestore's sum(): numbers only (a bool is not one; json_type calls it true/false).
        totals = ", ".join(
            f"total(CASE WHEN {_type_of(f)} IN ('integer', 'real') THEN {_extract(f)} END)" for f in fields
        )
        text = f"SELECT {totals} FROM {sql.table}"
        if where:
            text += " WHERE " + " AND ".join(where)
        row = self._conn().execute(text, params).fetchone()
        return {f: float(v) for f, v in zip(fields, row, strict=True)}

    def explain(
        self,
        collection: str,
        *,
        filters: Sequence[Filter] = (),
        order_by: Sequence[Order] = (),
        limit: int | None = None,
    ) -> list[str]:
        """SQLite's query plan for ``query`` with these arguments (diagnostics:
        check that a query uses an index rather than scanning the collection)."""
        text, params, _ = self._select(collection, filters, order_by, limit, None)
        return [str(row[3]) for row in self._conn().execute("EXPLAIN QUERY PLAN " + text, params)]

    # -- transactions ---------------------------------------------------------

    def transaction(self, fn: Callable[[Transaction], T], *, max_attempts: int = 10) -> T:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for attempt in range(max_attempts):
            tx = SqliteTransaction(self)
            try:
                result = fn(tx)
            except RetryTransaction:
                pass
            else:
                if self._commit(tx):
                    return result
            finally:
                tx._open = False
            # Randomized, growing backoff so that colliding writers spread out.
            time.sleep(random.uniform(0, min(0.05, 0.0005 * 2**attempt)))
        raise PreconditionFailed(
            f"transaction conflicted {max_attempts} times in a row",
            hint="Contention on the same documents: retry later or spread the writes.",
        )

    def _reads_current(self, conn: sqlite3.Connection, reads: Mapping[tuple[str, str], str | None]) -> bool:
        for (collection, doc_id), version in reads.items():
            # The table is known: tx.get created it if needed. (Creating it here
            # would need the write lock, which the commit may already hold.)
            row = conn.execute(self._tables[collection].version, (doc_id,)).fetchone()
            if (None if row is None else str(row[0])) != version:
                return False
        return True

    def _commit(self, tx: SqliteTransaction) -> bool:
        """Apply ``tx`` if everything it read is unchanged; False on conflict."""
        if not tx._writes:
            if len(tx._reads) < 2:
                return True  # a single read is consistent with itself
            # Read-only: check the reads were all current at one instant (a
            # read transaction is a snapshot), without taking the write lock.
            conn = self._conn()
            conn.execute("BEGIN")
            try:
                return self._reads_current(conn, tx._reads)
            finally:
                conn.execute("COMMIT")
        return self._write(lambda conn: self._apply(conn, tx))

    def _apply(self, conn: sqlite3.Connection, tx: SqliteTransaction) -> bool:
        """Inside the write transaction: False (nothing written) on a conflict."""
        if not self._reads_current(conn, tx._reads):
            return False
        for op, sql, doc_id, text in tx._writes:
            # fetchone: run each RETURNING statement to completion, or
            # COMMIT would find it still in progress.
            if op == _CREATE:
                try:
                    conn.execute(sql.insert, (doc_id, text)).fetchone()
                except sqlite3.IntegrityError:
                    # Not a conflict: had fn read this document absent, the
                    # read check above would have failed instead.
                    raise AlreadyExists(f"{sql.collection}/{doc_id} already exists") from None
            elif op == _SET:
                conn.execute(sql.upsert, (doc_id, text)).fetchone()
            else:
                row = conn.execute(sql.delete, (doc_id,)).fetchone()
                if row is not None:
                    conn.execute(sql.tombstone, (row[0],))
        return True


if TYPE_CHECKING:

    def _conforms(store: SqliteStore, tx: SqliteTransaction) -> tuple[Store, Transaction]:
        """mypy checks here that the classes satisfy the port's protocols."""
        return store, tx
