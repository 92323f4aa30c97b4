"""Gmail imports through the real google-api-python-client.

The client is built from the discovery document the library ships, so request
URLs and parameters are checked against it; HTTP answers come from the
library's own ``HttpMockSequence`` (one canned answer per request, in order),
or, where redelivery makes the order unpredictable, from :class:`RoutedHttp`,
which answers by path through ``HttpMockSequence`` too. The GoogleAuth port is
a tiny test implementation handing out that http. Nothing inside Sluice is mocked.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from googleapiclient.http import HttpMockSequence

from common.adapters.gcp.gcs_blobs import GcsBlobStore
from common.adapters.google.gmail import GmailConnector
from common.adapters.local.sqlite_store import SqliteStore
from common.bootstrap import STORE_INDEXES
from common.core.errors import ReconnectRequired
from common.core.messages import GmailItem, ImportGmailMessage
from common.core.models import FileType, Job, Operation, SourceFile, SourceType
from common.core.states import FileStatus, OperationStatus
from common.imports import ImportOutcome
from common.ports.google import GMAIL_READONLY
from common.service import gmail_import, jobs, repo
from common.service.context import Context
from common.service.gmail_import import ITEMS, file_id_for, start_gmail_import
from tests.fakes.gcs_faults import FaultyStorage
from tests.support import DuplicatingRuntime, Pipeline, make_pipeline

ACCOUNT = "alice@example.com"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
MESSAGES = "/gmail/v1/users/me/messages"

Answer = tuple[dict[str, str], bytes]


# -- Gmail answers ----------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def ok(body: dict[str, Any]) -> Answer:
    return {"status": "200", "content-type": "application/json; charset=UTF-8"}, json.dumps(body).encode()


def error(status: int, reason: str, **headers: str) -> Answer:
    body = {"error": {"code": status, "message": reason, "errors": [{"reason": reason, "message": reason}]}}
    return {"status": str(status), "content-type": "application/json", **headers}, json.dumps(body).encode()


def part(
    part_id: str, filename: str, mime: str, *, attachment_id: str | None = None, data: bytes | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"size": len(data) if data is not None else 1234}
    if attachment_id is not None:
        body["attachmentId"] = attachment_id
    if data is not None:
        body["data"] = b64url(data)
    return {"partId": part_id, "mimeType": mime, "filename": filename, "headers": [], "body": body}


def message(message_id: str, *parts: dict[str, Any]) -> Answer:
    """A ``format=full`` message: a text body, then the given parts, in a multipart/mixed."""
    text = {"partId": "0", "mimeType": "text/plain", "filename": "", "body": {"size": 5, "data": b64url(b"hello")}}
    payload = {
        "partId": "",
        "mimeType": "multipart/mixed",
        "filename": "",
        "headers": [{"name": "Subject", "value": "invoices"}],
        "body": {"size": 0},
        "parts": [text, *parts],
    }
    return ok({"id": message_id, "threadId": "t-" + message_id, "payload": payload})


def attachment(data: bytes) -> Answer:
    return ok({"size": len(data), "data": b64url(data)})


def zip_of(entries: Sequence[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries:
            zf.writestr(name, content)
    return buf.getvalue()


# -- the test side of the GoogleAuth port and the http ----------------------------


class TinyAuth:
    """The GoogleAuth port for tests: hands out one http and remembers who asked."""

    def __init__(self, http: Any) -> None:
        self.http = http
        self.calls: list[tuple[str, tuple[str, ...], str | None]] = []

    def authorized_http(self, owner: str, scopes: Sequence[str], *, account: str | None = None) -> Any:
        self.calls.append((owner, tuple(scopes), account))
        return self.http


class RevokedAuth:
    def authorized_http(self, owner: str, scopes: Sequence[str], *, account: str | None = None) -> Any:
        raise ReconnectRequired(f"the Google grant of {account} was revoked")


class RoutedHttp:
    """Answers by request path, each through ``HttpMockSequence``: a path's answers
    are given in turn and its last one repeats. Every request is recorded."""

    def __init__(self, routes: dict[str, list[Answer] | Callable[[], Answer]]) -> None:
        self.routes = routes
        self.request_sequence: list[tuple[str, str]] = []

    def request(self, uri: str, method: str = "GET", body: Any = None, headers: Any = None, **kw: Any) -> Any:
        self.request_sequence.append((uri, method))
        route = self.routes[urlparse(uri).path]
        return HttpMockSequence([self._next(route)]).request(uri, method, body, headers)

    @staticmethod
    def _next(route: list[Answer] | Callable[[], Answer]) -> Answer:
        if callable(route):
            return route()
        return route.pop(0) if len(route) > 1 else route[0]

    def count(self, path: str) -> int:
        return sum(1 for uri, _ in self.request_sequence if urlparse(uri).path == path)


def with_gmail(p: Pipeline, auth: Any) -> None:
    # The composition root will set Deps.gmail; until then tests put it there.
    p.deps.gmail = GmailConnector(auth)


def start(p: Pipeline, job: Job, *message_ids: str) -> Operation:
    items = [GmailItem(message_id=m) for m in message_ids]
    return start_gmail_import(p.deps, p.sender, job, "alice", ACCOUNT, items)


def gmail_files(p: Pipeline, job: Job) -> dict[str, SourceFile]:
    return {f.external_id: f for f in p.files(job.id) if f.source_type is SourceType.GMAIL}


def operation(p: Pipeline, op: Operation) -> Operation:
    return repo.require(p.deps.store, Operation, op.id)[0]


def paths(requests: Sequence[tuple[Any, ...]]) -> list[str]:
    return [urlparse(r[0]).path for r in requests]


# -- tests ------------------------------------------------------------------------


def test_a_pdf_attachment_becomes_an_uploaded_gmail_file(pipeline: Pipeline) -> None:
    http = HttpMockSequence(
        [
            message("m1", part("1", "invoice 7.pdf", "application/octet-stream", attachment_id="ANGjdJ-1")),
            attachment(PDF),
        ]
    )
    auth = TinyAuth(http)
    with_gmail(pipeline, auth)
    job = pipeline.job()
    op = start(pipeline, job, "m1")
    pipeline.drain()

    (f,) = gmail_files(pipeline, job).values()
    assert f.external_id == "m1:1"
    assert f.id == file_id_for(job.id, "m1:1")
    assert (f.status, f.file_type, f.name) == (FileStatus.UPLOADED, FileType.DOCUMENT, "invoice 7.pdf")
    assert f.mime_type == "application/pdf"  # from the bytes, not the declared octet-stream
    assert f.blob_uri is not None and pipeline.deps.blobs.get_bytes(f.blob_uri) == PDF
    assert f.blob_uri.endswith(f"uploads/jobs/{job.id}/files/{f.id}/invoice_7.pdf")
    # The requests the discovery document made of the calls.
    get_msg, get_att = http.request_sequence
    assert urlparse(get_msg[0]).path == f"{MESSAGES}/m1"
    assert parse_qs(urlparse(get_msg[0]).query)["format"] == ["full"]
    assert urlparse(get_att[0]).path == f"{MESSAGES}/m1/attachments/ANGjdJ-1"
    assert auth.calls == [("alice", (GMAIL_READONLY,), ACCOUNT)]
    done = operation(pipeline, op)
    assert (done.status, done.done, done.failed, done.total) == (OperationStatus.DONE, 1, 0, 1)
    assert "1 files imported" in done.message


def test_a_small_inline_attachment_needs_no_attachment_request(pipeline: Pipeline) -> None:
    http = HttpMockSequence([message("m1", part("1", "note.pdf", "application/pdf", data=PDF))])
    with_gmail(pipeline, TinyAuth(http))
    job = pipeline.job()
    start(pipeline, job, "m1")
    pipeline.drain()
    (f,) = gmail_files(pipeline, job).values()
    assert f.blob_uri is not None and pipeline.deps.blobs.get_bytes(f.blob_uri) == PDF
    assert paths(http.request_sequence) == [f"{MESSAGES}/m1"]


def test_a_zip_attachment_is_kept_as_an_archive_and_its_members_imported(pipeline: Pipeline) -> None:
    archive = zip_of([("2024/a.pdf", PDF), ("b.pdf", PDF + b"%b"), ("../evil.pdf", PDF)])
    http = HttpMockSequence(
        [message("m1", part("2", "invoices.zip", "application/zip", attachment_id="ATT-zip")), attachment(archive)]
    )
    with_gmail(pipeline, TinyAuth(http))
    job = pipeline.job()
    op = start(pipeline, job, "m1")
    pipeline.drain()

    files = gmail_files(pipeline, job)
    zipped = files["m1:2"]
    assert (zipped.file_type, zipped.status, zipped.mime_type) == (
        FileType.ARCHIVE,
        FileStatus.UPLOADED,
        "application/zip",
    )
    a, b, evil = files["m1:2/2024/a.pdf"], files["m1:2/b.pdf"], files["m1:2/../evil.pdf"]
    assert {a.parent_id, b.parent_id, evil.parent_id} == {zipped.id}
    assert (a.status, a.name, a.file_type) == (FileStatus.UPLOADED, "a.pdf", FileType.DOCUMENT)
    assert a.blob_uri is not None and pipeline.deps.blobs.get_bytes(a.blob_uri) == PDF
    assert evil.status is FileStatus.FAILED and evil.error is not None and evil.error["code"] == "unsafe_path"
    assert all(i.name.startswith(f"jobs/{job.id}/") for i in pipeline.deps.blobs.list("uploads"))
    done = operation(pipeline, op)
    assert done.status is OperationStatus.DONE
    assert "3 files imported (2 from archives)" in done.message and "1 rejected" in done.message


def test_redelivering_every_message_creates_no_duplicates(tmp_path: Any) -> None:
    p = make_pipeline(tmp_path, runtime_cls=DuplicatingRuntime)
    counter = {"n": 0}

    def fresh_ids(message_id: str, *parts: Callable[[str], dict[str, Any]]) -> Callable[[], Answer]:
        # Gmail hands out new attachment ids on every messages.get.
        def answer() -> Answer:
            counter["n"] += 1
            return message(message_id, *(make(f"ephemeral-{counter['n']}") for make in parts))

        return answer

    http = RoutedHttp(
        {
            f"{MESSAGES}/m1": fresh_ids("m1", lambda a: part("1", "one.pdf", "application/pdf", attachment_id=a)),
            f"{MESSAGES}/m2": fresh_ids(
                "m2",
                lambda a: part("1", "two.pdf", "application/pdf", attachment_id=a),
                lambda a: part("2", "more.zip", "application/zip", attachment_id=a + "z"),
            ),
            **{f"{MESSAGES}/m1/attachments/ephemeral-{n}": [attachment(PDF)] for n in range(1, 20)},
            **{f"{MESSAGES}/m2/attachments/ephemeral-{n}": [attachment(PDF + b"2")] for n in range(1, 20)},
            **{
                f"{MESSAGES}/m2/attachments/ephemeral-{n}z": [attachment(zip_of([("x.pdf", PDF), ("y.pdf", PDF)]))]
                for n in range(1, 20)
            },
        }
    )
    with_gmail(p, TinyAuth(http))
    job = p.job()
    op = start(p, job, "m1", "m2")
    p.drain(advance_clock=True)

    files = p.files(job.id)
    assert sorted(f.external_id for f in files) == ["m1:1", "m2:1", "m2:2", "m2:2/x.pdf", "m2:2/y.pdf"]
    assert all(f.status is FileStatus.UPLOADED for f in files)
    assert len({i.name for i in p.deps.blobs.list("uploads")}) == 5
    done = operation(p, op)
    assert (done.status, done.done, done.failed, done.total) == (OperationStatus.DONE, 2, 0, 2)
    assert "5 files imported (2 from archives)" in done.message
    assert p.deps.store.count(ITEMS) == 2


def test_importing_a_message_again_finds_its_files_though_gmail_changed_the_attachment_ids(
    pipeline: Pipeline,
) -> None:
    # Gmail's attachment ids are ephemeral: the second messages.get names the
    # same attachment differently. Files are identified by message and part.
    http = HttpMockSequence(
        [
            message("m1", part("1", "a.pdf", "application/pdf", attachment_id="first-id")),
            attachment(PDF),
            message("m1", part("1", "a.pdf", "application/pdf", attachment_id="second-id")),
        ]
    )
    with_gmail(pipeline, TinyAuth(http))
    job = pipeline.job()
    start(pipeline, job, "m1")
    pipeline.drain()
    again = start(pipeline, job, "m1")
    pipeline.drain()

    assert list(gmail_files(pipeline, job)) == ["m1:1"]
    assert paths(http.request_sequence).count(f"{MESSAGES}/m1/attachments/second-id") == 0  # not downloaded again
    assert "0 files imported (0 from archives), 1 already there" in operation(pipeline, again).message


def test_a_429_is_retried_after_the_servers_delay_then_imports(pipeline: Pipeline) -> None:
    http = HttpMockSequence(
        [
            error(429, "rateLimitExceeded", **{"retry-after": "7"}),
            message("m1", part("1", "late.pdf", "application/pdf", attachment_id="A1")),
            attachment(PDF),
        ]
    )
    with_gmail(pipeline, TinyAuth(http))
    job = pipeline.job()
    op = start(pipeline, job, "m1")
    t0 = pipeline.clock.now()
    pipeline.drain()
    assert gmail_files(pipeline, job) == {}  # waiting out the server's delay

    pipeline.drain(advance_clock=True)
    assert pipeline.clock.now() - t0 >= timedelta(seconds=7)
    (f,) = gmail_files(pipeline, job).values()
    assert f.status is FileStatus.UPLOADED
    assert operation(pipeline, op).status is OperationStatus.DONE
    # The 429 stamped the account's slowdown for every instance.
    stamp = pipeline.deps.store.get("ratelimits", f"gmail:{ACCOUNT}:slowdown")
    assert stamp is not None and stamp.data["slow_until"] > t0.timestamp()


@pytest.mark.parametrize("fault", ["503", "reset"])
def test_a_storage_outage_while_storing_an_attachment_is_retried_by_the_policy(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """Cloud Storage failing the write is a classified, retryable failure: the
    policy retries the message (no crash, no traceback), then it imports."""
    one_round = [message("m1", part("1", "a.pdf", "application/pdf", attachment_id="A1")), attachment(PDF)]
    with_gmail(pipeline, TinyAuth(HttpMockSequence(one_round * 2)))
    job = pipeline.job()
    local = pipeline.deps.blobs
    with FaultyStorage() as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        gcs.default = fault
        pipeline.deps.blobs = GcsBlobStore("p", retry_timeout_s=0)
        op = start(pipeline, job, "m1")
        with caplog.at_level(logging.INFO):
            pipeline.drain()  # no clock jump: the retry waits for its delay
        assert any("/upload/" in path for _, path in gcs.requests), "the write reached Cloud Storage"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "gmail message will be retried",
        "retryable failure; the message will be redelivered",
    ]
    assert all(r.exc_info is None for r in caplog.records), "a classified failure, not a crash"
    assert operation(pipeline, op).failed == 0

    pipeline.deps.blobs = local  # Cloud Storage is back
    pipeline.drain(advance_clock=True)
    (f,) = gmail_files(pipeline, job).values()
    assert f.status is FileStatus.UPLOADED and pipeline.deps.blobs.get_bytes(f.blob_uri or "") == PDF
    assert operation(pipeline, op).status is OperationStatus.DONE


def test_a_missing_message_is_recorded_as_failed_and_the_others_import(pipeline: Pipeline) -> None:
    http = RoutedHttp(
        {
            f"{MESSAGES}/gone": [error(404, "notFound")],
            f"{MESSAGES}/m2": [message("m2", part("1", "fine.pdf", "application/pdf", attachment_id="A2"))],
            f"{MESSAGES}/m2/attachments/A2": [attachment(PDF)],
        }
    )
    with_gmail(pipeline, TinyAuth(http))
    job = pipeline.job()
    op = start(pipeline, job, "gone", "m2")
    pipeline.drain(advance_clock=True)

    assert list(gmail_files(pipeline, job)) == ["m2:1"]
    assert http.count(f"{MESSAGES}/gone") == 1  # permanent: not retried
    done = operation(pipeline, op)
    assert (done.status, done.done, done.failed) == (OperationStatus.DONE, 1, 1)
    (failed,) = [s.data for s in pipeline.deps.store.query(ITEMS).items if s.data["status"] == "failed"]
    assert failed["message_id"] == "gone"
    assert failed["error"]["code"] == "gmail_not_found"


def test_a_revoked_grant_fails_the_import_with_reconnect_required(pipeline: Pipeline) -> None:
    with_gmail(pipeline, RevokedAuth())
    job = pipeline.job()
    op = start(pipeline, job, "m1")
    pipeline.drain(advance_clock=True)
    done = operation(pipeline, op)
    assert (done.status, done.failed) == (OperationStatus.FAILED, 1)
    assert done.error is not None and done.error["code"] == "reconnect_required"


def test_a_server_error_is_retried_by_the_policy(pipeline: Pipeline) -> None:
    http = HttpMockSequence(
        [
            error(500, "backendError"),
            message("m1", part("1", "a.pdf", "application/pdf", attachment_id="A1")),
            attachment(PDF),
        ]
    )
    with_gmail(pipeline, TinyAuth(http))
    job = pipeline.job()
    t0 = pipeline.clock.now()
    start(pipeline, job, "m1")
    pipeline.drain(advance_clock=True)
    assert pipeline.clock.now() - t0 >= timedelta(seconds=15)  # the policy's first backoff
    assert list(gmail_files(pipeline, job)) == ["m1:1"]


def test_one_selected_attachment_is_imported_alone(pipeline: Pipeline) -> None:
    http = HttpMockSequence(
        [
            message(
                "m1",
                part("1", "skip.pdf", "application/pdf", attachment_id="A-skip"),
                part("2", "take.pdf", "application/pdf", attachment_id="A-take"),
            ),
            attachment(PDF),
        ]
    )
    with_gmail(pipeline, TinyAuth(http))
    job = pipeline.job()
    start_gmail_import(
        pipeline.deps, pipeline.sender, job, "alice", ACCOUNT, [GmailItem(message_id="m1", attachment_id="A-take")]
    )
    pipeline.drain()
    assert list(gmail_files(pipeline, job)) == ["m1:2"]
    assert paths(http.request_sequence)[-1] == f"{MESSAGES}/m1/attachments/A-take"


def test_starting_an_import_for_another_users_job_is_refused(pipeline: Pipeline) -> None:
    job = pipeline.job()
    from common.core.errors import NotFound

    with pytest.raises(NotFound):
        start_gmail_import(pipeline.deps, pipeline.sender, job, "mallory", ACCOUNT, [GmailItem(message_id="m1")])


def test_imported_gmail_files_run_through_extraction(pipeline: Pipeline) -> None:
    http = HttpMockSequence(
        [message("m1", part("1", "ok-1.pdf", "application/pdf", attachment_id="A1")), attachment(PDF)]
    )
    with_gmail(pipeline, TinyAuth(http))
    job = pipeline.job()
    start(pipeline, job, "m1")
    pipeline.drain()
    run = jobs.request_run(pipeline.deps, pipeline.sender, job)
    pipeline.drain(advance_clock=True)
    done = pipeline.run(run.id)
    assert (done.status.value, done.counters.completed, done.counters.total) == ("completed", 1, 1)


# -- no hot document: the limiter and the import's counts -----------------------------


class WriteCounter:
    """The pipeline's store, counting writes per document (transactions' writes included)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.writes: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def set(self, c: str, d: str, data: Any, **kw: Any) -> Any:
        self.writes[f"{c}/{d}"] += 1
        return self._inner.set(c, d, data, **kw)

    def create(self, c: str, d: str, data: Any) -> Any:
        self.writes[f"{c}/{d}"] += 1
        return self._inner.create(c, d, data)

    def update(self, c: str, d: str, changes: Any, **kw: Any) -> Any:
        self.writes[f"{c}/{d}"] += 1
        return self._inner.update(c, d, changes, **kw)

    def transaction(self, fn: Any, **kw: Any) -> Any:
        written: list[str] = []

        def counted(t: Any) -> Any:
            written.clear()
            outer = written

            class Tx:
                def get(self, c: str, d: str) -> Any:
                    return t.get(c, d)

                def set(self, c: str, d: str, data: Any) -> None:
                    outer.append(f"{c}/{d}")
                    t.set(c, d, data)

                def create(self, c: str, d: str, data: Any) -> None:
                    outer.append(f"{c}/{d}")
                    t.create(c, d, data)

                def delete(self, c: str, d: str) -> None:
                    outer.append(f"{c}/{d}")
                    t.delete(c, d)

            return fn(Tx())

        result = self._inner.transaction(counted, **kw)
        self.writes.update(written)
        return result


