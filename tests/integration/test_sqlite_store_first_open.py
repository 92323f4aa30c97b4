"""Many clients opening one fresh embedded database at once (function instances, `sluice serve`
worker processes, test threads standing for instances) all open it: none is refused.

Switching a fresh file to WAL needs an exclusive lock, and SQLite refuses the switch at once
(without its busy handler) to a connection that meets another's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from common.adapters.local.clock import SystemClock
from common.adapters.local.sqlite_bus import SqliteBus
from common.adapters.local.sqlite_store import SqliteStore

pytestmark = pytest.mark.timeout(120)
CLIENTS, TRIALS = 20, 60


def _race(tmp_path: Path, open_and_use: Callable[[Path, int], None]) -> list[BaseException]:
    """Open a fresh file from CLIENTS threads at a barrier, TRIALS times; what they raised."""
    failures: list[BaseException] = []
    lock = threading.Lock()
    for trial in range(TRIALS):
        path = tmp_path / f"fresh-{trial}.db"
        barrier = threading.Barrier(CLIENTS, timeout=60)

        def client(i: int, path: Path = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                open_and_use(path, i)
            except BaseException as exc:  # collected, asserted by the caller
                with lock:
                    failures.append(exc)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            break
    return failures


def test_twenty_stores_opening_a_fresh_file_at_once_all_open_and_write(tmp_path: Path) -> None:
    def open_and_write(path: Path, i: int) -> None:
        with SqliteStore(path, durable=False) as store:
            store.set("things", f"t{i}", {"i": i})

    assert _race(tmp_path, open_and_write) == []
    with SqliteStore(tmp_path / f"fresh-{TRIALS - 1}.db", durable=False) as check:
        assert len(check.query("things").items) == CLIENTS


def test_twenty_buses_opening_a_fresh_file_at_once_all_open(tmp_path: Path) -> None:
    def open_and_read(path: Path, i: int) -> None:
        SqliteBus(path, clock=SystemClock(), durable=False).backlog("nothing")

    assert _race(tmp_path, open_and_read) == []
