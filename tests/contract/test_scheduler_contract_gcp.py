"""The Scheduler port on Cloud Tasks (gcloud-tasks-emulator), with its gaps named.

A scheduled message is a Cloud Task that POSTs a Pub/Sub publish request at
its time; here the task emulator delivers it to the Pub/Sub emulator and the
message is pulled from the topic's subscription, as the subscriber function
would receive it.
"""

from __future__ import annotations

import itertools
import json
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.adapters.gcp import clients
from common.adapters.gcp.tasks_scheduler import CloudTasksScheduler, task_id
from common.config import Settings
from common.core.messages import ExtractTask
from common.topology import PRIORITY_QUEUES
from common.topology import default as default_topology
from tests.emulators.harness import Emulators

# Tests that reach the emulators are marked; the rest use a fake Tasks client.
pytestmark = pytest.mark.timeout(60)

_names = itertools.count()


@pytest.fixture
def settings() -> Settings:
    return Settings(backend="gcp", project="sluice-emulated", prefix=f"s{next(_names)}-")


@pytest.fixture
def scheduler(emulators: Emulators, settings: Settings) -> Iterator[tuple[CloudTasksScheduler, str]]:
    """A scheduler with the topology's priority queues, and a subscription on the extract topic."""
    from google.cloud import tasks_v2
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

    client = clients.tasks_client()
    location = f"projects/{emulators.project}/locations/{emulators.location}"
    for queue in PRIORITY_QUEUES:
        client.create_queue(parent=location, queue=tasks_v2.Queue(name=f"{location}/queues/{settings.prefix}{queue}"))
    topic = f"projects/{emulators.project}/topics/{settings.topic_name('extract')}"
    PublisherClient().create_topic(name=topic)
    subscriber = SubscriberClient()
    sub = subscriber.subscription_path(emulators.project, settings.topic_name("extract-sub"))
    subscriber.create_subscription(name=sub, topic=topic)
    sched = CloudTasksScheduler(
        emulators.project,
        emulators.location,
        default_topology(),
        settings,
        service_account_email="tasks@sluice-emulated.iam.gserviceaccount.com",
        queue_prefix=settings.prefix,
    )
    yield sched, sub
    subscriber.close()


def _pull(sub: str, within_s: float) -> list[Any]:
    from google.cloud.pubsub_v1 import SubscriberClient

    subscriber = SubscriberClient()
    deadline = time.monotonic() + within_s
    try:
        while time.monotonic() < deadline:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                resp = subscriber.pull(request={"subscription": sub, "max_messages": 10, "return_immediately": True})
            if resp.received_messages:
                subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in resp.received_messages])
                return list(resp.received_messages)
            time.sleep(0.1)
        return []
    finally:
        subscriber.close()


@pytest.mark.emulator
def test_a_scheduled_message_reaches_its_topic_at_its_time(scheduler: tuple[CloudTasksScheduler, str]) -> None:
    sched, sub = scheduler
    msg = ExtractTask(task_id="t1", run_id="r1", job_id="j1")
    at = datetime.now(UTC) + timedelta(seconds=2)
    assert sched.schedule(msg, at=at, name="retry-t1-2") == "retry-t1-2"
    assert _pull(sub, 1.0) == [], "delivered before its time"
    (got,) = _pull(sub, 10.0)
    assert datetime.now(UTC) >= at
    assert json.loads(got.message.data) == {"task_id": "t1", "run_id": "r1", "job_id": "j1"}
    attrs = dict(got.message.attributes)
    assert attrs == {"kind": "task.extract", "queue": "normal", "task_id": "t1", "run_id": "r1", "job_id": "j1"}


class _FakeTasks:
    def __init__(self, fail: Exception | None = None) -> None:
        self.created: list[Any] = []
        self.fail = fail

    def create_task(self, *, parent: str, task: Any) -> Any:
        self.created.append((parent, task))
        if self.fail is not None:
            raise self.fail
        return task


@pytest.fixture
def fake_tasks(monkeypatch: pytest.MonkeyPatch) -> _FakeTasks:
    fake = _FakeTasks()
    monkeypatch.setattr(clients, "tasks_client", lambda: fake)
    monkeypatch.delenv(clients.TASKS_EMULATOR_ENV, raising=False)
    return fake


def _scheduler(settings: Settings, push_url: str | None = None) -> CloudTasksScheduler:
    return CloudTasksScheduler(
        "proj",
        "europe-west1",
        default_topology(),
        settings,
        service_account_email="tasks@proj.iam.gserviceaccount.com",
        push_url=push_url,
    )


def test_a_duplicate_name_answers_already_exists_and_returns_the_name(
    fake_tasks: _FakeTasks, settings: Settings
) -> None:
    from google.api_core import exceptions as gexc

    fake_tasks.fail = gexc.AlreadyExists("task exists")  # type: ignore[no-untyped-call]
    msg = ExtractTask(task_id="t1", run_id="r1", job_id="j1")
    at = datetime.now(UTC) + timedelta(minutes=1)
    assert _scheduler(settings).schedule(msg, at=at, name="retry-t1-2") == "retry-t1-2"
    parent, task = fake_tasks.created[0]
    assert task.name == f"{parent}/tasks/retry-t1-2"


def test_the_pubsub_api_gets_an_oauth_token_and_a_relay_an_oidc_token(
    fake_tasks: _FakeTasks, settings: Settings
) -> None:
    msg = ExtractTask(task_id="t1", run_id="r1", job_id="j1")
    at = datetime.now(UTC) + timedelta(minutes=1)
    _scheduler(settings).schedule(msg, at=at, name="a")
    _scheduler(settings, push_url="https://relay.example.run.app/publish/{topic}").schedule(msg, at=at, name="b")
    (_, direct), (_, relayed) = fake_tasks.created
    topic = settings.topic_name("extract")
    assert direct.http_request.url == f"https://pubsub.googleapis.com/v1/projects/proj/topics/{topic}:publish"
    assert direct.http_request.oauth_token.service_account_email == "tasks@proj.iam.gserviceaccount.com"
    assert relayed.http_request.url == f"https://relay.example.run.app/publish/{topic}"
    assert relayed.http_request.oidc_token.audience == relayed.http_request.url
    assert int(direct.schedule_time.timestamp()) == int(at.timestamp())


def test_task_ids_keep_allowed_names_and_hash_the_others() -> None:
    assert task_id("retry-t1_2") == "retry-t1_2"
    odd = task_id("retry:t1/2")
    assert odd.startswith("retry-t1-2-") and odd == task_id("retry:t1/2") and odd != task_id("retry:t1/3")


def test_naive_times_are_refused(fake_tasks: _FakeTasks, settings: Settings) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _scheduler(settings).schedule(
            ExtractTask(task_id="t", run_id="r", job_id="j"), at=datetime(2030, 1, 1), name="n"
        )
