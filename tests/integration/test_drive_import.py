"""Drive imports end to end: the real google-api-python-client against a local fake Drive.

The fake (below) serves Drive v3's ``files.get`` (metadata and ``alt=media``
with Range requests), ``files.list`` (paged) and ``files.export`` over HTTP,
checks every request's bearer token with the fake token endpoint
(tests/fakes/google_oauth.py), and records what it was asked. Requests leave
the client for ``https://www.googleapis.com`` and are redirected to the fake
by the injected transport -- Sluice's code is not mocked anywhere. Time is a
ManualClock; ``drain(advance_clock=True)`` skips retry delays.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import pytest

from common.adapters.gcp.gcs_blobs import GcsBlobStore
from common.adapters.google import GoogleOAuth
from common.adapters.local.clock import ManualClock
from common.bootstrap import bootstrap, local_app
from common.config import Settings
from common.core.models import Integration, IntegrationStatus, Job, Operation, SourceFile, SourceType
from common.core.states import FileStatus, OperationStatus, TaskStatus
from common.ports.google import DRIVE_READONLY
from common.runtime.local import LocalRuntime
from common.service import drive_import, integrations, repo
from tests.fakes.gcs_faults import FaultyStorage
from tests.fakes.google_oauth import CLIENT_ID, CLIENT_SECRET, FakeTokenServer, plain_http, with_google
from tests.support import DuplicatingRuntime, Pipeline, ScriptedExtractor

GOOGLEAPIS = "https://www.googleapis.com"
DOC = "application/vnd.google-apps.document"
SHEET = "application/vnd.google-apps.spreadsheet"
FOLDER = "application/vnd.google-apps.folder"
MiB = 1024 * 1024
REFRESH_TOKEN = "1//alice"


# -- a fake Drive ---------------------------------------------------------------------


@dataclass
class DriveFile:
    id: str
    name: str
    mime: str
    parent: str | None = None
    content: bytes = b""
    export_too_large: bool = False

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"id": self.id, "name": self.name, "mimeType": self.mime}
        if not self.mime.startswith("application/vnd.google-apps."):
            meta["size"] = str(len(self.content))
            meta["md5Checksum"] = hashlib.md5(self.content).hexdigest()
        return meta


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    params: dict[str, str]
    range: str | None
    status: int
    at: datetime | None  # on the pipeline's manual clock


@dataclass
class FakeDrive:
    oauth: FakeTokenServer
    max_page_size: int = 100  # Drive may return fewer files than pageSize asks for
    files: dict[str, DriveFile] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    # Scripted failures per (operation, file id): a list of (status, reason, headers), used up in order.
    failures: dict[tuple[str, str], list[tuple[int, str, dict[str, str]]]] = field(default_factory=dict)
    clock: ManualClock | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def add(self, f: DriveFile) -> DriveFile:
        self.files[f.id] = f
        return f

    def fail(self, op: str, file_id: str, status: int, reason: str = "", times: int = 1, **headers: str) -> None:
        self.failures.setdefault((op, file_id), []).extend([(status, reason, headers)] * times)

    def seen(self, op: str, file_id: str | None = None) -> list[Seen]:
        kinds: dict[str, Callable[[Seen], bool]] = {
            "list": lambda s: s.path == "/drive/v3/files",
            "media": lambda s: s.params.get("alt") == "media",
            "export": lambda s: s.path.endswith("/export"),
            "get": lambda s: s.path != "/drive/v3/files" and s.params.get("alt") != "media" and "export" not in s.path,
        }
        return [s for s in self.requests if kinds[op](s) and (file_id is None or f"/files/{file_id}" in s.path)]

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                status, headers, body = fake._answer(url.path, params, self.headers)
                with fake._lock:
                    at = fake.clock.now() if fake.clock else None
                    fake.requests.append(Seen("GET", url.path, params, self.headers.get("range"), status, at))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str, params: dict[str, str], headers: Any) -> tuple[int, dict[str, str], bytes]:
        if not self.oauth.authorizes(headers.get("authorization"), DRIVE_READONLY):
            return _error(401, "authError", "Request had invalid authentication credentials.")
        if path == "/drive/v3/files":
            return self._list(params)
        m = re.fullmatch(r"/drive/v3/files/([^/]+)(/export)?", path)
        if m is None:
            return _error(404, "notFound", f"no route {path}")
        file_id, export = m.group(1), m.group(2)
        op = "export" if export else "media" if params.get("alt") == "media" else "get"
        with self._lock:
            script = self.failures.get((op, file_id))
            if script:
                status, reason, extra = script.pop(0)
                code, hdrs, body = _error(status, reason, f"scripted {status}")
                return code, {**hdrs, **extra}, body
        f = self.files.get(file_id)
        if f is None:
            return _error(404, "notFound", f"File not found: {file_id}.")
        assert params.get("supportsAllDrives") == "true" or export, "Drive requests must support shared drives"
        if export:
            assert params.get("mimeType") == "application/pdf"
            if f.export_too_large:
                return _error(403, "exportSizeLimitExceeded", "This file is too large to be exported.")
            return 200, {"content-type": "application/pdf"}, f"%PDF-1.4 export of {f.name}".encode()
        if op == "get":
            return 200, {"content-type": "application/json"}, json.dumps(f.meta()).encode()
        return self._media(f, headers.get("range"))

    def _list(self, params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        m = re.fullmatch(r"'(.+)' in parents and trashed=false", params["q"])
        assert m is not None, params["q"]
        assert params.get("supportsAllDrives") == "true" and params.get("includeItemsFromAllDrives") == "true"
        children = sorted((f for f in self.files.values() if f.parent == m.group(1)), key=lambda f: f.name)
        start = int(params.get("pageToken") or 0)
        size = min(int(params.get("pageSize") or 100), self.max_page_size)
        page: dict[str, Any] = {"files": [f.meta() for f in children[start : start + size]]}
        if start + size < len(children):
            page["nextPageToken"] = str(start + size)
        return 200, {"content-type": "application/json"}, json.dumps(page).encode()

    def _media(self, f: DriveFile, range_header: str | None) -> tuple[int, dict[str, str], bytes]:
        total = len(f.content)
        if range_header is None:
            return 200, {"content-type": f.mime}, f.content
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", range_header)
        assert m is not None, range_header
        start, end = int(m.group(1)), min(int(m.group(2)), total - 1)
        if start >= total:
            return 416, {"content-range": f"bytes */{total}"}, b""
        return 206, {"content-range": f"bytes {start}-{end}/{total}"}, f.content[start : end + 1]


def _error(status: int, reason: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = {"error": {"code": status, "message": message, "errors": [{"domain": "global", "reason": reason}]}}
    return status, {"content-type": "application/json"}, json.dumps(body).encode()


class RedirectHttp:
    """The API transport: requests for googleapis.com go to the fake instead (the HTTP boundary)."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url
        self._http = plain_http()

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        redirections: int = 5,
        connection_type: Any = None,
    ) -> tuple[Any, bytes]:
        assert uri.startswith(GOOGLEAPIS), uri
        resp, content = self._http.request(
            self._base + uri.removeprefix(GOOGLEAPIS), method, body=body, headers=headers, redirections=redirections
        )
        return resp, content


