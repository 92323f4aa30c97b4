"""The embedded store's change feed wakes its waiters for writes committed by other
processes (``sluice serve --processes N``: the workers write, the API streams), with one
watcher thread per store that runs only while someone waits."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from common.adapters.local.sqlite_store import SqliteStore
from tests.support import REPO_ROOT

# Another process on the same file: says "ready" once its store is open, then writes one
# document per line it reads ("go"), saying "wrote" after each commit.
_WRITER = """
import sys
from common.adapters.local.sqlite_store import SqliteStore
store = SqliteStore(sys.argv[1], durable=False)
print("ready", flush=True)
for n, _ in enumerate(sys.stdin):
    store.set("things", f"t{n}", {"n": n})
    print("wrote", flush=True)
"""


class Writer:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def _io(self) -> tuple[IO[str], IO[str]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        return self.proc.stdin, self.proc.stdout

    def write(self) -> None:
        """Commit one document in the other process (returns without waiting for it)."""
        stdin, _ = self._io()
        stdin.write("go\n")
        stdin.flush()

    def expect(self, line: str) -> None:
        _, stdout = self._io()
        got = stdout.readline().strip()
        assert got == line, f"the writer process said {got!r}, not {line!r}"


@contextmanager
def writer_process(db: Path) -> Iterator[Writer]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    writer = Writer(proc)
    try:
        writer.expect("ready")
        yield writer
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=60)


def _watchers(store: SqliteStore) -> list[threading.Thread]:
    """The store's watcher threads (other tests' stores may still have theirs)."""
    return [t for t in threading.enumerate() if t.name == f"sluice-store-watch {store.path}"]


def _until(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "state.db", durable=False) as s:
        yield s


def test_a_write_by_another_process_wakes_a_waiter_long_before_its_timeout(store: SqliteStore) -> None:
    with writer_process(store.path) as writer:
        seen = store.change_count()
        started = time.monotonic()
        writer.write()
        count = store.wait_for_change(seen, timeout_s=10)
        elapsed = time.monotonic() - started
        writer.expect("wrote")
    assert count != seen, "the other process's write was not seen"
    assert elapsed < 5, f"woken after {elapsed:.1f} s: by the timeout, not by the write"


def test_one_write_by_another_process_wakes_twenty_waiting_threads(store: SqliteStore) -> None:
    seen = store.change_count()
    barrier = threading.Barrier(21)
    counts: list[int] = []
    lock = threading.Lock()

    def wait() -> None:
        barrier.wait()
        got = store.wait_for_change(seen, timeout_s=10)
        with lock:
            counts.append(got)

    with writer_process(store.path) as writer:
        threads = [threading.Thread(target=wait) for _ in range(20)]
        for t in threads:
            t.start()
        barrier.wait()
        started = time.monotonic()
        writer.write()
        for t in threads:
            t.join(timeout=30)
        elapsed = time.monotonic() - started
        writer.expect("wrote")
    assert len(counts) == 20
    assert all(c != seen for c in counts), f"{sum(c == seen for c in counts)} of 20 waiters missed the write"
    assert elapsed < 5, f"the waiters returned after {elapsed:.1f} s: by their timeout"


def test_twenty_waiters_share_one_watcher_which_ends_after_they_leave(store: SqliteStore) -> None:
    seen = store.change_count()
    barrier = threading.Barrier(21)

    def wait() -> None:
        barrier.wait()
        store.wait_for_change(seen, timeout_s=30)

    threads = [threading.Thread(target=wait) for _ in range(20)]
    for t in threads:
        t.start()
    barrier.wait()
    _until("a watcher thread", lambda: bool(_watchers(store)))
    assert len(_watchers(store)) == 1
    store.set("things", "a", {"n": 1})  # this process's write wakes them at once
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    _until("the watcher to end once nobody waits", lambda: not _watchers(store))


def test_nobody_waiting_runs_no_watcher(store: SqliteStore) -> None:
    with writer_process(store.path) as writer:
        store.change_count()
        writer.write()
        writer.expect("wrote")
        store.set("things", "mine", {"n": 0})
        assert store.get("things", "t0") is not None
    assert not _watchers(store)


def test_closing_the_store_releases_its_waiters_and_stops_the_watcher(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db", durable=False)
    seen = store.change_count()
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(store.wait_for_change(seen, timeout_s=60)))
    waiter.start()
    _until("a watcher thread", lambda: bool(_watchers(store)))
    store.close()
    waiter.join(timeout=30)
    assert not waiter.is_alive(), "a waiter outlived the store's close"
    assert got == [seen]
    assert not _watchers(store)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_watches_with_its_own_thread_and_connection(store: SqliteStore) -> None:
    # The parent's watcher runs at the fork: the child inherits its registration, not its thread.
    seen = store.change_count()
    waiter = threading.Thread(target=lambda: store.wait_for_change(seen, timeout_s=60))
    waiter.start()
    _until("a watcher thread", lambda: bool(_watchers(store)))
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports by its exit code
        code = 1
        try:
            mine = store.change_count()
            os.write(ready_w, b"r")
            os.read(go_r, 1)
            code = 0 if store.wait_for_change(mine, timeout_s=10) != mine else 2
        finally:
            os._exit(code)
    os.read(ready_r, 1)
    store.set("things", "from-parent", {"n": 1})  # another process, for the child
    os.write(go_w, b"g")
    _, status = os.waitpid(pid, 0)
    waiter.join(timeout=30)
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child did not see the parent's write"


def test_the_watch_interval_comes_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.bootstrap import local_app
    from common.config import Settings

    monkeypatch.setenv("SLUICE_STORE_WATCH_S", "0.05")
    store = local_app(Settings(backend="local", data_dir=tmp_path / "data")).deps.store
    assert isinstance(store, SqliteStore)
    assert store.watch_interval_s == 0.05


def test_a_watch_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="watch_interval_s"):
        SqliteStore(tmp_path / "state.db", watch_interval_s=0)
