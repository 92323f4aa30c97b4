"""The embedded store commits writers that queue behind a commit together.

Many handlers claiming their tasks at once used to queue on the store's write
lock, one fsync each. Writers now queue their work and the one holding the lock
commits all of it in one transaction, each writer in its own savepoint. These
tests hold the store's writer lock while real threads queue (so the batch is
known, not left to scheduling), then check the outcome of every writer and how
many COMMITs reached SQLite.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.adapters.local.sqlite_store import SqliteStore
from common.core.errors import AlreadyExists, PreconditionFailed
from common.ports.store import Transaction

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement any store connection runs (traced at the sqlite3 boundary)."""
    seen: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    return seen


@pytest.fixture
def store(tmp_path: Path, statements: list[str]) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "store.db", durable=True)
    yield opened
    opened.close()


def _queued_behind_a_commit(store: SqliteStore, bodies: list[Callable[[], object]]) -> list[object]:
    """Run each body on its own thread while the writer lock is held, release the
    lock once every write has queued; each body's result or exception."""
    outcomes: list[object] = [None] * len(bodies)

    def run(i: int) -> None:
        try:
            outcomes[i] = bodies[i]()
        except Exception as exc:  # the outcome under test
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    with store._write_lock:
        for t in threads:
            t.start()
        queued = threading.Event()
        while not queued.wait(0.01):  # until every writer has queued its work
            with store._queue_lock:
                if len(store._pending) == len(bodies):
                    queued.set()
    for t in threads:
        t.join(timeout=30)
    return outcomes


def test_twenty_writers_queued_behind_a_commit_share_one_commit(store: SqliteStore, statements: list[str]) -> None:
    assert store.count("tasks") == 0  # the collection's table exists before the writes queue
    statements.clear()
    outcomes = _queued_behind_a_commit(
        store,
        [lambda i=i: store.create("tasks", f"t{i:02d}", {"i": i}) for i in range(20)],  # type: ignore[misc]
    )

    assert not any(isinstance(o, BaseException) for o in outcomes)
    assert [s.data for s in store.query("tasks").items] == [{"i": i} for i in range(20)]
    assert statements.count("COMMIT") == 1


def test_a_failing_writer_in_a_shared_commit_fails_alone(store: SqliteStore) -> None:
    store.create("tasks", "taken", {"owner": "earlier"})
    stale = store.create("tasks", "claim", {"owner": None}).version
    store.set("tasks", "claim", {"owner": "someone"})
    bodies: list[Callable[[], object]] = [
        lambda i=i: store.create("tasks", f"t{i}", {"i": i})  # type: ignore[misc]
        for i in range(18)
    ]
    bodies.append(lambda: store.create("tasks", "taken", {"owner": "late"}))
    bodies.append(lambda: store.set("tasks", "claim", {"owner": "late"}, if_version=stale))

    outcomes = _queued_behind_a_commit(store, bodies)

    assert isinstance(outcomes[18], AlreadyExists)
    assert isinstance(outcomes[19], PreconditionFailed)
    assert "not " + stale in str(outcomes[19])
    assert not any(isinstance(o, BaseException) for o in outcomes[:18])
    assert len(store.query("tasks").items) == 18 + 2
    assert store.get("tasks", "taken").data == {"owner": "earlier"}  # type: ignore[union-attr]
    assert store.get("tasks", "claim").data == {"owner": "someone"}  # type: ignore[union-attr]


def test_a_transaction_behind_a_conflicting_one_in_the_same_commit_runs_again(store: SqliteStore) -> None:
    store.create("counters", "c", {"n": 0})
    read_together = threading.Barrier(2)
    attempts = [0, 0]

    def bump(k: int) -> object:
        def fn(tx: Transaction) -> int:
            attempts[k] += 1
            snap = tx.get("counters", "c")
            assert snap is not None
            if attempts[k] == 1:
                read_together.wait(timeout=10)  # both read n = 0 before either commits
            tx.set("counters", "c", {"n": snap.data["n"] + 1})
            return int(snap.data["n"])

        return store.transaction(fn)

    outcomes = _queued_behind_a_commit(store, [lambda: bump(0), lambda: bump(1)])

    assert sorted(outcomes) == [0, 1]  # type: ignore[type-var]
    assert sorted(attempts) == [1, 2]
    assert store.get("counters", "c").data == {"n": 2}  # type: ignore[union-attr]


_WRITER = textwrap.dedent(
    """
    import sys, threading
    from common.adapters.local.sqlite_store import SqliteStore

    store = SqliteStore(sys.argv[1], durable=True)
    lock = threading.Lock()

    def write(k):
        for i in range(100_000):
            doc = f"w{k}-{i}"
            store.create("acks", doc, {"k": k, "i": i})
            with lock:  # only a write that returned is reported
                print(doc, flush=True)

    for k in range(20):
        threading.Thread(target=write, args=(k,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_every_write_that_returned_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout is not None
    returned: list[str] = []
    try:
        while len(returned) < 300:
            line = proc.stdout.readline()
            assert line, "the writer process exited"
            returned.append(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

    reopened = SqliteStore(path, durable=True)
    try:
        kept = {s.id for s in reopened.get_many("acks", returned)}
    finally:
        reopened.close()
    assert kept == set(returned)
