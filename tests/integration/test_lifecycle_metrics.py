"""Lifecycle counters (jobs, runs, items by kind, stage and event) agree with the records they count."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.core import lifecycle
from common.core.messages import CleanupSweep, ExtractTask
from common.core.models import ExtractionTask
from common.core.states import RunStatus, TaskStatus
from common.obs import metrics
from common.runtime.local import LocalRuntime
from common.service import control, repo
from tests.support import DuplicatingRuntime, Pipeline, make_pipeline


@pytest.fixture(autouse=True)
def recorded() -> Iterator[None]:
    metrics.configure("memory")
    yield
    metrics.reset()


def _counter(name: str) -> dict[tuple[str, str, str], float]:
    """``{(kind, stage, event): value}`` of one lifecycle counter."""
    out = {}
    pattern = rf'^{name}\{{event="(\w+)",kind="(\w+)",stage="(\w+)"\}} (\S+)$'
    for line in metrics.prometheus_text().splitlines():
        if m := re.match(pattern, line):
            event, kind, stage, value = m.groups()
            out[(kind, stage, event)] = float(value)
    return out


def _drain_only(p: Pipeline, function: str, max_deliveries: int = 1_000_000) -> None:
    LocalRuntime(p.deps, p.bus, functions={function}).drain(max_deliveries=max_deliveries)


def _run_with_failures(p: Pipeline, formats: tuple[str, ...] = ("csv", "xlsx")) -> str:
    job = p.job(formats=formats)
    for name in ("ok-1.pdf", "ok-2.pdf", "rows3-1.pdf", "bad-1.pdf", "invalid-1.pdf", "flaky2-1.pdf"):
        p.upload(job, name)
    run = p.start(job)
    p.drain(advance_clock=True)
    return run.id


def _expected_items(p: Pipeline, run_id: str) -> dict[tuple[str, str, str], float]:
    tasks = p.tasks(run_id)
    exports = p.exports(run_id)
    expected: Counter[tuple[str, str, str]] = Counter()
    expected[("extract", "extract", "created")] = len(tasks)
    expected[("extract", "extract", "started")] = sum(1 for t in tasks if t.attempts >= 1)
    for t in tasks:
        expected[("extract", "extract", t.status.value)] += 1
    expected[("extract", "export", "created")] = len(exports)
    expected[("extract", "export", "started")] = len(exports)
    for e in exports:
        expected[("extract", "export", e.status.value)] += 1
    return dict(expected)


def test_lifecycle_counters_match_the_records_after_a_run_with_failures(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    run_id = _run_with_failures(p)
    run = p.run(run_id)
    assert run.status is RunStatus.COMPLETED and run.counters.failed == 2 and run.counters.completed == 4

    assert _counter("sluice_items_total") == _expected_items(p, run_id)
    assert _counter("sluice_runs_total") == {
        ("extract", "submit", "created"): 1,
        ("extract", "extract", "started"): 1,
        ("extract", "extract", "completed"): 1,
    }
    assert _counter("sluice_jobs_total") == {("extract", "submit", "created"): 1}
    # The record counters and the metric agree item by item.
    items = _counter("sluice_items_total")
    assert items[("extract", "extract", "failed")] == run.counters.failed
    assert items[("extract", "extract", "completed")] == run.counters.completed


def test_redeliveries_and_duplicate_messages_count_each_event_once(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, runtime_cls=DuplicatingRuntime)
    run_id = _run_with_failures(p, formats=("csv",))
    assert p.run(run_id).status is RunStatus.COMPLETED
    items = _counter("sluice_items_total")
    # Every task's first message came back with the same id after its work was done: only
    # terminal ones are dropped as done; the rest are counted once whatever the deliveries.
    assert items == _expected_items(p, run_id)
    assert _counter("sluice_runs_total")[("extract", "extract", "completed")] == 1


def test_a_run_without_files_counts_as_failed(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    run = p.start(p.job())
    p.drain()
    assert p.run(run.id).status is RunStatus.FAILED
    assert _counter("sluice_runs_total") == {
        ("extract", "submit", "created"): 1,
        ("extract", "extract", "failed"): 1,
    }


def test_cancelling_counts_the_run_and_its_pending_items_as_cancelled(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    for i in range(3):
        p.upload(job, f"ok-{i}.pdf")
    run = p.start(job)
    _drain_only(p, "import_upload")
    _drain_only(p, "extract", max_deliveries=1)  # the initializer fans out; no task has run
    control.cancel_run(p.deps, run.id, owner="alice")
    control.cancel_run(p.deps, run.id, owner="alice")  # idempotent: counted once
    cancelled = sum(1 for t in p.tasks(run.id) if t.status is TaskStatus.CANCELLED)
    assert cancelled == 3
    assert _counter("sluice_runs_total")[("extract", "control", "cancelled")] == 1
    assert _counter("sluice_items_total")[("extract", "extract", "cancelled")] == cancelled


def test_a_takeover_after_a_dead_attempt_counts_the_item_as_stalled(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    p.upload(job, "ok-1.pdf")
    run = p.start(job)
    _drain_only(p, "import_upload")
    _drain_only(p, "extract", max_deliveries=1)
    # A worker took the task's message, claimed the task and died without settling either.
    (delivery,) = p.bus.pull("extract--extract", 1, owner="dead-worker")
    (task,) = p.tasks(run.id)
    stored, version = repo.require(p.deps.store, ExtractionTask, task.id)
    claimed = lifecycle.start_attempt(
        stored, message_id=delivery.message_id, now=p.clock.now(), lease_s=p.deps.settings.task_lease_s
    )
    repo.cas(p.deps.store, claimed, version)
    p.drain(advance_clock=True)  # the bus's lease runs out; the same message comes back and takes over
    assert p.run(run.id).status is RunStatus.COMPLETED
    items = _counter("sluice_items_total")
    assert items[("extract", "extract", "stalled")] == 1
    # The dead worker counted its start in its own process; the takeover is a stall, not a second start.
    assert ("extract", "extract", "started") not in items
    assert items[("extract", "extract", "completed")] == 1


def test_model_calls_are_counted_by_outcome(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    p.upload(job, "ok-1.pdf")
    p.upload(job, "ratelimited-1.pdf")
    p.start(job)
    _drain_only(p, "import_upload")
    _drain_only(p, "extract", max_deliveries=3)  # the initializer, then one call per document
    text = metrics.prometheus_text()
    model = p.deps.settings.extractor.value  # the configured extractor (the scripted one stands in for it)
    assert f'sluice_model_requests_total{{model="{model}",outcome="ok"}} 1' in text
    assert f'sluice_model_requests_total{{model="{model}",outcome="rate_limited"}} 1' in text


def test_queue_gauges_show_depth_oldest_age_and_dead_letters_per_subscription(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    metrics.register_queue_probe(p.runtime.queue_stats)()  # registered, then removed: reads nothing
    remove = metrics.register_queue_probe(p.runtime.queue_stats)
    try:
        p.sender.send(ExtractTask(task_id="t_missing", run_id="r", job_id="j"))
        p.sender.send(CleanupSweep())
        p.clock.advance(90)
        p.sender.send(CleanupSweep(), delay_s=3600)  # scheduled: waiting, but not late
        text = metrics.prometheus_text()
        assert 'sluice_queue_depth{subscription="cleanup--cleanup"} 2' in text
        assert 'sluice_queue_oldest_age_seconds{subscription="cleanup--cleanup"} 90' in text
        assert 'sluice_queue_depth{subscription="extract--extract"} 1' in text
        _drain_only(p, "extract")  # the unknown task is dead-lettered
        text = metrics.prometheus_text()
        assert 'sluice_queue_dead_letters{subscription="extract--extract"} 1' in text
        assert 'sluice_queue_depth{subscription="extract--extract"} 0' in text
        assert 'sluice_queue_oldest_age_seconds{subscription="extract--extract"} 0' in text
    finally:
        remove()


def test_a_run_past_its_timeout_is_reported_stalled_once_by_the_sweep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    p.upload(job, "ok-1.pdf")
    run = p.start(job)
    _drain_only(p, "import_upload")
    _drain_only(p, "extract", max_deliveries=1)  # running; its task never runs (no extract worker)
    assert p.run(run.id).status is RunStatus.RUNNING
    cleanup = LocalRuntime(p.deps, p.bus, functions={"cleanup"})

    p.clock.advance(p.deps.settings.run_timeout_s - 60)
    p.sender.send(CleanupSweep())
    cleanup.drain()
    assert ("extract", "cleanup", "stalled") not in _counter("sluice_runs_total")

    p.clock.advance(120)
    for _ in range(2):  # a second sweep does not report it again
        p.sender.send(CleanupSweep())
        cleanup.drain()
    assert _counter("sluice_runs_total")[("extract", "cleanup", "stalled")] == 1
    assert p.run(run.id).stalled_at is not None and p.run(run.id).status is RunStatus.RUNNING
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "over its timeout" in r.getMessage()]
    assert len(errors) == 1
    assert errors[0].__dict__["fields"]["run_id"] == run.id
