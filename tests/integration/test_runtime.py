"""The local runtime: threads, schedules, recovery of stuck work, uploads."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common.adapters.local.clock import SystemClock
from common.adapters.local.sqlite_bus import Delivery, Settlement
from common.bootstrap import bootstrap, local_app, local_bus
from common.config import Settings
from common.core.messages import Noop
from common.core.models import ExtractionTask
from common.core.states import FileStatus, RunStatus, TaskStatus
from common.runtime.local import LocalRuntime, _Pool, _Sub
from common.service import repo
from common.service.context import Context, TopologySender
from common.service.registry import PUBLISHES
from common.topology import FunctionSpec, SubscriptionSpec, TopicSpec, Topology
from tests.support import Pipeline, ScriptedExtractor, make_pipeline


def test_the_threaded_runtime_runs_a_job_to_its_export(tmp_path: Path) -> None:
    settings = Settings(backend="local", data_dir=tmp_path / "data", durable=False)
    extractor = ScriptedExtractor()
    p = Pipeline.of(
        local_app(settings, clock=SystemClock(), extractor_factory=lambda _n: extractor),
        tmp=tmp_path,
        extractor=extractor,
    )
    runtime = p.runtime
    job = p.job()
    for i in range(12):
        p.upload(job, f"ok-{i}.pdf")
    runtime.start()
    try:
        run = p.start(job)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            exports = p.exports(run.id)
            if exports and all(e.status.value == "completed" for e in exports):
                break
            time.sleep(0.02)
    finally:
        runtime.stop()
    assert p.run(run.id).status is RunStatus.COMPLETED
    assert p.exports(run.id)[0].row_count == 12


def test_stop_lets_in_flight_handlers_finish(tmp_path: Path) -> None:
    class Slow(ScriptedExtractor):
        def extract(self, doc, fields, *, prompt=""):
            time.sleep(0.2)
            return super().extract(doc, fields, prompt=prompt)

    settings = Settings(backend="local", data_dir=tmp_path / "data", durable=False)
    p = Pipeline.of(local_app(settings, clock=SystemClock(), extractor_factory=lambda _n: Slow()), tmp=tmp_path)
    runtime = p.runtime
    job = p.job()
    p.upload(job, "ok-a.pdf")
    runtime.start()
    run = p.start(job)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(t.status is TaskStatus.RUNNING for t in p.tasks(run.id)):
        time.sleep(0.01)
    runtime.stop()
    (task,) = p.tasks(run.id)
    assert task.status is TaskStatus.COMPLETED, "the attempt in flight finished and was settled"


def test_handlers_publish_only_the_kinds_they_declare(tmp_path: Path) -> None:
    seen: dict[str, set[str]] = {}

    class Recording(LocalRuntime):
        def handle(self, function: str, delivery: Delivery) -> Settlement:
            s = super().handle(function, delivery)
            seen.setdefault(function, set()).update(m.attributes["kind"] for m in s.publishes)
            return s

    p = make_pipeline(tmp_path, runtime_cls=Recording)
    job = p.job(formats=("csv", "xlsx"))
    for name in ("ok-a.pdf", "flaky1-b.pdf", "bad-c.pdf"):
        p.upload(job, name)
    p.start(job)
    p.drain(advance_clock=True)
    assert seen["extract"] == {"task.extract", "export.run"}
    for function, kinds in seen.items():
        assert kinds <= PUBLISHES[function], function


def test_the_hourly_cleanup_fires_from_the_topology_schedule(pipeline: Pipeline) -> None:
    runtime = pipeline.runtime
    assert runtime.tick_schedules() == 0, "the first tick only plans the next firing"
    pipeline.clock.advance(3600)
    assert runtime.tick_schedules() == 1
    assert pipeline.bus.depth("cleanup--cleanup") == 1
    pipeline.drain()
    assert pipeline.bus.depth("cleanup--cleanup") == 0


def test_cleanup_recovers_a_task_whose_attempt_died(pipeline: Pipeline) -> None:
    job = pipeline.job()
    pipeline.upload(job, "ok-a.pdf")
    run = pipeline.start(job)
    pipeline.runtime.drain(max_deliveries=2)  # finalize + run.start
    # Simulate an attempt that claimed the task and died, its message lost.
    (task,) = pipeline.tasks(run.id)
    task, version = repo.require(pipeline.deps.store, ExtractionTask, task.id)
    stuck = task.model_copy(
        update={
            "status": TaskStatus.RUNNING,
            "attempts": 1,
            "message_id": "lost",
            "lease_until": pipeline.clock.now() + timedelta(seconds=600),
        }
    )
    repo.cas(pipeline.deps.store, stuck, version)
    for d in pipeline.bus.pull("extract--extract", 10):
        pipeline.bus.ack(d)

    pipeline.runtime.tick_schedules()
    pipeline.clock.advance(3600)
    pipeline.runtime.tick_schedules()
    pipeline.drain()
    (task,) = pipeline.tasks(run.id)
    assert task.status is TaskStatus.COMPLETED and task.attempts == 2
    assert pipeline.run(run.id).status is RunStatus.COMPLETED


def test_an_object_written_to_the_uploads_bucket_registers_its_file(pipeline: Pipeline) -> None:
    job = pipeline.job()
    uri = pipeline.deps.blobs.uri("uploads", f"jobs/{job.id}/files/f_web1/scan.pdf")
    pipeline.deps.blobs.put_bytes(uri, b"%PDF-1.4 x", content_type="application/pdf", metadata={"name": "Scan 1.pdf"})
    pipeline.deps.blobs.put_bytes(uri, b"%PDF-1.4 x", content_type="application/pdf", metadata={"name": "Scan 1.pdf"})
    pipeline.drain()
    (f,) = pipeline.files(job.id)
    assert (f.id, f.name, f.status, f.blob_uri) == ("f_web1", "Scan 1.pdf", FileStatus.UPLOADED, uri)


def test_an_upload_outside_any_job_is_dead_lettered_with_its_reason(pipeline: Pipeline) -> None:
    pipeline.deps.blobs.put_bytes(pipeline.deps.blobs.uri("uploads", "stray/file.pdf"), b"x")
    pipeline.drain()
    (dead,) = pipeline.bus.dead_letters()
    assert dead.last_error is not None and "not_an_upload" in dead.last_error


class Gathering(ScriptedExtractor):
    """A model that answers only once ``expected`` calls are waiting on it together (or after a timeout)."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.waiting = 0
        self.most = 0
        self._cond = threading.Condition()

    def extract(self, doc, fields, *, prompt=""):
        with self._cond:
            self.waiting += 1
            self.most = max(self.most, self.waiting)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.most >= self.expected, timeout=10)
            self.waiting -= 1
        return super().extract(doc, fields, prompt=prompt)


