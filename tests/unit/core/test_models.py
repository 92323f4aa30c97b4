"""Domain records: destinations, timestamps and the stored document form."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from common.core.models import (
    Automation,
    Destination,
    Export,
    ExportSpec,
    ExtractionTask,
    FileType,
    Job,
    Operation,
    Priority,
    Record,
    Run,
    RunCounters,
    SourceFile,
    SourceType,
    TaskResult,
    TaskUsage,
    format_timestamp,
    row_values,
)
from common.core.schema import FieldSpec, FieldType, FieldValue
from common.core.states import ExportStatus, FileStatus, OperationStatus, RunStatus, TaskStatus
from tests.unit.core.conftest import T0, at

# -- Destination ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "target"),
    [
        ("download", "download", None),
        ("drive", "drive", None),
        ("drive:", "drive", None),
        ("drive:1AbCdEf", "drive", "1AbCdEf"),
        ("gmail:ap@example.com", "gmail", "ap@example.com"),
    ],
)
def test_destination_parse_accepts_the_documented_forms(spec: str, kind: str, target: str | None) -> None:
    assert Destination.parse(spec) == Destination(kind=kind, target=target)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("", id="empty"),
        pytest.param("download:x", id="download-with-target"),
        pytest.param("gmail", id="gmail-without-address"),
        pytest.param("gmail:", id="gmail-empty-address"),
        pytest.param("gmail:accounts", id="gmail-not-an-address"),
        pytest.param("ftp:host", id="unknown-kind"),
        pytest.param("Drive:x", id="wrong-case"),
        pytest.param(" download", id="leading-space"),
    ],
)
def test_destination_parse_rejects_anything_else(spec: str) -> None:
    with pytest.raises(ValueError, match="must be download, drive:FOLDER or gmail:ADDRESS"):
        Destination.parse(spec)


@pytest.mark.parametrize("spec", ["download", "drive", "drive:1AbCdEf", "gmail:ap@example.com"])
def test_destination_str_is_the_spec_it_was_parsed_from(spec: str) -> None:
    assert str(Destination.parse(spec)) == spec


def test_default_export_is_xlsx_for_download() -> None:
    assert ExportSpec() == ExportSpec(format="xlsx", destination=Destination(kind="download"))


# -- timestamps -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        pytest.param(T0, "2024-05-10T10:00:00.000000Z", id="whole-second"),
        pytest.param(T0.replace(microsecond=1), "2024-05-10T10:00:00.000001Z", id="one-microsecond"),
        pytest.param(T0.replace(microsecond=500000), "2024-05-10T10:00:00.500000Z", id="half-second"),
        pytest.param(
            datetime(2024, 5, 10, 12, 0, tzinfo=timezone(timedelta(hours=2))),
            "2024-05-10T10:00:00.000000Z",
            id="offset-converted-to-utc",
        ),
    ],
)
def test_format_timestamp_is_fixed_width_utc(dt: datetime, text: str) -> None:
    assert format_timestamp(dt) == text


def test_formatted_timestamps_sort_as_strings_in_time_order() -> None:
    times = [
        T0 + timedelta(seconds=1),
        T0.replace(microsecond=999999),
        T0,
        T0.replace(microsecond=1),
        datetime(2024, 5, 10, 11, 30, tzinfo=timezone(timedelta(hours=2))),  # 09:30 UTC
        T0 + timedelta(days=1),
    ]
    assert sorted(format_timestamp(t) for t in times) == [format_timestamp(t) for t in sorted(times)]


def test_formatted_timestamps_all_have_the_same_width() -> None:
    widths = {len(format_timestamp(T0.replace(microsecond=us))) for us in (0, 1, 10, 123456, 999999)}
    assert widths == {len("2024-05-10T10:00:00.000000Z")}


def test_stored_documents_carry_fixed_width_timestamps(make_task: Callable[..., ExtractionTask]) -> None:
    doc = make_task(lease_until=T0.replace(microsecond=250000)).to_doc()
    assert doc["created_at"] == "2024-05-10T10:00:00.000000Z"
    assert doc["lease_until"] == "2024-05-10T10:00:00.250000Z"
    assert doc["started_at"] is None


def test_records_refuse_naive_timestamps(make_task: Callable[..., ExtractionTask]) -> None:
    with pytest.raises(ValidationError):
        make_task(created_at=datetime(2024, 5, 10, 10, 0))


# -- to_doc / from_doc ------------------------------------------------------------

BASE: dict[str, Any] = {"owner": "alice", "created_at": T0, "updated_at": at(1.5)}

RECORDS: list[Record] = [
    Job(
        id="job-1",
        name="invoices",
        fields=[FieldSpec(name="invoice_number"), FieldSpec(name="total", type=FieldType.NUMBER)],
        prompt="Read the invoice.",
        key="abc123",
        **BASE,
    ),
    SourceFile(
        id="file-1",
        job_id="job-1",
        source_type=SourceType.GMAIL,
        external_id="msg-1:att-2",
        name="a.zip",
        file_type=FileType.ARCHIVE,
        status=FileStatus.FAILED,
        error={"code": "permanent", "message": "zip bomb"},
        **BASE,
    ),
    Run(
        id="run-1",
        job_id="job-1",
        run_number=3,
        status=RunStatus.RUNNING,
        counters=RunCounters(total=4, completed=2, failed=1),
        priority=Priority.URGENT,
        schedule_time=at(-60),
        operation_id="op-1",
        exports=[ExportSpec(destination=Destination.parse("gmail:ap@example.com"))],
        started_at=T0.replace(microsecond=123456),
        **BASE,
    ),
    ExtractionTask(
        id="task-1",
        run_id="run-1",
        job_id="job-1",
        file_id="file-1",
        file_name="a.pdf",
        status=TaskStatus.COMPLETED,
        attempts=2,
        message_id="m-2",
        result=TaskResult(
            columns=["invoice_number", "total"],
            results=[["INV-1", 12.5], ["INV-1", 7]],
            row_pages=[1, None],
            fields={"total": FieldValue(value=12.5, confidence=0.9, page=1, snippet="Total 12,50")},
            method="offline-text",
            pages=2,
        ),
        usage=TaskUsage(input_tokens=10, output_tokens=5, latency_ms=1.25),
        finished_at=at(30),
        **BASE,
    ),
    Export(
        id="export-1",
        run_id="run-1",
        job_id="job-1",
        format="csv",
        destination=Destination.parse("drive:folder"),
        status=ExportStatus.COMPLETED,
        attempts=1,
        external_id="drive-file",
        row_count=2,
        failed_count=0,
        finished_at=at(40),
        **BASE,
    ),
    Automation(id="auto-1", name="ap inbox", account="ap@example.com", job_id="job-1", **BASE),
    Operation(
        id="op-1",
        kind="run",
        target_id="run-1",
        status=OperationStatus.DONE,
        pct=100.0,
        done=3,
        failed=1,
        total=4,
        eta_seconds=0.0,
        finished_at=at(50),
        **BASE,
    ),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_from_doc_of_to_doc_gives_back_an_equal_record(record: Record) -> None:
    assert type(record).from_doc(record.to_doc()) == record


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_stored_documents_are_plain_json_values(record: Record) -> None:
    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or type(value) in (str, int, float, bool)

    assert plain(record.to_doc())


def test_from_doc_ignores_fields_it_does_not_know(make_task: Callable[..., ExtractionTask]) -> None:
    task = make_task()
    assert ExtractionTask.from_doc({**task.to_doc(), "legacy_field": 1}) == task


def test_from_doc_reads_a_stored_timestamp_back_as_aware_utc(make_task: Callable[..., ExtractionTask]) -> None:
    restored = ExtractionTask.from_doc(make_task().to_doc())
    assert restored.created_at == T0
    assert restored.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("record_type", "collection"),
    [(Job, "jobs"), (SourceFile, "files"), (Run, "runs"), (ExtractionTask, "tasks"), (Export, "exports")],
)
def test_each_record_type_names_its_collection(record_type: type[Record], collection: str) -> None:
    assert record_type.collection == collection


# -- small helpers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("counters", "all_terminal"),
    [
        (RunCounters(total=3, completed=1, failed=1), False),
        (RunCounters(total=3, completed=1, failed=1, cancelled=1), True),
        (RunCounters(total=0), True),
    ],
)
def test_run_counters_know_when_every_task_is_terminal(counters: RunCounters, all_terminal: bool) -> None:
    assert counters.all_terminal is all_terminal


def test_priority_ranks_urgent_above_high_above_normal_above_low() -> None:
    ranked = sorted(Priority, key=lambda p: p.rank, reverse=True)
    assert ranked == [Priority.URGENT, Priority.HIGH, Priority.NORMAL, Priority.LOW]


def test_row_values_pairs_each_row_with_the_column_names() -> None:
    result = TaskResult(columns=["a", "b"], results=[[1, 2], [3, None]], method="offline-text")
    assert row_values(result) == [{"a": 1, "b": 2}, {"a": 3, "b": None}]