# -- the pipeline -----------------------------------------------------------------------


class DriveSettings(Settings):
    # Small chunks, so a few-MB file is several Range requests (8 MiB by default).
    drive_chunk_bytes: int = 1 * MiB


@dataclass
class Env:
    p: Pipeline
    drive: FakeDrive
    oauth: FakeTokenServer
    job: Job

    def start(self, *item_ids: str) -> Operation:
        return drive_import.start_drive_import(self.p.deps, self.p.sender, self.job, "alice", list(item_ids))

    def run(self, *item_ids: str) -> Operation:
        op = self.start(*item_ids)
        self.p.drain(advance_clock=True)
        return self.operation(op.id)

    def list_only(self) -> None:
        """Deliver the first message (the selection) and the folder's one listing page, nothing more."""
        assert self.p.drain(max_deliveries=1) == 1
        assert self.p.drain(max_deliveries=1) == 1
        assert len(self.drive.seen("list")) == 1

    def operation(self, op_id: str) -> Operation:
        return repo.require(self.p.deps.store, Operation, op_id)[0]

    def files(self) -> dict[str, SourceFile]:
        found = self.p.files(self.job.id)
        assert len({f.external_id for f in found}) == len(found), "duplicate SourceFiles"
        return {f.name: f for f in found}

    def content(self, f: SourceFile) -> bytes:
        assert f.blob_uri is not None
        return self.p.deps.blobs.get_bytes(f.blob_uri)


