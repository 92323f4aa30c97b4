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
from common.adapters.local.clock import ManualClock
from common.adapters.local.sqlite_store import SqliteStore
from common.core.breaker import BreakerConfig, CircuitOpen, CircuitState
from common.core.errors import ErrorKind, RetryableError
from common.core.schema import DocumentExtraction, FieldSpec
from common.core.states import RunStatus, TaskStatus
from common.ports.model import DocumentRef
from common.service.breaker import Breakers, StoreCircuitBreaker
from tests.fakes.vertex import FakeVertex, RecordedRequest, Reply, unavailable
from tests.integration.test_gemini import invoice_answer, make_extractor, pdf_bytes
from tests.support import Pipeline, make_pipeline

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
