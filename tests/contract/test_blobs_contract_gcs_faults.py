"""The blob error contract on Cloud Storage, at the HTTP boundary: the real
google-cloud-storage client against a local server that answers 404, 429,
500, 503 or resets the connection (fake-gcs-server cannot fail on purpose).

The shared specification (``test_blobs_contract``) runs here with this
module's ``blobs`` (every object missing) and ``outage`` fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.adapters.gcp.gcs_blobs import GcsBlobStore
from common.core.errors import BlobAccessDenied, BlobUnavailable, ErrorKind
from tests.contract.test_blobs_contract import (
    Outage,
    test_a_missing_object_has_no_stat_and_cannot_be_opened,
    test_deleting_during_an_outage_is_retryable,
    test_opening_during_an_outage_is_retryable,
    test_reading_during_an_outage_is_retryable,
    test_stat_during_an_outage_is_retryable_not_absent,
    test_streaming_during_an_outage_is_retryable,
    test_writing_during_an_outage_is_retryable,
)
from tests.fakes.gcs_faults import CONTENT, RETRY_AFTER, FaultyStorage

pytestmark = pytest.mark.timeout(60)

__all__ = [  # run here against the failing server
    "test_a_missing_object_has_no_stat_and_cannot_be_opened",
    "test_deleting_during_an_outage_is_retryable",
    "test_opening_during_an_outage_is_retryable",
    "test_reading_during_an_outage_is_retryable",
    "test_stat_during_an_outage_is_retryable_not_absent",
    "test_streaming_during_an_outage_is_retryable",
    "test_writing_during_an_outage_is_retryable",
]

URI = "gs://uploads/doc.pdf"

FAULTS = {
    "503": (ErrorKind.UNAVAILABLE, float(RETRY_AFTER)),
    "429": (ErrorKind.RATE_LIMITED, float(RETRY_AFTER)),
    "500": (ErrorKind.SERVER, None),
    "reset": (ErrorKind.NETWORK, None),
}


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyStorage]:
    with FaultyStorage() as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        yield server


@pytest.fixture
def blobs(gcs: FaultyStorage) -> GcsBlobStore:
    # No retries inside the client: each request meets the scripted fault once.
    return GcsBlobStore("p", retry_timeout_s=0)


@pytest.fixture(params=list(FAULTS))
def outage(request: pytest.FixtureRequest, gcs: FaultyStorage, blobs: GcsBlobStore) -> Outage:
    gcs.default = request.param
    kind, delay = FAULTS[request.param]
    return Outage(blobs, URI, kind, delay)


@pytest.mark.parametrize("fault", ["503", "reset"])
def test_a_failure_in_the_middle_of_a_read_is_retryable(gcs: FaultyStorage, blobs: GcsBlobStore, fault: str) -> None:
    """The lookup succeeds, the download that follows fails."""
    gcs.default, gcs.media_only = fault, True
    with pytest.raises(BlobUnavailable):
        blobs.get_bytes(URI)
    with blobs.open(URI) as f, pytest.raises(BlobUnavailable):
        f.read()


def test_refused_credentials_are_permanent(gcs: FaultyStorage, blobs: GcsBlobStore) -> None:
    gcs.default = "403"
    with pytest.raises(BlobAccessDenied) as got:
        blobs.get_bytes(URI)
    assert got.value.kind is ErrorKind.AUTH


def test_one_blip_is_absorbed_by_the_clients_bounded_retry(gcs: FaultyStorage) -> None:
    """With the adapter's default retry, a single 503 costs no task attempt."""
    gcs.default = "ok"
    gcs.script.extend(["503", "ok", "503"])  # the first request fails, and the one after the next
    assert GcsBlobStore("p").get_bytes(URI) == CONTENT
    assert not gcs.script, "both 503s were met (and absorbed)"


def test_a_persistent_outage_ends_the_clients_retry_within_its_bound(gcs: FaultyStorage) -> None:
    gcs.default = "503"
    with pytest.raises(BlobUnavailable):
        GcsBlobStore("p", retry_timeout_s=0.5).get_bytes(URI)
    assert len(gcs.requests) >= 1