def make_env(tmp: Path, drive: FakeDrive, oauth: FakeTokenServer, runtime_cls: type[LocalRuntime]) -> Env:
    clock = ManualClock()
    settings = DriveSettings(backend="local", data_dir=tmp / "data", durable=False, progress_min_interval_s=1.0)
    extractor = ScriptedExtractor()
    base = bootstrap(settings, clock=clock, extractor_factory=lambda _name: extractor)
    auth = GoogleOAuth(
        base.store,
        clock,
        key=bytes(32),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_uri=oauth.token_uri,
        transport=lambda: RedirectHttp(drive.base_url),
        token_transport=plain_http,
    )
    deps = with_google(base, auth)
    drive.clock = clock
    p = Pipeline.of(local_app(deps=deps, runtime_cls=runtime_cls), tmp=tmp, extractor=extractor)
    oauth.grant(REFRESH_TOKEN, [DRIVE_READONLY])
    integrations.connect(
        deps, owner="alice", account="alice@example.com", refresh_token=REFRESH_TOKEN, scopes=[DRIVE_READONLY]
    )
    return Env(p=p, drive=drive, oauth=oauth, job=p.job())


@pytest.fixture
def servers() -> Iterator[tuple[FakeDrive, FakeTokenServer]]:
    with FakeTokenServer() as oauth, FakeDrive(oauth) as drive:
        yield drive, oauth


@pytest.fixture
def env(tmp_path: Path, servers: tuple[FakeDrive, FakeTokenServer]) -> Env:
    return make_env(tmp_path, *servers, runtime_cls=LocalRuntime)


@pytest.fixture
def dup_env(tmp_path: Path, servers: tuple[FakeDrive, FakeTokenServer]) -> Env:
    return make_env(tmp_path, *servers, runtime_cls=DuplicatingRuntime)


def pdf(name: str, parent: str | None = None, fid: str | None = None) -> DriveFile:
    return DriveFile(fid or f"id-{name}", name, "application/pdf", parent, f"%PDF-1.4 {name}".encode())


def folder(fid: str, name: str, parent: str | None = None) -> DriveFile:
    return DriveFile(fid, name, FOLDER, parent)


def assert_done(op: Operation, *, total: int, done: int, failed: int = 0) -> None:
    assert (op.status, op.total, op.done, op.failed, op.pct) == (OperationStatus.DONE, total, done, failed, 100.0)


# -- tests ------------------------------------------------------------------------------


