"""Circuit breakers through the pipeline and across instances.

The Vertex test runs the real google-genai client against the fake Vertex
server (tests/fakes/vertex.py) answering 503s, on the embedded backend with a
ManualClock: nothing sleeps, time jumps to the next delayed message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from common.adapters.gcp.gemini import GeminiExtractor
from common.adapters.google import GoogleOAuth
from common.adapters.google.auth import api_of
from common.adapters.local.clock import ManualClock
from common.adapters.local.sqlite_store import SqliteStore
from common.bootstrap import bootstrap, local_app
from common.core.breaker import BreakerConfig, CircuitOpen, CircuitState
from common.core.errors import ErrorKind, RetryableError
from common.core.schema import DocumentExtraction, FieldSpec
from common.core.states import RunStatus, TaskStatus
from common.ports.extractor import DocumentRef
from common.ports.google import DRIVE_READONLY
from common.service import drive_import, integrations, repo
from common.service.breaker import Breakers, StoreCircuitBreaker
from tests.fakes.google_oauth import CLIENT_ID, CLIENT_SECRET, FakeTokenServer, plain_http, with_google
from tests.fakes.vertex import FakeVertex, RecordedRequest, Reply, unavailable
from tests.integration.test_drive_import import (
    GOOGLEAPIS,
    REFRESH_TOKEN,
    DriveSettings,
    Env,
    FakeDrive,
    RedirectHttp,
    assert_done,
    folder,
    pdf,
)
from tests.integration.test_gemini import invoice_answer, make_extractor, pdf_bytes
from tests.support import Pipeline, ScriptedExtractor, make_pipeline

THRESHOLD = 3
COOLDOWN_S = 60.0
CONFIG = BreakerConfig(failure_threshold=THRESHOLD, cooldown_s=COOLDOWN_S)


class LateGemini:
    """The Gemini extractor, built once the pipeline it needs exists."""

    name = "gemini"
    dependency = "vertex"

    def __init__(self) -> None:
        self.inner: GeminiExtractor | None = None

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        assert self.inner is not None
        return self.inner.extract(doc, fields, prompt=prompt)


@pytest.fixture
def fake() -> Iterator[FakeVertex]:
    with FakeVertex() as f:
        yield f


@pytest.fixture
def pipeline(tmp_path: Path, fake: FakeVertex) -> Pipeline:
    late = LateGemini()
    p = make_pipeline(tmp_path, extractor=late)
    p.deps._breakers = Breakers(p.deps.store, p.clock, CONFIG)
    late.inner = make_extractor(fake, p.deps.blobs, p.clock, breaker=p.deps.breaker("vertex"))
    return p


def test_vertex_503s_open_the_breaker_tasks_wait_unrefunded_and_a_probe_closes_it(
    pipeline: Pipeline, fake: FakeVertex
) -> None:
    clock = pipeline.clock
    served_at: list[datetime] = []

    def healthy(_req: RecordedRequest) -> Reply:
        served_at.append(clock.now())
        return invoice_answer()

    fake.push(*[unavailable() for _ in range(THRESHOLD)])
    fake.default = healthy
    job = pipeline.job()
    for i in range(8):
        pipeline.upload(job, f"inv{i}.pdf", pdf_bytes(1) + f"%{i}".encode())
    run = pipeline.start(job)
    start = clock.now()

    pipeline.drain(advance_clock=True)

    tasks = pipeline.tasks(run.id)
    assert pipeline.run(run.id).status is RunStatus.COMPLETED
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED] * 8
    # The three that met a 503 used one attempt on it; waiting for the breaker used none.
    assert sorted(t.attempts for t in tasks) == [1] * 5 + [2] * 3
    assert len(fake.requests) == THRESHOLD + 8, "no call reached Vertex while the breaker was open"
    assert min(served_at) >= start + timedelta(seconds=COOLDOWN_S), "the first call after the 503s was the probe"
    state = pipeline.deps.breakers.snapshot()["vertex"]
    assert state.state is CircuitState.CLOSED and state.opens == 1 and state.last_error == "model_unavailable"


def test_while_open_a_task_is_delayed_without_an_attempt_being_counted(pipeline: Pipeline, fake: FakeVertex) -> None:
    fake.default = unavailable()
    job = pipeline.job()
    for i in range(THRESHOLD + 2):
        pipeline.upload(job, f"inv{i}.pdf", pdf_bytes(1) + f"%{i}".encode())
    run = pipeline.start(job)
    pipeline.drain()  # no clock advance: the first round only
    tasks = {t.file_name: t for t in pipeline.tasks(run.id)}
    waiting = [t for t in tasks.values() if t.attempts == 0]
    assert pipeline.deps.breakers.snapshot()["vertex"].state is CircuitState.OPEN
    assert len(fake.requests) == THRESHOLD
    assert len(waiting) == 2 and all(t.status is TaskStatus.PENDING for t in waiting)


# -- shared by instances --------------------------------------------------------------------


def two_instances(tmp_path: Path) -> tuple[StoreCircuitBreaker, StoreCircuitBreaker, ManualClock]:
    """Two processes' breakers over one store: separate objects, no shared memory."""
    clock = ManualClock()
    a = Breakers(SqliteStore(tmp_path / "state.db", durable=False), clock, CONFIG, refresh_s=0).get("vertex")
    b = Breakers(SqliteStore(tmp_path / "state.db", durable=False), clock, CONFIG, refresh_s=0).get("vertex")
    return a, b, clock


