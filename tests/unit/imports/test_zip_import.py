"""Archive safety end to end: a crafted zip imported as an attachment into a job
on the embedded backend. Each hostile member gets its reason, the good members
beside it import, and every stored object stays under ``jobs/{job_id}/``."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from common.core.archives import ArchiveLimits
from common.core.models import FileType, Job, SourceFile, SourceType
from common.core.states import FileStatus
from common.imports import Attachment, ImportOutcome
from common.imports.archives import MemberStream, MemberTooLarge
from common.service.gmail_import import file_id_for, import_attachments
from tests.support import Pipeline
from tests.unit.imports import zipcraft
from tests.unit.imports.zipcraft import Raw

GOOD = zipcraft.pdf("good invoice")


def import_zip(p: Pipeline, job: Job, data: bytes, *, limits: ArchiveLimits | None = None) -> list[ImportOutcome]:
    att = Attachment(
        external_id="t:batch", name="batch.zip", declared_type="application/octet-stream", load=lambda: data
    )
    return import_attachments(p.deps, job, [att], source_type=SourceType.UPLOAD, limits=limits)


def members(outcomes: list[ImportOutcome]) -> dict[str, ImportOutcome]:
    return {o.member: o for o in outcomes if o.member is not None}


def archive_outcome(outcomes: list[ImportOutcome]) -> ImportOutcome:
    (head,) = [o for o in outcomes if o.member is None]
    return head


def assert_contained(p: Pipeline, job: Job) -> None:
    """Nothing was written outside the job's prefix, nor next to the data directory."""
    names = [info.name for info in p.deps.blobs.list("uploads")]
    assert names, "something should have been stored"
    assert all(n.startswith(f"jobs/{job.id}/files/") for n in names), names
    for stray in ("x.pdf", "etc", "passwd"):
        assert not (p.tmp / stray).exists()
        assert not (p.tmp.parent / stray).exists()


def assert_good_member_imported(p: Pipeline, job: Job, outcomes: list[ImportOutcome], name: str = "good.pdf") -> None:
    outcome = members(outcomes)[name]
    assert outcome.status == "imported", outcome
    files = {f.id: f for f in p.files(job.id)}
    record = files[outcome.file_id or ""]
    archive = files[archive_outcome(outcomes).file_id or ""]
    assert record.status is FileStatus.UPLOADED
    assert record.parent_id == archive.id
    assert record.external_id == f"t:batch/{name}"
    assert record.mime_type == "application/pdf"
    assert record.sha256 == hashlib.sha256(GOOD).hexdigest()
    assert record.blob_uri is not None and p.deps.blobs.get_bytes(record.blob_uri) == GOOD
    assert archive.file_type is FileType.ARCHIVE and archive.status is FileStatus.UPLOADED


def assert_rejected(p: Pipeline, job: Job, outcomes: list[ImportOutcome], member: str, code: str) -> SourceFile:
    outcome = members(outcomes)[member]
    assert (outcome.status, outcome.code) == ("rejected", code), outcome
    assert outcome.reason
    (record,) = [f for f in p.files(job.id) if f.id == outcome.file_id]
    assert record.status is FileStatus.FAILED
    assert record.error is not None and record.error["code"] == code
    assert record.blob_uri is None
    return record


def test_zip_slip_member_is_rejected_and_the_good_one_imports(pipeline: Pipeline) -> None:
    job = pipeline.job()
    outcomes = import_zip(pipeline, job, zipcraft.with_zipfile([("../x.pdf", GOOD), ("good.pdf", GOOD)]))
    assert_rejected(pipeline, job, outcomes, "../x.pdf", "unsafe_path")
    assert_good_member_imported(pipeline, job, outcomes)
    assert_contained(pipeline, job)


def test_absolute_path_member_is_rejected(pipeline: Pipeline) -> None:
    job = pipeline.job()
    outcomes = import_zip(pipeline, job, zipcraft.with_zipfile([("/etc/x", b"root:x:0:0"), ("good.pdf", GOOD)]))
    assert_rejected(pipeline, job, outcomes, "/etc/x", "unsafe_path")
    assert_good_member_imported(pipeline, job, outcomes)
    assert_contained(pipeline, job)


