"""The bus's Pub/Sub semantics on the Pub/Sub emulator.

The embedded bus's suite (``test_bus_contract``) specifies delivery through
its own consumer API; in the cloud, consuming is Pub/Sub's business, so the
same behaviours are driven here through a pull subscription: publish through
the adapter, then pull, acknowledge, nack (``modifyAckDeadline`` 0), let a
lease expire, dead-letter after the maximum attempts, and keep order per
ordering key. What Pub/Sub or its emulator lacks is said test by test.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.adapters.gcp.pubsub_bus import PubSubPublisher
from common.core.errors import ConfigError, NotFound
from common.obs.logging import log_context
from tests.emulators.harness import Emulators

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(60)]

_names = itertools.count()


@dataclass
class Bus:
    project: str
    publisher: PubSubPublisher
    subscriber: Any
    topic_admin: Any
    prefix: str

    def topic(self, name: str) -> str:
        path = f"projects/{self.project}/topics/{self.prefix}{name}"
        self.topic_admin.create_topic(name=path)
        return f"{self.prefix}{name}"

    def subscription(self, name: str, topic: str, **options: Any) -> str:
        path = self.subscriber.subscription_path(self.project, f"{self.prefix}{name}")
        self.subscriber.create_subscription(
            request={"name": path, "topic": f"projects/{self.project}/topics/{topic}", **options}
        )
        return str(path)

    def dead_letter(self, dlq_topic: str, attempts: int = 5) -> dict[str, Any]:
        return {
            "dead_letter_policy": {
                "dead_letter_topic": f"projects/{self.project}/topics/{dlq_topic}",
                "max_delivery_attempts": attempts,
            }
        }

    def pull(self, sub: str, want: int = 1, within_s: float = 10.0) -> list[Any]:
        got: list[Any] = []
        deadline = time.monotonic() + within_s
        while len(got) < want and time.monotonic() < deadline:
            # return_immediately: the emulator honours it, so an empty pull does not hang.
            request = {"subscription": sub, "max_messages": max(want - len(got), 1), "return_immediately": True}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in production, not here
                resp = self.subscriber.pull(request=request, timeout=5)
            got.extend(resp.received_messages)
            if not resp.received_messages:
                time.sleep(0.05)
        return got

    def nothing_for(self, sub: str, seconds: float) -> bool:
        return self.pull(sub, 1, within_s=seconds) == []

    def ack(self, sub: str, *received: Any) -> None:
        self.subscriber.acknowledge(subscription=sub, ack_ids=[r.ack_id for r in received])

    def nack(self, sub: str, *received: Any) -> None:
        self.subscriber.modify_ack_deadline(
            subscription=sub, ack_ids=[r.ack_id for r in received], ack_deadline_seconds=0
        )


@pytest.fixture
def bus(emulators: Emulators) -> Iterator[Bus]:
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

    subscriber = SubscriberClient()
    admin = PublisherClient()
    yield Bus(emulators.project, PubSubPublisher(emulators.project), subscriber, admin, f"c{next(_names)}-")
    subscriber.close()


def test_a_published_message_is_delivered_once_with_attempt_one(bus: Bus) -> None:
    work, dlq = bus.topic("work"), bus.topic("work-dlq")
    sub = bus.subscription("work-sub", work, **bus.dead_letter(dlq))
    mid = bus.publisher.publish(work, b"hello", {"kind": "k"})
    (r,) = bus.pull(sub)
    assert (r.message.message_id, r.message.data, dict(r.message.attributes)) == (mid, b"hello", {"kind": "k"})
    assert r.delivery_attempt == 1
    bus.ack(sub, r)
    assert bus.nothing_for(sub, 1.5)


def test_the_trace_id_travels_as_an_attribute(bus: Bus) -> None:
    work = bus.topic("work")
    sub = bus.subscription("work-sub", work)
    with log_context(trace_id="abc123"):
        bus.publisher.publish(work, b"x", {"kind": "k"})
    (r,) = bus.pull(sub)
    assert dict(r.message.attributes) == {"kind": "k", "trace_id": "abc123"}


def test_a_topic_fans_out_to_every_subscription(bus: Bus) -> None:
    work = bus.topic("work")
    subs = [bus.subscription("work-sub", work), bus.subscription("audit-sub", work)]
    mid = bus.publisher.publish(work, b"x", {})
    for sub in subs:
        assert [r.message.message_id for r in bus.pull(sub)] == [mid]


def test_publishing_to_an_unknown_topic_is_refused(bus: Bus) -> None:
    with pytest.raises(NotFound):
        bus.publisher.publish(f"{bus.prefix}nope", b"x", {})


def test_a_nacked_message_is_redelivered_with_the_next_attempt(bus: Bus) -> None:
    work, dlq = bus.topic("work"), bus.topic("work-dlq")
    sub = bus.subscription("work-sub", work, **bus.dead_letter(dlq))
    mid = bus.publisher.publish(work, b"x", {})
    (r1,) = bus.pull(sub)
    bus.nack(sub, r1)
    (r2,) = bus.pull(sub)
    assert (r2.message.message_id, r2.delivery_attempt) == (mid, 2)


@pytest.mark.xfail(
    reason="emulator gap: the Pub/Sub emulator redelivers a nacked pull message at once, ignoring the "
    "subscription's retry policy; Sluice's own retry policy picks task delays, and nothing waits on this backoff",
    strict=False,
)
def test_a_retry_policy_delays_redelivery(bus: Bus) -> None:
    work = bus.topic("work")
    policy = {"retry_policy": {"minimum_backoff": timedelta(seconds=3), "maximum_backoff": timedelta(seconds=10)}}
    sub = bus.subscription("work-sub", work, **policy)
    bus.publisher.publish(work, b"x", {})
    (r1,) = bus.pull(sub)
    nacked = time.monotonic()
    bus.nack(sub, r1)
    (r2,) = bus.pull(sub, within_s=15)
    assert time.monotonic() - nacked >= 2.5, "redelivered before the minimum backoff"
    assert r2.message.message_id == r1.message.message_id


def test_an_expired_lease_redelivers_the_same_message(bus: Bus) -> None:
    work = bus.topic("work")
    sub = bus.subscription("work-sub", work, ack_deadline_seconds=10)
    mid = bus.publisher.publish(work, b"x", {})
    (r1,) = bus.pull(sub)
    assert bus.nothing_for(sub, 1.0), "still leased"
    # Shorten this lease instead of waiting out the 10 s minimum deadline.
    bus.subscriber.modify_ack_deadline(subscription=sub, ack_ids=[r1.ack_id], ack_deadline_seconds=1)
    (r2,) = bus.pull(sub, within_s=10)
    assert r2.message.message_id == mid


def test_after_max_attempts_a_message_moves_to_the_dead_letter_topic(bus: Bus) -> None:
    work, dlq = bus.topic("work"), bus.topic("work-dlq")
    sub = bus.subscription("work-sub", work, **bus.dead_letter(dlq, attempts=5))
    dlq_sub = bus.subscription("dlq-sub", dlq)
    bus.publisher.publish(work, b"payload", {"kind": "k"})
    for attempt in range(1, 6):
        (r,) = bus.pull(sub)
        assert r.delivery_attempt == attempt
        bus.nack(sub, r)
    # The emulator moves the message when it would deliver it a sixth time.
    assert bus.nothing_for(sub, 1.0)
    (dead,) = bus.pull(dlq_sub, within_s=15)
    assert dead.message.data == b"payload"
    assert dead.message.attributes["kind"] == "k"
    assert dead.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"


def test_a_rejected_message_goes_straight_to_the_dead_letter_topic_with_its_reason(bus: Bus) -> None:
    """What the entrypoint does with a message that can never be processed: no
    Cloud Tasks detour for a prioritised message, Pub/Sub's attributes and the reason."""
    from common.ports.bus import Rejected

    class NoDelays:
        def schedule_publish(self, *args: Any, **kwargs: Any) -> str:
            raise AssertionError("a dead letter must not wait in a Cloud Tasks queue")

    dlq = bus.topic("work-dlq")
    hold = bus.subscription("work-dlq-hold", dlq)
    publisher = PubSubPublisher(bus.project, delayed=NoDelays())
    attrs = {"kind": "task.extract", "priority": "high", "job_id": "j1"}
    publisher.dead_letter(Rejected("extract--extract", dlq, "m1", b"{broken", attrs, "malformed_message: x"))
    (dead,) = bus.pull(hold)
    assert dead.message.data == b"{broken"
    assert dict(dead.message.attributes) == {
        **attrs,
        "CloudPubSubDeadLetterSourceSubscription": "extract--extract",
        "CloudPubSubDeadLetterSourceDeliveryCount": "1",
        "sluice_error": "malformed_message: x",
    }


