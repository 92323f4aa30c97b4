"""A kind's effectful run steps (``plan`` before its items, ``finish`` after them), on the
embedded backend, shown on the test-only kind ``stepped`` (tests/kinds/stepped.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.core.errors import ErrorKind, PermanentError, RetryableError
from common.core.messages import Message
from common.core.models import Job, Priority, Run
from common.core.states import OperationStatus, RunStatus, TaskStatus
from common.kinds import StepCall
from common.service import control, jobs, runs, steps
from common.service.context import Context
from tests.kinds import stepped
from tests.kinds.stepped import SCRIPT
from tests.support import Pipeline, make_pipeline


class Sent:
    """A sender that records what a handler sent, and with which delay."""

    def __init__(self) -> None:
        self.sent: list[tuple[Message, float | None]] = []
        self._lock = threading.Lock()

    def send(self, message: Message, *, delay_s: float | None = None, priority: Priority | None = None) -> str:
        with self._lock:
            self.sent.append((message, delay_s))
        return "m"


class Completions(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "run completed":
            self.count += 1


@pytest.fixture(autouse=True)
def script() -> Iterator[None]:
    SCRIPT.reset()
    yield
    SCRIPT.reset()


@pytest.fixture
def completions() -> Iterator[Completions]:
    handler = Completions()
    logger = logging.getLogger("common.service.fanin")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def _pipeline(tmp_path: Path) -> Pipeline:
    return make_pipeline(tmp_path, topology=stepped.topology_file(tmp_path))


def _job(p: Pipeline, parts: int = 3) -> Job:
    return jobs.create_job(
        p.deps, owner="alice", name="steps", fields=[], kind="stepped", kind_settings={"parts": parts}
    )


# -- plan -------------------------------------------------------------------------------


@pytest.mark.parametrize("same_message", [True, False], ids=["one-message-redelivered", "distinct-messages"])
def test_twenty_concurrent_deliveries_of_a_start_call_the_plan_once(tmp_path: Path, same_message: bool) -> None:
    p = _pipeline(tmp_path)
    run = jobs.request_run(p.deps, Sent(), _job(p, parts=4))  # the start message is delivered by hand below
    threads = 20
    barrier = threading.Barrier(threads)
    sender = Sent()
    returned = threading.Semaphore(0)
    # The model answers only once every other delivery has come and gone (or after 10 s).
    SCRIPT.on_plan = lambda _call: [returned.acquire(timeout=10) for _ in range(threads - 1)]
    errors: list[BaseException] = []

    def deliver(i: int) -> None:
        ctx = Context(deps=p.deps, sender=sender, message_id="start-1" if same_message else f"start-{i}")
        barrier.wait()
        try:
            runs.fan_out_run(stepped.KIND.start(run), ctx)  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)
        returned.release()

    workers = [threading.Thread(target=deliver, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    assert errors == []
    assert SCRIPT.plan_calls == 1
    started = p.run(run.id)
    assert started.status is RunStatus.RUNNING and started.phase == "running"
    assert [d["key"] for d in started.plan or []] == ["part-1", "part-2", "part-3", "part-4"]
    assert started.plan_step is not None and started.plan_step.attempts == 1
    assert sorted(t.file_id for t in p.tasks(run.id)) == ["part-1", "part-2", "part-3", "part-4"]
    # The deliveries that found the plan being made look again later, none dropped.
    again = [m for m, delay in sender.sent if m.kind == "stepped.start" and delay]
    assert len(again) == threads - 1

    for message, delay in sender.sent:  # those messages, delivered: the saved plan is used
        p.sender.send(message, delay_s=delay)
    p.drain(advance_clock=True)
    done = p.run(run.id)
    assert SCRIPT.plan_calls == 1 and SCRIPT.finish_calls == 1
    assert done.status is RunStatus.COMPLETED and done.counters.completed == 4
    assert sorted(t.file_id for t in p.tasks(run.id)) == ["part-1", "part-2", "part-3", "part-4"]


def test_a_transient_plan_error_is_retried_by_the_policy(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    SCRIPT.plan_errors = [RetryableError("model overloaded", kind=ErrorKind.UNAVAILABLE)]
    run = p.start(_job(p))
    p.drain(advance_clock=True)

    done = p.run(run.id)
    assert SCRIPT.plan_calls == 2
    assert done.status is RunStatus.COMPLETED and done.outputs is not None and done.outputs["sum"] == 1 + 4 + 9
    assert done.plan_step is not None and done.plan_step.attempts == 2
    assert [e["message"] for e in done.plan_step.errors] == ["model overloaded"]


def test_a_permanent_plan_error_fails_the_run_with_the_error_recorded(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    SCRIPT.plan_errors = [PermanentError("the question is empty", code="bad_question")]
    run = p.start(_job(p))
    p.drain(advance_clock=True)

    failed = p.run(run.id)
    assert failed.status is RunStatus.FAILED and failed.error is not None
    assert failed.error["code"] == "bad_question" and failed.plan is None
    assert p.tasks(run.id) == [] and SCRIPT.plan_calls == 1
    op = p.operation(failed)
    assert op.status is OperationStatus.FAILED and op.error is not None and op.error["code"] == "bad_question"


def test_retrying_a_run_that_failed_while_planning_says_to_start_a_new_run(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    SCRIPT.plan_errors = [PermanentError("the question is empty", code="bad_question")]
    run = p.start(_job(p))
    p.drain(advance_clock=True)

    with pytest.raises(PermanentError) as refused:
        control.retry_run(p.deps, p.sender, run.id, owner=p.run(run.id).owner)
    assert refused.value.code == "nothing_to_retry" and "start a new run" in (refused.value.hint or "")


def test_a_plan_that_keeps_failing_fails_the_run_once_the_policy_gives_up(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    SCRIPT.plan_errors = [RetryableError(f"outage {i}", kind=ErrorKind.UNAVAILABLE) for i in range(50)]
    run = p.start(_job(p))
    p.drain(advance_clock=True)

    failed = p.run(run.id)
    assert failed.status is RunStatus.FAILED and failed.error is not None and failed.error["kind"] == "unavailable"
    retries = p.deps.retry_policy.rules[ErrorKind.UNAVAILABLE].retries
    assert SCRIPT.plan_calls == retries + 1


def test_a_run_cancelled_while_planning_makes_no_items(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    job = _job(p)
    run = p.start(job)
    SCRIPT.on_plan = lambda call: control.cancel_run(p.deps, call.run.id, owner="alice")
    p.drain(advance_clock=True)

    assert p.run(run.id).status is RunStatus.CANCELLED
    assert p.run(run.id).plan is None and p.tasks(run.id) == []


# -- finish -----------------------------------------------------------------------------


def test_the_finish_runs_once_after_every_item_and_its_outputs_join_the_fan_ins(
    tmp_path: Path, completions: Completions
) -> None:
    p = _pipeline(tmp_path)
    run = p.start(_job(p))
    p.drain(advance_clock=True)

    done = p.run(run.id)
    assert done.status is RunStatus.COMPLETED and completions.count == 1
    assert done.outputs == {"sum": 14, "parts": 3, "summary": "3 parts: part 1, part 2, part 3", "finish_attempt": 1}
    assert done.finish_outputs == {"summary": "3 parts: part 1, part 2, part 3", "finish_attempt": 1}
    assert SCRIPT.finish_calls == 1


def test_the_run_is_writing_until_its_finish_is_done(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    run = p.start(_job(p))
    seen: list[tuple[RunStatus, str | None, int]] = []

    def look(call: StepCall) -> None:
        current = p.run(call.run.id)
        seen.append((current.status, current.phase, sum(t.status is TaskStatus.COMPLETED for t in p.tasks(run.id))))

    SCRIPT.on_finish = look
    p.drain(advance_clock=True)
    assert seen == [(RunStatus.RUNNING, "writing", 3)]


def test_a_finish_is_retried_after_a_transient_error_and_the_run_completes_once(
    tmp_path: Path, completions: Completions
) -> None:
    p = _pipeline(tmp_path)
    SCRIPT.finish_errors = [RetryableError("model overloaded", kind=ErrorKind.UNAVAILABLE, retry_after=5.0)]
    run = p.start(_job(p))
    p.drain()  # no clock moves: the retry waits

    waiting = p.run(run.id)
    assert waiting.status is RunStatus.RUNNING and waiting.phase == "writing" and SCRIPT.finish_calls == 1
    assert waiting.finish_step is not None and [e["message"] for e in waiting.finish_step.errors] == [
        "model overloaded"
    ]
    p.drain(advance_clock=True)
    done = p.run(run.id)
    assert done.status is RunStatus.COMPLETED and completions.count == 1
    assert SCRIPT.finish_calls == 2 and done.outputs is not None and done.outputs["finish_attempt"] == 2


def test_a_finish_that_fails_for_good_fails_the_run(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    SCRIPT.finish_errors = [PermanentError("the report cannot be written", code="report_refused")]
    run = p.start(_job(p))
    p.drain(advance_clock=True)
    failed = p.run(run.id)
    assert failed.status is RunStatus.FAILED and failed.error is not None and failed.error["code"] == "report_refused"
    assert failed.finish_outputs is None and failed.counters.completed == 3


def test_a_redelivered_finish_after_success_does_nothing(tmp_path: Path, completions: Completions) -> None:
    p = _pipeline(tmp_path)
    run = p.start(_job(p))
    p.drain(advance_clock=True)
    done = p.run(run.id)
    sender = Sent()

    steps.finish_run(stepped.KIND.finish_of(done), Context(deps=p.deps, sender=sender, message_id="again"))  # type: ignore[arg-type]

    assert SCRIPT.finish_calls == 1 and completions.count == 1 and sender.sent == []
    assert p.run(run.id) == done


def test_a_run_cancelled_during_its_finish_does_not_finish(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    run = p.start(_job(p))
    SCRIPT.on_finish = lambda call: control.cancel_run(p.deps, call.run.id, owner="alice")
    p.drain(advance_clock=True)

    cancelled = p.run(run.id)
    assert cancelled.status is RunStatus.CANCELLED and SCRIPT.finish_calls == 1
    assert cancelled.finish_outputs is None and cancelled.outputs is None


def test_a_run_paused_before_its_finish_finishes_after_resume(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    run = p.start(_job(p))
    p.drain(until=lambda: p.run(run.id).phase == "writing")
    control.pause_run(p.deps, run.id, owner="alice")
    p.drain(advance_clock=True)  # the finish message comes while paused: nothing
    assert SCRIPT.finish_calls == 0 and p.run(run.id).status is RunStatus.PAUSED

    control.resume_run(p.deps, p.sender, run.id, owner="alice")
    p.drain(advance_clock=True)
    done = p.run(run.id)
    assert done.status is RunStatus.COMPLETED and SCRIPT.finish_calls == 1
    assert done.outputs is not None and done.outputs["summary"] == "3 parts: part 1, part 2, part 3"


def test_a_retried_run_is_finished_again_over_its_retried_items(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    run = p.start(_job(p))
    p.drain(advance_clock=True)
    control.retry_run(p.deps, p.sender, run.id, owner="alice", scope="all")
    p.drain(advance_clock=True)

    done = p.run(run.id)
    assert done.status is RunStatus.COMPLETED and SCRIPT.finish_calls == 2 and SCRIPT.plan_calls == 1
    assert done.outputs is not None and done.outputs["finish_attempt"] == 1


def test_a_kind_without_steps_keeps_its_pure_path(tmp_path: Path) -> None:
    from tests.kinds import wordcount

    p = make_pipeline(tmp_path, topology=wordcount.topology_file(tmp_path))
    job = jobs.create_job(p.deps, owner="alice", name="words", fields=[], kind="wordcount")
    p.upload(job, "t.txt", b"one two three")
    p.drain()
    run = p.start(job)
    p.drain()
    done: Run = p.run(run.id)
    assert done.status is RunStatus.COMPLETED and done.outputs == {"total_words": 3, "files": 1}
    assert (done.phase, done.plan, done.plan_step, done.finish_step, done.finish_outputs) == (None,) * 5


def test_a_start_redelivered_after_its_planner_died_plans_at_once(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    run = jobs.request_run(p.deps, Sent(), _job(p))
    SCRIPT.on_plan = lambda _call: (_ for _ in ()).throw(SystemExit("killed"))  # dies mid-call, holding the step
    with pytest.raises(SystemExit):
        runs.fan_out_run(stepped.KIND.start(run), Context(deps=p.deps, sender=Sent(), message_id="s1"))  # type: ignore[arg-type]
    held = p.run(run.id)
    assert held.phase == "planning" and held.plan_step is not None and held.plan_step.lease_until is not None
    SCRIPT.reset()

    sender = Sent()
    redelivered = Context(deps=p.deps, sender=sender, message_id="s1", attempt=2)
    runs.fan_out_run(stepped.KIND.start(run), redelivered)  # type: ignore[arg-type]

    started = p.run(run.id)
    assert SCRIPT.plan_calls == 1 and started.status is RunStatus.RUNNING
    assert started.plan_step is not None and started.plan_step.attempts == 2
    assert sorted(m.kind for m, _ in sender.sent).count("stepped.item") == 3
