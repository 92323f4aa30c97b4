"""Export destinations in the running pipeline: every message delivered three
times still uploads one file and sends one e-mail."""

from __future__ import annotations

import json
from pathlib import Path

from common.core.models import Destination, ExportFormat, ExportSpec
from common.core.states import ExportStatus, OperationStatus
from common.service import jobs
from tests.support import DuplicatingRuntime, make_pipeline
from tests.unit.export.test_destinations import RecordingHttp, StaticAuth


def _job_with(p, destination: str, fmt: str = "xlsx"):
    return jobs.create_job(
        p.deps,
        owner="alice",
        name="Invoices",
        fields=p.job().fields,
        exports=[ExportSpec(format=ExportFormat(fmt), destination=Destination.parse(destination))],
    )


def test_duplicate_delivery_uploads_one_file_to_drive(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, runtime_cls=DuplicatingRuntime)
    http = RecordingHttp(
        [
            ({"status": "200"}, json.dumps({"files": []})),
            ({"status": "200", "location": "https://upload.example/s"}, ""),
            ({"status": "200"}, json.dumps({"id": "drive-file-1"})),
        ]
    )
    p.deps.google_auth = StaticAuth(http)
    job = _job_with(p, "drive:folder-1")
    p.upload(job, "ok-a.pdf")
    run = p.start(job)
    p.drain(advance_clock=True)
    (export,) = p.exports(run.id)
    assert (export.status, export.external_id) == (ExportStatus.COMPLETED, "drive-file-1")
    assert export.url == "https://drive.google.com/file/d/drive-file-1/view"
    assert [m for m, _, _ in http.requests].count("PUT") == 1, "one upload"
    assert p.operation(p.run(run.id)).status is OperationStatus.DONE


def test_duplicate_delivery_sends_one_email(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, runtime_cls=DuplicatingRuntime)
    http = RecordingHttp([({"status": "200"}, json.dumps({})), ({"status": "200"}, json.dumps({"id": "gm-1"}))])
    p.deps.google_auth = StaticAuth(http)
    job = _job_with(p, "gmail:boss@example.com", fmt="csv")
    p.upload(job, "ok-a.pdf")
    run = p.start(job)
    p.drain(advance_clock=True)
    (export,) = p.exports(run.id)
    assert (export.status, export.external_id) == (ExportStatus.COMPLETED, "gm-1")
    sends = [u for m, u, _ in http.requests if m == "POST" and u.split("?")[0].endswith("/messages/send")]
    assert len(sends) == 1, "one e-mail"


def test_a_google_destination_without_google_access_fails_the_export_clearly(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = _job_with(p, "drive:folder-1")
    p.upload(job, "ok-a.pdf")
    run = p.start(job)
    p.drain()
    (export,) = p.exports(run.id)
    assert export.status is ExportStatus.FAILED
    assert export.error is not None and export.error["code"] == "destination_unavailable"
    assert p.operation(p.run(run.id)).status is OperationStatus.FAILED
