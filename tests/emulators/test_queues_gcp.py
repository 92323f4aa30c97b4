"""Queue stats and dead letters on Google Cloud's shape, on the emulators.

The gcp composition root's own wiring (Firestore, Pub/Sub) serves the API.
Work subscriptions are created as *pull* subscriptions here, named and
dead-lettered as Terraform names and dead-letters them, so a test can fail a
message five times (nack) and let Pub/Sub move it to the dead-letter topic;
each dead-letter topic has its ``--hold`` subscription, as deployed. Then:
the API lists dead letters (per user, and all of them for an operator) by
peeking the hold subscriptions without consuming them, and replays one onto
the topic it came from; queue stats count the store's open work per
subscription and the dead letters per source subscription.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from common.adapters.gcp.firestore_store import FirestoreStore
from common.api.app import create_app
from common.api.auth import BearerAuthenticator, OidcVerifier, owner_id
from common.api.settings import ApiSettings, IssuerConfig
from common.config import Settings
from common.core.models import ExtractionTask
from common.core.schema import INVOICE_PRESET
from common.core.states import TaskStatus
from common.ports.bus import Rejected
from common.service import jobs
from common.service.context import Deps, TopologySender
from common.topology import default as default_topology
from common.topology import subscription_name
from tests.api.conftest import AUDIENCE, ISSUER, JWKS_URL, Keys, make_keys, mint
from tests.emulators.gcp_deps import build_gcp_deps
from tests.emulators.harness import Emulators

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]

_names = itertools.count()
T = TypeVar("T")


@dataclass
class Cloud:
    deps: Deps
    subscriber: Any
    client: Any
    keys: Keys

    def sub(self, topic: str) -> str:
        spec = self.deps.topology.topics[topic].subscription
        assert spec is not None
        return subscription_name(self.deps.settings.topic_name(topic), spec.function)

    def path(self, sub: str) -> str:
        return str(self.subscriber.subscription_path(self.deps.settings.project, sub))

    def as_user(self, sub: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(self.keys, sub, **claims)}"}

    def fail_five_times(self, topic: str, attributes: dict[str, str]) -> str:
        """Publish a message and nack it until Pub/Sub dead-letters it (max_delivery_attempts 5)."""
        message_id = self.deps.publisher.publish(self.deps.settings.topic_name(topic), b'{"x": 1}', attributes)
        sub = self.path(self.sub(topic))
        for _ in range(5):
            (received,) = _pull(self.subscriber, sub, 1)
            self.subscriber.modify_ack_deadline(subscription=sub, ack_ids=[received.ack_id], ack_deadline_seconds=0)
        # The emulator moves the message when it would deliver it a sixth time.
        assert _pull(self.subscriber, sub, 1, within_s=1.0) == []
        return message_id


def _pull(subscriber: Any, sub: str, want: int, within_s: float = 15.0) -> list[Any]:
    import warnings

    got: list[Any] = []
    deadline = time.monotonic() + within_s
    while len(got) < want and time.monotonic() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            resp = subscriber.pull(request={"subscription": sub, "max_messages": want, "return_immediately": True})
        got.extend(resp.received_messages)
        if not resp.received_messages:
            time.sleep(0.1)
    return got


def _eventually(what: str, probe: Callable[[], T | None], within_s: float = 20.0) -> T:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cloud(emulators: Emulators) -> Iterator[Cloud]:
    from google.api_core import exceptions as gexc
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

    n = next(_names)
    prefix = f"q{os.getpid()}x{n}-"
    settings = Settings(backend="gcp", project=emulators.project, prefix=prefix, log_format="text")
    topo = default_topology()
    deps = build_gcp_deps(settings, topo)
    deps.store = FirestoreStore(emulators.project, collection_prefix=f"q{os.getpid()}x{n}_")
    admin, subscriber = PublisherClient(), SubscriberClient()
    project = emulators.project
    for topic in topo.topics:
        with contextlib.suppress(gexc.AlreadyExists):
            admin.create_topic(name=f"projects/{project}/topics/{settings.topic_name(topic)}")
    holds: set[str] = set()
    for topic, spec in topo.subscribed_topics().items():
        request: dict[str, Any] = {
            "name": subscriber.subscription_path(project, subscription_name(settings.topic_name(topic), spec.function)),
            "topic": f"projects/{project}/topics/{settings.topic_name(topic)}",
            "ack_deadline_seconds": 60,
        }
        if spec.dead_letter_topic is not None:
            dlq = settings.topic_name(spec.dead_letter_topic)
            request["dead_letter_policy"] = {
                "dead_letter_topic": f"projects/{project}/topics/{dlq}",
                "max_delivery_attempts": 5,
            }
            if dlq not in holds:
                holds.add(dlq)
                hold = subscriber.subscription_path(project, f"{dlq}--hold")
                subscriber.create_subscription(name=hold, topic=f"projects/{project}/topics/{dlq}")
        subscriber.create_subscription(request=request)
    keys = make_keys()
    verifier = OidcVerifier(
        [IssuerConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=JWKS_URL)], fetcher=keys.fetch, leeway_s=0
    )
    api = ApiSettings(rate_limit_rpm=0, operator_role="sluice.operator")
    sender = TopologySender(topo, settings, deps.publisher, deps.clock)
    app = create_app(deps, api, authenticator=BearerAuthenticator(verifier), sender=sender, sleep=lambda _s: None)
    yield Cloud(deps=deps, subscriber=subscriber, client=app.test_client(), keys=keys)
    subscriber.close()


def test_dead_letters_are_listed_without_being_consumed_and_replayed_onto_their_topic(cloud: Cloud) -> None:
    alice = cloud.as_user("alice")
    operator = cloud.as_user("ops", roles=["sluice.operator"])
    job = jobs.create_job(cloud.deps, owner=owner_id(ISSUER, "alice"), name="j", fields=INVOICE_PRESET)
    attrs = {"kind": "task.extract", "job_id": job.id, "run_id": "run_1", "task_id": "task_1"}
    cloud.fail_five_times("extract", attrs)
    # An envelope that could not be decoded, dead-lettered by the entrypoint itself: nobody's job.
    export_sub = cloud.sub("export")
    dlq = cloud.deps.settings.topic_name("export-dlq")
    cloud.deps.publisher.dead_letter(  # type: ignore[attr-defined]
        Rejected(export_sub, dlq, "m-bad", b"{broken", {"sluice_undecodable": "envelope"}, "malformed_message: x")
    )

    def mine() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = cloud.client.get("/v1/dead-letters", headers=alice).get_json()["items"]
        return items or None

    (item,) = _eventually("the dead-lettered task message", mine)
    assert item["subscription"] == cloud.sub("extract")
    assert (item["kind"], item["job_id"], item["run_id"], item["task_id"]) == (
        "task.extract",
        job.id,
        "run_1",
        "task_1",
    )
    assert item["attempts"] == 5 and item["seq"] is None and item["replayed_at"] is None
    assert mine() == [item], "listing peeks: the dead letter is still there"
    assert cloud.client.get("/v1/dead-letters", headers=cloud.as_user("bob")).get_json()["items"] == []
    assert cloud.client.get("/v1/admin/dead-letters", headers=alice).status_code == 403
    every = _eventually(
        "both dead letters",
        lambda: (lambda items: items if len(items) == 2 else None)(
            cloud.client.get("/v1/admin/dead-letters", headers=operator).get_json()["items"]
        ),
    )
    undecodable = next(d for d in every if d["subscription"] == export_sub)
    assert undecodable["last_error"] == "malformed_message: x" and undecodable["job_id"] is None

    assert cloud.client.post(f"/v1/dead-letters/{undecodable['id']}/replay", headers=alice).status_code == 404
    assert cloud.client.post("/v1/dead-letters/12345/replay", headers=alice).status_code == 404
    r = cloud.client.post(f"/v1/dead-letters/{item['id']}/replay", headers=alice)
    assert r.status_code == 202, r.get_json()
    (again,) = _pull(cloud.subscriber, cloud.path(cloud.sub("extract")), 1)
    assert again.message.data == b'{"x": 1}'
    assert dict(again.message.attributes) == attrs, "the original attributes, without Pub/Sub's dead-letter ones"
    assert again.message.message_id == r.get_json()["message_id"]
    assert mine() is None, "a replayed dead letter leaves the hold subscription"
    left = cloud.client.get("/v1/admin/dead-letters", headers=operator).get_json()["items"]
    assert [d["id"] for d in left] == [undecodable["id"]]


def test_queue_stats_count_open_work_and_dead_letters_per_subscription(cloud: Cloud) -> None:
    now = datetime.now(UTC)
    statuses = [TaskStatus.PENDING] * 3 + [TaskStatus.RUNNING] + [TaskStatus.COMPLETED] * 2
    for i, status in enumerate(statuses):
        created = now - timedelta(seconds=300 - i)
        task = ExtractionTask(
            id=f"task_{i}",
            owner="alice",
            run_id="run_1",
            job_id="job_1",
            file_id=f"file_{i}",
            file_name=f"f{i}.pdf",
            status=status,
            created_at=created,
            updated_at=created,
        )
        cloud.deps.store.create(ExtractionTask.collection, task.id, task.to_doc())
    cloud.fail_five_times("export", {"kind": "export.run", "job_id": "job_1"})
    operator = cloud.as_user("ops", roles=["sluice.operator"])

    def queues() -> dict[str, dict[str, Any]] | None:
        r = cloud.client.get("/v1/admin/stats", headers=operator)
        assert r.status_code == 200, r.get_json()
        found = {q["subscription"]: q for q in r.get_json()["queues"]}
        return found if found[cloud.sub("export")]["dead_lettered"] == 1 else None

    found = _eventually("the export dead letter counted", queues)
    extract = found[cloud.sub("extract")]
    assert (extract["source"], extract["depth"], extract["dead_lettered"]) == ("store", 4, 0)
    assert 299 <= extract["oldest_age_s"] < 400
    export = found[cloud.sub("export")]
    assert (export["source"], export["depth"], export["oldest_age_s"]) == ("store", 0, None)
    drive = found[cloud.sub("import-drive")]
    assert (drive["source"], drive["depth"]) == ("none", None), "no record counts an import's messages"
    assert set(found) == {cloud.sub(t) for t in cloud.deps.topology.subscribed_topics()}
    # The same queues on a user's own stats.
    mine = cloud.client.get("/v1/stats", headers=cloud.as_user("alice")).get_json()["queues"]
    assert {q["subscription"]: q["depth"] for q in mine}[cloud.sub("extract")] == 4
