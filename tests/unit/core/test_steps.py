"""Who holds a kind's effectful run step (common.core.steps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from common.core.models import StepState
from common.core.steps import claim, release, wait_s

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _held(message_id: str = "m1", delivery: int = 1) -> StepState:
    step = claim(None, message_id=message_id, delivery=delivery, now=NOW, lease_s=60)
    assert step is not None
    return step


def test_a_first_claim_holds_the_step_for_its_lease() -> None:
    step = _held()
    assert (step.attempts, step.message_id, step.delivery) == (1, "m1", 1)
    assert step.lease_until == NOW + timedelta(seconds=60) and wait_s(step, NOW) == 60


def test_another_message_or_a_copy_of_the_same_delivery_waits_while_the_lease_is_ahead() -> None:
    step = _held()
    assert claim(step, message_id="m2", delivery=1, now=NOW, lease_s=60) is None
    assert claim(step, message_id="m1", delivery=1, now=NOW, lease_s=60) is None


def test_a_later_delivery_of_the_held_message_takes_over_at_once() -> None:
    taken = claim(_held(), message_id="m1", delivery=2, now=NOW, lease_s=60)
    assert taken is not None and (taken.attempts, taken.delivery) == (2, 2)


def test_any_delivery_takes_over_once_the_lease_has_ended() -> None:
    later = NOW + timedelta(seconds=61)
    taken = claim(_held(), message_id="m9", delivery=1, now=later, lease_s=60)
    assert taken is not None and (taken.attempts, taken.message_id) == (2, "m9")


def test_a_release_frees_the_step_and_keeps_the_error_only_for_its_holder() -> None:
    step = _held()
    assert release(step, attempt=2, error={"code": "x"}) is None
    freed = release(step, attempt=1, error={"code": "x"})
    assert freed is not None and freed.lease_until is None and freed.errors == [{"code": "x"}]
    assert claim(freed, message_id="m2", delivery=1, now=NOW, lease_s=60) is not None
