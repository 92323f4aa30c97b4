"""An operation's event stream on the embedded store wakes when a write commits,
instead of waiting out its poll interval."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from common.adapters.local.sqlite_store import SqliteStore
from common.api.schemas import OperationOut
from common.api.sse import operation_events
from common.core.models import Operation
from common.core.states import OperationStatus
from common.service import repo

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_write_wakes_the_stream_long_before_its_poll(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db", durable=False)
    op = Operation(id="op1", owner="alice", created_at=NOW, updated_at=NOW, kind="run", target_id="r1", total=2)
    repo.put(store, op)

    def load() -> OperationOut:
        found = repo.get(store, Operation, "op1")
        assert found is not None
        return OperationOut.of(found[0], cancelled=0)

    # A poll of an hour: only the change feed can bring the next events within the test.
    stream = operation_events(load, poll_s=3600, max_s=7200, changes=store)
    assert next(stream).startswith("retry:")
    assert "event: progress" in next(stream)
    received: list[str] = []

    def read() -> None:
        received.extend(stream)  # until the done event ends the stream

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    repo.put(store, op.model_copy(update={"done": 1}))
    repo.put(store, op.model_copy(update={"done": 2, "status": OperationStatus.DONE, "finished_at": NOW}))
    reader.join(timeout=20)
    assert not reader.is_alive(), "the stream waited for its poll instead of the writes"
    assert any('"done":2' in e for e in received) and "event: done" in received[-1]


def test_the_change_count_moves_on_every_committed_write(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db", durable=False)
    seen = store.change_count()
    writer = threading.Thread(target=lambda: store.set("things", "a", {"n": 1}))
    writer.start()
    assert store.wait_for_change(seen, timeout_s=20) > seen
    writer.join()
