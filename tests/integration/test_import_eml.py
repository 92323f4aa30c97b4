"""``sluice import-eml``: saved e-mails' attachments into a job, through the Gmail import's code path."""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from common.adapters.offline_model import OfflineExtractor
from common.bootstrap import bootstrap
from common.config import Settings
from common.core.models import FileType, SourceFile, SourceType
from common.core.schema import DocumentExtraction, FieldSpec
from common.core.states import FileStatus, TaskStatus
from common.imports.eml import LOCAL_OWNER, cmd_import_eml, import_eml
from common.ports.extractor import DocumentRef
from common.ports.store import Filter
from common.service import jobs, repo
from tests.support import SHARED, Pipeline, make_pipeline

EMAILS = SHARED / "fixtures" / "emails"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

needs_fixtures = pytest.mark.skipif(
    not EMAILS.is_dir(), reason=f"shared e-mail fixtures not found at {EMAILS} (the repo's sibling ../shared)"
)


def run_cli(
    capsys: pytest.CaptureFixture[str], data_dir: Path, *paths: Path, job: str | None = None
) -> tuple[int, list[dict[str, Any]]]:
    args = argparse.Namespace(paths=list(paths), job=job, data_dir=data_dir, quiet=True, log_level="WARNING")
    code = cmd_import_eml(args)
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def stored_files(data_dir: Path) -> list[SourceFile]:
    deps = bootstrap(Settings(backend="local", data_dir=data_dir, durable=False))
    return list(repo.scan(deps.store, SourceFile))


