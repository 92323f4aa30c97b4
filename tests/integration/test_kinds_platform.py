"""What the platform gives every job kind, shown on kinds declared in the tests:
a run timeout per kind, and a stalled item recovered within one lease."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from common.adapters.local.clock import SystemClock
from common.bootstrap import bootstrap, local_bus
from common.config import Settings
from common.core.errors import SluiceError
from common.core.models import Job, Operation, RunCounters
from common.core.states import OperationStatus, RunStatus, TaskStatus
from common.kinds import ItemCall, ItemDone, Kind, register
from common.runtime.local import LocalRuntime
from common.service import control, jobs, repo
from tests.kinds import wordcount
from tests.support import Pipeline, make_pipeline


def _words_job(p: Pipeline, kind: str = "wordcount", files: int = 2) -> Job:
    job = jobs.create_job(p.deps, owner="alice", name="words", fields=[], kind=kind)
    for i in range(files):
        p.upload(job, f"t{i}.txt", b"one two three" + b" more" * i)  # distinct bytes: one file each
    p.drain()
    return job


# -- run timeout ------------------------------------------------------------------------


def test_a_run_open_past_its_kinds_timeout_fails_and_its_open_items_are_cancelled(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, topology=wordcount.topology_file(tmp_path), run_timeouts={"wordcount": 30})
    run = p.start(_words_job(p))
    p.drain(max_deliveries=1)  # wordcount.start: two items, and the deadline is set
    started = p.run(run.id)
    assert started.started_at is not None and started.deadline_at == started.started_at + timedelta(seconds=30)
    control.pause_run(p.deps, run.id, owner="alice")
    p.drain(advance_clock=True)  # the items wait (paused) until the deadline comes
    assert p.clock.now() >= started.deadline_at

    final = p.run(run.id)
    assert final.status is RunStatus.FAILED and final.error is not None
    assert final.error["code"] == "run_timeout"
    assert final.counters == RunCounters(total=2, cancelled=2)
    assert [t.status for t in p.tasks(run.id)] == [TaskStatus.CANCELLED] * 2
    op = repo.require(p.deps.store, Operation, final.operation_id)[0]
    assert op.status is OperationStatus.FAILED and op.error is not None and op.error["code"] == "run_timeout"


def test_a_run_that_finishes_in_time_is_not_timed_out_by_its_late_deadline(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, topology=wordcount.topology_file(tmp_path), run_timeouts={"wordcount": 30})
    run = p.start(_words_job(p))
    p.drain(advance_clock=True)  # completes, then the deadline message arrives and finds nothing to do
    final = p.run(run.id)
    assert final.status is RunStatus.COMPLETED and final.outputs == {"total_words": 3 + 4, "files": 2}


def test_a_kind_without_a_timeout_sets_no_deadline(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, topology=wordcount.topology_file(tmp_path))
    run = p.start(_words_job(p))
    p.drain()
    final = p.run(run.id)
    assert final.status is RunStatus.COMPLETED and final.deadline_at is None


# -- stalled items ------------------------------------------------------------------------

_release = threading.Event()
_calls: Counter[int] = Counter()


def _hangs_on_its_first_attempt(call: ItemCall) -> ItemDone | SluiceError:
    _calls[call.attempt] += 1
    if call.attempt == 1:
        _release.wait(60)  # a worker stuck (a hung connection, say): it never answers in time
    return wordcount.handle(call)


HANGING = register(
    Kind(
        name="wordcount_hang",
        settings_model=wordcount.WordcountSettings,
        fan_out=wordcount.fan_out,
        handle=_hangs_on_its_first_attempt,
        fan_in=wordcount.fan_in,
        function="wordcount_hang",
        item_lease_s=1.0,
    )
)


def test_a_stalled_item_is_taken_over_within_one_lease_not_at_the_ack_deadline(tmp_path: Path) -> None:
    # The subscription's ack deadline is 600 s: the bus would redeliver only then.
    topology = wordcount.topology_file(tmp_path, wordcount.topology_entry("wordcount_hang", ack_deadline_s=600))
    settings = Settings(backend="local", data_dir=tmp_path / "data", topology=topology)
    deps = bootstrap(settings, clock=SystemClock())
    bus = local_bus(deps)
    runtime = LocalRuntime(deps, bus)
    p = Pipeline(deps=deps, bus=bus, runtime=runtime, clock=None, tmp=tmp_path, extractor=None)  # type: ignore[arg-type]
    job = jobs.create_job(p.deps, owner="alice", name="words", fields=[], kind="wordcount_hang")
    p.upload(job, "t.txt", b"one two three")
    _release.clear()
    _calls.clear()
    runtime.start()
    try:
        run = p.start(job)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30 and p.run(run.id).status is not RunStatus.COMPLETED:
            time.sleep(0.05)
        recovered_after = time.monotonic() - t0
        completed = p.run(run.id)
        assert completed.status is RunStatus.COMPLETED, "the stalled item was not recovered"
        assert not _release.is_set(), "it completed while the first attempt was still stuck"
    finally:
        _release.set()  # the stuck attempt wakes up; its outcome is fenced out
        runtime.stop()

    assert recovered_after < 30  # one 1 s lease and the check's grace, far below the 600 s ack deadline
    assert _calls == Counter({1: 1, 2: 1})
    (item,) = p.tasks(run.id)
    assert item.status is TaskStatus.COMPLETED and item.attempts == 2
    assert [h.outcome for h in item.history] == ["abandoned", "completed"]
    assert p.run(run.id).outputs == {"total_words": 3, "files": 1}