UNAVAILABLE = RetryableError("503", kind=ErrorKind.UNAVAILABLE, code="model_unavailable")


def test_failures_seen_by_two_instances_add_up_and_open_it_for_both(tmp_path: Path) -> None:
    a, b, _ = two_instances(tmp_path)
    a.record_failure(UNAVAILABLE)
    b.record_failure(UNAVAILABLE)
    assert b.state().failures == 2
    a.record_failure(UNAVAILABLE)
    with pytest.raises(CircuitOpen) as refused:
        b.admit()
    assert refused.value.retry_after is not None and refused.value.retry_after >= COOLDOWN_S


def test_only_one_instance_gets_the_probe_and_its_success_closes_it_for_the_other(tmp_path: Path) -> None:
    a, b, clock = two_instances(tmp_path)
    for _ in range(THRESHOLD):
        a.record_failure(UNAVAILABLE)
    clock.advance(COOLDOWN_S)
    assert a.admit() is True, "a probes"
    with pytest.raises(CircuitOpen):
        b.admit()
    a.record_success()
    assert b.admit() is False and b.state().state is CircuitState.CLOSED


def test_concurrent_probes_from_many_threads_admit_exactly_one(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqliteStore(tmp_path / "state.db", durable=False)
    first = Breakers(store, clock, CONFIG, refresh_s=0).get("vertex")
    for _ in range(THRESHOLD):
        first.record_failure(UNAVAILABLE)
    clock.advance(COOLDOWN_S)
    n = 20
    barrier = threading.Barrier(n)
    results: list[str] = []
    lock = threading.Lock()

    def instance() -> None:
        mine = Breakers(SqliteStore(tmp_path / "state.db", durable=False), clock, CONFIG, refresh_s=0).get("vertex")
        barrier.wait()
        try:
            outcome = "probe" if mine.admit() else "admitted"
        except CircuitOpen:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=instance) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["probe"] + ["refused"] * (n - 1)


def test_a_healthy_breaker_writes_nothing_on_success(tmp_path: Path) -> None:
    a, _, _ = two_instances(tmp_path)
    for _ in range(10):
        a.admit()
        a.record_success()
    assert a._store.get("circuits", "vertex") is None, "no document for a dependency that never failed"


# -- Drive, Gmail and the token endpoint ------------------------------------------------------


def drive_env(tmp: Path, drive: FakeDrive, oauth: FakeTokenServer) -> Env:
    """The Drive import pipeline (see test_drive_import) with breakers around every Google call."""
    clock = ManualClock()
    settings = DriveSettings(backend="local", data_dir=tmp / "data", durable=False, progress_min_interval_s=1.0)
    extractor = ScriptedExtractor()
    base = bootstrap(settings, clock=clock, extractor_factory=lambda _name: extractor)
    base._breakers = Breakers(base.store, clock, CONFIG)
    auth = GoogleOAuth(
        base.store,
        clock,
        key=bytes(32),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_uri=oauth.token_uri,
        transport=lambda: RedirectHttp(drive.base_url),
        token_transport=plain_http,
        breakers=base.breaker,
    )
    deps = with_google(base, auth)
    drive.clock = clock
    p = Pipeline.of(local_app(deps=deps), tmp=tmp, extractor=extractor)
    oauth.grant(REFRESH_TOKEN, [DRIVE_READONLY])
    integrations.connect(
        deps, owner="alice", account="alice@example.com", refresh_token=REFRESH_TOKEN, scopes=[DRIVE_READONLY]
    )
    return Env(p=p, drive=drive, oauth=oauth, job=p.job())


@pytest.fixture
def denv(tmp_path: Path) -> Iterator[Env]:
    with FakeTokenServer() as oauth, FakeDrive(oauth) as drive:
        yield drive_env(tmp_path, drive, oauth)


