"""One delivery in, one outcome out: the mapping every runtime shares.

``done`` -- acknowledge. A handler that must wait for Sluice's own pacing or an
open circuit breaker (a ``THROTTLED`` error with a delay) has a fresh copy of
its message sent after the delay and this one acknowledged: waiting is not a
failed delivery, so it never counts towards the dead-letter limit. ``retry`` -- the work may succeed later: nack (local)
or raise so Pub/Sub redelivers (cloud). ``failed`` -- the message itself can
never be processed (malformed, unknown kind, refers to nothing): record it on
the dead-letter topic and acknowledge. Unexpected exceptions are *retried*,
never acknowledged: the bus's max delivery attempts then dead-letter them, so
no message's work is silently lost.

Each delivery is one span (``function/kind``), the child of the span that sent
the message (its ``traceparent`` attribute), and one set of metric points:
runtime, failure by error class, queue age (:mod:`common.obs`). Its log lines
start with ``stage started`` and end with ``stage finished`` (INFO, with the
duration and outcome), and carry the message's ids (job, run, task, ...) and
trace id; a failure's line carries its error class and ``point`` (where it was
raised: ``module:line in function``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from common import kinds
from common.core.errors import ErrorKind, PermanentError, RetryableError
from common.core.messages import MESSAGE_TYPES, Message, decode
from common.core.models import Priority
from common.obs import metrics, tracing
from common.obs.logging import failure_point, fields, log_context
from common.service import ids
from common.service.context import READY_AT, Context, Deps, Sender
from common.service.registry import resolve

log = logging.getLogger("sluice.dispatch")


@dataclass(frozen=True)
class Outcome:
    status: Literal["done", "retry", "failed"]
    retry_after_s: float | None = None
    error: str | None = None

    @property
    def ack(self) -> bool:
        return self.status != "retry"


DONE = Outcome("done")


def dispatch(
    function: str,
    data: bytes,
    attributes: Mapping[str, str],
    *,
    deps: Deps,
    sender: Sender,
    message_id: str,
    attempt: int = 1,
    handlers: dict[str, dict[str, str]] | None = None,
    published_at: datetime | None = None,
) -> Outcome:
    kind = attributes.get("kind", "")
    started = time.perf_counter()
    queue_age = _queue_age(attributes, published_at, deps)
    span_attributes: dict[str, tracing.AttributeValue] = {
        "sluice.function": function,
        "sluice.kind": kind,
        "sluice.attempt": attempt,
        "messaging.message.id": message_id,
        **{f"sluice.{k}": v for k, v in attributes.items() if k.endswith("_id") and k != tracing.TRACE_ID},
    }
    with (
        tracing.span(
            f"{function}/{kind or '?'}",
            # An operation's work is in its trace even if the message came without it (scheduled, replayed).
            parent=tracing.within_operation(tracing.extract(attributes), ids.operation_of(attributes)),
            attributes=span_attributes,
            kind="consumer",
        ) as span,
        log_context(message_id=message_id),
    ):
        outcome, error_class, labels = _handle(
            function, kind, data, deps, sender, message_id, attempt, handlers, attributes.get("priority")
        )
        span.set_attribute("sluice.outcome", outcome.status)
        if outcome.status != "done":
            span.set_attribute("sluice.error_class", error_class or "unknown")
            span.set_error(outcome.error or outcome.status)
        seconds = time.perf_counter() - started
        with log_context(**labels):
            log.info(
                "stage finished",
                extra=fields(
                    function=function,
                    kind=kind,
                    attempt=attempt,
                    outcome=outcome.status,
                    duration_ms=round(seconds * 1000, 1),
                    **({"error_class": error_class} if error_class else {}),
                ),
            )
    metrics.record_delivery(
        function,
        kind,
        outcome=outcome.status,
        seconds=seconds,
        error_class=error_class,
        queue_age_s=queue_age,
    )
    return outcome


def _handle(
    function: str,
    kind: str,
    data: bytes,
    deps: Deps,
    sender: Sender,
    message_id: str,
    attempt: int,
    handlers: dict[str, dict[str, str]] | None,
    priority: str | None = None,
) -> tuple[Outcome, str | None, dict[str, str]]:
    """The outcome of one delivery, its error class if it was not done, and the message's log labels."""
    msg: Message | None = None
    labels: dict[str, str] = {}
    try:
        if kind not in MESSAGE_TYPES:
            kinds.load()  # a job kind's own messages are known once its module is imported
        msg = decode(kind, data)
        labels = dict(msg.log_labels())
        handler = resolve(function, kind, handlers)
        with log_context(**labels):
            log.info("stage started", extra=fields(function=function, kind=kind, attempt=attempt))
            handler(msg, Context(deps=deps, sender=sender, message_id=message_id, attempt=attempt))
        return DONE, None, labels
    except Exception as err:  # noqa: BLE001 - every failure is classified (and logged) by _failed
        # The failure's lines carry the failed item's ids too (the handler's block has closed).
        with log_context(**labels):
            if msg is not None and isinstance(err, RetryableError) and _waits(err):
                _send_after_wait(msg, err, sender, priority)
                return DONE, None, labels
            return (*_failed(err, kind, attempt), labels)


def _waits(err: RetryableError) -> bool:
    """Sluice's own pacing or an open breaker: waiting, not a failed delivery."""
    return err.kind is ErrorKind.THROTTLED and err.retry_after is not None


def _send_after_wait(msg: Message, err: RetryableError, sender: Sender, priority: str | None) -> None:
    log.info("waiting, not failing: a fresh copy follows", extra=fields(code=err.code, delay_s=err.retry_after))
    rank = Priority(priority) if priority is not None and priority in Priority._value2member_map_ else None
    sender.send(msg, delay_s=err.retry_after, priority=rank)


def _failed(err: Exception, kind: str, attempt: int) -> tuple[Outcome, str | None]:
    if isinstance(err, RetryableError):
        log.warning(
            "retryable failure; the message will be redelivered",
            extra=fields(kind=kind, error=str(err), code=err.code, attempt=attempt),
        )
        # The generic code says little: the kind (rate_limited, server, ...) classifies it.
        error_class = err.code if err.code != RetryableError.code else str(err.kind.value)
        return Outcome("retry", retry_after_s=err.retry_after, error=str(err)), error_class
    if isinstance(err, PermanentError):
        log.error(
            "permanent failure; message dead-lettered and acknowledged",
            extra=fields(kind=kind, error=str(err), code=err.code, hint=err.hint, point=failure_point(err)),
        )
        return Outcome("failed", error=f"{err.code}: {err}"), err.code
    log.error(
        "unexpected failure; the message will be redelivered",
        exc_info=err,
        extra=fields(kind=kind, error_class=type(err).__name__, point=failure_point(err)),
    )
    return Outcome("retry", error=f"{type(err).__name__}: {err}"), type(err).__name__


def _queue_age(attributes: Mapping[str, str], published_at: datetime | None, deps: Deps) -> float | None:
    """Seconds since the message became deliverable (its sender's ``ready_at``, else its publish time)."""
    if not metrics.enabled():
        return None
    now = deps.clock.now().timestamp()
    ready = attributes.get(READY_AT, "")
    if ready.isdigit():
        return now - int(ready) / 1000
    if published_at is not None:
        return now - published_at.timestamp()
    return None