def email_with(attachments: Sequence[tuple[str, bytes, str, str]], *, subject: str = "invoices") -> bytes:
    msg = EmailMessage()
    msg["From"] = "billing@example.com"
    msg["To"] = "ap@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = "<test-1@example.com>"
    msg.set_content("Please find attached.")
    for filename, data, maintype, subtype in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def zip_of(entries: Sequence[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries:
            zf.writestr(name, content)
    return buf.getvalue()


@needs_fixtures
def test_the_truncated_pdf_email_imports_its_attachment_and_prints_a_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eml = EMAILS / "mikel_attachment_pdf.eml"
    code, lines = run_cli(capsys, tmp_path / "data", eml)
    assert code == 0
    (line,) = lines
    assert line == {
        "email": str(eml),
        "attachment": "broken.pdf",
        "member": None,
        "status": "imported",
        "reason": None,
        "file_id": line["file_id"],
    }
    (f,) = stored_files(tmp_path / "data")
    assert (f.id, f.status, f.mime_type, f.source_type) == (
        line["file_id"],
        FileStatus.UPLOADED,
        "application/pdf",
        SourceType.UPLOAD,
    )
    assert f.external_id.startswith("eml:") and f.external_id.endswith(":0")


@needs_fixtures
def test_running_the_same_command_again_finds_the_job_and_skips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eml = EMAILS / "mikel_attachment_pdf.eml"
    run_cli(capsys, tmp_path / "data", eml)
    code, lines = run_cli(capsys, tmp_path / "data", eml)
    assert code == 0
    assert [(x["status"], x["reason"]) for x in lines] == [("skipped", "already imported")]
    assert len(stored_files(tmp_path / "data")) == 1


@needs_fixtures
def test_a_non_ascii_filename_keeps_its_decoded_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_cli(capsys, tmp_path / "data", EMAILS / "mikel_attachment_nonascii_filename.eml")
    assert code == 0
    assert [x["attachment"] for x in lines] == ["ciële.txt"]
    (f,) = stored_files(tmp_path / "data")
    assert f.name == "ciële.txt"
    assert f.mime_type == "text/plain"


def test_an_rfc2231_encoded_filename_is_decoded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = email_with([("Rechnung Nº 4 – März.pdf", PDF, "application", "pdf")])
    assert b"filename*=utf-8''" in raw  # the stdlib wrote RFC 2231
    eml = tmp_path / "rfc2231.eml"
    eml.write_bytes(raw)
    code, lines = run_cli(capsys, tmp_path / "data", eml)
    assert code == 0
    assert [x["attachment"] for x in lines] == ["Rechnung Nº 4 – März.pdf"]


def test_a_zip_attachment_is_expanded_with_a_line_per_member(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = zip_of(
        [
            ("jan.pdf", PDF),
            ("feb.pdf", PDF + b"%feb"),
            ("../../etc/cron.pdf", PDF),
            ("more.zip", zip_of([("x.pdf", PDF)])),
        ]
    )
    eml = tmp_path / "batch.eml"
    eml.write_bytes(
        email_with([("statement.pdf", PDF, "application", "pdf"), ("batch.zip", archive, "application", "zip")])
    )

    code, lines = run_cli(capsys, tmp_path / "data", eml)
    assert code == 1  # something was rejected: "some documents failed"
    got = [(x["attachment"], x["member"], x["status"]) for x in lines]
    assert got == [
        ("statement.pdf", None, "imported"),
        ("batch.zip", None, "imported"),
        ("batch.zip", "jan.pdf", "imported"),
        ("batch.zip", "feb.pdf", "imported"),
        ("batch.zip", "../../etc/cron.pdf", "rejected"),
        ("batch.zip", "more.zip", "imported"),
    ]
    assert "parent directory" in lines[4]["reason"]
    assert "not expanded" in lines[5]["reason"]
    assert all(x["email"] == str(eml) for x in lines)
    files = {f.id: f for f in stored_files(tmp_path / "data")}
    archive_file = files[lines[1]["file_id"]]
    assert archive_file.file_type is FileType.ARCHIVE
    assert files[lines[2]["file_id"]].parent_id == archive_file.id
    assert files[lines[4]["file_id"]].status is FileStatus.FAILED


def test_an_email_without_attachments_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eml = tmp_path / "plain.eml"
    eml.write_bytes(email_with([]))
    code, lines = run_cli(capsys, tmp_path / "data", eml)
    assert code == 0
    assert [(x["attachment"], x["status"], x["reason"]) for x in lines] == [(None, "skipped", "no attachments")]


def test_importing_into_a_given_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    deps = bootstrap(Settings(backend="local", data_dir=data_dir, durable=False))
    job = jobs.create_job(deps, owner=LOCAL_OWNER, name="mine", fields=[FieldSpec(name="total")])
    eml = tmp_path / "one.eml"
    eml.write_bytes(email_with([("a.pdf", PDF, "application", "pdf")]))
    code, lines = run_cli(capsys, data_dir, eml, job=job.id)
    assert code == 0
    (f,) = stored_files(data_dir)
    assert (f.job_id, f.id) == (job.id, lines[0]["file_id"])


def test_imported_attachments_and_members_extract_in_a_run(pipeline: Pipeline, tmp_path: Path) -> None:
    eml = tmp_path / "run.eml"
    archive = zip_of([("ok-jan.pdf", PDF), ("ok-feb.pdf", PDF)])
    eml.write_bytes(
        email_with([("ok-statement.pdf", PDF, "application", "pdf"), ("b.zip", archive, "application", "zip")])
    )
    job = pipeline.job()
    outcomes = import_eml(pipeline.deps, job, eml)
    assert [o.status for o in outcomes] == ["imported"] * 4

    run = jobs.request_run(pipeline.deps, pipeline.sender, job)
    pipeline.drain(advance_clock=True)
    assert pipeline.run(run.id).status.value == "completed"
    documents = {f.id: f.name for f in pipeline.files(job.id) if f.file_type is FileType.DOCUMENT}
    assert set(documents.values()) == {"ok-statement.pdf", "ok-jan.pdf", "ok-feb.pdf"}
    tasks = {t.file_id: t for t in pipeline.tasks(run.id)}
    assert all(tasks[fid].status is TaskStatus.COMPLETED for fid in documents)


class _LateOffline:
    """The offline extractor, built once the pipeline's blob store exists."""

    inner: OfflineExtractor | None = None

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        assert self.inner is not None
        return self.inner.extract(doc, fields, prompt=prompt)


@needs_fixtures
def test_the_truncated_pdf_fails_its_extraction_cleanly(tmp_path: Path) -> None:
    extractor = _LateOffline()
    p = make_pipeline(tmp_path, extractor=extractor)
    extractor.inner = OfflineExtractor(p.deps.blobs, max_bytes=10_000_000, max_pages=10)
    job = p.job()
    (outcome,) = import_eml(p.deps, job, EMAILS / "mikel_attachment_pdf.eml")
    run = jobs.request_run(p.deps, p.sender, job)
    p.drain(advance_clock=True)

    done = p.run(run.id)
    assert (done.status.value, done.counters.failed, done.counters.total) == ("completed", 1, 1)
    (task,) = p.tasks(run.id)
    assert task.file_id == outcome.file_id
    assert task.status is TaskStatus.FAILED
    assert task.error is not None and task.error["code"] == "unreadable_document"
    assert p.deps.store.count("tasks", filters=[Filter("run_id", "==", run.id)]) == 1
