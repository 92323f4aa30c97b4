"""The blob contract on Cloud Storage (fake-gcs-server), with the gaps named.

The behaviours shared by every backend are the functions of
``test_blobs_contract`` imported below: pytest runs them here with this
module's ``blobs`` fixture, the GCS adapter. Local-only behaviours (finalize
hooks, the local API's HMAC URLs) have cloud counterparts at the end.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from common.adapters.gcp.gcs_blobs import GcsBlobStore, gcs_chunk_size
from common.core.errors import PreconditionFailed
from tests.contract.test_blobs_contract import (
    test_a_failed_write_leaves_the_old_object_whole,
    test_a_missing_object_has_no_stat_and_cannot_be_opened,
    test_a_stream_is_written_in_chunks,
    test_bytes_round_trip_with_type_and_metadata,
    test_delete_and_list,
    test_generation_zero_means_create_only,
    test_max_bytes_refuses_a_larger_object,
    test_unsafe_object_names_are_refused,
)
from tests.emulators.harness import Emulators

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(60)]

__all__ = [  # run here against Cloud Storage
    "test_a_failed_write_leaves_the_old_object_whole",
    "test_a_missing_object_has_no_stat_and_cannot_be_opened",
    "test_a_stream_is_written_in_chunks",
    "test_bytes_round_trip_with_type_and_metadata",
    "test_delete_and_list",
    "test_generation_zero_means_create_only",
    "test_max_bytes_refuses_a_larger_object",
    "test_unsafe_object_names_are_refused",
]

BUCKETS = ("uploads", "exports")


@pytest.fixture
def blobs(emulators: Emulators) -> Iterator[GcsBlobStore]:
    store = GcsBlobStore(emulators.project)
    client = store.client
    for name in BUCKETS:
        bucket = client.bucket(name)
        if not bucket.exists():
            client.create_bucket(name)
        for blob in client.list_blobs(name):
            blob.delete()
    yield store


def test_another_backends_uri_is_refused_not_guessed(blobs: GcsBlobStore) -> None:
    with pytest.raises(ValueError, match="not a gs://"):
        blobs.get_bytes("local://bucket/object")


def test_a_stale_generation_is_refused(blobs: GcsBlobStore) -> None:
    uri = blobs.uri("exports", "x.csv")
    first = blobs.put_bytes(uri, b"1")
    blobs.put_bytes(uri, b"2")
    with pytest.raises(PreconditionFailed):
        blobs.put_bytes(uri, b"3", if_generation=first.generation)
    assert blobs.get_bytes(uri) == b"2"


def test_open_gives_a_seekable_reader(blobs: GcsBlobStore) -> None:
    uri = blobs.uri("uploads", "doc.bin")
    blobs.put_bytes(uri, bytes(range(256)) * 10)
    with blobs.open(uri) as f:
        assert f.seekable()
        f.seek(2550)
        assert f.read() == bytes(range(246, 256))
        f.seek(0)
        assert f.read(3) == b"\x00\x01\x02"


def test_stream_chunks_are_rounded_up_to_the_gcs_unit() -> None:
    assert gcs_chunk_size(1) == 256 * 1024
    assert gcs_chunk_size(256 * 1024) == 256 * 1024
    assert gcs_chunk_size(256 * 1024 + 1) == 512 * 1024


def test_finalize_events_reach_the_pubsub_topic(blobs: GcsBlobStore, emulators: Emulators) -> None:
    """The cloud counterpart of the local finalize hook: a GCS notification on Pub/Sub."""
    from google.cloud.pubsub_v1 import SubscriberClient

    client = blobs.client
    if not client.bucket(emulators.events_bucket).exists():
        client.create_bucket(emulators.events_bucket)
    subscriber = SubscriberClient()
    sub = subscriber.subscription_path(emulators.project, "finalize-check")
    topic = f"projects/{emulators.project}/topics/{emulators.events_topic}"
    with contextlib.suppress(Exception):  # exists from an earlier test of this session
        subscriber.create_subscription(name=sub, topic=topic)
    blobs.put_bytes(blobs.uri(emulators.events_bucket, "jobs/j1/a.pdf"), b"%PDF", content_type="application/pdf")
    blobs.put_bytes(blobs.uri("exports", "not-watched.csv"), b"x")
    got: list[Any] = []
    for _ in range(50):
        resp = subscriber.pull(subscription=sub, max_messages=10, timeout=5)
        got.extend(resp.received_messages)
        if resp.received_messages:
            subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in resp.received_messages])
            break
    assert len(got) == 1
    attrs = dict(got[0].message.attributes)
    assert attrs["eventType"] == "OBJECT_FINALIZE"
    assert (attrs["bucketId"], attrs["objectId"]) == (emulators.events_bucket, "jobs/j1/a.pdf")
    body = json.loads(got[0].message.data)
    assert (body["name"], int(body["size"])) == ("jobs/j1/a.pdf", 4)


def _service_account_key() -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "client_email": "signer@sluice-emulated.iam.gserviceaccount.com",
        "private_key": pem,
        "private_key_id": "test",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]


def test_v4_signed_url_with_a_key_downloads_the_object(emulators: Emulators, blobs: GcsBlobStore) -> None:
    """fake-gcs-server does not check signatures: this checks the URL's shape and route."""
    signer = GcsBlobStore(emulators.project, signing_credentials=_service_account_key())
    uri = blobs.uri("exports", "runs/r1/a.csv")
    blobs.put_bytes(uri, b"a,b\n1,2\n", content_type="text/csv")
    url = signer.signed_url(uri, expires=timedelta(hours=1))
    assert "X-Goog-Algorithm=GOOG4-RSA-SHA256" in url and "X-Goog-Signature=" in url
    assert "X-Goog-Expires=3600" in url
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"a,b\n1,2\n"


def test_without_a_private_key_signing_goes_through_iam_sign_blob(
    blobs: GcsBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No emulator serves IAM signBlob: the impersonated signer is checked with its call faked."""
    from google.auth import impersonated_credentials
    from google.oauth2 import credentials as user_credentials

    calls: list[bytes] = []

    def fake_sign(self: Any, message: bytes) -> bytes:
        calls.append(message)
        return b"signature"

    monkeypatch.setattr(impersonated_credentials.Credentials, "sign_bytes", fake_sign)
    token_only = user_credentials.Credentials(token="t")  # type: ignore[no-untyped-call]
    store = GcsBlobStore("p", signing_credentials=token_only, service_account_email="runtime@p.iam.gserviceaccount.com")
    url = store.signed_url("gs://exports/runs/r1/a.csv", expires=timedelta(minutes=5))
    assert len(calls) == 1 and b"GOOG4-RSA-SHA256" in calls[0]
    assert "X-Goog-Credential=runtime%40p.iam.gserviceaccount.com" in url
    assert f"X-Goog-Signature={base64.b16encode(b'signature').decode().lower()}" in url


def test_a_large_stream_never_buffers_more_than_a_gcs_chunk(blobs: GcsBlobStore) -> None:
    data = b"z" * (3 * 256 * 1024 + 17)
    uri = blobs.uri("uploads", "big.bin")
    info = blobs.put_stream(uri, io.BytesIO(data), chunk_size=100_000)
    assert info.size == len(data)
    assert blobs.get_bytes(uri) == data
