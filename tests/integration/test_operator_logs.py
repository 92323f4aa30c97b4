"""Logs an operator can follow: each stage's start and end at INFO, failures with the item's ids and their point."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.core.messages import ExtractTask
from common.obs.logging import configure
from tests.support import make_pipeline


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    configure("INFO", "json", stream=buf)
    yield buf
    root.handlers, root.level = handlers, level


def _entries(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_each_stage_logs_its_start_and_its_end_with_duration_and_outcome(tmp_path: Path, lines: io.StringIO) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    p.upload(job, "ok-1.pdf")
    p.upload(job, "bad-1.pdf")
    run = p.start(job)
    p.drain(advance_clock=True)
    entries = _entries(lines)
    started = [e for e in entries if e["message"] == "stage started"]
    finished = [e for e in entries if e["message"] == "stage finished"]
    kinds = {e["kind"] for e in finished}
    assert kinds == {"blob.finalized", "run.start", "task.extract", "export.run"}
    assert len(started) == len(finished) == 6  # two uploads, the initializer, two tasks, one export
    for e in started + finished:
        assert e["severity"] == "INFO" and e["function"] and e["attempt"] == 1
    for e in finished:
        assert e["outcome"] == "done" and isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0
    # A task's end carries its ids, so an operator can follow one document.
    task_ends = [e for e in finished if e["kind"] == "task.extract"]
    assert {e["labels"]["run_id"] for e in task_ends} == {run.id}
    assert all(e["labels"]["task_id"] and e["labels"]["job_id"] == job.id for e in task_ends)


def test_a_failed_item_is_an_error_with_its_ids_and_point_of_failure(tmp_path: Path, lines: io.StringIO) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    p.upload(job, "bad-1.pdf")
    run = p.start(job)
    p.drain(advance_clock=True)
    (task,) = p.tasks(run.id)
    (error,) = [e for e in _entries(lines) if e["severity"] == "ERROR"]
    assert error["message"] == "task failed"
    assert error["labels"] == {
        "job_id": job.id,
        "run_id": run.id,
        "task_id": task.id,
        "file_id": task.file_id,
        "message_id": error["labels"]["message_id"],
    }
    assert error["code"] == (task.error or {}).get("code") and error["error"]
    # The innermost frame of Sluice's own code: where the extract kind called the extractor.
    assert error["point"].startswith("common/kinds/extract.py:") and error["point"].endswith(" in _call_extractor")
    assert "%PDF" not in json.dumps(error), "ids, never the document's contents"


def test_a_dead_lettered_message_is_an_error_with_its_ids_and_point(tmp_path: Path, lines: io.StringIO) -> None:
    p = make_pipeline(tmp_path)
    p.sender.send(ExtractTask(task_id="t_missing", run_id="r_1", job_id="j_1"))
    p.drain()
    entries = _entries(lines)
    (error,) = [e for e in entries if e["severity"] == "ERROR"]
    assert error["message"].startswith("permanent failure")
    assert {k: error["labels"][k] for k in ("task_id", "run_id", "job_id")} == {
        "task_id": "t_missing",
        "run_id": "r_1",
        "job_id": "j_1",
    }
    assert error["point"].startswith("common/service/runs.py:") and error["point"].endswith("in run_item")
    (end,) = [e for e in entries if e["message"] == "stage finished"]
    assert (end["outcome"], end["error_class"]) == ("failed", "unknown_task")