def test_calls_to_a_remote_model_overlap_beyond_the_cpu_bound_pool(tmp_path: Path) -> None:
    # 40 model calls wait at once: more than the 8 threads CPU-bound stages get.
    settings = Settings(
        backend="local", data_dir=tmp_path / "data", durable=False, extractor="gemini", project="p", model_rpm=600
    )
    model = Gathering(expected=40)
    p = Pipeline.of(local_app(settings, clock=SystemClock(), extractor_factory=lambda _n: model), tmp=tmp_path)
    runtime = p.runtime
    job = p.job()
    for i in range(40):
        p.upload(job, f"ok-{i}.pdf")
    runtime.start()
    try:
        run = p.start(job)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.run(run.id).status is not RunStatus.COMPLETED:
            time.sleep(0.05)
    finally:
        runtime.stop()
    assert model.most == 40
    assert runtime.workers["extract"] == 100, "the calls 600/min keeps in flight at up to 10 s each"
    assert runtime.workers["export"] == 8


def test_sluice_workers_sets_every_pool_within_the_topology(tmp_path: Path) -> None:
    settings = Settings(backend="local", data_dir=tmp_path / "data", durable=False, workers=32)
    app = local_app(settings, clock=SystemClock(), extractor_factory=lambda _n: ScriptedExtractor())
    runtime = app.runtime
    assert runtime.workers["extract"] == 32, "offline extraction too, when asked"
    assert runtime.workers["export"] == 20, "capped by export's 10 instances x 2"
    assert runtime.workers["cleanup"] == 1
    assert LocalRuntime(app.deps, app.bus, max_workers=3).workers["extract"] == 3, "the caller's number wins"


def test_a_large_quota_gets_the_topologys_whole_extract_concurrency(tmp_path: Path) -> None:
    settings = Settings(
        backend="local", data_dir=tmp_path / "data", durable=False, extractor="gemini", project="p", model_rpm=100_000
    )
    app = local_app(settings, clock=SystemClock(), extractor_factory=lambda _n: ScriptedExtractor())
    assert app.runtime.workers["extract"] == 500, "50 instances x 10"


# -- prefetch: how far ahead of its workers a pool leases ---------------------------

_gate = threading.Event()
_entered = threading.Semaphore(0)
_handled: list[str] = []