def test_symlink_member_is_rejected(pipeline: Pipeline) -> None:
    job = pipeline.job()
    data = zipcraft.with_zipfile([(zipcraft.symlink_info("passwd"), b"/etc/passwd"), ("good.pdf", GOOD)])
    outcomes = import_zip(pipeline, job, data)
    assert_rejected(pipeline, job, outcomes, "passwd", "symlink")
    assert_good_member_imported(pipeline, job, outcomes)
    assert_contained(pipeline, job)


def test_encrypted_member_is_rejected(pipeline: Pipeline) -> None:
    job = pipeline.job()
    data = zipcraft.build([Raw("secret.pdf", b"\x8a\x11 ciphertext", flags=0x1), Raw("good.pdf", GOOD)])
    outcomes = import_zip(pipeline, job, data)
    assert_rejected(pipeline, job, outcomes, "secret.pdf", "encrypted")
    assert_good_member_imported(pipeline, job, outcomes)
    assert_contained(pipeline, job)


def test_ten_thousand_members_refuse_the_archive_without_expanding_it(pipeline: Pipeline) -> None:
    job = pipeline.job()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(10_000):
            zf.writestr(f"{i}.pdf", b"%PDF-")
    outcomes = import_zip(pipeline, job, buf.getvalue())
    head = archive_outcome(outcomes)
    assert len(outcomes) == 1
    assert (head.status, head.code) == ("imported", "too_many_members")
    (archive,) = pipeline.files(job.id)  # no member records at all
    assert archive.file_type is FileType.ARCHIVE and archive.status is FileStatus.UPLOADED
    assert archive.error is not None and archive.error["code"] == "too_many_members"
    assert_contained(pipeline, job)


def test_high_ratio_bomb_is_refused_before_inflating(pipeline: Pipeline) -> None:
    job = pipeline.job()
    # A real deflate stream of 1 GiB of zeros (about 1 MB), declared honestly.
    data = zipcraft.build([zipcraft.deflated_zeros("zeros.pdf", 1024), Raw("good.pdf", GOOD)])
    t0 = time.perf_counter()
    outcomes = import_zip(pipeline, job, data)
    assert time.perf_counter() - t0 < 2.0  # nothing close to 1 GiB was inflated
    record = assert_rejected(pipeline, job, outcomes, "zeros.pdf", "compression_ratio")
    assert record.error is not None and "1073741824 bytes" in record.error["message"]
    assert_good_member_imported(pipeline, job, outcomes)
    assert_contained(pipeline, job)


def test_overlapping_entry_bomb_is_refused(pipeline: Pipeline) -> None:
    job = pipeline.job()
    kernel = zipcraft.deflated("kernel.pdf", bytes(200_000))
    data = zipcraft.build(
        [
            kernel,
            Raw("copy1.pdf", b"", same_header_as=0),
            Raw("copy2.pdf", b"", same_header_as=0),
            Raw("good.pdf", GOOD),
        ]
    )
    outcomes = import_zip(pipeline, job, data)
    for name in ("kernel.pdf", "copy1.pdf", "copy2.pdf"):
        assert_rejected(pipeline, job, outcomes, name, "overlapping_entry")
    assert_good_member_imported(pipeline, job, outcomes)
    assert_contained(pipeline, job)


def test_nested_zip_is_kept_as_a_file_but_not_expanded(pipeline: Pipeline) -> None:
    job = pipeline.job()
    inner = zipcraft.with_zipfile([("deep.pdf", GOOD)])
    outcomes = import_zip(pipeline, job, zipcraft.with_zipfile([("inner.zip", inner), ("good.pdf", GOOD)]))
    nested = members(outcomes)["inner.zip"]
    assert (nested.status, nested.code) == ("imported", "nested_archive")
    (record,) = [f for f in pipeline.files(job.id) if f.id == nested.file_id]
    assert record.file_type is FileType.ARCHIVE and record.status is FileStatus.UPLOADED
    assert record.blob_uri is not None and pipeline.deps.blobs.get_bytes(record.blob_uri) == inner
    assert not [f for f in pipeline.files(job.id) if "deep.pdf" in f.external_id]
    assert_good_member_imported(pipeline, job, outcomes)
    assert_contained(pipeline, job)


