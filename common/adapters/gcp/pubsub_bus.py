"""The publisher port on Cloud Pub/Sub.

``publish`` waits on the client's future, so a message is durable in Pub/Sub
before the call returns (a handler that acknowledges its own message after
publishing never loses the follow-up). The client batches concurrent
publishes from one process (``max_messages`` / ``max_latency_s``); ordering
keys are passed through when given (the client is then built with message
ordering on, and a key whose publish failed is resumed so the next publish on
it is not refused forever).

Attributes are strings; the caller's are sent as given, plus the ambient
trace id (``trace_id``) from the logging context when the caller did not set
one, so a consumer's logs join the producer's trace.

Pub/Sub cannot delay delivery. ``deliver_after`` is delegated to a
``DelayedPublisher`` (the Cloud Tasks scheduler) when one is configured and
refused with a clear error otherwise: delayed work goes through the Scheduler
port in the cloud.

``dead_letter`` publishes a rejected message straight to its dead-letter
topic (never through a Cloud Tasks queue, whatever its priority), with the
attributes Pub/Sub's own dead-lettering adds and the reason in
``sluice_error``; the topic's retained ``--hold`` subscription is where dead
letters are listed and replayed in the cloud.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from common.adapters.gcp import clients
from common.core.errors import ConfigError, NotFound
from common.obs.logging import current_context
from common.topology import PRIORITY_QUEUES

if TYPE_CHECKING:  # pragma: no cover
    from common.ports.bus import DeadLetters, Publisher, Rejected

DEFAULT_TIMEOUT_S: Final = 60.0
# Keyword arguments of PublisherClient.publish: attributes may not take these names.
_RESERVED: Final = frozenset({"ordering_key", "retry", "timeout"})


class DelayedPublisher(Protocol):
    """Delivers a raw message to a topic at a given time (CloudTasksScheduler)."""

    def schedule_publish(
        self,
        topic: str,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        at: datetime,
        name: str | None = None,
        queue: str = "normal",
    ) -> str: ...


class PubSubPublisher:
    def __init__(
        self,
        project: str,
        *,
        delayed: DelayedPublisher | None = None,
        max_messages: int = 100,
        max_latency_s: float = 0.01,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._project = project
        self._delayed = delayed
        self._max_messages = max_messages
        self._max_latency_s = max_latency_s
        self._timeout_s = timeout_s

    def topic_path(self, topic: str) -> str:
        return f"projects/{self._project}/topics/{topic}"

    def publish(
        self,
        topic: str,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        deliver_after: datetime | None = None,
        ordering_key: str | None = None,
    ) -> str:
        attrs = {str(k): str(v) for k, v in attributes.items()}
        if _RESERVED & attrs.keys():
            raise ValueError(f"attribute names {sorted(_RESERVED & attrs.keys())} are reserved by the Pub/Sub client")
        trace_id = current_context().get("trace_id")
        if trace_id and "trace_id" not in attrs:
            attrs["trace_id"] = trace_id
        priority = attrs.get("priority")
        if deliver_after is not None and self._delayed is None:
            raise ConfigError(
                "Pub/Sub cannot delay delivery (deliver_after): delayed work goes through the Scheduler port",
                hint="Use the Scheduler port (Cloud Tasks) for delayed messages, "
                "or build PubSubPublisher with delayed=CloudTasksScheduler(...).",
            )
        if self._delayed is not None and (deliver_after is not None or priority in PRIORITY_QUEUES):
            # Pub/Sub has neither delays nor priorities: such messages wait in the
            # Cloud Tasks queue of their priority. Every queue dispatches up to the
            # model quota (topology.yaml model_quota), so an idle system is not
            # capped, and a backlog waits in its own priority's queue rather than
            # in Pub/Sub ahead of other priorities' work.
            queue = priority if priority in PRIORITY_QUEUES else "normal"
            at = deliver_after or datetime.now(UTC)
            return self._delayed.schedule_publish(topic, data, attrs, at=at, queue=queue)
        from google.api_core import exceptions as gexc

        client = clients.publisher_client(
            max_messages=self._max_messages, max_latency_s=self._max_latency_s, ordering=ordering_key is not None
        )
        path = self.topic_path(topic)
        kwargs: dict[str, Any] = {"ordering_key": ordering_key} if ordering_key else {}
        try:
            future = client.publish(path, data, **kwargs, **attrs)
            return str(future.result(timeout=self._timeout_s))
        except gexc.NotFound:
            raise NotFound(f"topic {topic} does not exist in project {self._project}") from None
        except BaseException:
            if ordering_key:
                client.resume_publish(path, ordering_key)
            raise

    def dead_letter(self, rejected: Rejected) -> str:
        if rejected.topic is None:
            raise ConfigError(
                f"subscription {rejected.subscription} has no dead-letter topic: cannot record a rejected message",
                hint="Give the subscription a dead_letter_topic in topology.yaml.",
            )
        attrs = {str(k): str(v) for k, v in rejected.attributes.items() if k not in _RESERVED}
        attrs["CloudPubSubDeadLetterSourceSubscription"] = rejected.subscription
        attrs["CloudPubSubDeadLetterSourceDeliveryCount"] = str(rejected.attempts)
        attrs["sluice_error"] = rejected.error[:1000]
        client = clients.publisher_client(max_messages=self._max_messages, max_latency_s=self._max_latency_s)
        future = client.publish(self.topic_path(rejected.topic), rejected.data, **attrs)
        return str(future.result(timeout=self._timeout_s))


if TYPE_CHECKING:

    def _conforms(p: PubSubPublisher) -> Publisher:
        return p

    def _records_dead_letters(p: PubSubPublisher) -> DeadLetters:
        return p