def test_drive_503s_open_its_breaker_files_wait_without_using_attempts_and_all_import(denv: Env) -> None:
    denv.drive.add(folder("root", "Invoices"))
    names = [f"{c}.pdf" for c in "abcdef"]
    for name in names:
        denv.drive.add(pdf(name, "root"))
    for name in names[:THRESHOLD]:
        denv.drive.fail("media", f"id-{name}", 503, "backendError")
    op = denv.run("root")

    assert_done(op, total=6, done=6)
    media = sorted(denv.drive.seen("media"), key=lambda s: s.at or datetime.min)
    failed = [s for s in media if s.status == 503]
    assert len(failed) == THRESHOLD and len(media) == THRESHOLD + 6, "nothing was sent to Drive while open"
    opened_at = max(s.at for s in failed if s.at is not None)
    later = [s.at for s in media if s.status != 503 and s.at is not None]
    assert min(later) >= opened_at + timedelta(seconds=COOLDOWN_S), "the first call after the 503s was the probe"
    items = list(repo.scan(denv.p.deps.store, drive_import.ImportItem))
    assert sorted(i.attempts for i in items) == [1] * 3 + [2] * 3, "waiting for the breaker counted no attempt"
    state = denv.p.deps.breakers.snapshot()["drive"]
    assert state.state is CircuitState.CLOSED and state.opens == 1 and state.last_error == "http_503"


def test_token_endpoint_failures_open_its_own_breaker_and_it_is_not_called_while_open(denv: Env) -> None:
    denv.oauth.script = [(503, {"error": "temporarily_unavailable"}, {})] * THRESHOLD
    auth = denv.p.deps.google_auth
    assert auth is not None
    http = auth.authorized_http("alice", [DRIVE_READONLY])
    denv.drive.add(pdf("a.pdf"))
    listing = f"{GOOGLEAPIS}/drive/v3/files/id-a.pdf?supportsAllDrives=true"
    for _ in range(THRESHOLD):
        with pytest.raises(RetryableError) as failed:
            http.request(listing)
        assert failed.value.kind is ErrorKind.UNAVAILABLE
    with pytest.raises(CircuitOpen) as refused:
        http.request(listing)
    assert refused.value.dependency == "oauth_token"
    assert denv.oauth.refreshes == THRESHOLD, "the open breaker kept the refresh from the endpoint"
    assert denv.drive.requests == [], "and nothing reached Drive without a token"
    breakers = denv.p.deps.breakers.snapshot()
    assert breakers["oauth_token"].state is CircuitState.OPEN
    assert breakers["drive"].state is CircuitState.CLOSED and breakers["drive"].failures == 0, "not Drive's fault"

    denv.p.clock.advance(COOLDOWN_S)
    resp, _ = http.request(listing)
    assert int(resp.status) == 200 and denv.oauth.refreshes == THRESHOLD + 1
    assert denv.p.deps.breakers.snapshot()["oauth_token"].state is CircuitState.CLOSED


@pytest.mark.parametrize(
    ("uri", "api"),
    [
        ("https://www.googleapis.com/drive/v3/files?q=x", "drive"),
        ("https://www.googleapis.com/upload/drive/v3/files?uploadType=resumable", "drive"),
        ("https://gmail.googleapis.com/gmail/v1/users/me/messages/1", "gmail"),
        ("https://www.googleapis.com/upload/gmail/v1/users/me/messages/send", "gmail"),
        ("https://www.googleapis.com/batch/gmail/v1", "gmail"),
        ("https://oauth2.googleapis.com/token", None),
    ],
)
def test_requests_are_told_apart_by_the_api_they_call(uri: str, api: str | None) -> None:
    assert api_of(uri) == api


def _wait_for_circuit(msg: object, ctx: object) -> None:
    raise CircuitOpen("drive", 45.0)


def test_a_handler_waiting_for_an_open_circuit_is_resent_later_not_counted_as_a_failed_delivery(
    tmp_path: Path,
) -> None:
    p = make_pipeline(tmp_path)
    table = {"export": {"export.run": "tests.integration.test_circuit_breaker:_wait_for_circuit"}}
    runtime = type(p.runtime)(p.deps, p.bus, handlers=table)
    runtime.declare()
    p.bus.publish("export", b'{"export_id": "x", "run_id": "r", "job_id": "j"}', {"kind": "export.run"})
    for _ in range(30):  # far beyond export's max delivery attempts
        assert runtime.drain() == 1
        p.clock.advance(45.0)
    assert p.bus.dead_letters() == [], "waiting never dead-letters the work"
    assert runtime.drain() == 1, "the work is still there, waiting"