def test_recursive_folder_with_paging(env: Env) -> None:
    env.drive.max_page_size = 2
    env.drive.add(folder("root", "Invoices"))
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        env.drive.add(pdf(name, "root"))
    env.drive.add(folder("sub", "2024", "root"))
    env.drive.add(pdf("d.pdf", "sub"))
    env.drive.add(folder("deeper", "Q1", "sub"))
    env.drive.add(pdf("e.pdf", "deeper"))
    op = env.run("root")
    assert_done(op, total=5, done=5)
    files = env.files()
    assert sorted(files) == ["a.pdf", "b.pdf", "c.pdf", "d.pdf", "e.pdf"]
    assert all(f.status is FileStatus.UPLOADED and f.source_type is SourceType.GDRIVE for f in files.values())
    assert files["e.pdf"].external_id == "id-e.pdf"
    assert env.content(files["e.pdf"]) == b"%PDF-1.4 e.pdf"
    # 4 entries in the root folder at 2 a page (2024, a | b, c), then 2024 and Q1: one page each.
    listings = sorted((s.params["q"].split("'")[1], s.params.get("pageToken") or "") for s in env.drive.seen("list"))
    assert listings == [("deeper", ""), ("root", ""), ("root", "2"), ("sub", "")]
    items = {i.name: i for i in repo.scan(env.p.deps.store, drive_import.ImportItem)}
    assert items["e.pdf"].path == "Invoices/2024/Q1"
    assert files["a.pdf"].blob_uri is not None and files["a.pdf"].blob_uri.endswith(f"/{files['a.pdf'].id}/a.pdf")


def test_google_doc_is_exported_as_pdf(env: Env) -> None:
    env.drive.add(DriveFile("doc1", "Quarterly report", DOC))
    op = env.run("doc1")
    assert_done(op, total=1, done=1)
    f = env.files()["Quarterly report.pdf"]
    assert (f.status, f.mime_type, f.external_id) == (FileStatus.UPLOADED, "application/pdf", "doc1")
    assert env.content(f) == b"%PDF-1.4 export of Quarterly report"
    assert [s.params["mimeType"] for s in env.drive.seen("export", "doc1")] == ["application/pdf"]
    assert env.drive.seen("media") == []


def test_export_over_drives_limit_fails_that_file_clearly(env: Env) -> None:
    env.drive.add(folder("root", "Mixed"))
    env.drive.add(DriveFile("sheet", "Huge ledger", SHEET, "root", export_too_large=True))
    env.drive.add(pdf("fine.pdf", "root"))
    op = env.run("root")
    assert_done(op, total=2, done=1, failed=1)
    files = env.files()
    failed = files["Huge ledger.pdf"]
    assert failed.status is FileStatus.FAILED and failed.error is not None
    assert failed.error["code"] == "export_too_large"
    assert "10 MB" in failed.error["message"] and "Download it as PDF" in failed.error["hint"]
    assert len(env.drive.seen("export", "sheet")) == 1  # permanent: not retried
    assert files["fine.pdf"].status is FileStatus.UPLOADED


