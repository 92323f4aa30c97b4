"""The audit kind on the local runtime: what happens to a bad document, a bad logo, a lost task,
and a grammar attempt that fails half-way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common import kinds
from common.core.errors import ErrorKind, RetryableError
from common.core.models import Job
from common.ports.textmodel import Generation
from common.service import jobs
from tests.audit.generate import DISCLAIMER, Spec, build, logo_png
from tests.support import Pipeline, make_pipeline

LOGO = logo_png()
SETTINGS: dict[str, Any] = {
    "disclaimers": [{"text": DISCLAIMER}],
    "logo_file": "logo.png",
}


def _job(p: Pipeline, files: dict[str, bytes], settings: dict[str, Any] = SETTINGS) -> Job:
    job = jobs.create_job(p.deps, owner="alice", name="audit", fields=[], kind="audit", kind_settings=settings)
    for name, data in files.items():
        p.upload(job, name, data)
    return job


def test_an_unreadable_pdf_fails_its_items_and_the_report_says_incomplete_not_passed(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = _job(p, {"broken.pdf": b"%PDF-1.4 this is not a PDF", "ok.pdf": build(Spec(logo=LOGO)), "logo.png": LOGO})
    run = p.start(job)
    p.drain()
    done = p.run(run.id)
    assert done.status.value == "completed"
    report = done.outputs
    assert report is not None and report["verdict"] == "incomplete"
    docs = {d["document"]: d for d in report["documents"]}
    broken = docs["broken.pdf"]["auditors"]
    assert {a: r["status"] for a, r in broken.items()} == {
        "disclaimer": "error",
        "format": "error",
        "grammar": "skipped",  # skipped before the document is read: no model
        "logo": "error",
    }
    assert "corrupt" in broken["format"]["reason"]
    assert docs["ok.pdf"]["verdict"] == "passed"


def test_a_logo_that_is_not_an_image_fails_the_logo_items_only(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = _job(p, {"a.pdf": build(Spec(logo=LOGO)), "logo.png": b"not an image"})
    run = p.start(job)
    p.drain()
    [doc] = p.run(run.id).outputs["documents"]  # type: ignore[index]
    assert doc["auditors"]["logo"]["status"] == "error"
    assert "not an image" in doc["auditors"]["logo"]["reason"]
    assert doc["auditors"]["disclaimer"]["status"] == "passed"


def test_an_item_message_for_a_task_that_does_not_exist_is_dead_lettered_on_the_audit_subscription(
    tmp_path: Path,
) -> None:
    p = make_pipeline(tmp_path)
    item = kinds.get("audit").item_type(task_id="task_gone", run_id="run_gone", job_id="job_gone")
    p.sender.send(item)
    p.drain()
    [letter] = p.bus.dead_letters()
    assert letter.subscription.endswith("audit")
    assert "task_gone" in (letter.last_error or "")


class FlakyModel:
    """The second call fails (a 503); every other call answers one finding, in call order."""

    name = "flaky"
    model = "flaky-1"
    dependency = "flaky"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompt: str, schema: Any, *, system: str | None = None, **_: Any) -> Generation:
        self.calls += 1
        if self.calls == 2:
            raise RetryableError("model unavailable", kind=ErrorKind.UNAVAILABLE)
        quote = "The board recommends" if self.calls == 1 else "Costs rose less"
        value = {"findings": [{"quote": quote, "suggestion": "x", "severity": "warning", "explanation": "y"}]}
        return Generation(value=value, raw=json.dumps(value), model=self.model)


def test_a_grammar_attempt_that_fails_half_way_resumes_after_the_pages_it_read(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    model = FlakyModel()
    p.deps.text_model_factory = lambda: model
    job = _job(p, {"a.pdf": build(Spec(pages=2))}, {"auditors": ["grammar"]})
    run = p.start(job)
    p.drain(advance_clock=True)  # the retry waits the policy's delay
    # Page 1 once, page 2 twice (the failed call and its retry): page 1 is not asked again.
    assert model.calls == 3
    [doc] = p.run(run.id).outputs["documents"]  # type: ignore[index]
    grammar = doc["auditors"]["grammar"]
    assert grammar["status"] == "passed"
    assert [(f["page"], f["quote"]) for f in grammar["findings"]] == [
        (1, "The board recommends"),
        (2, "Costs rose less"),
    ]
