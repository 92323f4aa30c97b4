"""The circuit breaker's state machine, as a specification."""

from __future__ import annotations

import pytest

from common.core import breaker as cb
from common.core.breaker import BreakerConfig, BreakerState, CircuitOpen, CircuitState
from common.core.errors import ErrorKind, PermanentError, RetryableError
from common.core.retry import RetryPolicy

CONFIG = BreakerConfig(failure_threshold=3, cooldown_s=30.0, max_cooldown_s=100.0, probe_timeout_s=60.0)
T0 = 1_000_000.0


def fail(state: BreakerState | None, now: float = T0, code: str = "model_unavailable") -> BreakerState:
    return cb.record_failure(CONFIG, state, now, code=code)[0]


def failures(n: int, now: float = T0) -> BreakerState:
    state: BreakerState | None = None
    for _ in range(n):
        state = fail(state, now)
    assert state is not None
    return state


def opened(now: float = T0) -> BreakerState:
    return failures(CONFIG.failure_threshold, now)


def test_a_missing_state_is_closed_and_admits_without_a_write() -> None:
    decision = cb.admit(CONFIG, None, T0)
    assert decision.allowed and not decision.probe and not decision.changed


def test_failures_below_the_threshold_keep_it_closed_and_are_counted() -> None:
    state = failures(CONFIG.failure_threshold - 1)
    assert state.state is CircuitState.CLOSED and state.failures == 2
    assert cb.admit(CONFIG, state, T0).allowed


def test_the_threshold_of_consecutive_failures_opens_it_for_the_cooldown() -> None:
    state = opened()
    assert state.state is CircuitState.OPEN
    assert state.open_until == T0 + CONFIG.cooldown_s and state.opens == 1
    assert state.last_error == "model_unavailable"


def test_a_success_in_between_resets_the_count() -> None:
    state, changed = cb.record_success(failures(2), T0)
    assert changed and state.failures == 0
    assert fail(fail(state)).state is CircuitState.CLOSED, "two more failures are not three in a row"


def test_a_success_while_healthy_changes_nothing_so_nothing_is_written() -> None:
    state, changed = cb.record_success(None, T0)
    assert not changed and state == cb.CLOSED


def test_open_refuses_calls_and_says_how_long_to_wait() -> None:
    decision = cb.admit(CONFIG, opened(), T0 + 10)
    assert not decision.allowed and decision.wait_s == pytest.approx(20.0) and not decision.changed


def test_after_the_cooldown_exactly_one_caller_is_admitted_as_the_probe() -> None:
    first = cb.admit(CONFIG, opened(), T0 + 30)
    assert first.allowed and first.probe and first.changed
    assert first.state.state is CircuitState.HALF_OPEN
    second = cb.admit(CONFIG, first.state, T0 + 31)
    assert not second.allowed and second.wait_s > 0, "others wait while the probe is out"


def test_the_probes_success_closes_it() -> None:
    probing = cb.admit(CONFIG, opened(), T0 + 30).state
    closed, changed = cb.record_success(probing, T0 + 31)
    assert changed and closed.state is CircuitState.CLOSED and closed.failures == 0
    assert cb.admit(CONFIG, closed, T0 + 31).allowed


def test_the_probes_failure_reopens_it_with_a_doubled_cooldown_capped() -> None:
    state = opened()
    now = T0
    cooldowns = []
    for _ in range(4):
        now = state.open_until
        probing = cb.admit(CONFIG, state, now).state
        state = fail(probing, now)
        assert state.state is CircuitState.OPEN
        cooldowns.append(state.open_until - now)
    assert cooldowns == [60.0, 100.0, 100.0, 100.0]


def test_closing_resets_the_cooldown_for_the_next_opening() -> None:
    state = opened()
    probing = cb.admit(CONFIG, state, state.open_until).state
    state = fail(probing, state.open_until)  # re-opened for 60 s
    probing = cb.admit(CONFIG, state, state.open_until).state
    closed, _ = cb.record_success(probing, state.open_until)
    reopened = closed
    for _ in range(CONFIG.failure_threshold):
        reopened = fail(reopened, T0 + 500)
    assert reopened.open_until - (T0 + 500) == CONFIG.cooldown_s


def test_a_probe_that_never_reports_is_replaced_after_its_timeout() -> None:
    probing = cb.admit(CONFIG, opened(), T0 + 30).state
    later = cb.admit(CONFIG, probing, T0 + 30 + CONFIG.probe_timeout_s)
    assert later.allowed and later.probe


def test_late_outcomes_of_calls_admitted_before_opening_change_nothing() -> None:
    state = opened()
    assert cb.record_failure(CONFIG, state, T0 + 1)[1] is False
    assert cb.record_success(state, T0 + 1) == (state, False)


def test_peek_tells_the_wait_without_taking_the_probe() -> None:
    state = opened()
    assert cb.peek(CONFIG, state, T0 + 5) == pytest.approx(25.0)
    assert cb.peek(CONFIG, state, T0 + 30) == 0.0
    assert cb.admit(CONFIG, state, T0 + 30).probe, "peeking did not use the probe"


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (RetryableError("503", kind=ErrorKind.UNAVAILABLE), True),
        (RetryableError("500", kind=ErrorKind.SERVER), True),
        (RetryableError("reset", kind=ErrorKind.NETWORK), True),
        (RetryableError("429", kind=ErrorKind.RATE_LIMITED), False),
        (PermanentError("400 bad document"), False),
        (PermanentError("403", kind=ErrorKind.AUTH), False),
    ],
)
def test_only_errors_that_say_the_dependency_is_unwell_count(error: RetryableError, counts: bool) -> None:
    assert cb.counts_as_failure(error) is counts


def test_an_open_circuit_is_throttling_so_the_retry_policy_refunds_and_waits() -> None:
    err = CircuitOpen("vertex", 25.0, last_error="model_unavailable")
    assert err.kind is ErrorKind.THROTTLED and err.code == "circuit_open"
    decision = RetryPolicy().decide(err.kind, 100, server_delay_s=err.retry_after)
    assert decision.retry and decision.delay_s == 25.0


def test_the_state_round_trips_through_json() -> None:
    state = opened()
    assert BreakerState.model_validate(state.model_dump(mode="json")) == state


def test_a_config_whose_cap_is_below_its_cooldown_is_refused() -> None:
    with pytest.raises(ValueError, match="max_cooldown_s"):
        BreakerConfig(cooldown_s=60, max_cooldown_s=30)
