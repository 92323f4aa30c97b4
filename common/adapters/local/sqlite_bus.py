"""A durable message bus on SQLite with Pub/Sub semantics.

* Topics fan out to subscriptions: publishing writes one delivery row per
  subscription of the topic (a topic without subscriptions drops the message,
  as Pub/Sub does).
* At-least-once: a pulled delivery is *leased* until ``ack_deadline``; ack
  deletes it, nack makes it ready again after a backoff, and a lease that
  expires makes it ready again by itself.
* ``ready_at`` carries all three: delayed delivery, backoff and lease (a
  leased row's ready_at is its lease expiry), so one indexed range query finds
  deliverable work.
* After ``max_delivery_attempts`` deliveries the message moves to the
  subscription's dead-letter topic with its last error, and is recorded in
  ``dead_letters`` for listing and replay.
* Everything is committed before ``publish``/``settle`` return, with
  ``synchronous=FULL`` when durable, so a ``kill -9`` loses nothing.

Settling is batched: the runtime acks (or nacks) many deliveries, together
with the messages their handlers published, in one transaction -- the
handler's publishes and its ack land atomically, and one fsync serves many
stages.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from common.adapters.local.sqlite_wal import use_wal
from common.core.errors import NotFound
from common.ports.bus import Rejected
from common.ports.clock import Clock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    ack_deadline_s REAL NOT NULL,
    max_delivery_attempts INTEGER NOT NULL,
    min_backoff_s REAL NOT NULL,
    max_backoff_s REAL NOT NULL,
    dead_letter_topic TEXT
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL,
    message_id TEXT NOT NULL,
    data BLOB NOT NULL,
    attributes TEXT NOT NULL,
    publish_time REAL NOT NULL,
    ready_at REAL NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_ready
    ON deliveries (subscription, priority DESC, ready_at ASC);
CREATE TABLE IF NOT EXISTS named_messages (
    name TEXT PRIMARY KEY,
    message_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL,
    message_id TEXT NOT NULL,
    data BLOB NOT NULL,
    attributes TEXT NOT NULL,
    publish_time REAL NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    dead_lettered_at REAL NOT NULL,
    replayed_at REAL
);
"""


