"""Reading a document for extraction: a storage outage is transient, a parser
crash is permanent for that document only.

The real offline extractor reads through the real blob adapters: Cloud
Storage's (google-cloud-storage against a local server answering 503 or
resetting the connection) and the local one. Before the blob port had an
error contract, a 503 while reading escaped as ``google.api_core`` 's
``ServiceUnavailable`` and failed the task for good as ``extractor_crashed``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.adapters.gcp.gcs_blobs import GcsBlobStore
from common.adapters.local.clock import ManualClock
from common.bootstrap import local_app
from common.config import Settings
from common.core.models import SourceFile
from common.core.states import RunStatus, TaskStatus
from common.service import repo
from tests.fakes.gcs_faults import FaultyStorage
from tests.support import SAMPLES, Pipeline

INVOICE = SAMPLES / "uk_invoice.pdf"
EXPECTED = json.loads((SAMPLES / "expected.json").read_text())


@pytest.fixture
def offline(tmp_path: Path) -> Pipeline:
    """The embedded backend with the real offline extractor (it reads ``deps.blobs``)."""
    clock = ManualClock()
    settings = Settings(backend="local", data_dir=tmp_path / "data", durable=False, progress_min_interval_s=1.0)
    return Pipeline.of(local_app(settings, clock=clock), tmp=tmp_path)


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyStorage]:
    with FaultyStorage() as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        server.content = INVOICE.read_bytes()
        yield server


def _invoice_in_cloud_storage(p: Pipeline) -> str:
    """A job whose one file lives at gs://uploads/doc.pdf, read through the GCS adapter."""
    job = p.job(formats=())
    f = p.upload(job, INVOICE.name, INVOICE.read_bytes())
    p.drain()  # registered while the local store serves the upload
    stored = repo.require(p.deps.store, SourceFile, f.id)[0]
    repo.put(p.deps.store, stored.model_copy(update={"blob_uri": "gs://uploads/doc.pdf"}))
    p.deps.blobs = GcsBlobStore("p", retry_timeout_s=0)
    return p.start(job).id


@pytest.mark.parametrize("fault", ["503", "reset"])
def test_a_storage_outage_while_reading_a_document_is_retried_then_extracted(
    offline: Pipeline, gcs: FaultyStorage, fault: str
) -> None:
    gcs.default = fault
    run_id = _invoice_in_cloud_storage(offline)
    offline.drain()  # no clock jump: the retry waits for its delay

    (task,) = offline.tasks(run_id)
    assert task.status is TaskStatus.PENDING, "transient: back to pending with a delayed retry, not failed"
    assert task.attempts == 1 and task.error is not None
    assert task.error["code"] == "storage_unavailable"
    assert task.error["kind"] == ("unavailable" if fault == "503" else "network")

    gcs.default = "ok"
    offline.drain(advance_clock=True)
    (task,) = offline.tasks(run_id)
    assert task.status is TaskStatus.COMPLETED and task.attempts == 2
    assert task.result is not None and task.result.method == "offline-text"
    assert task.result.fields["invoice_number"].value == EXPECTED[INVOICE.name]["invoice_number"]
    assert offline.run(run_id).status is RunStatus.COMPLETED


def test_a_storage_outage_that_outlasts_the_policy_fails_the_task_with_the_storage_reason(
    offline: Pipeline, gcs: FaultyStorage
) -> None:
    gcs.default = "503"
    run_id = _invoice_in_cloud_storage(offline)
    offline.drain(advance_clock=True)
    (task,) = offline.tasks(run_id)
    assert task.status is TaskStatus.FAILED and task.attempts > 1
    assert task.error is not None and task.error["code"] == "storage_unavailable"


def test_a_crash_inside_the_pdf_parser_fails_that_document_for_good(
    offline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third-party parser failing is permanent for that document only: one
    attempt, ``extractor_crashed`` with the reason, and the other documents extract."""
    import pypdfium2

    real = pypdfium2.PdfPage.get_textpage

    def crash_on_one(page: pypdfium2.PdfPage) -> pypdfium2.PdfTextPage:
        if page.pdf.get_metadata_dict().get("Title") == "crash me":
            raise pypdfium2.PdfiumError("Failed to load text page.")
        return real(page)

    monkeypatch.setattr(pypdfium2.PdfPage, "get_textpage", crash_on_one)
    job = offline.job(formats=())
    offline.upload(job, "good.pdf", INVOICE.read_bytes())
    offline.upload(job, "crash.pdf", _retitled(INVOICE.read_bytes(), "crash me"))
    run_id = offline.start(job).id
    offline.drain(advance_clock=True)

    tasks = {t.file_name: t for t in offline.tasks(run_id)}
    crashed = tasks["crash.pdf"]
    assert crashed.status is TaskStatus.FAILED and crashed.attempts == 1
    assert crashed.error is not None and crashed.error["code"] == "extractor_crashed"
    assert "PdfiumError: Failed to load text page." in crashed.error["message"]
    assert tasks["good.pdf"].status is TaskStatus.COMPLETED
    assert offline.run(run_id).status is RunStatus.COMPLETED


def _retitled(pdf: bytes, title: str) -> bytes:
    """The same document with another /Title (pypdf rewrites the Info dictionary)."""
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.add_metadata({"/Title": title})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