def gated_noop(msg: Noop, ctx: Context) -> None:
    """Returns at once for chain "fast"; otherwise waits for the test's gate."""
    if msg.chain != "fast":
        _entered.release()
        assert _gate.wait(30)
    _handled.append(msg.chain)


def _noop_runtime(tmp_path: Path, workers: int) -> tuple[LocalRuntime, TopologySender]:
    topo = Topology(
        functions={
            "bench": FunctionSpec(
                source="bench",
                entry_point="noop",
                trigger="bench-noop",
                max_instances=1,
                concurrency=workers,
                timeout_s=60,
                memory="256Mi",
            )
        },
        topics={
            "bench-noop": TopicSpec(
                kinds=["bench.noop"],
                subscription=SubscriptionSpec(
                    function="bench", ack_deadline_s=60, max_delivery_attempts=5, min_backoff_s=1, max_backoff_s=10
                ),
            )
        },
    )
    settings = Settings(backend="local", data_dir=tmp_path / "data", durable=False)
    deps = bootstrap(settings, topology=topo)
    bus = local_bus(deps)
    handlers = {"bench": {"bench.noop": "tests.integration.test_runtime:gated_noop"}}
    runtime = LocalRuntime(deps, bus, handlers=handlers, max_workers=workers)
    return runtime, TopologySender(topo, settings, bus, deps.clock)


def _leased(runtime: LocalRuntime) -> int:
    with sqlite3.connect(runtime.deps.settings.data_dir / "bus.db") as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM deliveries WHERE lease_owner IS NOT NULL").fetchone()
    return int(n)


def _run_gated(tmp_path: Path, *, warm_up_fast: bool) -> int:
    """Leased deliveries while both of 2 workers wait on the gate, with 10 ready."""
    _gate.clear()
    _handled.clear()
    runtime, sender = _noop_runtime(tmp_path, workers=2)
    runtime.start()
    try:
        if warm_up_fast:
            # Several, so one handler slowed by a loaded machine cannot decide the average.
            for _ in range(20):
                sender.send(Noop(chain="fast", hops=1))
            deadline = time.monotonic() + 30
            while _handled.count("fast") < 20 and time.monotonic() < deadline:
                time.sleep(0.005)
        for i in range(10):
            sender.send(Noop(chain=f"slow-{i}", hops=1))
        for _ in range(2):
            assert _entered.acquire(timeout=30)
        # Both workers are busy and nothing settles until the gate opens: the pool's
        # leases are final here.
        leased = _leased(runtime)
    finally:
        _gate.set()
        runtime.stop()
    # Stopping handles and settles what was leased (the prefetched ones too), and leases nothing more.
    slow = [c for c in _handled if c != "fast"]
    assert len(slow) == len(set(slow)) == leased
    assert _leased(runtime) == 0
    assert runtime.bus.depth(runtime.subscriptions[0]) == 10 - leased
    while _entered.acquire(blocking=False):  # the prefetched handlers entered after the gate opened
        pass
    return leased


def test_a_pool_whose_handlers_are_not_known_fast_leases_no_more_than_its_workers(tmp_path: Path) -> None:
    assert _run_gated(tmp_path, warm_up_fast=False) == 2


def test_a_pool_of_fast_handlers_leases_one_delivery_ahead_per_worker(tmp_path: Path) -> None:
    assert _run_gated(tmp_path, warm_up_fast=True) == 4


def test_a_queued_delivery_whose_lease_ran_out_is_left_to_its_redelivery() -> None:
    """A prefetched delivery that waited past its lease may already be out again:
    the worker drops it (unsettled) rather than run the message twice."""
    sub = SubscriptionSpec(function="f", ack_deadline_s=60, max_delivery_attempts=5, min_backoff_s=1, max_backoff_s=10)
    spec = _Sub("s", "t", "f", sub, workers=1)
    handled: list[int] = []
    settled: list[Settlement] = []

    def handle(function: str, d: Delivery) -> Settlement:
        handled.append(d.seq)
        return Settlement(d, ack=True)

    pool = _Pool(spec, handle, settled.append, lambda: None, lambda: 1_000.0)
    sent = datetime.now(UTC)
    expired = Delivery(1, "s", "m1", b"{}", {}, sent, 1, lease_expires_at=1_000.0)
    current = Delivery(2, "s", "m2", b"{}", {}, sent, 1, lease_expires_at=1_060.0)
    pool.submit([expired, current])
    pool.close()
    assert handled == [2]
    assert [s.delivery.seq for s in settled] == [2]
    assert pool.idle()