def test_binary_file_is_streamed_in_chunks(env: Env) -> None:
    data = hashlib.sha256(b"seed").digest() * (5 * MiB // 32) + b"tail"
    env.drive.add(DriveFile("big", "scan.tiff", "image/tiff", None, data))
    op = env.run("big")
    assert_done(op, total=1, done=1)
    f = env.files()["scan.tiff"]
    assert env.content(f) == data
    assert (f.size, f.sha256, f.mime_type) == (len(data), hashlib.sha256(data).hexdigest(), "image/tiff")
    ranges = [s.range for s in env.drive.seen("media", "big")]
    assert ranges[:2] == [f"bytes=0-{MiB - 1}", f"bytes={MiB}-{2 * MiB - 1}"]
    assert len(ranges) == 6  # 5 MiB + 4 bytes at 1 MiB a request


def test_one_failing_file_is_recorded_and_the_others_import(env: Env) -> None:
    env.drive.add(folder("root", "Batch"))
    for name in ("a.pdf", "b.pdf", "c.pdf", "gone.pdf"):
        env.drive.add(pdf(name, "root"))
    env.drive.fail("media", "id-gone.pdf", 404, "notFound")  # deleted between listing and import
    op = env.run("root")
    assert_done(op, total=4, done=3, failed=1)
    files = env.files()
    gone = files["gone.pdf"]
    assert gone.status is FileStatus.FAILED and gone.error is not None
    assert gone.error["code"] == "drive_not_found" and "not shared" in gone.error["hint"]
    assert {n for n, f in files.items() if f.status is FileStatus.UPLOADED} == {"a.pdf", "b.pdf", "c.pdf"}
    assert "3 of 4 files imported, 1 failed" in op.message


def test_transient_errors_are_retried_by_the_policy_with_retry_after_honoured(env: Env) -> None:
    env.drive.add(folder("root", "Flaky"))
    env.drive.add(pdf("slow.pdf", "root"))
    env.drive.add(pdf("down.pdf", "root"))
    env.drive.fail("media", "id-slow.pdf", 429, "rateLimitExceeded", times=2, **{"Retry-After": "7"})
    env.drive.fail("media", "id-down.pdf", 500, "backendError", times=10)
    started = env.p.clock.now()
    op = env.run("root")
    assert_done(op, total=2, done=1, failed=1)
    assert env.files()["slow.pdf"].status is FileStatus.UPLOADED
    slow = [s.at for s in env.drive.seen("media", "id-slow.pdf") if s.at is not None]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(slow)] == [7.0, 7.0]  # Retry-After
    down = env.files()["down.pdf"]
    assert down.status is FileStatus.FAILED and down.error is not None
    assert "gave up after 4 attempts" in down.error["message"]
    down_at = [s.at for s in env.drive.seen("media", "id-down.pdf") if s.at is not None]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(down_at)] == [15.0, 60.0, 240.0]
    assert down_at[0] is not None and down_at[0] >= started
    item = repo.require(env.p.deps.store, drive_import.ImportItem, drive_import.item_id(op.id, "id-down.pdf"))[0]
    assert item.attempts == 4


