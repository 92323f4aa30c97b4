"""``repo.create_all_if_absent``: a run's fan-out writes its items in a few
transactions, not a commit each, and still creates each item exactly once
when fan-outs are redelivered or race (on every store backend)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from common.core.models import Record
from common.ports.store import Store, Transaction
from common.service import repo

T = TypeVar("T")


class Note(Record):
    collection: ClassVar[str] = "notes"
    text: str = ""


WHEN = datetime(2026, 12, 5, tzinfo=UTC)


class CountingStore:
    """The store, counting the transactions run through it (a test double around the port)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.transactions = 0

    def transaction(self, fn: Callable[[Transaction], T], *, max_attempts: int = 10) -> T:
        self.transactions += 1
        return self._store.transaction(fn, max_attempts=max_attempts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _note(note_id: str, text: str) -> Note:
    return Note(id=note_id, owner="alice", created_at=WHEN, updated_at=WHEN, text=text)


def _notes(n: int) -> list[Note]:
    return [_note(f"n{i:04d}", f"note {i}") for i in range(n)]


def test_records_are_created_in_one_transaction_per_chunk(store: Store) -> None:
    counting = CountingStore(store)

    created = repo.create_all_if_absent(counting, _notes(45), chunk=20)

    assert created == 45
    assert counting.transactions == 3
    assert len(store.get_many("notes", [n.id for n in _notes(45)])) == 45


def test_existing_records_are_kept_and_only_the_absent_ones_counted(store: Store) -> None:
    repo.create_all_if_absent(store, [_note("n0003", "first"), _note("n0011", "first")])

    created = repo.create_all_if_absent(store, _notes(15), chunk=10)

    assert created == 13
    texts = {s.id: s.data["text"] for s in store.get_many("notes", [n.id for n in _notes(15)])}
    assert len(texts) == 15
    assert texts["n0003"] == texts["n0011"] == "first"
    assert texts["n0004"] == "note 4"


def test_twenty_racing_fan_outs_create_each_record_once(store: Store) -> None:
    notes = _notes(60)
    barrier = threading.Barrier(20)
    counts: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def fan_out(k: int) -> None:
        mine = notes[k % 3 * 20 :] + notes[: k % 3 * 20]  # racers start at different chunks
        try:
            barrier.wait()
            n = repo.create_all_if_absent(store, mine, chunk=20)
        except BaseException as exc:  # reported below, not lost in the thread
            with lock:
                errors.append(exc)
            return
        with lock:
            counts.append(n)

    threads = [threading.Thread(target=fan_out, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sum(counts) == 60, "every record is counted as created by exactly one racer"
    assert len(store.get_many("notes", [n.id for n in notes])) == 60
