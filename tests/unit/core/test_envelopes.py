"""Decoding Pub/Sub push envelopes and Cloud Storage notifications."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from common.core.envelopes import PubSubMessage, decode_push, normalise
from common.core.errors import PermanentError
from common.core.messages import BlobFinalized, decode

# tests/unit/core/<this file> -> parents[3] is the repository root; fixtures live in its sibling ``shared/``.
FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "pubsub"


def _fixture(name: str) -> dict[str, Any]:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"shared fixture {path} is absent (expected beside the repository, in ../shared)")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@pytest.fixture
def gmail_push() -> dict[str, Any]:
    return _fixture("gmail_push_envelope.doc_example.json")


@pytest.fixture
def full_push() -> dict[str, Any]:
    return _fixture("pubsub_push_envelope.full_form.json")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _push(message: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {"message": message, **body}


# -- decode_push on the real fixtures ---------------------------------------------


def test_gmail_push_example_decodes_its_camel_case_ids(gmail_push: dict[str, Any]) -> None:
    msg = decode_push(gmail_push)
    assert msg.message_id == "2070443601311540"
    assert msg.publish_time == "2021-02-26T19:13:55.749Z"
    assert msg.subscription == "projects/myproject/subscriptions/mysubscription"


def test_gmail_push_example_data_is_the_decoded_bytes(gmail_push: dict[str, Any]) -> None:
    # The Gmail guide's prose says 9876543210, but its base64 says 1234567890: the bytes win.
    assert json.loads(decode_push(gmail_push).data) == {"emailAddress": "user@example.com", "historyId": "1234567890"}


def test_envelope_without_attributes_or_delivery_attempt_defaults_them(gmail_push: dict[str, Any]) -> None:
    msg = decode_push(gmail_push)
    assert msg.attributes == {}
    assert msg.delivery_attempt == 1


def test_full_form_envelope_decodes_attributes_and_delivery_attempt(full_push: dict[str, Any]) -> None:
    msg = decode_push(full_push)
    assert msg.attributes == {"key": "value"}
    assert msg.delivery_attempt == 1
    assert msg.message_id == "2070443601311540"
    assert json.loads(msg.data)["historyId"] == "9876543210"


def test_snake_case_ids_and_times_are_read_when_camel_case_is_absent(full_push: dict[str, Any]) -> None:
    body = copy.deepcopy(full_push)
    del body["message"]["messageId"], body["message"]["publishTime"]
    msg = decode_push(body)
    assert msg.message_id == "2070443601311540"
    assert msg.publish_time == "2021-02-26T19:13:55.749Z"


# -- decode_push on crafted envelopes ---------------------------------------------


def test_a_snake_case_only_envelope_is_decoded() -> None:
    msg = decode_push(_push({"message_id": "m-snake", "publish_time": "2024-05-10T10:00:00Z"}, delivery_attempt=2))
    assert (msg.message_id, msg.publish_time, msg.delivery_attempt) == ("m-snake", "2024-05-10T10:00:00Z", 2)


@pytest.mark.parametrize("key", ["deliveryAttempt", "delivery_attempt"])
def test_delivery_attempt_is_read_in_either_spelling(key: str) -> None:
    assert decode_push(_push({"messageId": "m1"}, **{key: 5})).delivery_attempt == 5


def test_attribute_values_are_strings() -> None:
    msg = decode_push(_push({"messageId": "m1", "attributes": {"n": 3, "flag": True}}))
    assert msg.attributes == {"n": "3", "flag": "True"}


@pytest.mark.parametrize(
    "message", [{"messageId": "m1"}, {"messageId": "m1", "data": ""}, {"messageId": "m1", "data": None}]
)
def test_a_message_without_data_has_empty_bytes(message: dict[str, Any]) -> None:
    assert decode_push(_push(message)).data == b""


def test_data_is_base64_decoded() -> None:
    assert decode_push(_push({"messageId": "m1", "data": _b64(b'{"a": 1}')})).data == b'{"a": 1}'


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-message"),
        pytest.param({"message": "text"}, id="message-not-an-object"),
        pytest.param({"message": None}, id="message-null"),
        pytest.param(_push({}), id="no-message-id"),
        pytest.param(_push({"messageId": ""}), id="empty-message-id"),
        pytest.param(_push({"messageId": 42}), id="message-id-not-a-string"),
        pytest.param(_push({"messageId": "m1", "data": "!!not base64!!"}), id="bad-base64"),
        pytest.param(_push({"messageId": "m1", "data": "abc"}), id="bad-base64-padding"),
        pytest.param(_push({"messageId": "m1", "data": 12345}), id="data-not-a-string"),
        pytest.param(_push({"messageId": "m1", "attributes": ["a", "b"]}), id="attributes-not-an-object"),
    ],
)
def test_a_malformed_envelope_is_a_permanent_error(body: dict[str, Any]) -> None:
    with pytest.raises(PermanentError) as info:
        decode_push(body)
    assert info.value.code == "bad_envelope"


def test_a_non_numeric_delivery_attempt_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError):
        decode_push(_push({"messageId": "m1"}, deliveryAttempt="first"))


# -- normalise --------------------------------------------------------------------

GCS_OBJECT = {
    "kind": "storage#object",
    "id": "sluice-inbox/in/job-1/a.pdf/1715335200000000",
    "selfLink": "https://www.googleapis.com/storage/v1/b/sluice-inbox/o/in%2Fjob-1%2Fa.pdf",
    "name": "in/job-1/a.pdf",
    "bucket": "sluice-inbox",
    "generation": "1715335200000000",
    "metageneration": "1",
    "contentType": "application/pdf",
    "timeCreated": "2024-05-10T10:00:00.000Z",
    "updated": "2024-05-10T10:00:00.000Z",
    "storageClass": "STANDARD",
    "size": "48213",
    "md5Hash": "XrY7u+Ae7tCTyyK7j1rNww==",
    "crc32c": "yZRlqg==",
    "etag": "CJDn0uSmsIYDEAE=",
    "metadata": {"job_id": "job-1", "owner": "alice"},
}

GCS_ATTRIBUTES = {
    "notificationConfig": "projects/_/buckets/sluice-inbox/notificationConfigs/1",
    "eventType": "OBJECT_FINALIZE",
    "payloadFormat": "JSON_API_V1",
    "bucketId": "sluice-inbox",
    "objectId": "in/job-1/a.pdf",
    "objectGeneration": "1715335200000000",
    "eventTime": "2024-05-10T10:00:00.123456Z",
}


def _gcs_message(obj: Any = GCS_OBJECT, **attributes: str) -> PubSubMessage:
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return PubSubMessage(
        data=data,
        attributes={**GCS_ATTRIBUTES, **attributes},
        message_id="9001",
        publish_time="2024-05-10T10:00:00.2Z",
        delivery_attempt=1,
        subscription="projects/p/subscriptions/blob-finalized",
    )


def test_gcs_finalize_notification_becomes_a_blob_finalized_message() -> None:
    data, attrs = normalise(_gcs_message())
    assert attrs["kind"] == "blob.finalized"
    assert decode(attrs["kind"], data) == BlobFinalized(
        bucket="sluice-inbox",
        name="in/job-1/a.pdf",
        size=48213,
        content_type="application/pdf",
        generation="1715335200000000",
        metadata={"job_id": "job-1", "owner": "alice"},
    )


def test_gcs_finalize_keeps_the_notification_attributes() -> None:
    _, attrs = normalise(_gcs_message())
    assert attrs == {**GCS_ATTRIBUTES, "kind": "blob.finalized"}


def test_gcs_finalize_falls_back_to_attributes_for_bucket_name_and_generation() -> None:
    obj = {"contentType": "application/pdf"}
    data, attrs = normalise(_gcs_message(obj))
    msg = decode(attrs["kind"], data)
    assert isinstance(msg, BlobFinalized)
    assert (msg.bucket, msg.name, msg.generation) == ("sluice-inbox", "in/job-1/a.pdf", "1715335200000000")


def test_gcs_finalize_without_size_or_metadata_leaves_them_empty() -> None:
    obj = {"bucket": "b", "name": "n"}
    data, attrs = normalise(_gcs_message(obj))
    msg = decode(attrs["kind"], data)
    assert isinstance(msg, BlobFinalized)
    assert (msg.size, msg.content_type, msg.metadata) == (None, None, {})


@pytest.mark.parametrize("event", ["OBJECT_DELETE", "OBJECT_ARCHIVE", "OBJECT_METADATA_UPDATE"])
def test_other_storage_events_are_rejected_permanently(event: str) -> None:
    with pytest.raises(PermanentError, match=event) as info:
        normalise(_gcs_message(eventType=event))
    assert info.value.code == "unhandled_event"


def test_a_finalize_notification_without_payload_is_read_from_its_attributes() -> None:
    data, attrs = normalise(_gcs_message(b""))
    finalized = decode(attrs["kind"], data)
    assert isinstance(finalized, BlobFinalized)
    assert (finalized.bucket, finalized.name) == (GCS_ATTRIBUTES["bucketId"], GCS_ATTRIBUTES["objectId"])


@pytest.mark.parametrize("data", [b"not json", b'{"bucket": '])
def test_a_finalize_notification_whose_data_is_not_json_is_rejected_permanently(data: bytes) -> None:
    with pytest.raises(PermanentError) as info:
        normalise(_gcs_message(data))
    assert info.value.code == "bad_envelope"


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(b"[]", id="json-array"),
        pytest.param(b'"text"', id="json-string"),
        pytest.param({"bucket": "b", "name": "n", "size": "big"}, id="non-numeric-size"),
        pytest.param({"bucket": "b", "name": "n", "metadata": ["a"]}, id="metadata-not-an-object"),
    ],
)
def test_a_finalize_notification_with_a_malformed_object_is_rejected_permanently(obj: Any) -> None:
    with pytest.raises(PermanentError):
        normalise(_gcs_message(obj))


def test_a_sluice_message_passes_through_unchanged() -> None:
    msg = PubSubMessage(
        data=b'{"task_id": "t", "run_id": "r", "job_id": "j"}',
        attributes={"kind": "task.extract", "trace": "abc"},
        message_id="m1",
        publish_time=None,
        delivery_attempt=2,
        subscription=None,
    )
    assert normalise(msg) == (msg.data, msg.attributes)


def test_a_message_with_a_kind_is_not_treated_as_a_storage_event() -> None:
    msg = _gcs_message(b"{}", kind="cleanup.sweep", eventType="OBJECT_DELETE")
    assert normalise(msg) == (b"{}", msg.attributes)


def test_a_gmail_push_becomes_a_gmail_notification(gmail_push: dict[str, Any]) -> None:
    data, attrs = normalise(decode_push(gmail_push))
    assert attrs == {"kind": "gmail.notification"}
    assert json.loads(data) == {"account": "user@example.com", "history_id": "1234567890"}


def test_kindless_data_that_is_not_a_gmail_push_passes_through() -> None:
    msg = PubSubMessage(
        data=b'{"hello": "world"}',
        attributes={},
        message_id="m1",
        publish_time=None,
        delivery_attempt=1,
        subscription=None,
    )
    assert normalise(msg) == (msg.data, {})