def test_a_large_import_writes_no_document_once_per_message(pipeline: Pipeline) -> None:
    n = 40  # 400 quota units: more than a second of the account's quota
    routes: dict[str, list[Answer] | Callable[[], Answer]] = {}
    for i in range(n):
        routes[f"{MESSAGES}/m{i}"] = [
            message(f"m{i}", part("1", f"i{i}.pdf", "application/pdf", attachment_id=f"A{i}"))
        ]
        routes[f"{MESSAGES}/m{i}/attachments/A{i}"] = [attachment(PDF)]
    http = RoutedHttp(routes)
    with_gmail(pipeline, TinyAuth(http))
    counter = WriteCounter(pipeline.deps.store)
    pipeline.deps.store = counter  # type: ignore[assignment]
    job = pipeline.job()
    op = start(pipeline, job, *(f"m{i}" for i in range(n)))
    t0 = pipeline.clock.now()
    # Time moves (four times faster than real time), as the limiter's leased
    # tokens come due over a second; calls it turns away come back later.
    stop = threading.Event()

    def move() -> None:
        while not stop.wait(0.005):
            pipeline.clock.advance(0.02)

    mover = threading.Thread(target=move)
    mover.start()
    try:
        pipeline.drain(advance_clock=True)
    finally:
        stop.set()
        mover.join()

    done = operation(pipeline, op)
    assert done.status is OperationStatus.DONE
    assert done.message.startswith(f"{n}/{n} messages: {n} files imported")
    seconds = (pipeline.clock.now() - t0).total_seconds()
    writes = counter.writes
    assert writes[f"gmail_imports/{op.id}"] <= 2, "the summary is written when the import starts and ends"
    assert writes[f"operations/{op.id}"] <= 3 + seconds, "created, started, progress once a second, finished"
    limiter = {d: k for d, k in writes.items() if d.startswith("ratelimits/")}
    assert max(limiter.values()) <= 2 + seconds, "no limiter document takes every call"
    assert sum(limiter.values()) <= n / 2, "the account's quota is leased in batches, not taken per call"


