"""One trace follows a document from upload to export, through the messages between functions."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.core.messages import ExtractTask
from common.core.states import RunStatus
from common.obs import tracing
from common.obs.logging import configure as configure_logs
from tests.support import REPO_ROOT, make_pipeline


@pytest.fixture
def spans() -> Iterator[Any]:
    exporter = tracing.configure("memory")
    yield exporter
    tracing.reset()


def _by_name(finished: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in finished:
        out.setdefault(s.name, []).append(s)
    return out


def test_an_operations_trace_follows_its_documents_from_run_start_to_export(tmp_path: Path, spans: Any) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    with tracing.span("cli.run", parent=None) as root:  # what `sluice run` / the API opens
        p.upload(job, "ok-1.pdf")
        p.upload(job, "ok-2.pdf")
        run = p.start(job)
    p.drain(advance_clock=True)
    assert p.run(run.id).status is RunStatus.COMPLETED

    finished = spans.get_finished_spans()
    named = _by_name(finished)
    uploads, starts = named["import_upload/blob.finalized"], named["extract/run.start"]
    tasks, exports = named["extract/task.extract"], named["export/export.run"]
    assert (len(uploads), len(starts), len(tasks), len(exports)) == (2, 1, 2, 1)
    # The uploads belong to the caller's trace; the run's work -- extract and export -- to its
    # operation's, whose id derives from the operation id.
    op_trace = tracing.operation_trace_id(run.operation_id)
    assert {format(s.context.trace_id, "032x") for s in [*starts, *tasks, *exports]} == {op_trace}
    assert {s.context.trace_id for s in [*uploads, *named["cli.run"]]} == {int(root.trace_id, 16)}
    root_span = named["cli.run"][0]
    # Parent/child links ride on the messages: each handler's parent is the span that sent its message,
    # or the operation's root where the sender was in another trace.
    assert all(s.parent.span_id == root_span.context.span_id for s in uploads)
    assert starts[0].parent.span_id == int(tracing.operation_root(run.operation_id).span_id, 16)
    assert all(s.parent.span_id == starts[0].context.span_id for s in tasks)
    assert exports[0].parent.span_id in {s.context.span_id for s in tasks}
    assert all(s.parent.is_remote for s in [*uploads, *starts, *tasks, *exports])
    # The ids ride on the spans as attributes.
    attrs = dict(tasks[0].attributes or {})
    assert attrs["sluice.function"] == "extract" and attrs["sluice.kind"] == "task.extract"
    assert attrs["sluice.run_id"] == run.id and attrs["sluice.job_id"] == job.id and attrs["sluice.outcome"] == "done"
    assert dict(exports[0].attributes or {})["sluice.export_id"]


def test_a_failed_delivery_marks_its_span_and_the_retry_continues_the_trace(tmp_path: Path, spans: Any) -> None:
    p = make_pipeline(tmp_path)
    with tracing.span("cli.command", parent=None) as root:
        p.sender.send(ExtractTask(task_id="t_missing", run_id="r_missing", job_id="j_missing"))
    p.drain()
    (failed,) = _by_name(spans.get_finished_spans())["extract/task.extract"]
    assert format(failed.context.trace_id, "032x") == tracing.operation_trace_id("op_r_missing") != root.trace_id
    assert failed.status.status_code.name == "ERROR"
    assert dict(failed.attributes or {})["sluice.error_class"] == "unknown_task"


def test_without_an_sdk_the_ids_still_travel_and_reach_the_logs(tmp_path: Path) -> None:
    tracing.reset()
    buf = io.StringIO()
    configure_logs("INFO", "json", stream=buf, project="demo")
    try:
        p = make_pipeline(tmp_path)
        job = p.job()
        with tracing.span("cli.run", parent=None) as root:
            p.upload(job, "ok-1.pdf")
            run = p.start(job)
        p.drain(advance_clock=True)
        assert p.run(run.id).status is RunStatus.COMPLETED
    finally:
        logging.getLogger().handlers = [h for h in logging.getLogger().handlers if h.get_name() != "sluice"]
    entries = [json.loads(line) for line in buf.getvalue().splitlines()]
    traced = [e for e in entries if "logging.googleapis.com/trace" in e]
    assert traced, "handlers log inside their spans"
    op_trace = tracing.operation_trace_id(run.operation_id)
    assert {e["logging.googleapis.com/trace"] for e in traced} == {
        f"projects/demo/traces/{root.trace_id}",  # the upload, before the run
        f"projects/demo/traces/{op_trace}",
    }
    assert len({e["logging.googleapis.com/spanId"] for e in traced}) > 1  # one span per handler


def test_log_lines_of_one_operation_share_its_trace_id_across_functions(tmp_path: Path) -> None:
    tracing.reset()
    buf = io.StringIO()
    configure_logs("INFO", "json", stream=buf)
    try:
        p = make_pipeline(tmp_path)
        job = p.job()
        for name in ("ok-1.pdf", "flaky1-2.pdf"):
            p.upload(job, name)
        p.drain()
        with tracing.span("api POST /v1/jobs/{job_id}/runs", parent=None) as request:
            run = p.start(job)
        p.drain(advance_clock=True)
        assert p.run(run.id).status is RunStatus.COMPLETED
    finally:
        logging.getLogger().handlers = [h for h in logging.getLogger().handlers if h.get_name() != "sluice"]
    entries = [json.loads(line) for line in buf.getvalue().splitlines()]
    of_run = [e for e in entries if e.get("labels", {}).get("run_id") == run.id]
    by_function = {(e["logger"], e.get("trace_id")) for e in of_run}
    op_trace = tracing.operation_trace_id(run.operation_id)
    assert {logger for logger, _ in by_function} >= {"common.service.runs", "common.service.exports"}
    assert {trace for _, trace in by_function} == {op_trace} != {request.trace_id}
    # The same id whoever computes it: it is a pure function of the operation id.
    assert op_trace == hashlib.sha256(run.operation_id.encode()).digest()[:16].hex()


def test_a_message_of_an_operation_carries_its_traceparent_whoever_sends_it(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    with tracing.span("elsewhere", parent=None):
        p.sender.send(ExtractTask(task_id="t", run_id="run_1", job_id="j"))
    (delivery,) = p.bus.pull("extract--extract", 10, owner="test")
    ref = tracing.parse_traceparent(delivery.attributes["traceparent"])
    assert ref is not None and ref.trace_id == tracing.operation_trace_id("op_run_1")
    assert delivery.attributes["trace_id"] == ref.trace_id


def test_a_message_without_trace_context_starts_a_trace() -> None:
    assert tracing.extract({}) is None
    ref = tracing.extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert ref == tracing.SpanRef("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", True)
    assert tracing.extract({"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}) is None
    legacy = tracing.extract({"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"})
    assert legacy is not None and legacy.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    attrs: dict[str, str] = {}
    tracing.inject(attrs)
    assert attrs == {}
    with tracing.span("x", parent=ref) as s:
        tracing.inject(attrs)
    assert attrs["traceparent"] == f"00-{ref.trace_id}-{s.span_id}-01"


def test_importing_dispatch_imports_no_opentelemetry() -> None:
    code = (
        "import sys, common.service.dispatch, common.service.context\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
