"""The blob store port, as a specification (embedded backend; the Cloud
Storage adapter runs the same suite on fake-gcs-server, and its error
contract against a server that fails on purpose).

The error contract: a missing object is BlobNotFound (permanent); a store
that cannot serve the request now is BlobUnavailable (retryable, classified,
with the server's delay); the caller's own stream failing is its own error.
Each module gives an ``outage`` fixture: a store whose backend fails, and the
classification that failure must get.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from common.adapters.local.clock import ManualClock
from common.adapters.local.fs_blobs import FsBlobStore
from common.core.errors import (
    BlobNotFound,
    BlobUnavailable,
    ErrorKind,
    PermanentError,
    PreconditionFailed,
    RetryableError,
    SluiceError,
)
from common.ports.blobs import BlobInfo, BlobStore


@dataclass(frozen=True)
class Outage:
    """A store whose backend fails every request, and how the failure must be classified."""

    blobs: BlobStore
    uri: str  # an object that exists (as far as the backend would say)
    kind: ErrorKind
    retry_after: float | None = None


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def blobs(tmp_path: Path, clock: ManualClock) -> FsBlobStore:
    return FsBlobStore(tmp_path / "blobs", clock=clock, durable=False)


def test_bytes_round_trip_with_type_and_metadata(blobs: FsBlobStore) -> None:
    uri = blobs.uri("uploads", "jobs/j1/a.pdf")
    info = blobs.put_bytes(uri, b"%PDF", content_type="application/pdf", metadata={"job_id": "j1"})
    assert blobs.get_bytes(uri) == b"%PDF"
    stat = blobs.stat(uri)
    assert stat is not None
    assert (stat.size, stat.content_type, stat.metadata, stat.generation) == (
        4,
        "application/pdf",
        {"job_id": "j1"},
        info.generation,
    )


def test_a_stream_is_written_in_chunks(blobs: FsBlobStore) -> None:
    reads: list[int] = []

    class Counting(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            reads.append(n if n is not None else -1)
            return super().read(n)

    data = bytes(range(256)) * 4096  # 1 MiB
    src = Counting(data)
    uri = blobs.uri("uploads", "big.bin")
    blobs.put_stream(uri, src, chunk_size=64 * 1024)
    assert blobs.get_bytes(uri) == data
    assert max(reads) == 64 * 1024, "never asked for more than a chunk"


def test_a_missing_object_has_no_stat_and_cannot_be_opened(blobs: FsBlobStore) -> None:
    uri = blobs.uri("uploads", "nope")
    assert blobs.stat(uri) is None
    assert blobs.delete(uri) is False
    with pytest.raises(BlobNotFound) as got:
        blobs.get_bytes(uri)
    assert isinstance(got.value, PermanentError) and got.value.code == "blob_not_found"
    with pytest.raises(BlobNotFound):
        blobs.open(uri)


def test_max_bytes_refuses_a_larger_object(blobs: FsBlobStore) -> None:
    uri = blobs.uri("uploads", "x")
    blobs.put_bytes(uri, b"12345")
    assert blobs.get_bytes(uri, max_bytes=5) == b"12345"
    with pytest.raises(ValueError, match="larger than 4 bytes"):
        blobs.get_bytes(uri, max_bytes=4)


def test_generation_zero_means_create_only(blobs: FsBlobStore) -> None:
    uri = blobs.uri("exports", "once.csv")
    first = blobs.put_bytes(uri, b"a", if_generation="0")
    with pytest.raises(PreconditionFailed):
        blobs.put_bytes(uri, b"b", if_generation="0")
    blobs.put_bytes(uri, b"c", if_generation=first.generation)
    assert blobs.get_bytes(uri) == b"c"


def test_delete_and_list(blobs: FsBlobStore) -> None:
    for name in ("runs/r1/a.csv", "runs/r1/b.xlsx", "runs/r2/c.csv"):
        blobs.put_bytes(blobs.uri("exports", name), b"x")
    assert [i.name for i in blobs.list("exports", "runs/r1/")] == ["runs/r1/a.csv", "runs/r1/b.xlsx"]
    assert blobs.delete(blobs.uri("exports", "runs/r1/a.csv")) is True
    assert blobs.delete(blobs.uri("exports", "runs/r1/a.csv")) is False
    assert [i.name for i in blobs.list("exports")] == ["runs/r1/b.xlsx", "runs/r2/c.csv"]


def test_a_failed_write_leaves_the_old_object_whole(blobs: FsBlobStore) -> None:
    uri = blobs.uri("uploads", "doc.pdf")
    blobs.put_bytes(uri, b"old version")

    class Exploding(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            if self.tell() > 0:
                raise OSError("connection reset")
            return super().read(4)

    with pytest.raises(OSError, match="connection reset") as got:
        blobs.put_stream(uri, Exploding(b"new version, longer"), chunk_size=4)
    assert not isinstance(got.value, SluiceError), "the source's failure is its own, not the store's"
    assert blobs.get_bytes(uri) == b"old version"
    assert [i.name for i in blobs.list("uploads")] == ["doc.pdf"], "no temp file left visible"


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/../../b", "a//b", "a\\b"])
def test_unsafe_object_names_are_refused(blobs: FsBlobStore, name: str) -> None:
    with pytest.raises(ValueError):
        blobs.uri("uploads", name)


def test_another_backends_uri_is_refused_not_guessed(blobs: FsBlobStore) -> None:
    with pytest.raises(ValueError, match="not a local://"):
        blobs.get_bytes("gs://bucket/object")


def test_writes_to_a_bucket_with_a_hook_announce_themselves(blobs: FsBlobStore) -> None:
    seen: list[BlobInfo] = []
    blobs.on_finalize("uploads", seen.append)
    blobs.put_bytes(blobs.uri("uploads", "a.pdf"), b"x")
    blobs.put_bytes(blobs.uri("exports", "b.csv"), b"x")
    assert [(i.bucket, i.name, i.size) for i in seen] == [("uploads", "a.pdf", 1)]


def test_a_forged_signature_with_odd_characters_is_refused_not_an_error(blobs: FsBlobStore) -> None:
    assert not blobs.verify_signature("GET", "exports", "a.csv", 2**40, "ß")
    assert not blobs.verify_signature("GET", "exports", "a.csv", 2**40, "")


def test_signed_urls_verify_until_they_expire(blobs: FsBlobStore, clock: ManualClock) -> None:
    url = blobs.signed_url(blobs.uri("exports", "runs/r1/a.csv"), expires=timedelta(days=7))
    q = parse_qs(urlparse(url).query)
    exp, sig = int(q["expires"][0]), q["signature"][0]
    assert urlparse(url).path == "/v1/blobs/exports/runs/r1/a.csv"
    assert blobs.verify_signature("GET", "exports", "runs/r1/a.csv", exp, sig)
    assert not blobs.verify_signature("GET", "exports", "runs/r1/other.csv", exp, sig)
    assert not blobs.verify_signature("PUT", "exports", "runs/r1/a.csv", exp, sig)
    clock.advance(7 * 24 * 3600 + 1)
    assert not blobs.verify_signature("GET", "exports", "runs/r1/a.csv", exp, sig)


# -- the error contract: a store that cannot serve the request now ------------------


def _assert_retryable(outage: Outage, call: Callable[[], object]) -> None:
    with pytest.raises(BlobUnavailable) as got:
        call()
    err = got.value
    assert isinstance(err, RetryableError) and not isinstance(err, PermanentError)
    assert (err.kind, err.retry_after) == (outage.kind, outage.retry_after)
    assert outage.uri in err.message


def test_reading_during_an_outage_is_retryable(outage: Outage) -> None:
    _assert_retryable(outage, lambda: outage.blobs.get_bytes(outage.uri))


def test_opening_during_an_outage_is_retryable(outage: Outage) -> None:
    def read_all() -> bytes:
        with outage.blobs.open(outage.uri) as f:
            return f.read()

    _assert_retryable(outage, read_all)


def test_stat_during_an_outage_is_retryable_not_absent(outage: Outage) -> None:
    _assert_retryable(outage, lambda: outage.blobs.stat(outage.uri))


def test_writing_during_an_outage_is_retryable(outage: Outage) -> None:
    _assert_retryable(outage, lambda: outage.blobs.put_bytes(outage.uri, b"new"))


def test_streaming_during_an_outage_is_retryable(outage: Outage) -> None:
    _assert_retryable(outage, lambda: outage.blobs.put_stream(outage.uri, io.BytesIO(b"new" * 1000), chunk_size=64))


def test_deleting_during_an_outage_is_retryable(outage: Outage) -> None:
    _assert_retryable(outage, lambda: outage.blobs.delete(outage.uri))


@pytest.fixture
def outage(tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> Outage:
    """The local store on a disk that answers EIO (the OS calls it makes fail under its root)."""
    root = tmp_path / "failing-disk"
    blobs = FsBlobStore(root, clock=clock, durable=False)
    uri = blobs.uri("uploads", "doc.pdf")
    blobs.put_bytes(uri, b"%PDF")

    def failing(real: Callable[..., object]) -> Callable[..., object]:
        def call(target: object, *args: object, **kwargs: object) -> object:
            if str(target).startswith(str(root)):
                raise OSError(errno.EIO, os.strerror(errno.EIO), str(target))
            return real(target, *args, **kwargs)

        return call

    real_mkstemp = tempfile.mkstemp

    def mkstemp(dir: str | None = None, prefix: str | None = None) -> object:
        return failing(lambda d: real_mkstemp(dir=d, prefix=prefix))(dir)

    monkeypatch.setattr(Path, "open", failing(Path.open))
    monkeypatch.setattr(Path, "stat", failing(Path.stat))
    monkeypatch.setattr(Path, "unlink", failing(Path.unlink))
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return Outage(blobs, uri, ErrorKind.UNAVAILABLE)
