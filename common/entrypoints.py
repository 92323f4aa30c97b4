"""Thin Cloud Function entrypoints shared by ``functions/<stage>/main.py``.

Each decodes the CloudEvent, hands the message to :func:`dispatch` with
dependencies from the composition root, and maps the outcome to the
platform's retry contract: return (2xx) acknowledges; raising makes Pub/Sub
redeliver with the subscription's backoff; a message that can never be
processed is published to the subscription's dead-letter topic, then
acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from common.core.envelopes import decode_push, normalise
from common.core.errors import PermanentError, RetryableError


class RedeliveryRequested(Exception):
    """Raised so the platform nacks the message and redelivers it later."""


def pubsub_entrypoint(function: str) -> Callable[[Any], None]:
    def handle(event: Any) -> None:
        from common import bootstrap
        from common.service import dedup
        from common.service.context import TopologySender
        from common.service.dispatch import dispatch

        deps = bootstrap.deps()
        sender = TopologySender(deps.topology, deps.settings, deps.publisher, deps.clock)
        try:
            msg = decode_push(event.data)
            data, attributes = normalise(msg)
        except PermanentError as err:
            # An envelope we cannot read: acknowledging it is the only way to
            # stop redelivery; it is logged with everything we have.
            logging.getLogger("sluice.entrypoint").error(
                "undecodable event acknowledged", extra={"fields": {"error": str(err), "event_id": _id(event)}}
            )
            return
        if dedup.already_processed(deps, function, msg.message_id):
            logging.getLogger("sluice.entrypoint").info(
                "redelivery of a message already processed; acknowledged",
                extra={"fields": {"message_id": msg.message_id, "function": function}},
            )
            return
        outcome = dispatch(
            function,
            data,
            attributes,
            deps=deps,
            sender=sender,
            message_id=msg.message_id,
            attempt=msg.delivery_attempt,
        )
        if outcome.status == "retry":
            raise RedeliveryRequested(outcome.error or "retry")
        if outcome.status == "failed":
            _dead_letter(function, data, attributes, outcome.error or "failed", deps)
        dedup.remember(deps, function, msg.message_id, outcome.status)

    return handle


def _dead_letter(function: str, data: bytes, attributes: dict[str, str], error: str, deps: Any) -> None:
    topo = deps.topology
    trigger = topo.functions[function].trigger
    sub = topo.topics[trigger].subscription
    if sub is None or sub.dead_letter_topic is None:
        return
    attrs = {**attributes, "sluice_error": error[:1000], "sluice_source_function": function}
    deps.publisher.publish(deps.settings.topic_name(sub.dead_letter_topic), data, attrs)


def _id(event: Any) -> str:
    try:
        return str(event["id"])
    except (KeyError, TypeError):
        return "?"


__all__ = ["PermanentError", "RedeliveryRequested", "RetryableError", "pubsub_entrypoint"]
