"""The token bucket's arithmetic: burst, refill, waits and the 429 penalty."""

from __future__ import annotations

import pytest

from common.core.ratelimit import (
    PENALTY_FACTOR,
    PENALTY_S,
    BucketConfig,
    BucketState,
    penalise,
    take,
)

T0 = 1_700_000_000.0
CFG = BucketConfig(capacity=5, refill_per_s=1.0)


def drain(cfg: BucketConfig, state: BucketState | None, now: float) -> tuple[int, BucketState]:
    """Take tokens at ``now`` until refused; return how many were granted."""
    granted = 0
    while True:
        d = take(cfg, state, now)
        if not d.allowed:
            return granted, d.state
        granted += 1
        state = d.state


def test_a_new_bucket_is_full_and_allows_its_burst_at_once() -> None:
    granted, _ = drain(CFG, None, T0)
    assert granted == 5


def test_an_empty_bucket_denies_with_the_wait_for_one_token() -> None:
    _, state = drain(CFG, None, T0)
    d = take(CFG, state, T0 + 0.25)
    assert not d.allowed
    assert d.wait_s == pytest.approx(0.75)


def test_a_denial_leaves_the_stored_state_unchanged_in_tokens() -> None:
    _, state = drain(CFG, None, T0)
    d = take(CFG, state, T0)
    assert d.state.tokens == state.tokens


def test_the_bucket_refills_with_time_up_to_its_capacity() -> None:
    _, state = drain(CFG, None, T0)
    assert drain(CFG, state, T0 + 2)[0] == 2
    assert drain(CFG, state, T0 + 3600)[0] == 5, "never more than the capacity"


def test_waiting_the_announced_time_is_enough() -> None:
    _, state = drain(CFG, None, T0)
    d = take(CFG, state, T0, cost=3)
    assert not d.allowed and d.wait_s == pytest.approx(3.0)
    assert take(CFG, d.state, T0 + d.wait_s, cost=3).allowed


def test_a_clock_behind_the_stored_time_adds_no_tokens_and_removes_none() -> None:
    _, state = drain(CFG, None, T0)
    d = take(CFG, state, T0 - 10)
    assert not d.allowed
    assert d.state.tokens == 0
    assert d.wait_s == pytest.approx(11.0), "the wait counts from the caller's own clock"


def test_a_cost_larger_than_the_capacity_is_refused_outright() -> None:
    with pytest.raises(ValueError, match="never fit"):
        take(CFG, None, T0, cost=6)


def test_penalise_empties_the_bucket_and_halves_the_refill_for_the_duration() -> None:
    state = penalise(CFG, None, T0, duration_s=10)
    assert state.tokens == 0
    d = take(CFG, state, T0)
    assert not d.allowed and d.wait_s == pytest.approx(1 / PENALTY_FACTOR)
    assert drain(CFG, state, T0 + 4)[0] == int(4 * PENALTY_FACTOR)


def test_the_refill_returns_to_full_speed_after_the_penalty() -> None:
    state = penalise(CFG, None, T0, duration_s=4)
    # 4 s at half speed (2 tokens), then 2 s at full speed (2 tokens).
    assert drain(CFG, state, T0 + 6)[0] == 4


def test_a_wait_spanning_the_end_of_the_penalty_counts_both_speeds() -> None:
    state = penalise(CFG, None, T0, duration_s=2)
    d = take(CFG, state, T0, cost=3)
    # 2 s give 1 token at half speed; the other 2 tokens take 2 s at full speed.
    assert d.wait_s == pytest.approx(4.0)


def test_a_penalty_without_a_server_delay_lasts_the_default() -> None:
    state = penalise(CFG, None, T0)
    assert state.slow_until == T0 + PENALTY_S


def test_repeated_penalties_extend_the_slow_period_without_compounding() -> None:
    first = penalise(CFG, None, T0, duration_s=30)
    second = penalise(CFG, first, T0 + 5, duration_s=30)
    assert second.slow_until == T0 + 35
    assert drain(CFG, second, T0 + 7)[0] == int(2 * PENALTY_FACTOR)


def test_the_state_survives_a_trip_through_the_store() -> None:
    state = penalise(CFG, None, T0, duration_s=30)
    assert BucketState.from_doc(state.to_doc()) == state


@pytest.mark.parametrize("rpm", [1, 2, 10, 60, 600])
def test_a_per_minute_bucket_keeps_every_minute_within_the_quota(rpm: int) -> None:
    cfg = BucketConfig.per_minute(rpm)
    state: BucketState | None = None
    grants: list[float] = []
    step = 0.05
    for i in range(int(300 / step)):  # a greedy caller for five minutes
        now = T0 + i * step
        d = take(cfg, state, now)
        state = d.state
        if d.allowed:
            grants.append(now)
    worst = max(sum(1 for g in grants if start <= g < start + 60) for start in grants)
    assert worst <= max(rpm, 2)  # 1 rpm: one burst token plus one refilled
    # The burst's share of the quota is the price of the bound; the rest is used.
    assert len(grants) >= cfg.capacity + cfg.refill_per_s * 300 - 1, "the quota is used, not just respected"


def test_a_per_minute_bucket_rejects_a_zero_quota() -> None:
    with pytest.raises(ValueError):
        BucketConfig.per_minute(0)