def test_twenty_items_settling_at_once_finish_the_import_once(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    n = 20
    job = pipeline.job()
    op = start(pipeline, job, *(f"m{i}" for i in range(n)))
    path = pipeline.deps.settings.data_dir / "state.db"
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def settle(i: int) -> None:
        # Each thread stands for an instance: its own store connection.
        deps = dataclasses.replace(pipeline.deps, store=SqliteStore(path, durable=False, indexes=STORE_INDEXES))
        ctx = Context(deps=deps, sender=pipeline.sender, message_id=f"msg-{i}")
        msg = ImportGmailMessage(job_id=job.id, operation_id=op.id, owner="alice", account=ACCOUNT, message_id=f"m{i}")
        barrier.wait()
        try:
            gmail_import._settle_item(
                ctx, msg, outcomes=[ImportOutcome(attachment=f"i{i}.pdf", member=None, status="imported")]
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    with caplog.at_level(logging.INFO, logger="common.service.gmail_import"):
        threads = [threading.Thread(target=settle, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    finished = [r for r in caplog.records if r.getMessage() == "gmail import finished"]
    assert len(finished) == 1, "exactly one item finished the import"
    done = operation(pipeline, op)
    assert done.status is OperationStatus.DONE and done.done == n
    summary = pipeline.deps.store.get(gmail_import.SUMMARIES, op.id)
    assert summary is not None and summary.data["done"] == n and summary.data["imported"] == n