def test_member_whose_bytes_fail_their_crc_is_rejected_and_not_stored(pipeline: Pipeline) -> None:
    job = pipeline.job()
    data = zipcraft.build([Raw("tampered.pdf", zipcraft.pdf("changed"), crc=0x1234), Raw("good.pdf", GOOD)])
    outcomes = import_zip(pipeline, job, data)
    assert_rejected(pipeline, job, outcomes, "tampered.pdf", "corrupt_member")
    assert_good_member_imported(pipeline, job, outcomes)
    tampered_id = members(outcomes)["tampered.pdf"].file_id
    assert not [i for i in pipeline.deps.blobs.list("uploads") if f"/{tampered_id}/" in i.name]


def test_member_inflating_past_its_declared_size_is_cut_at_the_declared_size(pipeline: Pipeline) -> None:
    job = pipeline.job()
    liar = zipcraft.deflated_zeros("liar.bin", 4)  # 4 MiB of zeros in the stream...
    liar.file_size = 10  # ...declared as 10 bytes
    liar.crc = zlib.crc32(bytes(10))
    outcomes = import_zip(pipeline, job, zipcraft.build([liar, Raw("good.pdf", GOOD)]))
    outcome = members(outcomes)["liar.bin"]
    (record,) = [f for f in pipeline.files(job.id) if f.id == outcome.file_id]
    assert record.size == 10
    assert record.blob_uri is not None and pipeline.deps.blobs.get_bytes(record.blob_uri) == bytes(10)


def test_member_stream_aborts_past_its_limit_and_the_object_is_never_committed(pipeline: Pipeline) -> None:
    stream = MemberStream(io.BytesIO(b"0123456789" * 10), limit=50, name="big.bin")
    uri = pipeline.deps.blobs.uri("uploads", "jobs/j/files/f/big.bin")
    with pytest.raises(MemberTooLarge):
        pipeline.deps.blobs.put_stream(uri, stream, chunk_size=16)  # type: ignore[arg-type]
    assert pipeline.deps.blobs.stat(uri) is None


def test_directory_entries_are_ignored(pipeline: Pipeline) -> None:
    job = pipeline.job()
    outcomes = import_zip(pipeline, job, zipcraft.with_zipfile([("docs/", b""), ("docs/good.pdf", GOOD)]))
    assert set(members(outcomes)) == {"docs/good.pdf"}
    assert members(outcomes)["docs/good.pdf"].status == "imported"


def test_importing_the_same_archive_again_creates_nothing(pipeline: Pipeline) -> None:
    job = pipeline.job()
    data = zipcraft.with_zipfile([("../x.pdf", GOOD), ("good.pdf", GOOD), ("other.pdf", zipcraft.pdf("other"))])
    first = import_zip(pipeline, job, data)
    before = sorted((f.id, f.status, f.updated_at) for f in pipeline.files(job.id))
    again = import_zip(pipeline, job, data)
    assert [(o.status, o.reason) for o in again] == [("skipped", "already imported")]
    assert sorted((f.id, f.status, f.updated_at) for f in pipeline.files(job.id)) == before
    assert len(before) == len(first) == 4


def test_member_ids_derive_from_job_and_path(pipeline: Pipeline) -> None:
    job = pipeline.job()
    outcomes = import_zip(pipeline, job, zipcraft.with_zipfile([("a/good.pdf", GOOD)]))
    assert members(outcomes)["a/good.pdf"].file_id == file_id_for(job.id, "t:batch/a/good.pdf")


def test_corrupt_archive_is_kept_with_its_reason(pipeline: Pipeline, tmp_path: Path) -> None:
    job = pipeline.job()
    truncated = zipcraft.with_zipfile([("good.pdf", GOOD)])[:-30]
    outcomes = import_zip(pipeline, job, truncated)
    assert [(o.status, o.code) for o in outcomes] == [("imported", "corrupt_archive")]
