"""Run control in the service layer, and the per-user cap on running tasks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from common.adapters.local.clock import ManualClock
from common.bootstrap import local_app
from common.config import Settings
from common.core.errors import IllegalTransition, NotFound
from common.core.models import ExtractionTask, Run
from common.core.states import RunStatus, TaskStatus
from common.service import control, repo, tally
from tests.support import Pipeline, ScriptedExtractor, make_pipeline


class CapSettings(Settings):
    """Settings with the field the deployment adds (SLUICE_MAX_RUNNING_TASKS_PER_USER)."""

    max_running_tasks_per_user: int = 0


def capped_pipeline(tmp: Path, cap: int) -> Pipeline:
    clock = ManualClock()
    settings = CapSettings(backend="local", data_dir=tmp / "data", durable=False, max_running_tasks_per_user=cap)
    ex = ScriptedExtractor()
    app = local_app(settings, clock=clock, extractor_factory=lambda _n: ex)
    return Pipeline.of(app, tmp=tmp, extractor=ex)


def _hold(p: Pipeline, task: ExtractionTask, minutes: float = 5) -> None:
    """Mark ``task`` as held by a live attempt of a worker elsewhere."""
    current, version = repo.require(p.deps.store, ExtractionTask, task.id)
    held = current.model_copy(
        update={
            "status": TaskStatus.RUNNING,
            "attempts": 1,
            "message_id": "elsewhere",
            "lease_until": p.clock.now() + timedelta(minutes=minutes),
        }
    )
    repo.cas(p.deps.store, held, version)


def test_an_owner_at_the_cap_has_new_tasks_queued_without_counting_attempts(tmp_path: Path) -> None:
    p = capped_pipeline(tmp_path, cap=1)
    job = p.job()
    p.upload(job, "ok-a.pdf")
    p.upload(job, "ok-b.pdf")
    p.drain()
    run = p.start(job)
    p.drain(max_deliveries=1)  # run.start
    first, second = p.tasks(run.id)
    _hold(p, first)
    p.drain()  # no clock movement: the second task is throttled, its retry delayed
    second_now = repo.require(p.deps.store, ExtractionTask, second.id)[0]
    # Queued (waiting for capacity), told apart from pending (waiting for delivery).
    assert second_now.status is TaskStatus.QUEUED and second_now.attempts == 0 and second_now.history == []
    assert tally.any_open(p.deps.store, run.id), "a queued item keeps its run open"
    assert isinstance(p.extractor, ScriptedExtractor) and p.extractor.calls == {}
    assert p.bus.depth("extract--extract") == 1, "the throttled task's message waits, delayed"
    assert control.running_tasks(p.deps.store, "alice", p.clock.now()) == 1
    # Once the other attempt's lease is gone, the task runs with its first attempt.
    p.drain(advance_clock=True)
    done = repo.require(p.deps.store, ExtractionTask, second.id)[0]
    assert done.status is TaskStatus.COMPLETED and done.attempts == 1
    assert p.extractor.calls == {second.file_name: 1}


def test_another_owner_is_not_throttled_by_alices_tasks(tmp_path: Path) -> None:
    from common.service import jobs

    p = capped_pipeline(tmp_path, cap=1)
    job = p.job()
    p.upload(job, "ok-a.pdf")
    p.drain()
    run = p.start(job)
    p.drain(max_deliveries=1)
    (task,) = p.tasks(run.id)
    _hold(p, task)
    bobs = jobs.create_job(p.deps, owner="bob", name="bob", fields=job.fields)
    p.upload(bobs, "ok-bob.pdf")
    p.drain()
    bob_run = jobs.request_run(p.deps, p.sender, bobs)
    p.drain()
    assert p.run(bob_run.id).status is RunStatus.COMPLETED


def test_no_cap_configured_never_throttles(pipeline: Pipeline) -> None:
    job = pipeline.job()
    for n in "abc":
        pipeline.upload(job, f"ok-{n}.pdf")
    run = pipeline.start(job)
    pipeline.drain()
    assert pipeline.run(run.id).status is RunStatus.COMPLETED


def test_resume_completes_a_run_whose_last_tasks_finished_while_paused(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    p.upload(job, "ok-a.pdf")
    p.drain()
    run = p.start(job)
    p.drain(max_deliveries=1)
    control.pause_run(p.deps, run.id, owner="alice")
    # The one task was already running; it finishes while the run is paused.
    (task,) = p.tasks(run.id)
    store = p.deps.store

    def finish(t):  # what the extract stage's fan-in transaction writes
        cur = repo.tx_require(t, ExtractionTask, task.id)
        r = repo.tx_require(t, Run, run.id)
        repo.tx_put(t, cur.model_copy(update={"status": TaskStatus.COMPLETED}))
        repo.tx_put(t, r.model_copy(update={"counters": r.counters.model_copy(update={"completed": 1})}))

    store.transaction(finish)
    p.drain()
    assert p.run(run.id).status is RunStatus.PAUSED
    control.resume_run(p.deps, p.sender, run.id, owner="alice")
    p.drain()
    assert p.run(run.id).status is RunStatus.COMPLETED
    assert [e.status.value for e in p.exports(run.id)] == ["completed"]


def test_control_refuses_other_owners_and_illegal_moves(pipeline: Pipeline) -> None:
    job = pipeline.job()
    pipeline.upload(job, "ok-a.pdf")
    run = pipeline.start(job)
    with pytest.raises(NotFound):
        control.cancel_run(pipeline.deps, run.id, owner="mallory")
    with pytest.raises(NotFound):
        control.pause_run(pipeline.deps, run.id, owner="mallory")
    with pytest.raises(IllegalTransition):
        control.resume_run(pipeline.deps, pipeline.sender, run.id, owner="alice")
    pipeline.drain()
    with pytest.raises(IllegalTransition):
        control.pause_run(pipeline.deps, run.id, owner="alice")
    with pytest.raises(IllegalTransition):
        control.cancel_run(pipeline.deps, run.id, owner="alice")
    assert pipeline.run(run.id).status is RunStatus.COMPLETED


def test_retry_of_named_tasks_checks_they_belong_to_the_run(pipeline: Pipeline) -> None:
    job = pipeline.job()
    pipeline.upload(job, "bad-a.pdf")
    pipeline.upload(job, "bad-b.pdf")
    run = pipeline.start(job)
    pipeline.drain()
    first = pipeline.tasks(run.id)[0]
    with pytest.raises(NotFound):
        control.retry_run(pipeline.deps, pipeline.sender, run.id, owner="alice", task_ids=["nope"])
    updated, n = control.retry_run(pipeline.deps, pipeline.sender, run.id, owner="alice", task_ids=[first.id])
    assert n == 1 and updated.counters.failed == 1 and updated.status is RunStatus.RUNNING
    pipeline.drain()
    assert pipeline.run(run.id).counters.failed == 2