def test_messages_with_one_ordering_key_arrive_in_order(bus: Bus) -> None:
    work = bus.topic("work")
    sub = bus.subscription("work-sub", work, enable_message_ordering=True)
    for i in range(20):
        bus.publisher.publish(work, str(i).encode(), {}, ordering_key="run-1")
    seen: list[bytes] = []
    while len(seen) < 20:
        batch = bus.pull(sub, 20 - len(seen))
        assert batch, "messages missing"
        seen.extend(r.message.data for r in batch)
        bus.ack(sub, *batch)
    assert seen == [str(i).encode() for i in range(20)]


def test_delayed_delivery_is_refused_without_a_scheduler(bus: Bus) -> None:
    work = bus.topic("work")
    with pytest.raises(ConfigError, match="Scheduler port"):
        bus.publisher.publish(work, b"x", {}, deliver_after=datetime.now(UTC) + timedelta(minutes=5))


def test_delayed_delivery_goes_to_the_configured_scheduler(emulators: Emulators) -> None:
    calls: list[tuple[str, bytes, dict[str, str], datetime]] = []

    class Recorder:
        def schedule_publish(self, topic: str, data: bytes, attributes: Any, *, at: datetime, **_: Any) -> str:
            calls.append((topic, data, dict(attributes), at))
            return "task-1"

    at = datetime.now(UTC) + timedelta(minutes=5)
    publisher = PubSubPublisher(emulators.project, delayed=Recorder())
    assert publisher.publish("work", b"x", {"kind": "k"}, deliver_after=at) == "task-1"
    assert calls == [("work", b"x", {"kind": "k"}, at)]
