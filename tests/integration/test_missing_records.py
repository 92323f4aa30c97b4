"""A message about a record that does not exist is permanent: dead-lettered on
its first delivery with the reason, in one log line without a traceback.

Retrying cannot make a deleted run, task, export or job reappear; before this
was classified, such messages were redelivered up to the subscription's
maximum (5 or 10 times), each with a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from common.core.messages import (
    AutomationImported,
    BlobFinalized,
    ExportRun,
    ExtractTask,
    ImportDrive,
    ImportDriveFile,
    ImportGmail,
    Message,
    StartRun,
)
from common.core.models import Job, Run
from tests.support import Pipeline


def _run_without_job(p: Pipeline) -> Message:
    """A run whose job was deleted after the run was requested."""
    job = p.job()
    p.upload(job, "ok-a.pdf")
    p.drain()  # the upload is registered while its job exists
    run = p.start(job)
    for d in p.bus.pull("extract--extract", 10):  # the run's own start: replaced by the one below
        p.bus.ack(d)
    p.deps.store.delete(Job.collection, job.id)
    return StartRun(run_id=run.id, job_id=job.id)


def _task_without_run(p: Pipeline) -> Message:
    """A task whose run was deleted (retention) while its message waited."""
    job = p.job()
    p.upload(job, "ok-a.pdf")
    run = p.start(job)
    p.drain(until=lambda: p.bus.depth("extract--extract") > 0 and bool(p.tasks(run.id)))
    (task,) = p.tasks(run.id)
    for d in p.bus.pull("extract--extract", 10):  # the task's own message: replaced by the one below
        p.bus.ack(d)
    p.deps.store.delete(Run.collection, run.id)
    return ExtractTask(task_id=task.id, run_id=run.id, job_id=job.id)


CASES: dict[str, tuple[Callable[[Pipeline], Message], str]] = {
    "run.start: no run": (lambda p: StartRun(run_id="r-gone", job_id="j-gone"), "run r-gone not found"),
    "run.start: run without its job": (_run_without_job, "not found"),
    "task.extract: no task": (
        lambda p: ExtractTask(task_id="t-gone", run_id="r-gone", job_id="j-gone"),
        "task t-gone does not exist",
    ),
    "task.extract: task without its run": (_task_without_run, "not found"),
    "export.run: no export": (
        lambda p: ExportRun(export_id="e-gone", run_id="r-gone", job_id="j-gone"),
        "export e-gone not found",
    ),
    "blob.finalized: no job": (
        lambda p: BlobFinalized(bucket="uploads", name="jobs/j-gone/files/f1/a.pdf"),
        "job j-gone, which does not exist",
    ),
    "drive.import: no import": (
        lambda p: ImportDrive(job_id="j-gone", operation_id="op-gone", owner="alice", item_ids=("d1",)),
        "is not recorded",
    ),
    "drive.file: no import": (
        lambda p: ImportDriveFile(job_id="j-gone", operation_id="op-gone", owner="alice", drive_file_id="d1"),
        "is not recorded",
    ),
    "gmail.import: no job": (
        lambda p: ImportGmail(
            job_id="j-gone", operation_id="op-gone", owner="alice", account="a@example.com", items=()
        ),
        "job j-gone does not exist",
    ),
    "automation.imported: no automation run": (
        lambda p: AutomationImported(automation_run_id="ar-gone"),
        "automation run ar-gone does not exist",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_message_about_a_missing_record_is_dead_lettered_at_once(
    pipeline: Pipeline, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    make, reason = CASES[case]
    message = make(pipeline)
    before = len(pipeline.bus.dead_letters())
    pipeline.sender.send(message)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        pipeline.drain(advance_clock=True)

    letters = pipeline.bus.dead_letters()[before:]
    assert [(d.attributes["kind"], d.attempts) for d in letters] == [(message.kind, 1)], "one delivery, no retries"
    assert letters[0].last_error is not None and reason in letters[0].last_error
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert loud[0].exc_info is None, "a missing record is a reason, not a crash: no traceback"
    assert reason in str(getattr(loud[0], "fields", {}).get("error", ""))


def test_a_task_whose_file_record_is_gone_fails_its_task_not_the_message(pipeline: Pipeline) -> None:
    """The task exists, so the message is about something real: the task fails
    with the reason (and the run finishes), nothing is dead-lettered."""
    from common.core.models import SourceFile
    from common.core.states import RunStatus, TaskStatus

    job = pipeline.job()
    gone = pipeline.upload(job, "ok-gone.pdf")
    pipeline.upload(job, "ok-kept.pdf")
    run = pipeline.start(job)
    pipeline.drain(until=lambda: len(pipeline.tasks(run.id)) == 2)  # fanned out, tasks not yet extracted
    pipeline.deps.store.delete(SourceFile.collection, gone.id)
    pipeline.drain(advance_clock=True)

    tasks = {t.file_name: t for t in pipeline.tasks(run.id)}
    failed = tasks["ok-gone.pdf"]
    assert failed.status is TaskStatus.FAILED and failed.error is not None
    assert failed.error["code"] == "file_missing" and gone.id in failed.error["message"]
    assert tasks["ok-kept.pdf"].status is TaskStatus.COMPLETED
    assert pipeline.run(run.id).status is RunStatus.COMPLETED
    assert pipeline.bus.dead_letters() == []
