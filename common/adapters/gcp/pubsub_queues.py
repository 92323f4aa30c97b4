"""Dead letters on Pub/Sub: listed and replayed from the dead-letter topics' hold subscriptions.

Every work subscription with a dead-letter topic forwards a message that
failed ``max_delivery_attempts`` times there (Pub/Sub's own dead-lettering,
or :meth:`PubSubPublisher.dead_letter` for an envelope that cannot be
decoded); Terraform gives each dead-letter topic one pull subscription,
``<topic>--hold``, that keeps them. Both add
``CloudPubSubDeadLetterSourceSubscription`` (where the message came from) and
``CloudPubSubDeadLetterSourceDeliveryCount``; Sluice's own add ``sluice_error``.

Listing *peeks*: it pulls what the hold subscription has, then hands every
message back at once (ack deadline 0), so nothing is consumed. While one
listing holds them (a fraction of a second) a concurrent listing sees fewer:
listings are for people, not for accounting. Replaying pulls until it finds
the message, publishes its data and original attributes to the topic of the
subscription it came from, and only then acknowledges it (a crash in between
leaves it listed, and a second replay would deliver it twice: handlers are
idempotent).

Backlog of the work subscriptions is not visible here: they push, and a pull
would steal deliveries. :meth:`backlog` answers None and the service counts the
store's open work instead (the emulator has no Cloud Monitoring either).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from common.adapters.gcp import clients
from common.core.errors import NotFound
from common.ports.queues import DeadLetterEntry

if TYPE_CHECKING:  # pragma: no cover
    from common.adapters.gcp.pubsub_bus import PubSubPublisher
    from common.ports.queues import Queues

SOURCE_SUBSCRIPTION: Final = "CloudPubSubDeadLetterSourceSubscription"
_DEAD_LETTER_ATTRIBUTES: Final = frozenset(
    {
        SOURCE_SUBSCRIPTION,
        "CloudPubSubDeadLetterSourceDeliveryCount",
        "CloudPubSubDeadLetterSourceSubscriptionProject",
        "CloudPubSubDeadLetterSourceTopicPublishTime",
        "sluice_error",
    }
)
# How many messages one pull asks for (Pub/Sub's maximum is 1000).
_BATCH: Final = 1000
HOLD_SUFFIX: Final = "--hold"


class PubSubQueues:
    """``holds``: dead-letter topic -> its hold subscription; ``sources``:
    work subscription -> (its topic, its dead-letter topic)."""

    def __init__(
        self,
        project: str,
        publisher: PubSubPublisher,
        *,
        sources: Mapping[str, tuple[str, str | None]],
        timeout_s: float = 10.0,
    ) -> None:
        self._project = project
        self._publisher = publisher
        self._sources = dict(sources)
        self._timeout_s = timeout_s

    def _holds(self, subscription: str | None) -> list[str]:
        topics = {dlq for sub, (_, dlq) in self._sources.items() if dlq and subscription in (None, sub)}
        return [f"projects/{self._project}/subscriptions/{dlq}{HOLD_SUFFIX}" for dlq in sorted(topics)]

    def backlog(self, subscription: str) -> None:
        del subscription
        return None

    def dead_lettered(self, subscription: str) -> int:
        return len(self.dead_letters(subscription, limit=100_000))

    def dead_letters(self, subscription: str | None = None, *, limit: int = 1000) -> list[DeadLetterEntry]:
        found: list[DeadLetterEntry] = []
        for hold in self._holds(subscription):
            with self._peek(hold) as received:
                found.extend(_entry(r) for r in received if subscription in (None, _source(r.message.attributes)))
        found.sort(key=lambda d: (d.dead_lettered_at, d.id))
        return found[:limit]

    def replay(self, dead_letter_id: str) -> str:
        for hold in self._holds(None):
            with self._peek(hold, stop_at=dead_letter_id) as received:
                match = next((r for r in received if r.message.message_id == dead_letter_id), None)
                if match is None:
                    continue
                attrs = dict(match.message.attributes)
                source = _source(attrs)
                if source not in self._sources:
                    raise NotFound(f"dead letter {dead_letter_id} came from {source!r}, which Sluice does not know")
                topic = self._sources[source][0]
                clean = {k: v for k, v in attrs.items() if k not in _DEAD_LETTER_ATTRIBUTES}
                message_id = self._publisher.publish(topic, bytes(match.message.data), clean)
                clients.subscriber_client().acknowledge(subscription=hold, ack_ids=[match.ack_id])
                received.remove(match)
                return message_id
        raise NotFound(f"dead letter {dead_letter_id} does not exist")

    def _peek(self, hold: str, *, stop_at: str | None = None) -> _Peek:
        return _Peek(hold, self._timeout_s, stop_at)


class _Peek:
    """Pull everything a hold subscription has (or up to ``stop_at``), then hand back what was not taken."""

    def __init__(self, hold: str, timeout_s: float, stop_at: str | None) -> None:
        self._hold = hold
        self._timeout_s = timeout_s
        self._stop_at = stop_at
        self._received: list[Any] = []

    def __enter__(self) -> list[Any]:
        from google.api_core import exceptions as gexc

        subscriber = clients.subscriber_client()
        seen: set[str] = set()
        try:
            for batch in self._pulls(subscriber):
                fresh = [r for r in batch if r.message.message_id not in seen]
                self._received.extend(batch)
                seen.update(r.message.message_id for r in fresh)
                if not fresh or (self._stop_at is not None and self._stop_at in seen):
                    break
        except gexc.NotFound:
            raise NotFound(f"the dead-letter hold subscription {self._hold} does not exist") from None
        return self._received

    def _pulls(self, subscriber: Any) -> Iterator[list[Any]]:
        while True:
            request = {"subscription": self._hold, "max_messages": _BATCH, "return_immediately": True}
            with warnings.catch_warnings():
                # Deprecated for serving workloads; a listing must not wait for messages that are not there.
                warnings.simplefilter("ignore", DeprecationWarning)
                response = subscriber.pull(request=request, timeout=self._timeout_s)
            if not response.received_messages:
                return
            yield list(response.received_messages)

    def __exit__(self, *exc: object) -> None:
        if self._received:
            ack_ids = [r.ack_id for r in self._received]
            for i in range(0, len(ack_ids), _BATCH):
                clients.subscriber_client().modify_ack_deadline(
                    subscription=self._hold, ack_ids=ack_ids[i : i + _BATCH], ack_deadline_seconds=0
                )


def _source(attributes: Mapping[str, str]) -> str:
    # Pub/Sub names the source subscription by its short name; accept a full path too.
    return str(attributes.get(SOURCE_SUBSCRIPTION, "")).rsplit("/", 1)[-1]


def _entry(received: Any) -> DeadLetterEntry:
    message = received.message
    attrs = dict(message.attributes)
    published = message.publish_time
    at = published if isinstance(published, datetime) else datetime.now(UTC)
    return DeadLetterEntry(
        id=str(message.message_id),
        subscription=_source(attrs),
        message_id=str(message.message_id),
        attempts=int(attrs.get("CloudPubSubDeadLetterSourceDeliveryCount", "0") or 0),
        last_error=attrs.get("sluice_error"),
        dead_lettered_at=at if at.tzinfo else at.replace(tzinfo=UTC),
        attributes={k: v for k, v in attrs.items() if k not in _DEAD_LETTER_ATTRIBUTES},
    )


if TYPE_CHECKING:

    def _conforms(q: PubSubQueues) -> Queues:
        return q
