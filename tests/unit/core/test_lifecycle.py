"""Pure state changes on tasks, runs, exports and operations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from common.core import lifecycle
from common.core.breaker import CircuitOpen
from common.core.errors import ErrorKind, IllegalTransition, PermanentError, RetryableError
from common.core.lifecycle import Claim
from common.core.models import (
    MAX_ATTEMPT_HISTORY,
    Export,
    ExtractionTask,
    Operation,
    Run,
    RunCounters,
    TaskResult,
    TaskUsage,
)
from common.core.progress import Progress
from common.core.states import ExportStatus, OperationStatus, RunStatus, TaskStatus
from tests.unit.core.conftest import T0, at

MakeTask = Callable[..., ExtractionTask]
MakeRun = Callable[..., Run]
MakeExport = Callable[..., Export]
MakeOperation = Callable[..., Operation]

RESULT = TaskResult(columns=["invoice_number"], results=[["INV-1"]], method="offline-text")
USAGE = TaskUsage(input_tokens=100, output_tokens=20, latency_ms=850.0)
PROGRESS = Progress(done=3, failed=1, total=10, pct=40.0, eta_seconds=90.0)


def _complete(task: ExtractionTask, attempt: int) -> ExtractionTask:
    return lifecycle.complete_task(
        task,
        attempt=attempt,
        result=RESULT,
        usage=USAGE,
        model="gemini-x",
        model_version="gemini-x-001",
        prompt_version="p3",
        now=at(30),
    )


def _fail(task: ExtractionTask, attempt: int) -> ExtractionTask:
    return lifecycle.fail_task(task, attempt=attempt, error=PermanentError("bad pdf"), now=at(30))


def _requeue(task: ExtractionTask, attempt: int) -> ExtractionTask:
    return lifecycle.requeue_task(task, attempt=attempt, error=RetryableError("reset"), now=at(30), delay_s=15)


FENCED = {"complete": _complete, "fail": _fail, "requeue": _requeue}


# -- claim_decision ---------------------------------------------------------------


def test_claim_of_a_pending_task_starts_it(make_task: MakeTask) -> None:
    assert lifecycle.claim_decision(make_task(), message_id="m-1", now=T0) is Claim.START


@pytest.mark.parametrize("status", [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_claim_of_a_terminal_task_is_done(make_task: MakeTask, status: TaskStatus) -> None:
    # Even with the very message and a live lease: a terminal task is never restarted.
    task = make_task(status=status, attempts=1, message_id="m-1", lease_until=at(60))
    assert lifecycle.claim_decision(task, message_id="m-1", now=T0) is Claim.DONE


def test_claim_of_a_running_task_redelivered_with_its_own_message_id_is_a_takeover(
    make_running_task: MakeTask,
) -> None:
    task = make_running_task(message_id="m-2", lease_until=at(60))
    assert lifecycle.claim_decision(task, message_id="m-2", now=T0) is Claim.TAKEOVER


@pytest.mark.parametrize(
    "lease_until",
    [
        pytest.param(at(-1), id="expired-a-second-ago"),
        pytest.param(T0, id="expires-exactly-now"),
        pytest.param(None, id="no-lease"),
    ],
)
def test_claim_of_a_running_task_whose_lease_is_gone_is_a_takeover(
    make_running_task: MakeTask, lease_until: Any
) -> None:
    task = make_running_task(message_id="m-2", lease_until=lease_until)
    assert lifecycle.claim_decision(task, message_id="m-other", now=T0) is Claim.TAKEOVER


def test_claim_by_another_message_while_the_lease_is_live_is_in_flight(make_running_task: MakeTask) -> None:
    task = make_running_task(message_id="m-2", lease_until=at(1))
    assert lifecycle.claim_decision(task, message_id="m-other", now=T0) is Claim.IN_FLIGHT


# -- start_attempt ----------------------------------------------------------------


def test_start_attempt_moves_a_pending_task_to_running_as_attempt_one(make_task: MakeTask) -> None:
    started = lifecycle.start_attempt(make_task(), message_id="m-1", now=T0, lease_s=90)
    assert started.status is TaskStatus.RUNNING
    assert started.attempts == 1


def test_start_attempt_records_the_delivering_message_id(make_task: MakeTask) -> None:
    started = lifecycle.start_attempt(make_task(), message_id="m-7", now=T0, lease_s=90)
    assert started.message_id == "m-7"


def test_start_attempt_sets_the_lease_lease_s_seconds_from_now(make_task: MakeTask) -> None:
    started = lifecycle.start_attempt(make_task(), message_id="m-1", now=T0, lease_s=90.5)
    assert started.lease_until == T0 + timedelta(seconds=90.5)


def test_start_attempt_stamps_started_at_and_updated_at_on_the_first_attempt(make_task: MakeTask) -> None:
    started = lifecycle.start_attempt(make_task(), message_id="m-1", now=at(5), lease_s=90)
    assert started.started_at == at(5)
    assert started.updated_at == at(5)


def test_start_attempt_clears_the_scheduled_next_attempt(make_task: MakeTask) -> None:
    started = lifecycle.start_attempt(make_task(next_attempt_at=T0), message_id="m-1", now=T0, lease_s=90)
    assert started.next_attempt_at is None


def test_takeover_increments_the_attempt_and_keeps_the_original_start_time(make_running_task: MakeTask) -> None:
    task = make_running_task(attempts=2, started_at=at(-120))
    taken = lifecycle.start_attempt(task, message_id="m-3", now=T0, lease_s=90)
    assert taken.attempts == 3
    assert taken.started_at == at(-120)
    assert taken.message_id == "m-3"


def test_start_attempt_does_not_modify_the_record_it_was_given(make_task: MakeTask) -> None:
    task = make_task()
    lifecycle.start_attempt(task, message_id="m-1", now=T0, lease_s=90)
    assert task.status is TaskStatus.PENDING
    assert task.attempts == 0


@pytest.mark.parametrize("status", [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_start_attempt_on_a_terminal_task_is_illegal(make_task: MakeTask, status: TaskStatus) -> None:
    with pytest.raises(IllegalTransition, match=f"task cannot move from {status.value} to running"):
        lifecycle.start_attempt(make_task(status=status), message_id="m-1", now=T0, lease_s=90)


# -- fencing ----------------------------------------------------------------------


@pytest.mark.parametrize("operation", FENCED)
@pytest.mark.parametrize("stale", [1, 3], ids=["older-attempt", "newer-attempt"])
def test_outcome_written_with_a_stale_attempt_number_is_refused(
    make_running_task: MakeTask, operation: str, stale: int
) -> None:
    task = make_running_task(attempts=2)
    with pytest.raises(IllegalTransition, match=f"attempt {stale} no longer holds it"):
        FENCED[operation](task, stale)


@pytest.mark.parametrize("operation", FENCED)
def test_outcome_written_for_a_task_no_longer_running_is_refused(make_task: MakeTask, operation: str) -> None:
    # The same attempt number, but another writer already finished the task.
    task = make_task(status=TaskStatus.COMPLETED, attempts=2)
    with pytest.raises(IllegalTransition, match="status completed"):
        FENCED[operation](task, 2)


@pytest.mark.parametrize(
    ("operation", "expected"),
    [("complete", TaskStatus.COMPLETED), ("fail", TaskStatus.FAILED), ("requeue", TaskStatus.PENDING)],
)
def test_outcome_written_by_the_current_attempt_is_applied(
    make_running_task: MakeTask, operation: str, expected: TaskStatus
) -> None:
    task = make_running_task(attempts=2)
    updated = FENCED[operation](task, 2)
    assert updated.status is expected
    assert updated.lease_until is None
    assert updated.updated_at == at(30)


def test_complete_task_stores_result_usage_and_model_provenance(make_running_task: MakeTask) -> None:
    done = _complete(make_running_task(error={"message": "earlier failure"}), 2)
    assert done.result == RESULT
    assert done.usage == USAGE
    assert (done.model, done.model_version, done.prompt_version) == ("gemini-x", "gemini-x-001", "p3")
    assert done.error is None
    assert done.finished_at == at(30)


def test_fail_task_records_the_error_and_raw_output(make_running_task: MakeTask) -> None:
    error = PermanentError("bad pdf", hint="re-upload it")
    failed = lifecycle.fail_task(make_running_task(), attempt=2, error=error, now=at(30), raw_output="{not json")
    assert failed.error == error.to_record()
    assert failed.raw_output == "{not json"
    assert failed.finished_at == at(30)


def test_requeue_task_schedules_the_next_attempt_after_the_delay(make_running_task: MakeTask) -> None:
    requeued = lifecycle.requeue_task(
        make_running_task(), attempt=2, error=RetryableError("reset"), now=at(30), delay_s=60
    )
    assert requeued.next_attempt_at == at(90)


def test_requeue_task_keeps_the_attempt_count_and_records_the_error(make_running_task: MakeTask) -> None:
    error = RetryableError("connection reset")
    requeued = lifecycle.requeue_task(make_running_task(attempts=2), attempt=2, error=error, now=at(30), delay_s=15)
    assert requeued.attempts == 2
    assert requeued.error == error.to_record()
    assert requeued.finished_at is None


# -- cancel_task ------------------------------------------------------------------


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING])
def test_cancel_task_cancels_a_live_task_and_drops_its_lease(make_task: MakeTask, status: TaskStatus) -> None:
    task = make_task(status=status, attempts=1, lease_until=at(60))
    cancelled = lifecycle.cancel_task(task, now=at(10))
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.lease_until is None
    assert cancelled.finished_at == at(10)


@pytest.mark.parametrize("status", [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_cancel_task_on_a_terminal_task_is_illegal(make_task: MakeTask, status: TaskStatus) -> None:
    with pytest.raises(IllegalTransition, match=f"task cannot move from {status.value} to cancelled"):
        lifecycle.cancel_task(make_task(status=status), now=T0)


# -- runs -------------------------------------------------------------------------


def test_start_run_moves_a_pending_run_to_running_with_its_total(make_run: MakeRun) -> None:
    started = lifecycle.begin_run(make_run(), total=7, now=at(1))
    assert started.status is RunStatus.RUNNING
    assert started.counters == RunCounters(total=7)
    assert started.started_at == at(1)


def test_start_run_on_a_cancelled_run_is_illegal(make_run: MakeRun) -> None:
    with pytest.raises(IllegalTransition, match="run cannot move from cancelled to running"):
        lifecycle.begin_run(make_run(status=RunStatus.CANCELLED), total=1, now=T0)


def test_fail_run_records_the_error_and_finish_time(make_run: MakeRun) -> None:
    error = PermanentError("no files")
    failed = lifecycle.fail_run(make_run(), error=error, now=at(2))
    assert failed.status is RunStatus.FAILED
    assert failed.error == error.to_record()
    assert failed.finished_at == at(2)


def test_tally_derives_the_counters_from_the_tasks_terminal_states() -> None:
    counted = lifecycle.tally(5, {TaskStatus.COMPLETED: 2, TaskStatus.FAILED: 1, TaskStatus.CANCELLED: 1})
    assert counted == RunCounters(total=5, completed=2, failed=1, cancelled=1)
    assert lifecycle.tally(3, {}) == RunCounters(total=3)


@pytest.mark.parametrize("outcome", [TaskStatus.PENDING, TaskStatus.RUNNING])
def test_tally_rejects_a_non_terminal_state(outcome: TaskStatus) -> None:
    with pytest.raises(ValueError, match=f"{outcome.value} is not a terminal task outcome"):
        lifecycle.tally(1, {outcome: 1})


@pytest.mark.parametrize(
    ("status", "settled"),
    [(s, s in (RunStatus.COMPLETED, RunStatus.FAILED)) for s in RunStatus],
)
def test_only_a_finished_runs_stored_counters_are_final(make_run: MakeRun, status: RunStatus, settled: bool) -> None:
    assert lifecycle.counters_settled(make_run(status=status)) is settled


@pytest.mark.parametrize(
    ("counters", "completes"),
    [
        pytest.param(RunCounters(total=3, completed=1, failed=1), False, id="one-task-left"),
        pytest.param(RunCounters(total=3, completed=0), False, id="nothing-done"),
        pytest.param(RunCounters(total=3, completed=1, failed=1, cancelled=1), True, id="mixed-outcomes"),
        pytest.param(RunCounters(total=3, completed=3), True, id="all-completed"),
        pytest.param(RunCounters(total=3, failed=3), True, id="all-failed"),
        pytest.param(RunCounters(total=0), True, id="empty-run"),
    ],
)
def test_complete_run_completes_a_running_run_exactly_when_every_task_is_terminal(
    make_run: MakeRun, counters: RunCounters, completes: bool
) -> None:
    run = make_run(status=RunStatus.RUNNING, counters=RunCounters(total=counters.total))
    done, finished = lifecycle.complete_run(run, counters, now=at(9))
    assert finished is completes
    assert done.status is (RunStatus.COMPLETED if completes else RunStatus.RUNNING)


def test_complete_run_stores_the_derived_counters_and_the_finish_time(make_run: MakeRun) -> None:
    run = make_run(status=RunStatus.RUNNING, counters=RunCounters(total=3))
    done, _ = lifecycle.complete_run(run, RunCounters(total=3, completed=2, cancelled=1), now=at(9))
    assert done.counters == RunCounters(total=3, completed=2, cancelled=1)
    assert done.finished_at == at(9)


@pytest.mark.parametrize("status", [s for s in RunStatus if s is not RunStatus.RUNNING])
def test_complete_run_leaves_a_run_that_is_not_running_alone(make_run: MakeRun, status: RunStatus) -> None:
    run = make_run(status=status, counters=RunCounters(total=1))
    returned, finished = lifecycle.complete_run(run, RunCounters(total=1, completed=1), now=at(9))
    assert finished is False
    assert returned is run


def test_complete_run_completes_only_once(make_run: MakeRun) -> None:
    run = make_run(status=RunStatus.RUNNING, counters=RunCounters(total=2))
    all_done = RunCounters(total=2, completed=2)
    first, first_finished = lifecycle.complete_run(run, all_done, now=at(9))
    second, second_finished = lifecycle.complete_run(first, all_done, now=at(10))
    assert (first_finished, second_finished) == (True, False)
    assert second.finished_at == at(9)


# -- exports ----------------------------------------------------------------------


def test_begin_export_moves_a_pending_export_to_running_as_attempt_one(make_export: MakeExport) -> None:
    begun = lifecycle.begin_export(make_export(), now=at(1))
    assert begun.status is ExportStatus.RUNNING
    assert begun.attempts == 1
    assert begun.updated_at == at(1)


def test_begin_export_resumes_a_running_export_as_a_new_attempt(make_export: MakeExport) -> None:
    resumed = lifecycle.begin_export(make_export(status=ExportStatus.RUNNING, attempts=1), now=at(1))
    assert resumed.status is ExportStatus.RUNNING
    assert resumed.attempts == 2


def test_begin_export_on_a_completed_export_is_illegal(make_export: MakeExport) -> None:
    with pytest.raises(IllegalTransition, match="export cannot move from completed to running"):
        lifecycle.begin_export(make_export(status=ExportStatus.COMPLETED), now=T0)


def test_complete_export_records_where_it_went_and_what_it_held(make_export: MakeExport) -> None:
    export = make_export(status=ExportStatus.RUNNING, attempts=1, error={"message": "earlier"})
    done = lifecycle.complete_export(
        export, external_id="exports/run-1.csv", url="https://x/run-1.csv", row_count=12, failed_count=1, now=at(4)
    )
    assert done.status is ExportStatus.COMPLETED
    assert (done.external_id, done.url) == ("exports/run-1.csv", "https://x/run-1.csv")
    assert (done.row_count, done.failed_count) == (12, 1)
    assert done.error is None
    assert done.finished_at == at(4)


def test_complete_export_requires_it_to_have_begun(make_export: MakeExport) -> None:
    with pytest.raises(IllegalTransition, match="export cannot move from pending to completed"):
        lifecycle.complete_export(make_export(), external_id="x", url=None, row_count=0, failed_count=0, now=T0)


@pytest.mark.parametrize("status", [ExportStatus.PENDING, ExportStatus.RUNNING])
def test_fail_export_records_the_error(make_export: MakeExport, status: ExportStatus) -> None:
    error = PermanentError("drive folder not found")
    failed = lifecycle.fail_export(make_export(status=status), error=error, now=at(4))
    assert failed.status is ExportStatus.FAILED
    assert failed.error == error.to_record()
    assert failed.finished_at == at(4)


def test_fail_export_on_a_completed_export_is_illegal(make_export: MakeExport) -> None:
    with pytest.raises(IllegalTransition, match="export cannot move from completed to failed"):
        lifecycle.fail_export(make_export(status=ExportStatus.COMPLETED), error=PermanentError("x"), now=T0)


# -- operations -------------------------------------------------------------------


def test_update_operation_copies_progress_stage_and_message(make_operation: MakeOperation) -> None:
    op = lifecycle.update_operation(make_operation(), progress=PROGRESS, stage="extracting", now=at(5), message="4/10")
    assert (op.stage, op.message) == ("extracting", "4/10")
    assert (op.pct, op.done, op.failed, op.total, op.eta_seconds) == (40.0, 3, 1, 10, 90.0)
    assert op.updated_at == at(5)


def test_update_operation_while_running_leaves_finished_at_unset(make_operation: MakeOperation) -> None:
    op = lifecycle.update_operation(make_operation(), progress=PROGRESS, stage="extracting", now=at(5))
    assert op.status is OperationStatus.RUNNING
    assert op.finished_at is None


@pytest.mark.parametrize("final", [OperationStatus.DONE, OperationStatus.FAILED, OperationStatus.CANCELLED])
def test_update_operation_to_a_final_status_sets_finished_at(
    make_operation: MakeOperation, final: OperationStatus
) -> None:
    op = lifecycle.update_operation(make_operation(), progress=PROGRESS, stage="done", now=at(5), status=final)
    assert op.status is final
    assert op.finished_at == at(5)


def test_update_operation_stores_the_error_it_is_given(make_operation: MakeOperation) -> None:
    error = {"code": "permanent", "message": "no files"}
    op = lifecycle.update_operation(
        make_operation(), progress=PROGRESS, stage="failed", now=at(5), status=OperationStatus.FAILED, error=error
    )
    assert op.error == error


def test_update_operation_reopening_a_done_operation_clears_finished_at(make_operation: MakeOperation) -> None:
    done = make_operation(status=OperationStatus.DONE, finished_at=at(1))
    reopened = lifecycle.update_operation(done, progress=PROGRESS, stage="retrying", now=at(5))
    assert reopened.status is OperationStatus.RUNNING
    assert reopened.finished_at is None


def test_update_operation_on_a_cancelled_operation_is_illegal(make_operation: MakeOperation) -> None:
    with pytest.raises(IllegalTransition, match="operation cannot move from cancelled to running"):
        lifecycle.update_operation(
            make_operation(status=OperationStatus.CANCELLED), progress=PROGRESS, stage="x", now=T0
        )


# -- attempt history ---------------------------------------------------------------


def _start(task: ExtractionTask, second: int, message_id: str = "m-1") -> ExtractionTask:
    return lifecycle.start_attempt(task, message_id=message_id, now=at(second), lease_s=600)


def test_each_attempt_is_recorded_with_its_start_end_outcome_error_and_delay(make_task: MakeTask) -> None:
    task = _start(make_task(), 0)
    task = lifecycle.requeue_task(
        task,
        attempt=1,
        error=RetryableError("Vertex AI answered 503", kind=ErrorKind.UNAVAILABLE, code="model_unavailable"),
        now=at(5),
        delay_s=15.0,
    )
    task = _start(task, 20)
    task = lifecycle.complete_task(
        task, attempt=2, result=RESULT, usage=USAGE, model=None, model_version=None, prompt_version=None, now=at(21)
    )
    first, second = task.history
    assert (first.attempt, first.started_at, first.ended_at, first.outcome) == (1, at(0), at(5), "retry")
    assert (first.error_code, first.error_message, first.delay_s) == ("model_unavailable", "Vertex AI answered 503", 15)
    assert (second.attempt, second.started_at, second.ended_at, second.outcome) == (2, at(20), at(21), "completed")
    assert second.error_code is None and second.delay_s is None


def test_a_running_attempt_is_open_in_the_history(make_task: MakeTask) -> None:
    (record,) = _start(make_task(), 3).history
    assert (record.outcome, record.started_at, record.ended_at) == ("running", at(3), None)


def test_waiting_is_recorded_without_counting_an_attempt(make_task: MakeTask) -> None:
    task = _start(make_task(), 0)
    task = lifecycle.requeue_task(
        task, attempt=1, error=CircuitOpen("vertex", 42.0), now=at(1), delay_s=42.0, refund_attempt=True
    )
    task = _start(task, 43)
    waited, running = task.history
    assert (waited.outcome, waited.error_code, waited.delay_s) == ("waiting", "circuit_open", 42.0)
    assert waited.attempt == running.attempt == 1 == task.attempts


def test_a_failed_attempt_ends_the_history_with_the_error(make_task: MakeTask) -> None:
    task = lifecycle.fail_task(_start(make_task(), 0), attempt=1, error=PermanentError("x" * 2000), now=at(2))
    (record,) = task.history
    assert record.outcome == "failed" and record.error_code == "permanent"
    assert record.error_message is not None and len(record.error_message) == 500, "messages are kept bounded"


def test_a_takeover_marks_the_dead_attempt_abandoned(make_task: MakeTask) -> None:
    task = _start(_start(make_task(), 0), 700, message_id="m-2")
    dead, live = task.history
    assert (dead.outcome, dead.ended_at) == ("abandoned", at(700))
    assert (live.attempt, live.outcome) == (2, "running")


def test_cancelling_closes_a_running_attempt(make_task: MakeTask) -> None:
    task = lifecycle.cancel_task(_start(make_task(), 0), now=at(9))
    assert task.history[-1].outcome == "cancelled" and task.history[-1].ended_at == at(9)


def test_the_history_keeps_only_the_latest_attempts(make_task: MakeTask) -> None:
    task = make_task()
    for i in range(MAX_ATTEMPT_HISTORY + 5):
        task = _start(task, 10 * i)
        task = lifecycle.requeue_task(
            task,
            attempt=task.attempts,
            error=CircuitOpen("vertex", 5),
            now=at(10 * i + 1),
            delay_s=5,
            refund_attempt=True,
        )
    assert len(task.history) == MAX_ATTEMPT_HISTORY
    assert task.history[0].started_at == at(50) and task.history[-1].started_at == at(10 * (MAX_ATTEMPT_HISTORY + 4))
    assert ExtractionTask.from_doc(task.to_doc()).history == task.history, "stored and read back as JSON"
