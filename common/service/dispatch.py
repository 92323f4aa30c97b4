"""One delivery in, one outcome out: the mapping every runtime shares.

``done`` -- acknowledge. ``retry`` -- the work may succeed later: nack (local)
or raise so Pub/Sub redelivers (cloud). ``failed`` -- the message itself can
never be processed (malformed, unknown kind, refers to nothing): record it on
the dead-letter topic and acknowledge. Unexpected exceptions are *retried*,
never acknowledged: the bus's max delivery attempts then dead-letter them, so
no message's work is silently lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from common.core.errors import PermanentError, RetryableError
from common.core.messages import decode
from common.obs.logging import fields, log_context, new_trace_id
from common.service.context import Context, Deps, Sender
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
) -> Outcome:
    kind = attributes.get("kind", "")
    trace_id = attributes.get("trace_id") or new_trace_id()
    with log_context(trace_id=trace_id, message_id=message_id):
        try:
            msg = decode(kind, data)
            handler = resolve(function, kind, handlers)
            with log_context(**msg.log_labels()):
                handler(msg, Context(deps=deps, sender=sender, message_id=message_id, attempt=attempt))
            return DONE
        except RetryableError as err:
            log.warning(
                "retryable failure; the message will be redelivered",
                extra=fields(kind=kind, error=str(err), code=err.code, attempt=attempt),
            )
            return Outcome("retry", retry_after_s=err.retry_after, error=str(err))
        except PermanentError as err:
            log.error(
                "permanent failure; message dead-lettered and acknowledged",
                extra=fields(kind=kind, error=str(err), code=err.code, hint=err.hint),
            )
            return Outcome("failed", error=f"{err.code}: {err}")
        except Exception as err:
            log.exception("unexpected failure; the message will be redelivered", extra=fields(kind=kind))
            return Outcome("retry", error=f"{type(err).__name__}: {err}")
