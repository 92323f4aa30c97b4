"""Fan-in under load: 500 documents on 64 extract workers of the real local runtime.

Every task's outcome is committed on its own record; the run is completed by a
separate compare-and-set, so no task's bookkeeping competes for the run
document and no model call is repeated because a transaction conflicted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from common.adapters.local.clock import SystemClock
from common.adapters.local.sqlite_bus import Delivery, Settlement
from common.bootstrap import bootstrap, local_bus
from common.config import Settings
from common.core.messages import ExportRun, Message
from common.core.models import ExtractionTask, Priority, Run, RunCounters
from common.core.schema import DocumentExtraction, FieldSpec
from common.core.states import ExportStatus, RunStatus, TaskStatus
from common.ports.extractor import DocumentRef
from common.ports.store import Store, Transaction
from common.runtime.local import LocalRuntime
from common.service import control, fanin, repo, tally
from common.service.context import Context
from tests.support import Pipeline, ScriptedExtractor, make_pipeline

DOCUMENTS = 500
WORKERS = 64
MODEL_CALL_S = 0.2


class SlowModel(ScriptedExtractor):
    """A model call that takes 0.2 s, like a fast remote model; counts calls per document."""

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        time.sleep(MODEL_CALL_S)
        return super().extract(doc, fields, prompt=prompt)


class CountingRuntime(LocalRuntime):
    """The real threaded runtime, counting deliveries that were not acknowledged."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.nacks: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def handle(self, function: str, delivery: Delivery) -> Settlement:
        settlement = super().handle(function, delivery)
        if not settlement.ack:
            with self._count_lock:
                self.nacks[delivery.attributes.get("kind", "?")] += 1
        return settlement


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def run_log() -> object:
    handler = Records()
    logger = logging.getLogger("common.service")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


# The SQLite store is durable here (fsync per commit, the default and what
# `sluice run` uses): commits take long enough for 64 workers to collide, as
# Firestore's one-write-per-second-per-document would in the cloud.
@pytest.mark.slow
def test_500_documents_on_64_workers_call_the_model_once_each_and_complete_the_run_once(
    tmp_path: Path, run_log: Records
) -> None:
    settings = Settings(backend="local", data_dir=tmp_path / "data", durable=True)
    model = SlowModel()
    deps = bootstrap(settings, clock=SystemClock(), extractor_factory=lambda _name: model)
    bus = local_bus(deps)
    runtime = CountingRuntime(deps, bus, max_workers=WORKERS)
    extract_pool = {s.function: s.workers for s in runtime._subs}["extract"]
    assert extract_pool == WORKERS
    p = Pipeline(deps=deps, bus=bus, runtime=runtime, clock=None, tmp=tmp_path, extractor=model)  # type: ignore[arg-type]
    job = p.job(formats=("csv", "xlsx"))
    for i in range(DOCUMENTS):
        p.upload(job, f"ok-{i:03d}.pdf")

    runtime.start()
    try:
        run = p.start(job)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            exports = p.exports(run.id)
            if len(exports) == 2 and all(e.status is ExportStatus.COMPLETED for e in exports):
                break
            time.sleep(0.1)
    finally:
        runtime.stop()

    assert sum(model.calls.values()) == DOCUMENTS, f"duplicates: {[n for n, c in model.calls.items() if c > 1][:10]}"
    assert set(model.calls.values()) == {1}
    assert runtime.nacks == Counter(), "no delivery was redelivered because bookkeeping conflicted"
    assert not [m for m in run_log.messages if "conflicted" in m]
    done = p.run(run.id)
    assert done.status is RunStatus.COMPLETED
    assert (done.counters.total, done.counters.completed, done.counters.failed, done.counters.cancelled) == (
        DOCUMENTS,
        DOCUMENTS,
        0,
        0,
    )
    assert run_log.messages.count("run completed") == 1, "exactly one task completed the run"
    exports = p.exports(run.id)
    assert sorted(e.format.value for e in exports) == ["csv", "xlsx"]
    assert {e.row_count for e in exports} == {DOCUMENTS}
    assert {t.status for t in p.tasks(run.id)} == {TaskStatus.COMPLETED}


