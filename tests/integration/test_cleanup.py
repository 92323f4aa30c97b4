"""The hourly cleanup: what it removes (exactly what is old), what it keeps, and two sweeps at once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from common.core.messages import CleanupSweep
from common.core.models import (
    Destination,
    Export,
    ExportFormat,
    ExtractionTask,
    Integration,
    IntegrationStatus,
    Operation,
    Run,
)
from common.core.states import ExportStatus, OperationStatus, RunStatus, TaskStatus
from common.service import cleanup, integrations, repo
from common.service.context import Context
from common.service.gmail_import import ITEMS, SUMMARIES
from tests.support import Pipeline

DAY = 24 * 3600.0


def sweep(p: Pipeline) -> dict[str, int]:
    return cleanup.sweep(CleanupSweep(), Context(deps=p.deps, sender=p.sender, message_id="sweep"))


def completed_run(p: Pipeline, name: str = "ok-a.pdf") -> tuple[Run, Export]:
    job = p.job()
    p.upload(job, name)
    run = p.start(job)
    p.drain()
    (export,) = p.exports(run.id)
    assert export.status is ExportStatus.COMPLETED and export.external_id is not None
    return p.run(run.id), export


def import_operation(p: Pipeline, op_id: str, *, final: bool, items: int = 2) -> Operation:
    """A Gmail import's operation with its bookkeeping, as the import leaves them."""
    now = p.clock.now()
    op = Operation(
        id=op_id,
        owner="alice",
        kind="import",
        target_id="job-1",
        job_id="job-1",
        status=OperationStatus.DONE if final else OperationStatus.RUNNING,
        finished_at=now if final else None,
        created_at=now,
        updated_at=now,
    )
    repo.create(p.deps.store, op)
    p.deps.store.create(SUMMARIES, op_id, {"total": items, "done": items if final else 0})
    for i in range(items):
        p.deps.store.create(ITEMS, f"{op_id}--m{i}", {"operation_id": op_id, "message_id": f"m{i}"})
    return op


def integration(p: Pipeline, account: str, *, failures: int) -> Integration:
    now = p.clock.now()
    record = Integration(
        id=integrations.integration_id("alice", account),
        owner="alice",
        account=account,
        token_ciphertext="sealed",
        refresh_failures=failures,
        status=IntegrationStatus.RECONNECT_REQUIRED if failures else IntegrationStatus.CONNECTED,
        created_at=now,
        updated_at=now,
    )
    repo.create(p.deps.store, record)
    return record


def drive_export(p: Pipeline, run: Run) -> Export:
    now = p.clock.now()
    export = Export(
        id=f"{run.id}--drive",
        owner=run.owner,
        run_id=run.id,
        job_id=run.job_id,
        format=ExportFormat.CSV,
        destination=Destination(kind="drive", target="folder-1"),
        created_at=now,
        updated_at=now,
    )
    repo.create(p.deps.store, export)
    return export


def exists(p: Pipeline, collection: str, doc_id: str) -> bool:
    return p.deps.store.get(collection, doc_id) is not None


def ids_of(p: Pipeline, collection: str) -> set[str]:
    return {s.id for s in p.deps.store.query(collection).items}


# -- what goes and what stays -----------------------------------------------------


def test_an_old_download_export_goes_with_its_object_and_nothing_younger_or_elsewhere(pipeline: Pipeline) -> None:
    p = pipeline
    old_run, old = completed_run(p, "ok-old.pdf")
    drive = drive_export(p, old_run)
    p.clock.advance(30 * DAY - 60)
    _, young = completed_run(p, "ok-young.pdf")
    p.clock.advance(120)  # the old export is now just over 30 days old; the young one two minutes

    counts = sweep(p)

    assert (counts["exports_deleted"], counts["export_blobs_deleted"]) == (1, 1)
    assert not exists(p, Export.collection, old.id)
    assert old.external_id is not None and p.deps.blobs.stat(old.external_id) is None
    assert exists(p, Export.collection, young.id) and exists(p, Export.collection, drive.id)
    assert young.external_id is not None and p.deps.blobs.stat(young.external_id) is not None


