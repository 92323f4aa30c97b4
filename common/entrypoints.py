"""Thin Cloud Function entrypoints shared by ``functions/<stage>/main.py``.

Each decodes the CloudEvent, hands the message to :func:`dispatch` with
dependencies from the composition root, and maps the outcome to the
platform's retry contract: return (2xx) acknowledges; raising makes Pub/Sub
redeliver with the subscription's backoff.

A message that can never be processed -- a permanent failure, or an envelope
that cannot be decoded at all -- is dead-lettered at once: recorded, with its
reason in ``sluice_error``, on the subscription's dead-letter topic (whose
``--hold`` subscription keeps it for listing and replay; on the embedded
backend, in the bus's dead letters), and only then acknowledged. Waiting for
Pub/Sub's own dead-letter policy instead would redeliver it up to
``max_delivery_attempts`` times for nothing and lose the reason. If it cannot
be recorded, the entrypoint raises: a message is never acknowledged while its
work is lost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from common.core.envelopes import decode_push, normalise
from common.core.errors import PermanentError, RetryableError
from common.ports.bus import DeadLetters, Rejected

log = logging.getLogger("sluice.entrypoint")


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
        except PermanentError as err:
            _reject_envelope(function, event, err, deps)
            return
        try:
            data, attributes = normalise(msg)
        except PermanentError as err:
            log.error(
                "undecodable message dead-lettered",
                extra={"fields": {"error": str(err), "code": err.code, "message_id": msg.message_id}},
            )
            _dead_letter(function, msg.message_id, msg.data, msg.attributes, f"{err.code}: {err}", deps)
            dedup.remember(deps, function, msg.message_id, "failed")
            return
        if dedup.already_processed(deps, function, msg.message_id):
            log.info(
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
            _dead_letter(function, msg.message_id, data, attributes, outcome.error or "failed", deps)
        dedup.remember(deps, function, msg.message_id, outcome.status)

    return handle


def _reject_envelope(function: str, event: Any, err: PermanentError, deps: Any) -> None:
    """An event that is not a Pub/Sub push at all: the whole event is the dead letter."""
    event_id = _id(event)
    log.error(
        "undecodable event dead-lettered",
        extra={"fields": {"error": str(err), "code": err.code, "event_id": event_id}},
    )
    attributes = {"sluice_undecodable": "envelope", "sluice_event_id": event_id}
    _dead_letter(function, event_id, _raw(event), attributes, f"{err.code}: {err}", deps)


def _dead_letter(
    function: str, message_id: str, data: bytes, attributes: Mapping[str, str], error: str, deps: Any
) -> None:
    topo, settings = deps.topology, deps.settings
    from common.topology import subscription_name

    trigger = topo.functions[function].trigger
    spec = topo.topics[trigger].subscription
    dlq = None if spec is None or spec.dead_letter_topic is None else settings.topic_name(spec.dead_letter_topic)
    rejected = Rejected(
        subscription=subscription_name(settings.topic_name(trigger), function),
        topic=dlq,
        message_id=message_id,
        data=data,
        attributes={**attributes, "sluice_source_function": function},
        error=error,
    )
    publisher = deps.publisher
    try:
        if isinstance(publisher, DeadLetters):
            publisher.dead_letter(rejected)
        elif dlq is not None:
            attrs = {**rejected.attributes, "sluice_error": error[:1000]}
            publisher.publish(dlq, data, attrs)
        else:
            raise RedeliveryRequested(f"{rejected.subscription} has no dead-letter topic to record {message_id} on")
    except Exception as exc:
        log.error(
            "could not dead-letter the message; it will be redelivered",
            extra={"fields": {"error": f"{type(exc).__name__}: {exc}", "message_id": message_id}},
        )
        raise RedeliveryRequested(f"dead-lettering failed: {exc}") from exc


def _raw(event: Any) -> bytes:
    """The event's data as it arrived, as near as it can be kept."""
    data = getattr(event, "data", None)
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    try:
        return json.dumps(data, default=str, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        return repr(data).encode()


def _id(event: Any) -> str:
    try:
        return str(event["id"])
    except (KeyError, TypeError):
        return "?"


__all__ = ["PermanentError", "RedeliveryRequested", "RetryableError", "pubsub_entrypoint"]
