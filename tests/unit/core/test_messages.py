"""Typed messages between stages: encoding, decoding, log labels."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from common.core.errors import PermanentError
from common.core.messages import (
    MESSAGE_TYPES,
    AutomationImported,
    BlobFinalized,
    CleanupSweep,
    ExportRun,
    ExtractTask,
    GmailItem,
    GmailNotification,
    ImportDrive,
    ImportDriveFile,
    ImportGmail,
    ImportGmailMessage,
    ItemLeaseCheck,
    Message,
    Noop,
    RenewGmailWatches,
    RunDeadline,
    StartRun,
    continuation,
    decode,
    from_continuation,
)

SAMPLES: dict[str, Message] = {
    "run.start": StartRun(run_id="run-1", job_id="job-1"),
    "task.extract": ExtractTask(task_id="task-1", run_id="run-1", job_id="job-1"),
    "export.run": ExportRun(export_id="export-1", run_id="run-1", job_id="job-1"),
    "blob.finalized": BlobFinalized(
        bucket="inbox",
        name="in/a.pdf",
        size=1024,
        content_type="application/pdf",
        generation="17",
        metadata={"job_id": "job-1"},
    ),
    "drive.import": ImportDrive(job_id="job-1", operation_id="op-1", owner="u", item_ids=("folder-1",)),
    "drive.file": ImportDriveFile(job_id="job-1", operation_id="op-1", owner="u", drive_file_id="file-1"),
    "gmail.import": ImportGmail(
        job_id="job-1",
        operation_id="op-1",
        owner="u",
        account="a@example.com",
        items=(GmailItem(message_id="m1", attachment_id="a1"), GmailItem(message_id="m2")),
    ),
    "gmail.message": ImportGmailMessage(
        job_id="job-1", operation_id="op-1", owner="u", account="a@example.com", message_id="m1"
    ),
    "cleanup.sweep": CleanupSweep(),
    "gmail.notification": GmailNotification(account="a@example.com", history_id="1234567890"),
    "automation.imported": AutomationImported(automation_run_id="ar_1"),
    "gmail.renew_watches": RenewGmailWatches(),
    "bench.noop": Noop(chain="c-1", hops=3),
    "run.deadline": RunDeadline(run_id="run-1", job_id="job-1"),
    "item.lease_check": ItemLeaseCheck(task_id="t-1", run_id="run-1", job_id="job-1", attempt=2),
}


def test_there_is_a_sample_of_every_message_kind() -> None:
    # Job kinds' own start/item messages (made by common.kinds when a kind registers) are not Sluice's fixed set.
    fixed = {kind for kind, cls in MESSAGE_TYPES.items() if cls.__module__ != "common.kinds"}
    assert set(SAMPLES) == fixed


@pytest.mark.parametrize("kind", SAMPLES)
def test_each_message_class_is_registered_under_its_kind(kind: str) -> None:
    assert MESSAGE_TYPES[kind] is type(SAMPLES[kind])
    assert SAMPLES[kind].kind == kind


@pytest.mark.parametrize("kind", SAMPLES)
def test_encode_then_decode_gives_the_same_message(kind: str) -> None:
    msg = SAMPLES[kind]
    decoded = decode(kind, msg.encode())
    assert type(decoded) is type(msg)
    assert decoded == msg


def test_encode_is_the_json_of_the_fields_without_the_kind() -> None:
    payload = json.loads(ExtractTask(task_id="t", run_id="r", job_id="j").encode())
    assert payload == {"task_id": "t", "run_id": "r", "job_id": "j"}


def test_a_message_with_no_fields_decodes_from_empty_bytes() -> None:
    assert decode("cleanup.sweep", b"") == CleanupSweep()


def test_optional_fields_take_their_defaults_when_absent() -> None:
    assert decode("blob.finalized", b'{"bucket": "b", "name": "n"}') == BlobFinalized(bucket="b", name="n")


def test_an_unknown_kind_is_a_permanent_error_naming_it() -> None:
    with pytest.raises(PermanentError, match=re.escape("unknown message kind 'task.explode'")) as info:
        decode("task.explode", b"{}")
    assert info.value.code == "unknown_message"


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        pytest.param("task.extract", b"{not json", id="malformed-json"),
        pytest.param("task.extract", b"\xff\xfe", id="not-utf8"),
        pytest.param("task.extract", b"[]", id="json-not-an-object"),
        pytest.param("task.extract", b'{"task_id": "t", "run_id": "r"}', id="missing-field"),
        pytest.param("task.extract", b'{"task_id": "t", "run_id": "r", "job_id": "j", "x": 1}', id="unknown-field"),
        pytest.param("bench.noop", b'{"chain": "c", "hops": "many"}', id="wrong-type"),
        pytest.param("run.start", b"null", id="json-null"),
    ],
)
def test_a_malformed_payload_is_a_permanent_error(kind: str, data: bytes) -> None:
    with pytest.raises(PermanentError, match=re.escape(f"malformed {kind} message")) as info:
        decode(kind, data)
    assert info.value.code == "malformed_message"


def test_messages_are_immutable() -> None:
    msg = StartRun(run_id="run-1", job_id="job-1")
    with pytest.raises(ValidationError):
        msg.run_id = "run-2"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kind", "labels"),
    [
        ("run.start", {"run_id": "run-1", "job_id": "job-1"}),
        ("task.extract", {"task_id": "task-1", "run_id": "run-1", "job_id": "job-1"}),
        ("export.run", {"export_id": "export-1", "run_id": "run-1", "job_id": "job-1"}),
        ("blob.finalized", {}),
        ("cleanup.sweep", {}),
        ("bench.noop", {}),
    ],
)
def test_log_labels_are_the_ids_the_message_carries(kind: str, labels: dict[str, str]) -> None:
    assert SAMPLES[kind].log_labels() == labels


@pytest.mark.parametrize("history_id", [1234567890, "1234567890", " 1234567890"])
def test_a_gmail_history_id_is_kept_as_digits_whether_sent_as_number_or_string(history_id: object) -> None:
    msg = decode("gmail.notification", json.dumps({"account": "a@x.com", "history_id": history_id}).encode())
    assert msg == GmailNotification(account="a@x.com", history_id="1234567890")


@pytest.mark.parametrize("history_id", ["-1", "12a", "", True, 1.5])
def test_a_gmail_history_id_that_is_not_a_number_is_a_permanent_error(history_id: object) -> None:
    with pytest.raises(PermanentError, match=re.escape("malformed gmail.notification")):
        decode("gmail.notification", json.dumps({"account": "a@x.com", "history_id": history_id}).encode())


def test_a_continuation_gives_back_the_message_it_was_made_of() -> None:
    msg = AutomationImported(automation_run_id="ar_7")
    then = continuation(msg)
    assert then == {"kind": "automation.imported", "payload": {"automation_run_id": "ar_7"}}
    assert from_continuation(json.loads(json.dumps(then))) == msg


@pytest.mark.parametrize("then", [{}, {"kind": "automation.imported"}, {"kind": 3, "payload": {}}])
def test_a_malformed_continuation_is_a_permanent_error(then: dict[str, object]) -> None:
    with pytest.raises(PermanentError):
        from_continuation(then)
