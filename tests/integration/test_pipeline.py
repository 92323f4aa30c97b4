"""The pipeline on the embedded backend, end to end under a manual clock."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from common.core.models import Export, ExtractionTask, Run
from common.core.schema import FieldSpec, FieldType
from common.core.states import ExportStatus, OperationStatus, RunStatus, TaskStatus
from tests.support import DuplicatingRuntime, Pipeline, ScriptedExtractor, make_pipeline


def _csv_rows(p: Pipeline, export: Export) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(p.export_text(export))))


def test_a_run_extracts_every_file_and_exports_one_row_each(pipeline: Pipeline) -> None:
    job = pipeline.job()
    for name in ("ok-a.pdf", "ok-b.pdf", "ok-c.pdf"):
        pipeline.upload(job, name)
    run = pipeline.start(job)
    pipeline.drain()

    run = pipeline.run(run.id)
    assert run.status is RunStatus.COMPLETED
    assert (run.counters.total, run.counters.completed, run.counters.failed) == (3, 3, 0)
    (export,) = pipeline.exports(run.id)
    assert export.status is ExportStatus.COMPLETED
    rows = _csv_rows(pipeline, export)
    assert sorted(r["source_file"] for r in rows) == ["ok-a.pdf", "ok-b.pdf", "ok-c.pdf"]
    assert sorted(r["invoice_number"] for r in rows) == ["ok-a#0", "ok-b#0", "ok-c#0"]


def test_run_numbers_count_up_per_job(pipeline: Pipeline) -> None:
    job = pipeline.job()
    pipeline.upload(job, "ok-a.pdf")
    first = pipeline.start(job)
    pipeline.drain()
    second = pipeline.start(job)
    pipeline.drain()
    assert (pipeline.run(first.id).run_number, pipeline.run(second.id).run_number) == (1, 2)


def test_fan_in_completes_the_run_once_even_when_some_tasks_fail(pipeline: Pipeline) -> None:
    job = pipeline.job(formats=("csv", "xlsx"))
    for name in ("ok-a.pdf", "bad-b.pdf", "ok-c.pdf", "invalid-d.pdf"):
        pipeline.upload(job, name)
    run = pipeline.start(job)
    pipeline.drain()

    run = pipeline.run(run.id)
    assert run.status is RunStatus.COMPLETED
    assert (run.counters.completed, run.counters.failed) == (2, 2)
    exports = pipeline.exports(run.id)
    assert sorted(e.format.value for e in exports) == ["csv", "xlsx"]
    assert all(e.status is ExportStatus.COMPLETED and e.failed_count == 2 for e in exports)
    failed = {t.file_name: t.error for t in pipeline.tasks(run.id) if t.status is TaskStatus.FAILED}
    assert set(failed) == {"bad-b.pdf", "invalid-d.pdf"}
    assert failed["bad-b.pdf"] is not None and "not a readable PDF" in failed["bad-b.pdf"]["message"]


def test_every_message_delivered_three_times_leaves_no_duplicates(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, runtime_cls=DuplicatingRuntime)
    job = p.job(formats=("csv", "xlsx"))
    for name in ("ok-a.pdf", "rows3-b.pdf", "bad-c.pdf", "flaky1-d.pdf"):
        p.upload(job, name)
    run = p.start(job)
    p.drain(advance_clock=True)

    run = p.run(run.id)
    assert run.status is RunStatus.COMPLETED
    assert (run.counters.total, run.counters.completed, run.counters.failed) == (4, 3, 1)
    assert len(p.tasks(run.id)) == 4
    assert len(p.files(job.id)) == 4
    exports = p.exports(run.id)
    assert len(exports) == 2 and all(e.status is ExportStatus.COMPLETED for e in exports)
    csv_export = next(e for e in exports if e.format.value == "csv")
    rows = _csv_rows(p, csv_export)
    assert sorted(r["invoice_number"] for r in rows) == ["flaky1-d#0", "ok-a#0", "rows3-b#0", "rows3-b#1", "rows3-b#2"]
    extractor = p.extractor
    assert isinstance(extractor, ScriptedExtractor)
    assert extractor.calls == {"ok-a.pdf": 1, "rows3-b.pdf": 1, "bad-c.pdf": 1, "flaky1-d.pdf": 2}
    assert p.operation(run).status is OperationStatus.DONE


def test_a_transient_failure_is_retried_after_the_policy_delays(pipeline: Pipeline) -> None:
    job = pipeline.job()
    pipeline.upload(job, "flaky2-a.pdf")
    run = pipeline.start(job)
    start = pipeline.clock.now()
    pipeline.drain()
    (task,) = pipeline.tasks(run.id)
    assert task.status is TaskStatus.PENDING and task.attempts == 1
    assert task.next_attempt_at is not None
    assert (task.next_attempt_at - start).total_seconds() == 15

    pipeline.drain(advance_clock=True)
    (task,) = pipeline.tasks(run.id)
    assert task.status is TaskStatus.COMPLETED and task.attempts == 3
    assert (pipeline.clock.now() - start).total_seconds() == 15 + 60


def test_a_persistent_429_is_retried_and_then_fails_the_task_with_its_error(pipeline: Pipeline) -> None:
    job = pipeline.job()
    pipeline.upload(job, "ratelimited-a.pdf")
    pipeline.upload(job, "ok-b.pdf")
    run = pipeline.start(job)
    start = pipeline.clock.now()
    pipeline.drain(advance_clock=True)

    task = next(t for t in pipeline.tasks(run.id) if t.file_name == "ratelimited-a.pdf")
    assert task.status is TaskStatus.FAILED
    assert task.attempts == 6, "one attempt and five retries"
    assert task.error is not None and "429" in task.error["message"]
    assert (pipeline.clock.now() - start).total_seconds() == 5 * 30, "each retry honoured the server's 30 s"
    assert pipeline.run(run.id).status is RunStatus.COMPLETED


def test_a_document_yielding_several_rows_exports_them_all(pipeline: Pipeline) -> None:
    job = pipeline.job()
    pipeline.upload(job, "rows3-a.pdf")
    run = pipeline.start(job)
    pipeline.drain()
    (export,) = pipeline.exports(run.id)
    rows = _csv_rows(pipeline, export)
    assert [r["invoice_number"] for r in rows] == ["rows3-a#0", "rows3-a#1", "rows3-a#2"]
    assert {r["page"] for r in rows} == {"1"}


def test_a_job_without_files_fails_its_run_with_a_clear_reason(pipeline: Pipeline) -> None:
    job = pipeline.job()
    run = pipeline.start(job)
    pipeline.drain()
    run = pipeline.run(run.id)
    assert run.status is RunStatus.FAILED
    assert run.error is not None and "no uploaded files" in run.error["message"]
    assert pipeline.operation(run).status is OperationStatus.FAILED


def test_an_extractor_crash_fails_only_that_task(tmp_path: Path) -> None:
    class Crashing(ScriptedExtractor):
        def extract(self, doc, fields, *, prompt=""):
            if doc.name.startswith("crash"):
                raise KeyError("/Root")
            return super().extract(doc, fields, prompt=prompt)

    p = make_pipeline(tmp_path, extractor=Crashing())
    job = p.job()
    p.upload(job, "crash-a.pdf")
    p.upload(job, "ok-b.pdf")
    run = p.start(job)
    p.drain()
    tasks = {t.file_name: t for t in p.tasks(run.id)}
    assert tasks["crash-a.pdf"].status is TaskStatus.FAILED
    assert tasks["crash-a.pdf"].error is not None and tasks["crash-a.pdf"].error["code"] == "extractor_crashed"
    assert tasks["ok-b.pdf"].status is TaskStatus.COMPLETED
    assert p.run(run.id).status is RunStatus.COMPLETED


def test_progress_reaches_100_percent_and_the_operation_is_final(pipeline: Pipeline) -> None:
    job = pipeline.job()
    for i in range(5):
        pipeline.upload(job, f"ok-{i}.pdf")
    run = pipeline.start(job)
    pipeline.drain()
    op = pipeline.operation(pipeline.run(run.id))
    assert (op.status, op.stage, op.pct, op.done, op.total) == (OperationStatus.DONE, "done", 100.0, 5, 5)
    assert op.finished_at is not None


def test_progress_writes_are_coalesced_to_about_one_per_second(pipeline: Pipeline) -> None:
    job = pipeline.job()
    for i in range(20):
        pipeline.upload(job, f"ok-{i}.pdf")
    writes: list[float] = []
    store = pipeline.deps.store
    original = store.transaction

    def counting(fn, **kw):
        result = original(fn, **kw)
        if getattr(fn, "__qualname__", "").startswith("report_run"):
            writes.append(pipeline.clock.now().timestamp())
        return result

    store.transaction = counting  # type: ignore[method-assign]
    run = pipeline.start(job)
    pipeline.drain()
    # Twenty tasks finish within the same (manual-clock) second: one write for
    # the run starting, none for the tasks in that second, one final write.
    assert len(writes) <= 3
    assert pipeline.operation(pipeline.run(run.id)).pct == 100.0


def test_xlsx_export_keeps_numbers_and_dates_typed(tmp_path: Path) -> None:
    from common.core.schema import DocumentExtraction

    class Typed(ScriptedExtractor):
        def extract(self, doc, fields, *, prompt=""):
            return DocumentExtraction(
                columns=["invoice_number", "date", "total"],
                results=[['=HYPERLINK("x")', "2026-03-01", -12.5]],
                method="scripted",
            )

    import openpyxl

    p = make_pipeline(tmp_path, extractor=Typed())
    job = p.job(
        fields=[
            FieldSpec(name="invoice_number"),
            FieldSpec(name="date", type=FieldType.DATE),
            FieldSpec(name="total", type=FieldType.NUMBER),
        ],
        formats=("xlsx",),
    )
    p.upload(job, "a.pdf")
    run = p.start(job)
    p.drain()
    (export,) = p.exports(run.id)
    assert export.external_id is not None
    path = p.deps.blobs.path_of(export.external_id)  # type: ignore[attr-defined]
    ws = openpyxl.load_workbook(path).active
    assert ws is not None
    header = [c.value for c in ws[1]]
    assert header == ["invoice_number", "date", "total", "source_file", "page", "duplicate_of"]
    number, date, total = (ws.cell(row=2, column=i) for i in (1, 2, 3))
    assert number.data_type == "s" and number.value == '=HYPERLINK("x")', "text, never a formula"
    assert date.is_date and date.value.date().isoformat() == "2026-03-01"
    assert total.data_type == "n" and total.value == -12.5


@pytest.mark.parametrize("status", [RunStatus.CANCELLED])
def test_tasks_of_a_cancelled_run_are_not_started(pipeline: Pipeline, status: RunStatus) -> None:
    from common.service import repo

    job = pipeline.job()
    pipeline.upload(job, "ok-a.pdf")
    run = pipeline.start(job)
    pipeline.runtime.drain(max_deliveries=2)  # finalize + run.start: the task message waits
    current, version = repo.require(pipeline.deps.store, Run, run.id)
    repo.cas(pipeline.deps.store, current.model_copy(update={"status": status}), version)
    pipeline.drain()
    (task,) = pipeline.tasks(run.id)
    assert task.status is TaskStatus.CANCELLED
    extractor = pipeline.extractor
    assert isinstance(extractor, ScriptedExtractor) and extractor.calls == {}


def test_a_task_claimed_by_a_live_attempt_is_not_run_twice(pipeline: Pipeline) -> None:
    from common.core.messages import ExtractTask

    job = pipeline.job()
    pipeline.upload(job, "ok-a.pdf")
    run = pipeline.start(job)
    pipeline.drain()
    (task,) = pipeline.tasks(run.id)
    # A stray copy of the task message, published again with a new id, is a no-op.
    pipeline.sender.send(ExtractTask(task_id=task.id, run_id=run.id, job_id=job.id))
    pipeline.drain()
    extractor = pipeline.extractor
    assert isinstance(extractor, ScriptedExtractor) and extractor.calls == {"ok-a.pdf": 1}
    assert pipeline.run(run.id).counters.completed == 1


def test_a_malformed_message_is_dead_lettered_not_retried(pipeline: Pipeline) -> None:
    pipeline.bus.publish("extract", b"{not json", {"kind": "task.extract"})
    pipeline.drain()
    (dead,) = pipeline.bus.dead_letters()
    assert dead.attempts == 1
    assert dead.last_error is not None and "malformed" in dead.last_error


def test_an_unexpected_handler_error_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    runtime = type(p.runtime)(
        p.deps, p.bus, handlers={"extract": {"task.extract": "tests.integration.test_pipeline:_explode"}}
    )
    runtime.declare()
    p.bus.publish("extract", b'{"task_id": "t", "run_id": "r", "job_id": "j"}', {"kind": "task.extract"})
    runtime.drain(advance_clock=True)
    (dead,) = p.bus.dead_letters()
    assert dead.attempts == 10, "topology: extract's max_delivery_attempts"
    assert dead.last_error == "RuntimeError: store unavailable"


def _explode(msg: object, ctx: object) -> None:
    raise RuntimeError("store unavailable")


def test_task_records_keep_model_and_latency(pipeline: Pipeline) -> None:
    job = pipeline.job()
    pipeline.upload(job, "ok-a.pdf")
    run = pipeline.start(job)
    pipeline.drain()
    (task,) = pipeline.tasks(run.id)
    assert isinstance(task, ExtractionTask)
    assert task.model == "offline", "the extractor the job ran with (the deployment default)"
    assert task.result is not None and task.result.method == "scripted"
    assert task.usage.latency_ms is not None and task.usage.latency_ms >= 0


def test_a_scheduled_run_starts_at_its_time_and_not_before(pipeline: Pipeline) -> None:
    from datetime import timedelta

    from common.service import jobs

    job = pipeline.job()
    pipeline.upload(job, "ok-a.pdf")
    at = pipeline.clock.now() + timedelta(hours=2)
    run = jobs.request_run(pipeline.deps, pipeline.sender, job, schedule_time=at)
    pipeline.drain()
    assert pipeline.run(run.id).status is RunStatus.PENDING
    pipeline.drain(advance_clock=True)
    assert pipeline.run(run.id).status is RunStatus.COMPLETED
    assert pipeline.run(run.id).started_at == at


def test_scheduling_the_same_name_twice_delivers_once(pipeline: Pipeline) -> None:
    from datetime import timedelta

    from common.core.messages import CleanupSweep

    at = pipeline.clock.now() + timedelta(minutes=5)
    pipeline.deps.scheduler.schedule(CleanupSweep(), at=at, name="sweep-1")
    pipeline.deps.scheduler.schedule(CleanupSweep(), at=at, name="sweep-1")
    assert pipeline.bus.depth("cleanup--cleanup") == 1


def test_throttling_by_sluices_own_limiter_does_not_use_up_retries(tmp_path: Path) -> None:
    from common.core.errors import ErrorKind, RetryableError

    class Throttled(ScriptedExtractor):
        def extract(self, doc, fields, *, prompt=""):
            n = self.calls.get(doc.name, 0)
            if n < 8:
                self.calls[doc.name] = n + 1
                raise RetryableError(
                    "no token yet", kind=ErrorKind.THROTTLED, retry_after=2, code="rate_limited_locally"
                )
            return super().extract(doc, fields, prompt=prompt)

    p = make_pipeline(tmp_path, extractor=Throttled())
    job = p.job()
    p.upload(job, "ok-a.pdf")
    run = p.start(job)
    p.drain(advance_clock=True)
    (task,) = p.tasks(run.id)
    assert task.status is TaskStatus.COMPLETED, "eight throttles, more than any retry budget, then success"
    assert task.attempts == 1, "throttled attempts were refunded"


def test_parts_written_beside_an_upload_are_not_registered_as_uploads(pipeline: Pipeline) -> None:
    job = pipeline.job()
    f = pipeline.upload(job, "ok-a.pdf")
    assert f.blob_uri is not None
    part = f.blob_uri + ".parts/pages-00001-00002.pdf"
    pipeline.deps.blobs.put_bytes(part, b"%PDF-1.4 part")
    pipeline.drain()
    assert pipeline.bus.dead_letters() == []
    assert [x.id for x in pipeline.files(job.id)] == [f.id]