@pytest.mark.parametrize("fault", ["503", "reset"])
def test_a_storage_outage_while_storing_a_file_is_retried_by_the_policy(
    env: Env, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """Cloud Storage failing the copy is transient (it was ``import_crashed``, for good)."""
    env.drive.add(pdf("a.pdf"))
    local = env.p.deps.blobs
    with FaultyStorage() as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        gcs.default = fault
        env.p.deps.blobs = GcsBlobStore("p", retry_timeout_s=0)
        op = env.start("id-a.pdf")
        env.p.drain()  # no clock jump: the retry waits for its delay
        assert any("/upload/" in path for _, path in gcs.requests), "the copy reached Cloud Storage"
    item = repo.require(env.p.deps.store, drive_import.ImportItem, drive_import.item_id(op.id, "id-a.pdf"))[0]
    assert item.status is TaskStatus.PENDING and item.attempts == 1 and item.next_attempt_at is not None
    assert item.error is not None and item.error["code"] == "storage_unavailable"
    assert env.operation(op.id).failed == 0

    env.p.deps.blobs = local  # Cloud Storage is back
    env.p.drain(advance_clock=True)
    assert_done(env.operation(op.id), total=1, done=1)
    assert env.content(env.files()["a.pdf"]) == b"%PDF-1.4 a.pdf"


def test_selected_files_folders_and_a_missing_id(env: Env) -> None:
    env.drive.add(pdf("loose.pdf"))
    env.drive.add(folder("box", "Box"))
    env.drive.add(pdf("inside.pdf", "box"))
    op = env.run("id-loose.pdf", "box", "missing-id")
    assert_done(op, total=3, done=2, failed=1)
    assert sorted(env.files()) == ["inside.pdf", "loose.pdf"]
    [missing] = [i for i in repo.scan(env.p.deps.store, drive_import.ImportItem) if i.error]
    assert missing.drive_file_id == "missing-id" and missing.error is not None
    assert missing.error["code"] == "drive_not_found"


def test_every_message_delivered_twice_creates_no_duplicates(dup_env: Env) -> None:
    env = dup_env
    env.drive.max_page_size = 3
    env.drive.add(folder("root", "Twice"))
    for i in range(7):
        env.drive.add(pdf(f"r{i}.pdf", "root"))
    env.drive.add(folder("sub", "Sub", "root"))
    for i in range(4):
        env.drive.add(pdf(f"s{i}.pdf", "sub"))
    env.drive.add(DriveFile("doc", "Notes", DOC, "sub"))
    op = env.run("root")
    assert_done(op, total=12, done=12)
    assert len(env.p.files(env.job.id)) == 12  # env.files() also checks there is one per Drive file
    assert len(env.files()) == 12
    # Redelivered listings re-send what they found instead of listing again.
    assert len(env.drive.seen("list")) == 3 + 2  # 8 entries in root, 5 in Sub, at 3 a page
    # Importing the same folder again into the job finds everything there already.
    again = env.run("root")
    assert_done(again, total=12, done=12)
    assert "12 already there" in again.message
    assert len(env.p.files(env.job.id)) == 12


def test_401_mid_import_refreshes_and_succeeds(env: Env) -> None:
    env.drive.add(folder("root", "Expiring"))
    env.drive.add(pdf("a.pdf", "root"))
    env.drive.add(pdf("b.pdf", "root"))
    op = env.start("root")
    env.list_only()  # with a first access token
    env.oauth.expire_access_tokens()  # Google forgets it early (the cache still thinks it valid)
    env.p.drain(advance_clock=True)
    assert_done(env.operation(op.id), total=2, done=2)
    assert sum(1 for s in env.drive.requests if s.status == 401) == 1
    assert env.oauth.refreshes == 2


def test_revoked_grant_fails_the_import_and_asks_to_reconnect(env: Env) -> None:
    env.drive.add(folder("root", "Revoked"))
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        env.drive.add(pdf(name, "root"))
    op = env.start("root")
    env.list_only()
    env.oauth.revoke(REFRESH_TOKEN)
    env.oauth.expire_access_tokens()
    env.p.drain(advance_clock=True)
    final = env.operation(op.id)
    assert final.status is OperationStatus.FAILED and final.error is not None
    assert final.error["code"] == "reconnect_required"
    assert "needs reconnecting" in final.message and "expired or revoked" in final.message
    assert (final.total, final.failed, final.pct) == (3, 3, 100.0)
    integration = repo.require(env.p.deps.store, Integration, integrations.integration_id("alice", "alice@example.com"))
    assert integration[0].status is IntegrationStatus.RECONNECT_REQUIRED
    # One refresh found the grant revoked; the other files failed at once, without asking Google again.
    assert [r.form["grant_type"] for r in env.oauth.requests] == ["refresh_token", "refresh_token"]
    assert all(f.error and f.error["code"] == "reconnect_required" for f in env.files().values())


def test_revoked_before_listing_fails_the_import(env: Env) -> None:
    env.drive.add(folder("root", "Nothing"))
    env.oauth.revoke(REFRESH_TOKEN)
    op = env.run("root")
    assert op.status is OperationStatus.FAILED and op.error is not None
    assert op.error["code"] == "reconnect_required"
    assert env.drive.requests == []


def test_seed_200_file_folder_imports_once_with_every_message_delivered_twice(dup_env: Env) -> None:
    env = dup_env
    env.drive.add(folder("seed", "Seed"))
    for i in range(200):
        env.drive.add(pdf(f"inv-{i:03d}.pdf", "seed"))
    op = env.start("seed")
    env.p.drain(advance_clock=True)
    final = env.operation(op.id)
    assert_done(final, total=200, done=200)
    files = env.files()
    assert len(files) == 200 and len(env.p.files(env.job.id)) == 200
    assert all(f.status is FileStatus.UPLOADED for f in files.values())
    assert env.content(files["inv-137.pdf"]) == b"%PDF-1.4 inv-137.pdf"
    assert [s.params.get("pageToken") for s in env.drive.seen("list")] == [None, "100"]
    assert len(env.drive.seen("media")) == 200  # each file fetched once despite the redeliveries