def test_a_crash_between_the_tasks_commit_and_the_fan_in_is_completed_by_the_redelivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    p.upload(job, "ok-a.pdf")
    run = p.start(job)  # one task: its fan-in is the one that must complete the run
    real_settle = fanin.settle_run
    crashes: list[str] = []

    def die_once(ctx: Context, run_id: str, *, resend: bool = False) -> Run:
        if not crashes and not resend:
            crashes.append(ctx.message_id)
            raise RuntimeError("died after the task's commit, before the fan-in")
        return real_settle(ctx, run_id, resend=resend)

    monkeypatch.setattr(fanin, "settle_run", die_once)
    p.drain(advance_clock=True)

    assert len(crashes) == 1
    assert p.extractor.calls == {"ok-a.pdf": 1}, "the redelivery found its task done and did not call the model"
    done = p.run(run.id)
    assert done.status is RunStatus.COMPLETED and done.counters.completed == 1
    assert [e.status for e in p.exports(run.id)] == [ExportStatus.COMPLETED]


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[Message] = []
        self._lock = threading.Lock()

    def send(self, message: Message, *, delay_s: float | None = None, priority: Priority | None = None) -> str:
        with self._lock:
            self.sent.append(message)
        return "m"


def test_twenty_racing_fan_ins_complete_the_run_once(tmp_path: Path, run_log: Records) -> None:
    p = make_pipeline(tmp_path)
    job = p.job(formats=("csv", "xlsx"))
    for name in ("ok-a.pdf", "ok-b.pdf", "bad-c.pdf"):
        p.upload(job, name)
    run = p.start(job)
    p.drain(max_deliveries=2)  # the upload registrations and run.start: tasks exist, none ran
    tasks = p.tasks(run.id)
    assert len(tasks) == 3

    def finish_without_fan_in(t: Transaction) -> None:
        # What each task's own commit leaves behind if no fan-in ran after it.
        current = [repo.tx_require(t, ExtractionTask, task.id) for task in tasks]
        for task in current:
            status = TaskStatus.FAILED if task.file_name.startswith("bad") else TaskStatus.COMPLETED
            repo.tx_put(t, task.model_copy(update={"status": status}))

    p.deps.store.transaction(finish_without_fan_in)
    threads = 20
    barrier = threading.Barrier(threads)
    sender = RecordingSender()
    results: list[Run] = []

    def racer(i: int) -> None:
        ctx = Context(deps=p.deps, sender=sender, message_id=f"m{i}")
        barrier.wait()
        results.append(fanin.settle_run(ctx, run.id))

    workers = [threading.Thread(target=racer, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    assert len(results) == threads and {r.status for r in results} == {RunStatus.COMPLETED}
    assert run_log.messages.count("run completed") == 1
    exports = p.exports(run.id)
    assert sorted(e.format.value for e in exports) == ["csv", "xlsx"]
    assert sorted(m.export_id for m in sender.sent if isinstance(m, ExportRun)) == sorted(e.id for e in exports)
    done = p.run(run.id)
    assert (done.counters.total, done.counters.completed, done.counters.failed) == (3, 2, 1)


def test_a_run_reopened_between_the_count_and_the_completion_is_not_completed_on_stale_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    p.upload(job, "ok-a.pdf")
    p.upload(job, "bad-b.pdf")
    run = p.start(job)
    p.drain(max_deliveries=3)  # uploads registered, run started: two tasks, none ran
    tasks = p.tasks(run.id)

    def finish_without_fan_in(t: Transaction) -> None:
        current = [repo.tx_require(t, ExtractionTask, task.id) for task in tasks]
        for task in current:
            status = TaskStatus.FAILED if task.file_name.startswith("bad") else TaskStatus.COMPLETED
            repo.tx_put(t, task.model_copy(update={"status": status}))

    p.deps.store.transaction(finish_without_fan_in)
    real_count = tally.count_tasks
    interleaved: list[bool] = []

    def count_then_let_others_move(store: Store, counted_run: Run) -> RunCounters:
        counts = real_count(store, counted_run)
        if not interleaved:
            interleaved.append(True)
            # Meanwhile another fan-in completes the run and its owner retries the failed task.
            fanin.settle_run(Context(deps=p.deps, sender=RecordingSender(), message_id="other"), run.id)
            control.retry_run(p.deps, RecordingSender(), run.id, owner="alice")
        return counts

    monkeypatch.setattr(tally, "count_tasks", count_then_let_others_move)
    after = fanin.settle_run(Context(deps=p.deps, sender=RecordingSender(), message_id="late"), run.id)

    assert interleaved == [True]
    assert after.status is RunStatus.RUNNING, "the retried task is pending: the run must stay open"
    assert p.run(run.id).status is RunStatus.RUNNING
    assert sorted(t.status for t in p.tasks(run.id)) == sorted([TaskStatus.COMPLETED, TaskStatus.PENDING])
