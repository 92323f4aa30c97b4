"""Decoding what Pub/Sub and Cloud Storage deliver, pure.

A Pub/Sub push (or an Eventarc CloudEvent's ``data``) wraps the message as
``{"message": {"data": base64, "attributes", "messageId", "publishTime"},
"subscription", "deliveryAttempt"}``; ids and times come in camelCase and/or
snake_case. A Cloud Storage notification is a Pub/Sub message whose
attributes say ``eventType=OBJECT_FINALIZE`` and whose data is the object's
JSON resource; it becomes Sluice's ``blob.finalized`` message. A Gmail watch
notification is a message with no attributes at all whose data is
``{"emailAddress", "historyId"}``; it becomes ``gmail.notification``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.core.errors import PermanentError
from common.core.messages import BlobFinalized, GmailNotification


@dataclass(frozen=True)
class PubSubMessage:
    data: bytes
    attributes: dict[str, str]
    message_id: str
    publish_time: str | None
    delivery_attempt: int
    subscription: str | None


def decode_push(body: Mapping[str, Any]) -> PubSubMessage:
    message = body.get("message")
    if not isinstance(message, Mapping):
        raise PermanentError("not a Pub/Sub push envelope: no 'message' object", code="bad_envelope")
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise PermanentError("Pub/Sub message has no messageId", code="bad_envelope")
    raw = message.get("data") or ""
    try:
        data = base64.b64decode(raw, validate=True) if raw else b""
    except (binascii.Error, ValueError, TypeError) as exc:
        raise PermanentError(f"Pub/Sub message data is not base64: {exc}", code="bad_envelope") from exc
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise PermanentError("Pub/Sub message attributes must be an object", code="bad_envelope")
    attempt = body.get("deliveryAttempt") or body.get("delivery_attempt") or 1
    if isinstance(attempt, bool) or not isinstance(attempt, int | str) or not str(attempt).isdigit():
        raise PermanentError(f"deliveryAttempt {attempt!r} is not a number", code="bad_envelope")
    return PubSubMessage(
        data=data,
        attributes={str(k): str(v) for k, v in attributes.items()},
        message_id=message_id,
        publish_time=message.get("publishTime") or message.get("publish_time"),
        delivery_attempt=int(attempt),
        subscription=body.get("subscription"),
    )


def normalise(msg: PubSubMessage) -> tuple[bytes, dict[str, str]]:
    """The (data, attributes) Sluice's dispatch expects: GCS notifications are
    turned into ``blob.finalized`` messages, Gmail watch pushes into
    ``gmail.notification``; Sluice's own messages pass as they are."""
    attrs = msg.attributes
    if "kind" in attrs:
        return msg.data, attrs
    if "eventType" not in attrs:
        return _gmail_push(msg.data, attrs)
    if attrs["eventType"] != "OBJECT_FINALIZE":
        raise PermanentError(f"storage event {attrs['eventType']} is not handled", code="unhandled_event")
    # A notification configured with payload NONE carries only attributes.
    obj: Any = {}
    if msg.data:
        try:
            obj = json.loads(msg.data)
        except ValueError as exc:
            raise PermanentError(f"storage notification is not JSON: {exc}", code="bad_envelope") from exc
    if not isinstance(obj, Mapping):
        raise PermanentError("storage notification data must be the object's JSON resource", code="bad_envelope")
    metadata = obj.get("metadata") or {}
    size = obj.get("size")
    if not isinstance(metadata, Mapping) or (size is not None and not str(size).isdigit()):
        raise PermanentError("storage notification has a malformed size or metadata", code="bad_envelope")
    name = str(obj.get("name") or attrs.get("objectId", ""))
    bucket = str(obj.get("bucket") or attrs.get("bucketId", ""))
    if not name or not bucket:
        raise PermanentError("storage notification names no bucket or object", code="bad_envelope")
    finalized = BlobFinalized(
        bucket=bucket,
        name=name,
        size=None if size is None else int(size),
        content_type=obj.get("contentType"),
        generation=str(obj.get("generation") or attrs.get("objectGeneration") or "") or None,
        metadata={str(k): str(v) for k, v in metadata.items()},
    )
    return finalized.encode(), {**attrs, "kind": BlobFinalized.kind}


def _gmail_push(data: bytes, attrs: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """A Gmail push as ``gmail.notification``; anything else without a kind passes as it is
    (dispatch then refuses the unknown kind)."""
    try:
        obj: Any = json.loads(data) if data else None
    except ValueError:
        return data, attrs
    if not isinstance(obj, Mapping) or "emailAddress" not in obj or "historyId" not in obj:
        return data, attrs
    try:
        notification = GmailNotification(account=str(obj["emailAddress"]), history_id=obj["historyId"])
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise PermanentError(f"malformed Gmail notification: {exc}", code="bad_envelope") from exc
    return notification.encode(), {**attrs, "kind": GmailNotification.kind}
