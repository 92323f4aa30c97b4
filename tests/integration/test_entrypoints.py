"""The Cloud Function entrypoints under functions-framework, fed canned
Pub/Sub CloudEvents, on the embedded backend (the composition root picks it
from SLUICE_BACKEND, as in the cloud)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from common import bootstrap
from common.adapters.local.sqlite_bus import SqliteBus, SubscriptionConfig
from common.core.models import Run
from common.core.states import RunStatus, TaskStatus
from common.service import jobs, repo
from common.service.context import Deps, TopologySender
from tests.support import REPO_ROOT, SAMPLES, SHARED


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deps]:
    monkeypatch.setenv("SLUICE_BACKEND", "local")
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SLUICE_DURABLE", "false")
    monkeypatch.setattr(bootstrap, "_cached", None)
    yield bootstrap.deps()
    monkeypatch.setattr(bootstrap, "_cached", None)


def client(function: str) -> Any:
    source = str(REPO_ROOT / "functions" / function / "main.py")
    app = functions_framework.create_app("handle", source, "cloudevent")  # type: ignore[no-untyped-call]
    return app.test_client()


def push(function: str, data: bytes, attributes: dict[str, str], message_id: str, attempt: int = 1) -> Any:
    body = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": message_id,
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": f"projects/p/subscriptions/{function}",
        "deliveryAttempt": attempt,
    }
    headers = {
        "ce-id": message_id,
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/t",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "Content-Type": "application/json",
    }
    return client(function).post("/", data=json.dumps(body), headers=headers)


def forward(bus: SqliteBus, subscription: str, function: str) -> list[int]:
    """Deliver what the bus holds for ``subscription`` through the function's HTTP entrypoint."""
    codes = []
    for d in bus.pull(subscription, 100):
        codes.append(push(function, d.data, d.attributes, d.message_id).status_code)
        bus.ack(d)
    return codes


def test_the_extract_function_starts_a_run_and_extracts_a_real_invoice(env: Deps) -> None:
    bus = bootstrap.local_bus(env)
    job = jobs.create_job(env, owner="u", name="j", fields=jobs_fields())
    jobs.add_upload(env, job, SAMPLES / "uk_invoice.pdf")
    for d in bus.pull("uploads--import_upload", 10):
        bus.ack(d)
    run = jobs.request_run(env, TopologySender(env.topology, env.settings, bus, env.clock), job)

    assert forward(bus, "extract--extract", "extract") == [200], "run.start"
    assert forward(bus, "extract--extract", "extract") == [200], "task.extract"
    done = repo.require(env.store, Run, run.id)[0]
    assert done.status is RunStatus.COMPLETED and done.counters.completed == 1
    assert bus.depth("export--export") == 1, "the export request went out"
    assert forward(bus, "export--export", "export") == [200]


def jobs_fields() -> Any:
    from common.core.schema import INVOICE_PRESET

    return INVOICE_PRESET


def test_a_redelivered_event_is_acknowledged_without_doing_the_work_twice(env: Deps) -> None:
    bus = bootstrap.local_bus(env)
    job = jobs.create_job(env, owner="u", name="j", fields=jobs_fields())
    jobs.add_upload(env, job, SAMPLES / "uk_invoice.pdf")
    run = jobs.request_run(env, TopologySender(env.topology, env.settings, bus, env.clock), job)
    forward(bus, "extract--extract", "extract")
    (task_msg,) = bus.pull("extract--extract", 10)
    first = push("extract", task_msg.data, task_msg.attributes, task_msg.message_id)
    again = push("extract", task_msg.data, task_msg.attributes, task_msg.message_id, attempt=2)
    assert (first.status_code, again.status_code) == (200, 200)
    current = repo.require(env.store, Run, run.id)[0]
    assert current.counters.completed == 1 and current.counters.total == 1
    tasks = env.store.query("tasks").items
    assert [t.data["status"] for t in tasks] == [TaskStatus.COMPLETED.value]
    # The redelivery (same message id) is acknowledged by the message-id
    # dedup without running again: one export request, one export.
    assert forward(bus, "export--export", "export") == [200]
    (export,) = env.store.query("exports").items
    assert export.data["status"] == "completed"
    assert len(list(env.blobs.list("exports"))) == 1