def test_an_operation_goes_a_day_after_it_became_final_with_its_import_bookkeeping(pipeline: Pipeline) -> None:
    p = pipeline
    done = import_operation(p, "op-done", final=True)
    running = import_operation(p, "op-running", final=False)
    run, _ = completed_run(p)
    assert repo.require(p.deps.store, Operation, done.id)[0].expire_at == p.clock.now() + timedelta(hours=24)

    p.clock.advance(DAY - 1)
    assert sweep(p)["operations_pruned"] == 0

    p.clock.advance(2)
    counts = sweep(p)

    assert (counts["operations_pruned"], counts["import_items_pruned"], counts["import_summaries_pruned"]) == (2, 2, 1)
    assert ids_of(p, Operation.collection) == {running.id}
    assert ids_of(p, ITEMS) == {"op-running--m0", "op-running--m1"}
    assert ids_of(p, SUMMARIES) == {running.id}
    assert exists(p, Run.collection, run.id)  # the run itself stays; only its progress record goes


def test_a_token_refused_three_times_is_dropped_and_the_account_must_reconnect(pipeline: Pipeline) -> None:
    p = pipeline
    dead = integration(p, "dead@example.com", failures=3)
    shaky = integration(p, "shaky@example.com", failures=2)
    fine = integration(p, "fine@example.com", failures=0)

    assert sweep(p)["tokens_dropped"] == 1

    (info,) = integrations.status(p.deps, owner="alice", account=dead.account)
    assert info.status is IntegrationStatus.RECONNECT_REQUIRED
    assert info.status_reason is not None and "connect the account again" in info.status_reason
    assert repo.require(p.deps.store, Integration, dead.id)[0].token_ciphertext is None
    for kept in (shaky, fine):
        assert repo.require(p.deps.store, Integration, kept.id)[0].token_ciphertext == "sealed"


def test_a_second_sweep_finds_nothing_left_to_do(pipeline: Pipeline) -> None:
    p = pipeline
    completed_run(p)
    import_operation(p, "op-done", final=True)
    integration(p, "dead@example.com", failures=5)
    p.clock.advance(31 * DAY)
    first = sweep(p)
    assert first["exports_deleted"] == 1 and first["operations_pruned"] == 2 and first["tokens_dropped"] == 1
    assert set(sweep(p).values()) == {0}


def test_the_counts_are_logged_in_one_line(pipeline: Pipeline, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="common.service.cleanup"):
        counts = sweep(pipeline)
    (line,) = [r for r in caplog.records if r.name == "common.service.cleanup"]
    assert line.getMessage() == "cleanup done"
    assert getattr(line, "fields", None) == counts


def test_two_sweeps_at_once_remove_everything_once_between_them(pipeline: Pipeline) -> None:
    p = pipeline
    exports = [completed_run(p, f"ok-{i}.pdf")[1] for i in range(4)]
    for i in range(6):
        import_operation(p, f"op-{i}", final=True, items=3)
    for i in range(3):
        integration(p, f"dead{i}@example.com", failures=4)
    p.clock.advance(31 * DAY)
    expected = {
        "exports_deleted": 4,
        "export_blobs_deleted": 4,
        "operations_pruned": 6 + 4,  # the imports and the four runs' operations
        "import_items_pruned": 18,
        "import_summaries_pruned": 6,
        "tokens_dropped": 3,
    }

    barrier = threading.Barrier(2)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(sweep(p))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert len(results) == 2
    assert {k: results[0][k] + results[1][k] for k in expected} == expected
    assert not any(exists(p, Export.collection, e.id) for e in exports)
    assert ids_of(p, Operation.collection) == set() and ids_of(p, ITEMS) == set() and ids_of(p, SUMMARIES) == set()


# -- recovery ---------------------------------------------------------------------


def test_a_task_stuck_past_its_lease_is_sent_again_and_completes(pipeline: Pipeline) -> None:
    p = pipeline
    job = p.job()
    p.upload(job, "ok-a.pdf")
    run = p.start(job)
    p.runtime.drain(max_deliveries=2)  # finalize + run.start
    # An attempt claimed the task and died; its message is lost.
    (task,) = p.tasks(run.id)
    task, version = repo.require(p.deps.store, ExtractionTask, task.id)
    lease = p.clock.now() + timedelta(seconds=600)
    stuck = task.model_copy(
        update={"status": TaskStatus.RUNNING, "attempts": 1, "message_id": "lost", "lease_until": lease}
    )
    repo.cas(p.deps.store, stuck, version)
    for d in p.bus.pull("extract--extract", 10):
        p.bus.ack(d)

    assert sweep(p)["stuck_tasks_requeued"] == 0  # the lease still holds
    p.clock.advance(601)
    assert sweep(p)["stuck_tasks_requeued"] == 1
    p.drain()

    (task,) = p.tasks(run.id)
    assert (task.status, task.attempts) == (TaskStatus.COMPLETED, 2)
    assert p.run(run.id).status is RunStatus.COMPLETED