@dataclass(frozen=True)
class SubscriptionConfig:
    name: str
    topic: str
    ack_deadline_s: float = 60.0
    max_delivery_attempts: int = 5
    min_backoff_s: float = 10.0
    max_backoff_s: float = 600.0
    dead_letter_topic: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One delivery of a message to a subscription."""

    seq: int
    subscription: str
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime
    attempt: int  # 1 on first delivery, as Pub/Sub's deliveryAttempt
    # When this lease ends (epoch seconds on the bus's clock): after it, the
    # message may be delivered again, so this delivery should not start.
    lease_expires_at: float | None = None


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str
    data: bytes
    attributes: Mapping[str, str]
    deliver_after: datetime | None = None


@dataclass(frozen=True)
class Settlement:
    """How one delivery ended: ``ack`` or retry after ``retry_after_s``
    (``None``: the subscription's exponential backoff)."""

    delivery: Delivery
    ack: bool
    retry_after_s: float | None = None
    error: str | None = None
    publishes: Sequence[OutgoingMessage] = field(default_factory=tuple)
    # Acknowledge by moving the message to the dead-letter topic (a message
    # that can never be processed is kept for inspection, not dropped).
    dead_letter: bool = False


@dataclass
class Exchanged:
    """What :meth:`SqliteBus.exchange` leased, per subscription, and why its settlements failed (None: they landed)."""

    deliveries: dict[str, list[Delivery]]
    settle_error: Exception | None


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    subscription: str
    message_id: str
    data: bytes
    attributes: dict[str, str]
    attempts: int
    last_error: str | None
    dead_lettered_at: datetime
    replayed_at: datetime | None


T = TypeVar("T")


@dataclass(eq=False)
class _Write:
    """One caller's share of a group commit."""

    fn: Callable[[sqlite3.Connection], Any]
    sync: bool
    done: bool = False
    result: Any = None
    error: BaseException | None = None


def _ts(dt: datetime) -> float:
    return dt.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _priority(attributes: Mapping[str, str]) -> int:
    try:
        return int(attributes.get("priority_rank", "0"))
    except ValueError:
        return 0


class SqliteBus:
    """Durable topics and subscriptions in one SQLite file. Thread-safe."""

    def __init__(self, path: Path | str, *, clock: Clock, durable: bool = True) -> None:
        self._path = Path(path)
        self._clock = clock
        self._durable = durable
        self._local = threading.local()
        self._subs: dict[str, SubscriptionConfig] = {}
        self._topic_subs: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._pending: list[_Write] = []
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._conn().executescript(_SCHEMA)
        self._load_config()

    # -- connections ----------------------------------------------------------

    def _conn(self, *, sync: bool = True) -> sqlite3.Connection:
        """This thread's connection: ``sync`` commits fsync the WAL (when
        durable); the other connection's commits are made durable by the next
        one that does (the WAL is one file, synced as a whole)."""
        attr = "conn" if sync or not self._durable else "lease_conn"
        conn: sqlite3.Connection | None = getattr(self._local, attr, None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=30.0, check_same_thread=True)
            use_wal(conn, 30.0)
            conn.execute(f"PRAGMA synchronous={'FULL' if self._durable and sync else 'NORMAL'}")
            setattr(self._local, attr, conn)
        return conn

    def _write(self, fn: Callable[[sqlite3.Connection], T], *, sync: bool = True) -> T:
        """Run ``fn`` in a write transaction, committed before this returns.

        Group commit: callers on other threads that arrive while a commit is
        in progress queue their work; the next one to take the write lock runs
        every queued write in one transaction, each in its own savepoint (one
        caller's failure rolls back only its own writes), so one fsync serves
        them all. In-process writers hand the lock over through a Python lock,
        never SQLite's sleeping busy handler. ``sync=False`` is for writes whose
        loss on power failure is harmless (leases): alone, they skip the fsync.
        """
        item = _Write(fn, sync)
        with self._queue_lock:
            self._pending.append(item)
        with self._write_lock:
            if not item.done:
                with self._queue_lock:
                    batch, self._pending = self._pending, []
                self._commit(batch)
        if item.error is not None:
            raise item.error
        result: T = item.result
        return result

    def _commit(self, batch: list[_Write]) -> None:
        conn = self._conn(sync=any(w.sync for w in batch))
        try:
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:
                batch[0].result = batch[0].fn(conn)
            else:
                for w in batch:
                    self._run_in_savepoint(conn, w)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
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

    @staticmethod
    def _run_in_savepoint(conn: sqlite3.Connection, w: _Write) -> None:
        conn.execute("SAVEPOINT w")
        try:
            w.result = w.fn(conn)
        except Exception as exc:  # noqa: BLE001  (re-raised in the caller's own thread)
            w.error = exc
            conn.execute("ROLLBACK TO w")
        conn.execute("RELEASE w")

    def close(self) -> None:
        for attr in ("conn", "lease_conn"):
            conn = getattr(self._local, attr, None)
            if conn is not None:
                conn.close()
                setattr(self._local, attr, None)

    # -- configuration --------------------------------------------------------

    def _load_config(self) -> None:
        rows = (
            self._conn()
            .execute(
                "SELECT name, topic, ack_deadline_s, max_delivery_attempts, min_backoff_s, max_backoff_s,"
                " dead_letter_topic FROM subscriptions"
            )
            .fetchall()
        )
        subs = {r[0]: SubscriptionConfig(*r) for r in rows}
        topics = [r[0] for r in self._conn().execute("SELECT name FROM topics")]
        with self._lock:
            self._subs = subs
            self._topic_subs = {t: [] for t in topics}
            for s in subs.values():
                self._topic_subs.setdefault(s.topic, []).append(s.name)

    def declare_topic(self, name: str) -> None:
        self._write(lambda conn: conn.execute("INSERT OR IGNORE INTO topics (name) VALUES (?)", (name,)))
        self._load_config()

    def declare_subscription(self, config: SubscriptionConfig) -> None:
        """Create or update a subscription (its topic must exist)."""
        self._write(lambda conn: self._declare_subscription(conn, config))
        self._load_config()

    @staticmethod
    def _declare_subscription(conn: sqlite3.Connection, config: SubscriptionConfig) -> None:
        if conn.execute("SELECT 1 FROM topics WHERE name = ?", (config.topic,)).fetchone() is None:
            raise NotFound(f"topic {config.topic!r} does not exist")
        if config.dead_letter_topic is not None and (
            conn.execute("SELECT 1 FROM topics WHERE name = ?", (config.dead_letter_topic,)).fetchone() is None
        ):
            raise NotFound(f"dead-letter topic {config.dead_letter_topic!r} does not exist")
        conn.execute(
            "INSERT INTO subscriptions (name, topic, ack_deadline_s, max_delivery_attempts, min_backoff_s,"
            " max_backoff_s, dead_letter_topic) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET topic = excluded.topic,"
            " ack_deadline_s = excluded.ack_deadline_s,"
            " max_delivery_attempts = excluded.max_delivery_attempts,"
            " min_backoff_s = excluded.min_backoff_s, max_backoff_s = excluded.max_backoff_s,"
            " dead_letter_topic = excluded.dead_letter_topic",
            (
                config.name,
                config.topic,
                config.ack_deadline_s,
                config.max_delivery_attempts,
                config.min_backoff_s,
                config.max_backoff_s,
                config.dead_letter_topic,
            ),
        )

    def subscription(self, name: str) -> SubscriptionConfig:
        try:
            return self._subs[name]
        except KeyError:
            raise NotFound(f"subscription {name!r} does not exist") from None

    def topics(self) -> list[str]:
        return sorted(self._topic_subs)

    # -- publishing -----------------------------------------------------------

    def publish(
        self,
        topic: str,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        deliver_after: datetime | None = None,
        ordering_key: str | None = None,
    ) -> str:
        msg = OutgoingMessage(topic, data, dict(attributes), deliver_after)
        (message_id,) = self._write(lambda conn: self._insert(conn, [msg], self._clock.now()))
        self._notify()
        return message_id

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        ids = self._write(lambda conn: self._insert(conn, messages, self._clock.now()))
        self._notify()
        return ids

    def publish_once(
        self,
        name: str,
        topic: str,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        deliver_after: datetime | None = None,
    ) -> tuple[str, bool]:
        """Publish under a unique ``name``: a second call with the same name
        publishes nothing and returns the first message's id (Cloud Tasks' named
        tasks). Returns (message id, whether this call published)."""
        msg = OutgoingMessage(topic, data, dict(attributes), deliver_after)

        def once(conn: sqlite3.Connection) -> tuple[str, bool]:
            row = conn.execute("SELECT message_id FROM named_messages WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return str(row[0]), False
            (message_id,) = self._insert(conn, [msg], self._clock.now())
            conn.execute("INSERT INTO named_messages (name, message_id) VALUES (?, ?)", (name, message_id))
            return message_id, True

        message_id, published = self._write(once)
        if published:
            self._notify()
        return message_id, published

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every commit that may have made work ready."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def _insert(
        self,
        conn: sqlite3.Connection,
        messages: Iterable[OutgoingMessage],
        now: datetime,
    ) -> list[str]:
        ids: list[str] = []
        rows: list[tuple[Any, ...]] = []
        now_ts = _ts(now)
        for msg in messages:
            subs = self._topic_subs.get(msg.topic)
            if subs is None:
                raise NotFound(
                    f"topic {msg.topic!r} does not exist",
                    hint="Declare it in topology.yaml.",
                )
            message_id = uuid.uuid4().hex
            ids.append(message_id)
            attrs = json.dumps(dict(msg.attributes), separators=(",", ":"))
            ready = _ts(msg.deliver_after) if msg.deliver_after is not None else now_ts
            prio = _priority(msg.attributes)
            rows.extend((s, message_id, msg.data, attrs, now_ts, ready, prio) for s in subs)
        if rows:
            conn.executemany(
                "INSERT INTO deliveries (subscription, message_id, data, attributes, publish_time, ready_at,"
                " priority) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return ids

    # -- consuming ------------------------------------------------------------

    def pull(self, subscription: str, max_messages: int, *, owner: str = "") -> list[Delivery]:
        """Lease up to ``max_messages`` ready deliveries, highest priority first.

        A ready delivery that has already been delivered ``max_delivery_attempts``
        times (its leases expired without an ack) is dead-lettered instead.

        Leasing is one statement, and its commit does not wait for an fsync
        (the next acknowledgement's fsync covers it): a lease lost to a power
        failure only makes its message deliverable again, counting one attempt
        fewer, which at-least-once delivery allows; a lost dead-letter move is
        made again at the next pull. Acknowledgements and publishes are fsynced
        before they return.
        """
        return self.exchange((), {subscription: max_messages}, owner=owner).deliveries.get(subscription, [])

    def settle(self, settlements: Sequence[Settlement]) -> None:
        """Ack or nack deliveries, and publish what their handlers sent, in one commit."""
        if not settlements:
            return
        error = self.exchange(settlements, {}).settle_error
        if error is not None:
            raise error

    def exchange(self, settlements: Sequence[Settlement], pulls: Mapping[str, int], *, owner: str = "") -> Exchanged:
        """Settle ``settlements`` (as :meth:`settle`), then lease up to ``pulls[s]``
        deliveries of each subscription ``s`` (as :meth:`pull`), in one transaction:
        one write lock and one commit (fsynced when it settles anything) where a
        consumer would otherwise take two. Messages the settlements publish can
        be leased at once.

        The settlements commit all together or not at all; if they fail (a
        publish to a topic that does not exist), the error is returned in
        ``settle_error`` -- their deliveries stay leased and come back when the
        leases expire -- and the leases are still taken.
        """
        subs = {name: self.subscription(name) for name, n in pulls.items() if n > 0}
        now = self._clock.now()
        out = Exchanged({}, None)
        notify = [False]

        def run(conn: sqlite3.Connection) -> Exchanged:
            if settlements:
                conn.execute("SAVEPOINT settle")
                try:
                    notify[0] = self._apply(conn, settlements, now)
                except Exception as exc:  # noqa: BLE001  (returned to the caller)
                    conn.execute("ROLLBACK TO settle")
                    out.settle_error = exc
                conn.execute("RELEASE settle")
            for name, sub in subs.items():
                deliveries, dead_lettered = self._lease(conn, sub, pulls[name], owner, now)
                out.deliveries[name] = deliveries
                notify[0] = notify[0] or dead_lettered  # a dead-letter topic may have received work
            return out

        self._write(run, sync=bool(settlements))
        if notify[0]:
            self._notify()
        return out

    _LEASE = (
        "UPDATE deliveries SET ready_at = ?, attempts = attempts + 1, lease_owner = ? WHERE seq IN"
        " (SELECT seq FROM deliveries WHERE subscription = ? AND ready_at <= ?"
        " ORDER BY priority DESC, ready_at ASC LIMIT ?)"
        " RETURNING seq, message_id, data, attributes, publish_time, attempts, last_error, priority"
    )

    def _lease(
        self, conn: sqlite3.Connection, sub: SubscriptionConfig, n: int, owner: str, now: datetime
    ) -> tuple[list[Delivery], bool]:
        """Lease up to ``n`` of ``sub``'s ready deliveries; (them, whether any was dead-lettered instead)."""
        now_ts = _ts(now)
        expires = now_ts + sub.ack_deadline_s
        rows = conn.execute(self._LEASE, (expires, owner, sub.name, now_ts, n)).fetchall()
        rows.sort(key=lambda r: (-r[7], r[0]))
        out: list[Delivery] = []
        dead_lettered = False
        for seq, message_id, data, attrs, publish_time, attempts, last_error, _ in rows:
            if attempts > sub.max_delivery_attempts:
                error = last_error or f"ack deadline of {sub.ack_deadline_s:g} s expired"
                self._dead_letter(conn, sub, seq, now, error, attempts=attempts - 1)
                dead_lettered = True
                continue
            out.append(
                Delivery(
                    seq=seq,
                    subscription=sub.name,
                    message_id=message_id,
                    data=bytes(data),
                    attributes=json.loads(attrs),
                    publish_time=_dt(publish_time),
                    attempt=attempts,
                    lease_expires_at=expires,
                )
            )
        return out, dead_lettered

    def _apply(self, conn: sqlite3.Connection, settlements: Sequence[Settlement], now: datetime) -> bool:
        """Write ``settlements``; return whether they may have made work ready (a publish, a nack, a dead letter)."""
        outgoing = [m for s in settlements for m in s.publishes]
        if outgoing:
            self._insert(conn, outgoing, now)
        acks = [(s.delivery.seq,) for s in settlements if s.ack and not s.dead_letter]
        if acks:
            conn.executemany("DELETE FROM deliveries WHERE seq = ?", acks)
        ready = bool(outgoing)
        for s in settlements:
            if s.dead_letter:
                self._dead_letter(conn, self.subscription(s.delivery.subscription), s.delivery.seq, now, s.error)
                ready = True
            elif not s.ack:
                self._nack(conn, s, now)
                ready = True
        return ready

    def ack(self, delivery: Delivery, publishes: Sequence[OutgoingMessage] = ()) -> None:
        self.settle([Settlement(delivery, ack=True, publishes=publishes)])

    def nack(
        self,
        delivery: Delivery,
        *,
        retry_after_s: float | None = None,
        error: str | None = None,
    ) -> None:
        self.settle([Settlement(delivery, ack=False, retry_after_s=retry_after_s, error=error)])

    def _nack(self, conn: sqlite3.Connection, s: Settlement, now: datetime) -> None:
        sub = self.subscription(s.delivery.subscription)
        row = conn.execute("SELECT attempts FROM deliveries WHERE seq = ?", (s.delivery.seq,)).fetchone()
        if row is None:  # already settled by an earlier, duplicate settlement
            return
        attempts = int(row[0])
        if attempts >= sub.max_delivery_attempts:
            self._dead_letter(conn, sub, s.delivery.seq, now, s.error)
            return
        delay = s.retry_after_s
        if delay is None:
            delay = min(sub.max_backoff_s, sub.min_backoff_s * 2 ** max(0, attempts - 1))
        conn.execute(
            "UPDATE deliveries SET ready_at = ?, lease_owner = NULL, last_error = ? WHERE seq = ?",
            (_ts(now) + max(0.0, delay), s.error, s.delivery.seq),
        )

    def _dead_letter(
        self,
        conn: sqlite3.Connection,
        sub: SubscriptionConfig,
        seq: int,
        now: datetime,
        error: str | None,
        *,
        attempts: int | None = None,
    ) -> None:
        """Move a delivery to ``dead_letters`` (and its topic). ``attempts``:
        the deliveries made, when the row already counts a lease not given out."""
        row = conn.execute(
            "SELECT message_id, data, attributes, publish_time, attempts FROM deliveries WHERE seq = ?",
            (seq,),
        ).fetchone()
        if row is None:
            return
        message_id, data, attrs, publish_time, stored_attempts = row
        if attempts is None:
            attempts = stored_attempts
        conn.execute("DELETE FROM deliveries WHERE seq = ?", (seq,))
        rejected = Rejected(
            sub.name, sub.dead_letter_topic, message_id, bytes(data), json.loads(attrs), error or "", attempts
        )
        self._record_dead_letter(conn, rejected, publish_time, now)

    def _record_dead_letter(
        self, conn: sqlite3.Connection, rejected: Rejected, publish_time: float, now: datetime
    ) -> int:
        cur = conn.execute(
            "INSERT INTO dead_letters (subscription, message_id, data, attributes, publish_time, attempts,"
            " last_error, dead_lettered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rejected.subscription,
                rejected.message_id,
                rejected.data,
                json.dumps(dict(rejected.attributes), separators=(",", ":")),
                publish_time,
                rejected.attempts,
                rejected.error or None,
                _ts(now),
            ),
        )
        if rejected.topic is not None:
            attributes = dict(rejected.attributes)
            # The attributes Pub/Sub adds when it forwards to a dead-letter topic.
            attributes["CloudPubSubDeadLetterSourceSubscription"] = rejected.subscription
            attributes["CloudPubSubDeadLetterSourceDeliveryCount"] = str(rejected.attempts)
            if rejected.error:
                attributes["sluice_error"] = rejected.error[:1000]
            self._insert(conn, [OutgoingMessage(rejected.topic, rejected.data, attributes)], now)
        return int(cur.lastrowid or 0)

    def dead_letter(self, rejected: Rejected) -> str:
        """Record a message rejected outside a delivery of this bus (a Cloud
        Function entrypoint running on the embedded backend) with the others:
        listed by ``dead_letters``, replayable into ``rejected.subscription``."""
        now = self._clock.now()
        seq = self._write(lambda conn: self._record_dead_letter(conn, rejected, _ts(now), now))
        self._notify()
        return str(seq)

    def release_leases(self, *, except_owner: str | None = None, owner: str | None = None) -> int:
        """Make leased deliveries ready now (their consumer is known dead): every
        lease, or only ``owner``'s, or every lease but ``except_owner``'s.

        Called by the local runtime at start-up, when it holds the data
        directory's lock and so no other consumer can be running; and by the
        process supervisor with ``owner`` when one of its children has exited,
        so the dead child's deliveries do not wait for their leases to expire.
        """
        now_ts = _ts(self._clock.now())
        released: int = self._write(
            lambda conn: (
                conn.execute(
                    "UPDATE deliveries SET ready_at = ?, lease_owner = NULL"
                    " WHERE lease_owner IS NOT NULL AND ready_at > ? AND (? IS NULL OR lease_owner != ?)"
                    " AND (? IS NULL OR lease_owner = ?)",
                    (now_ts, now_ts, except_owner, except_owner, owner, owner),
                ).rowcount
            )
        )
        self._notify()
        return released

    # -- inspection -----------------------------------------------------------

    def next_ready_at(self, subscriptions: Sequence[str] | None = None) -> datetime | None:
        """When the earliest pending delivery becomes ready (None: nothing pending)."""
        if subscriptions is None:
            row = self._conn().execute("SELECT MIN(ready_at) FROM deliveries").fetchone()
        else:
            marks = ",".join("?" * len(subscriptions))
            row = (
                self._conn()
                .execute(
                    f"SELECT MIN(ready_at) FROM deliveries WHERE subscription IN ({marks})",
                    tuple(subscriptions),
                )
                .fetchone()
            )
        return None if row is None or row[0] is None else _dt(row[0])

    def depth(self, subscription: str) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM deliveries WHERE subscription = ?",
                (subscription,),
            )
            .fetchone()
        )
        return int(row[0])

    def oldest_age_s(self, subscription: str) -> float | None:
        row = (
            self._conn()
            .execute(
                "SELECT MIN(publish_time) FROM deliveries WHERE subscription = ?",
                (subscription,),
            )
            .fetchone()
        )
        if row is None or row[0] is None:
            return None
        return max(0.0, _ts(self._clock.now()) - float(row[0]))

    def backlog(self, subscription: str) -> tuple[int, float, int]:
        """Operators' gauges: (unacknowledged messages, age in s of the oldest due one, dead letters not replayed).

        The age counts messages already delivered or due now, like Pub/Sub's
        oldest unacked message age; a run scheduled for tomorrow waits in its
        queue (Cloud Tasks in the cloud) without looking stuck.
        """
        now = _ts(self._clock.now())
        conn = self._conn()
        depth, oldest = conn.execute(
            "SELECT COUNT(*), MIN(CASE WHEN attempts > 0 OR ready_at <= ? THEN publish_time END)"
            " FROM deliveries WHERE subscription = ?",
            (now, subscription),
        ).fetchone()
        (dead,) = conn.execute(
            "SELECT COUNT(*) FROM dead_letters WHERE subscription = ? AND replayed_at IS NULL", (subscription,)
        ).fetchone()
        return int(depth), 0.0 if oldest is None else max(0.0, now - float(oldest)), int(dead)

    def dead_letters(self, subscription: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        rows = (
            self._conn()
            .execute(
                "SELECT seq, subscription, message_id, data, attributes, attempts, last_error, dead_lettered_at,"
                " replayed_at FROM dead_letters WHERE (? IS NULL OR subscription = ?) ORDER BY seq LIMIT ?",
                (subscription, subscription, limit),
            )
            .fetchall()
        )
        return [
            DeadLetter(
                seq=r[0],
                subscription=r[1],
                message_id=r[2],
                data=bytes(r[3]),
                attributes=json.loads(r[4]),
                attempts=r[5],
                last_error=r[6],
                dead_lettered_at=_dt(r[7]),
                replayed_at=None if r[8] is None else _dt(r[8]),
            )
            for r in rows
        ]

    def replay_dead_letter(self, seq: int) -> str:
        """Deliver a dead-lettered message to its subscription again, as a fresh message."""
        now_ts = _ts(self._clock.now())

        def replay(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "SELECT subscription, data, attributes FROM dead_letters WHERE seq = ?",
                (seq,),
            ).fetchone()
            if row is None:
                raise NotFound(f"dead letter {seq} does not exist")
            subscription, data, attrs = row
            message_id = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO deliveries (subscription, message_id, data, attributes, publish_time, ready_at,"
                " priority) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (subscription, message_id, data, attrs, now_ts, now_ts, _priority(json.loads(attrs))),
            )
            conn.execute("UPDATE dead_letters SET replayed_at = ? WHERE seq = ?", (now_ts, seq))
            return message_id

        message_id = self._write(replay)
        self._notify()
        return message_id
