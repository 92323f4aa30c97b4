"""An operation as clients see it: the stored record with its run's live state (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from common.core.models import Operation, Run, RunCounters
from common.core.operations import live_operation
from common.core.states import OperationStatus, RunStatus

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _op(**kw: object) -> Operation:
    base: dict[str, object] = {
        "id": "op_1",
        "owner": "alice",
        "kind": "run",
        "target_id": "run_1",
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Operation.model_validate({**base, **kw})


def _run(status: RunStatus, **kw: object) -> Run:
    base: dict[str, object] = {
        "id": "run_1",
        "owner": "alice",
        "job_id": "job_1",
        "run_number": 1,
        "status": status,
        "operation_id": "op_1",
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Run.model_validate({**base, **kw})


def test_a_running_operation_takes_its_runs_exact_counters_and_percentage() -> None:
    run = _run(RunStatus.RUNNING, started_at=NOW - timedelta(seconds=60))
    live = live_operation(_op(stage="extracting", done=1, total=4), run, RunCounters(total=4, completed=2), NOW)
    assert (live.done, live.failed, live.total) == (2, 0, 4)
    assert live.pct == 50.0
    assert live.eta_seconds is not None and live.eta_seconds > 0
    assert live.status is OperationStatus.RUNNING


def test_a_paused_or_pending_run_shows_in_the_stage() -> None:
    counters = RunCounters(total=2)
    assert live_operation(_op(stage="extracting"), _run(RunStatus.PAUSED), counters, NOW).stage == "paused"
    assert live_operation(_op(), _run(RunStatus.PENDING), counters, NOW).stage == "queued"
    later = _run(RunStatus.PENDING, schedule_time=NOW + timedelta(hours=1))
    assert live_operation(_op(), later, counters, NOW).stage == "scheduled"


def test_a_run_that_failed_or_was_cancelled_ends_the_operation_before_its_record_says_so() -> None:
    failed = live_operation(_op(), _run(RunStatus.FAILED, error={"code": "x"}), RunCounters(total=1), NOW)
    assert (failed.status, failed.stage, failed.error) == (OperationStatus.FAILED, "failed", {"code": "x"})
    cancelled = live_operation(_op(), _run(RunStatus.CANCELLED), RunCounters(total=1, cancelled=1), NOW)
    assert (cancelled.status, cancelled.stage) == (OperationStatus.CANCELLED, "cancelled")


def test_a_finished_operation_keeps_its_status_and_stage() -> None:
    op = _op(status=OperationStatus.DONE, stage="done")
    live = live_operation(op, _run(RunStatus.RUNNING), RunCounters(total=3, completed=3), NOW)
    assert (live.status, live.stage, live.done) == (OperationStatus.DONE, "done", 3)


def test_an_operation_that_is_not_a_runs_or_whose_run_is_gone_is_as_stored() -> None:
    export_op = _op(kind="export", target_id="exp_1", stage="writing")
    assert live_operation(export_op, _run(RunStatus.RUNNING), RunCounters(total=9), NOW) == export_op
    assert live_operation(_op(), None, None, NOW) == _op()