def test_a_message_about_a_task_that_does_not_exist_is_acknowledged(env: Deps) -> None:
    bus = bootstrap.local_bus(env)
    bus.declare_subscription(SubscriptionConfig("watch-dlq", "extract-dlq"))
    res = push("extract", b'{"task_id": "t1", "run_id": "r1", "job_id": "j1"}', {"kind": "task.extract"}, "m1")
    assert res.status_code == 200, "permanent: retrying cannot make the task exist"
    (dead,) = bus.pull("watch-dlq", 10)
    assert "unknown_task" in dead.attributes["sluice_error"]


def test_an_unexpected_error_is_not_acknowledged(env: Deps, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.service import runs

    def broken(msg: Any, ctx: Any) -> None:
        raise RuntimeError("firestore unavailable")

    monkeypatch.setattr(runs, "extract_task", broken)
    monkeypatch.setattr("common.service.registry._resolved", {})
    res = push("extract", b'{"task_id": "t1", "run_id": "r1", "job_id": "j1"}', {"kind": "task.extract"}, "m2")
    assert res.status_code == 500, "raising makes Pub/Sub redeliver"


def test_a_malformed_message_is_dead_lettered_and_acknowledged(env: Deps) -> None:
    bus = bootstrap.local_bus(env)
    bus.declare_subscription(SubscriptionConfig("watch-dlq", "extract-dlq"))
    res = push("extract", b"{broken", {"kind": "task.extract"}, "m3")
    assert res.status_code == 200
    (dead,) = bus.pull("watch-dlq", 10)
    assert dead.data == b"{broken"
    assert "malformed" in dead.attributes["sluice_error"]


def post_event(function: str, data: Any, event_id: str = "ev-1") -> Any:
    """A CloudEvent whose data is whatever is given (not necessarily a Pub/Sub push)."""
    headers = {
        "ce-id": event_id,
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/t",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "Content-Type": "application/json",
    }
    return client(function).post("/", data=json.dumps(data), headers=headers)


UNDECODABLE = {
    "no message": {"subscription": "projects/p/subscriptions/s"},
    "data not base64": {"message": {"messageId": "m9", "data": "%%%not base64"}},
    "no message id": {"message": {"data": base64.b64encode(b"{}").decode()}},
}


@pytest.mark.parametrize("case", list(UNDECODABLE))
def test_an_undecodable_envelope_is_dead_lettered_with_its_reason_and_replayable(
    env: Deps, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = bootstrap.local_bus(env)
    with caplog.at_level(logging.INFO):
        res = post_event("extract", UNDECODABLE[case], event_id="ev-9")
    assert res.status_code == 200, "recorded, so acknowledged: redelivery cannot decode it either"

    (dead,) = bus.dead_letters()
    assert dead.subscription == "extract--extract"
    assert dead.last_error is not None and dead.last_error.startswith("bad_envelope: ")
    assert json.loads(dead.data) == UNDECODABLE[case], "the event as it arrived"
    assert dead.attributes["sluice_undecodable"] == "envelope" and dead.attributes["sluice_event_id"] == "ev-9"
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in loud] == ["undecodable event dead-lettered"]
    assert loud[0].exc_info is None

    bus.replay_dead_letter(dead.seq)
    (again,) = bus.pull("extract--extract", 10)
    assert again.data == dead.data


def test_a_storage_notification_that_cannot_be_read_is_dead_lettered_with_its_original_message(env: Deps) -> None:
    bus = bootstrap.local_bus(env)
    bus.declare_subscription(SubscriptionConfig("watch-dlq", "import-dlq"))
    attributes = {"eventType": "OBJECT_FINALIZE", "bucketId": "uploads", "objectId": "jobs/j/files/f/a.pdf"}
    res = push("import_upload", b"not json", attributes, "m-gcs")
    assert res.status_code == 200
    (dead,) = bus.dead_letters()
    assert (dead.subscription, dead.message_id, dead.data) == ("uploads--import_upload", "m-gcs", b"not json")
    assert dead.attributes["eventType"] == "OBJECT_FINALIZE", "replayable as the notification it was"
    assert dead.last_error is not None and "storage notification is not JSON" in dead.last_error
    (forwarded,) = bus.pull("watch-dlq", 10)
    assert forwarded.attributes["sluice_error"] == dead.last_error
    assert forwarded.attributes["CloudPubSubDeadLetterSourceSubscription"] == "uploads--import_upload"


def test_a_permanent_failure_is_listed_with_the_other_dead_letters(env: Deps) -> None:
    bus = bootstrap.local_bus(env)
    res = push("extract", b'{"task_id": "t1", "run_id": "r1", "job_id": "j1"}', {"kind": "task.extract"}, "m-perm")
    assert res.status_code == 200
    (dead,) = bus.dead_letters()
    assert (dead.subscription, dead.message_id, dead.attempts) == ("extract--extract", "m-perm", 1)
    assert dead.last_error is not None and dead.last_error.startswith("unknown_task: ")


def test_an_envelope_that_cannot_be_recorded_is_not_acknowledged(env: Deps) -> None:
    class Unreachable:
        """The bus port while Pub/Sub cannot be reached."""

        def publish(self, topic: str, data: bytes, attributes: Any, **kwargs: Any) -> str:
            raise ConnectionError("pubsub.googleapis.com unreachable")

    env.publisher = Unreachable()
    res = post_event("extract", {"not": "a push"})
    assert res.status_code == 500, "raising makes Pub/Sub redeliver: the event is not forgotten"


def test_the_documented_push_envelope_decodes(env: Deps) -> None:
    fixture = SHARED / "fixtures" / "pubsub" / "pubsub_push_envelope.full_form.json"
    if not fixture.exists():
        pytest.skip(f"shared fixtures not found at {fixture}")
    from common.core.envelopes import decode_push

    msg = decode_push(json.loads(fixture.read_text()))
    assert msg.message_id == "2070443601311540" and msg.delivery_attempt == 1
    assert json.loads(msg.data)["historyId"] == "9876543210"


def test_a_message_id_already_processed_is_acknowledged_without_running_again(
    env: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.service import cleanup as cleanup_service

    calls: list[str] = []

    def counting(msg: Any, ctx: Any) -> dict[str, int]:
        calls.append(ctx.message_id)
        return {}

    monkeypatch.setattr(cleanup_service, "sweep", counting)
    monkeypatch.setattr("common.service.registry._resolved", {})
    first = push("cleanup", b"{}", {"kind": "cleanup.sweep"}, "same-id")
    again = push("cleanup", b"{}", {"kind": "cleanup.sweep"}, "same-id", attempt=2)
    other = push("cleanup", b"{}", {"kind": "cleanup.sweep"}, "other-id")
    assert (first.status_code, again.status_code, other.status_code) == (200, 200, 200)
    assert calls == ["same-id", "other-id"], "the redelivery was acknowledged without running the handler"


def test_a_retried_message_is_not_remembered_as_processed(env: Deps, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.service import cleanup as cleanup_service

    outcomes = iter([RuntimeError("firestore unavailable"), None])

    def flaky(msg: Any, ctx: Any) -> dict[str, int]:
        err = next(outcomes)
        if err is not None:
            raise err
        return {}

    monkeypatch.setattr(cleanup_service, "sweep", flaky)
    monkeypatch.setattr("common.service.registry._resolved", {})
    assert push("cleanup", b"{}", {"kind": "cleanup.sweep"}, "m-retry").status_code == 500
    assert push("cleanup", b"{}", {"kind": "cleanup.sweep"}, "m-retry", attempt=2).status_code == 200
