"""A run's effectful kind steps (``plan``, ``finish``): who holds one, pure.

A step is claimed on the run document (compare-and-set by the caller) by one
delivery for a lease. Another delivery of the same message while that lease
is ahead -- a duplicate, or a concurrent redelivery -- does not call the model
again: it waits for the lease's end (by a delayed message) and looks again,
when the step is either done (its result saved on the run) or free to take over
(its holder died).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from common.core.models import StepState

# How many earlier attempts' errors a step keeps.
MAX_ERRORS = 10


def claim(step: StepState | None, *, message_id: str, delivery: int, now: datetime, lease_s: float) -> StepState | None:
    """The step held by this delivery, or None while another attempt's lease is ahead.

    A holder that died is taken over when its lease has ended, or at once by a
    later delivery of the message it held (the bus redelivers a message only
    when the delivery that took it did not acknowledge: it crashed or timed
    out). Another copy with the same delivery number, or another message, is a
    duplicate while the lease is ahead: deliveries of one start can arrive
    together, and only one of them may call the model.
    """
    current = step or StepState()
    held = current.lease_until is not None and current.lease_until > now
    redelivered = current.message_id == message_id and delivery > current.delivery
    if held and not redelivered:
        return None
    return current.model_copy(
        update={
            "attempts": current.attempts + 1,
            "message_id": message_id,
            "delivery": delivery,
            "lease_until": now + timedelta(seconds=lease_s),
        }
    )


def release(step: StepState, *, attempt: int, error: dict[str, str] | None) -> StepState | None:
    """The step given up by ``attempt`` (to be retried), its error kept; None if it no longer holds it."""
    if step.attempts != attempt:
        return None
    errors = [*step.errors, error][-MAX_ERRORS:] if error is not None else step.errors
    return step.model_copy(update={"lease_until": None, "message_id": None, "delivery": 0, "errors": errors})


def wait_s(step: StepState | None, now: datetime) -> float:
    """Seconds until the step's current lease ends (0: no lease ahead)."""
    if step is None or step.lease_until is None:
        return 0.0
    return max(0.0, (step.lease_until - now).total_seconds())


def spec_doc(key: str, name: str, params: dict[str, Any], duplicate_names: tuple[str, ...]) -> dict[str, Any]:
    """An item spec as saved in a run's plan."""
    return {"key": key, "name": name, "params": dict(params), "duplicate_names": list(duplicate_names)}
