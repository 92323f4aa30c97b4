"""Token leases over sharded buckets: shares, pacing, idle instances and slowdowns."""

from __future__ import annotations

import itertools
import random

import pytest

from common.core.leases import (
    STAMP_MARGIN_S,
    Chores,
    Lease,
    QuotaPlan,
    apply_slowdown,
    chores,
    give_back,
    lease_size,
    note_holder,
    should_renew,
    stamp_needed,
    take_lease,
)
from common.core.ratelimit import PENALTY_FACTOR, PENALTY_S, BucketState

T0 = 1_700_000_000.0


class Fleet:
    """Instances sharing the shards of one plan, as the service runs them, with a manual clock."""

    def __init__(self, plan: QuotaPlan, instances: int, seed: int = 7) -> None:
        self.plan = plan
        self.cfg = plan.shard_bucket()
        self.shards: dict[int, BucketState | None] = dict.fromkeys(range(plan.shards))
        self.leases = [Lease(grace_s=plan.grace_s) for _ in range(instances)]
        self.rng = random.Random(seed)
        self.calls: list[tuple[int, float]] = []  # (instance, time)
        self.slow_until = 0.0
        self.leases_taken = 0
        self.last_try = [-1e9] * instances

    def try_call(self, i: int, now: float) -> bool:
        lease = self.leases[i]
        if should_renew(self.plan, lease, now, self.last_try[i]):
            self.last_try[i] = now
            index = self.rng.randrange(self.plan.shards)
            state = self.shards[index]
            if self.slow_until > (state.slow_until if state else 0.0):
                state = apply_slowdown(self.cfg, state, now, self.slow_until)
            want = lease_size(self.plan, self.plan.max_lease)
            grant = take_lease(self.cfg, state, now, want, self.plan.horizon_s, self.plan.min_grant)
            if grant.times:
                self.shards[index] = grant.state
                lease.add(grant.times)
                self.leases_taken += 1
        if lease.spend(now):
            self.calls.append((i, now))
            return True
        return False

    def run(self, start: float, seconds: float, active: range | list[int], step: float = 0.02) -> None:
        for k in range(int(seconds / step)):
            now = start + k * step
            for i in active:
                while self.try_call(i, now):
                    pass


def per_window(times: list[float], start: float, end: float, width: float) -> list[int]:
    counts = []
    t = start
    while t + width <= end + 1e-9:
        counts.append(sum(1 for c in times if t <= c < t + width))
        t += width
    return counts


@pytest.mark.parametrize("rpm", [1, 60, 600, 2000, 20000])
def test_the_shards_shares_add_up_to_the_quota(rpm: int) -> None:
    plan = QuotaPlan.per_minute(rpm)
    cfg = plan.shard_bucket()
    assert plan.shards * cfg.refill_per_s * 60 == pytest.approx(rpm)
    assert plan.shards * cfg.capacity <= max(1, 0.02 * rpm), "the bursts add at most 2 %"
    assert plan.shards == max(1, -(-rpm // 60)), "about one call a second per shard"


def test_many_instances_stay_within_the_quota_in_every_minute_and_use_it() -> None:
    plan = QuotaPlan.per_minute(2000)
    fleet = Fleet(plan, instances=20)
    fleet.run(T0, 240, range(20))
    times = [t for _, t in fleet.calls]
    # Sliding windows, a second apart: never more than the quota and the shards' bursts in any 60 s.
    sliding = [sum(1 for t in times if s <= t < s + 60) for s in [T0 + k for k in range(0, 181)]]
    assert max(sliding) <= 2000 + plan.shards <= 1.02 * 2000
    assert min(per_window(times, T0 + 60, T0 + 240, 60)) >= 0.98 * 2000, "the quota is used, not just respected"


def test_a_lease_spaces_its_tokens_at_the_shards_refill() -> None:
    plan = QuotaPlan(rpm=600, shards=5)
    cfg = plan.shard_bucket()
    grant = take_lease(cfg, None, T0, want=4, horizon_s=plan.horizon_s)
    assert grant.times[0] == T0, "a full shard's token is spendable at once"
    gaps = [b - a for a, b in zip(grant.times, grant.times[1:], strict=False)]
    assert gaps == pytest.approx([1 / cfg.refill_per_s] * 3)


def test_a_lease_reserves_no_further_than_the_horizon() -> None:
    plan = QuotaPlan(rpm=600, shards=5)  # each shard refills 1.98 tokens/s
    cfg = plan.shard_bucket()
    grant = take_lease(cfg, None, T0, want=100, horizon_s=2.0)
    assert len(grant.times) == 1 + int(cfg.refill_per_s * 2.0)
    refused = take_lease(cfg, grant.state, T0, want=1, horizon_s=2.0)
    assert refused.times == () and refused.wait_s > 0
    later = take_lease(cfg, grant.state, T0 + refused.wait_s, want=1, horizon_s=2.0)
    assert len(later.times) == 1, "waiting the announced time is enough"


def test_an_idle_instance_gives_its_capacity_back() -> None:
    plan = QuotaPlan.per_minute(600)
    fleet = Fleet(plan, instances=4)
    fleet.run(T0, 10, range(4))
    held = fleet.leases[0]
    assert len(held) > 0, "instance 0 holds tokens when it goes idle"
    fleet.run(T0 + 10, 30, [1, 2, 3])  # instance 0 makes no call from now on
    back = T0 + 10 + plan.horizon_s + plan.grace_s
    assert held.next_wait(back + 0.1) is None, "its tokens expired"
    others = [t for i, t in fleet.calls if i != 0 and t >= back]
    # Three callers over ten shards leave a few percent in shards nobody visited in time.
    assert len(others) >= 0.9 * 600 / 60 * (T0 + 40 - back), "the others get the idle one's share too"


def test_a_lease_drops_tokens_left_unspent_past_their_grace() -> None:
    lease = Lease([T0, T0 + 1, T0 + 2], grace_s=1.0)
    assert lease.expire(T0 + 2.5) == 2
    assert lease.spend(T0 + 2.5) and lease.next_wait(T0 + 2.5) is None


def test_a_token_is_not_spent_before_its_time() -> None:
    lease = Lease([T0 + 1.0], grace_s=1.0)
    assert not lease.spend(T0)
    assert lease.next_wait(T0) == pytest.approx(1.0)


def test_a_slowdown_empties_a_shard_and_slows_its_refill() -> None:
    plan = QuotaPlan(rpm=600, shards=5)
    cfg = plan.shard_bucket()
    state = apply_slowdown(cfg, None, T0, T0 + 30)
    assert state.tokens == 0 and state.slow_until == T0 + 30
    grant = take_lease(cfg, state, T0, want=1, horizon_s=0.01)
    assert grant.wait_s == pytest.approx(1 / (cfg.refill_per_s * PENALTY_FACTOR), rel=0.05)


def test_a_shard_that_knows_the_slowdown_is_not_emptied_again() -> None:
    plan = QuotaPlan(rpm=600, shards=5)
    cfg = plan.shard_bucket()
    state = apply_slowdown(cfg, None, T0, T0 + 30)
    refilled = apply_slowdown(cfg, state, T0 + 10, T0 + 30)
    assert refilled.tokens > 0 and refilled.slow_until == T0 + 30


def test_a_slowdown_in_the_fleet_halves_the_rate_until_it_ends() -> None:
    plan = QuotaPlan.per_minute(1200)
    fleet = Fleet(plan, instances=10)
    fleet.run(T0, 20, range(10))
    fleet.slow_until = T0 + 50
    for lease in fleet.leases:
        lease.times.clear()  # every instance saw the stamp and dropped its lease
    fleet.run(T0 + 20, 30, range(10))
    slow = sum(1 for _, t in fleet.calls if T0 + 25 <= t < T0 + 50)
    assert slow <= 1200 / 60 * 25 * PENALTY_FACTOR * 1.05
    fleet.run(T0 + 50, 20, range(10))
    after = sum(1 for _, t in fleet.calls if T0 + 55 <= t < T0 + 70)
    assert after >= 1200 / 60 * 15 * 0.97, "full speed again after the slowdown"


def test_the_first_429_stamps_a_slowdown_and_later_ones_of_the_same_burst_do_not() -> None:
    first = stamp_needed(None, T0, 10.0)
    assert first == T0 + 10
    assert stamp_needed(first, T0 + 1, 10.0) is None
    assert stamp_needed(first, T0 + STAMP_MARGIN_S + 1, 10.0) == T0 + STAMP_MARGIN_S + 11
    assert stamp_needed(None, T0, None) == T0 + PENALTY_S


def test_a_slow_instance_leases_one_token_and_a_busy_one_several() -> None:
    plan = QuotaPlan.per_minute(2000)
    assert lease_size(plan, 0.0) == 1
    assert lease_size(plan, 0.3) == 1
    assert lease_size(plan, 1.0) == 3
    assert lease_size(plan, 100.0) == plan.max_lease


def test_a_plan_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        QuotaPlan(rpm=10, shards=11)
    with pytest.raises(ValueError):
        QuotaPlan.per_minute(0)


def test_busy_instances_renew_about_once_a_second_per_shard_or_less() -> None:
    plan = QuotaPlan.per_minute(2000)
    fleet = Fleet(plan, instances=20)
    fleet.run(T0, 60, range(20))
    assert fleet.leases_taken / 60 / plan.shards <= 0.5


def test_one_busy_instance_is_not_capped_at_one_shards_rate() -> None:
    plan = QuotaPlan.per_minute(1200)  # 20 shards of about 1 call/s
    fleet = Fleet(plan, instances=1)
    fleet.run(T0, 30, [0])
    shard_rate = plan.shard_bucket().refill_per_s
    assert len(fleet.calls) >= 5 * shard_rate * 30, "it leases from several shards at once"


# -- the keeper: leasing ahead of need, polling, stopping when idle ----------------------


def keeper_chores(plan: QuotaPlan, lease: Lease, now: float, **kw: float) -> Chores:
    args = {"last_call": now, "next_poll": now + 1, "last_try": now - 1, "demand_per_s": 2.0, **kw}
    return chores(plan, lease, now=now, **args)


def test_an_idle_instance_neither_polls_nor_renews() -> None:
    plan = QuotaPlan.per_minute(600)
    todo = keeper_chores(plan, Lease(), T0, last_call=T0 - plan.idle_s - 0.1, next_poll=T0 - 5, last_try=0)
    assert todo.idle and not todo.poll and not todo.renew


def test_an_active_instance_polls_the_stamp_every_poll_interval() -> None:
    plan = QuotaPlan.per_minute(600)
    assert keeper_chores(plan, Lease(), T0, next_poll=T0).poll
    later = keeper_chores(plan, Lease(times=[T0] * 6), T0, next_poll=T0 + 0.4)
    assert not later.poll and later.next_s <= 0.4


def test_the_keeper_leases_before_the_tokens_held_run_out() -> None:
    plan = QuotaPlan.per_minute(600)
    # Two calls a second: a token due now and one a second later do not cover the next second.
    assert keeper_chores(plan, Lease(times=[T0, T0 + 1.0]), T0).renew
    assert not keeper_chores(plan, Lease(times=[T0, T0 + 0.5, T0 + 1.0]), T0).renew


def test_the_keeper_does_not_hoard_beyond_what_the_instance_spends_over_the_horizon() -> None:
    plan = QuotaPlan.per_minute(600)
    held = Lease(times=[T0 + 2.0 + k for k in range(6)])  # none due soon, but 3 s of two calls a second held
    assert not keeper_chores(plan, held, T0).renew


def test_the_keeper_asks_the_shards_at_most_every_renew_gap() -> None:
    plan = QuotaPlan.per_minute(600)
    assert not keeper_chores(plan, Lease(), T0, last_try=T0 - plan.renew_gap_s / 2).renew


class KeeperFleet(Fleet):
    """Instances whose keepers lease ahead every renew gap; calls only spend."""

    def tick(self, i: int, now: float, demand: float) -> None:
        lease = self.leases[i]
        for _ in range(2):  # the shards asked per renewal
            if not should_renew(self.plan, lease, now, self.last_try[i], demand):
                return
            index = self.rng.randrange(self.plan.shards)
            grant = take_lease(
                self.cfg,
                self.shards[index],
                now,
                lease_size(self.plan, demand),
                self.plan.horizon_s,
                self.plan.min_grant,
            )
            if grant.times:
                self.shards[index] = grant.state
                lease.add(grant.times)
                self.leases_taken += 1
        self.last_try[i] = now


def test_calls_below_the_quota_find_a_token_leased_ahead() -> None:
    plan = QuotaPlan.per_minute(2000)
    fleet = KeeperFleet(plan, instances=20)
    pace = 1.0  # calls a second per instance: 1,200 a minute in all, 60 % of the quota
    empty = made = 0
    step = 0.05
    for k in range(int(60 / step)):
        now = T0 + k * step
        for i in range(20):
            if k % round(plan.renew_gap_s / step) == 0:
                fleet.tick(i, now, pace)
            phase = i / 20  # the instances' calls are spread over the second
            for _ in range(int((k + 1) * step * pace + phase) - int(k * step * pace + phase)):
                made += 1
                lease = fleet.leases[i]
                if lease.next_wait(now) is None:
                    empty += 1  # this call would wait for a store round trip
                lease.spend(now)
    assert made >= 1190
    assert empty / made < 0.02, "nearly every call finds a token leased before it comes"
    assert fleet.leases_taken / 60 / plan.shards <= 0.5, "no shard is written more than once every two seconds"


def test_a_burst_plan_never_exceeds_the_quota_in_a_minute() -> None:
    plan = QuotaPlan.per_minute(600, burst=60)
    cfg = plan.shard_bucket()
    assert cfg.capacity * plan.shards == pytest.approx(60)
    assert cfg.refill_per_s * plan.shards * 60 + 60 == pytest.approx(600)
    fleet = Fleet(plan, instances=5)
    fleet.run(T0, 60, range(5))
    times = [t for _, t in fleet.calls]
    assert max(per_window(times, T0, T0 + 60, 60)) <= 600


def test_tokens_coming_due_together_are_spent_a_little_under_the_quotas_pace() -> None:
    plan = QuotaPlan.per_minute(600, spread=True)  # one call every 0.1 s, on a server counting per second
    lease = Lease(grace_s=plan.grace_s, spacing_s=plan.spacing_s)
    lease.add([100.0] * 10)  # ten shards' tokens due at once

    spent_at = [t / 100 for t in range(10_000, 10_200) if lease.spend(t / 100)]

    assert len(spent_at) == 10, "none is lost: the backlog drains within the grace"
    gaps = [b - a for a, b in itertools.pairwise(spent_at)]
    assert min(gaps) >= plan.spacing_s - 1e-9
    assert plan.spacing_s == pytest.approx(0.08)


@pytest.mark.parametrize(
    "plan", [QuotaPlan.per_minute(600), QuotaPlan.with_burst(600, spread=True)], ids=["per-minute", "burst"]
)
def test_a_quota_counted_per_minute_or_with_a_burst_spends_due_tokens_at_once(plan: QuotaPlan) -> None:
    lease = Lease(grace_s=plan.grace_s, spacing_s=plan.spacing_s)
    lease.add([100.0] * 5)
    assert sum(lease.spend(100.0) for _ in range(5)) == 5


def test_a_holders_reservations_are_noted_and_tokens_already_due_forgotten() -> None:
    holders = {"w0": [9.0, 11.0], "w1": [10.5]}

    noted = note_holder(holders, "w0", (12.0, 13.0), now=10.0)

    assert noted == {"w0": [11.0, 12.0, 13.0], "w1": [10.5]}


def test_a_holder_with_nothing_ahead_is_dropped() -> None:
    assert note_holder({"w1": [9.5]}, "w0", (12.0,), now=10.0) == {"w0": [12.0]}


def test_a_dead_holders_tokens_ahead_go_back_to_the_shard_and_its_siblings_keep_theirs() -> None:
    state = BucketState(tokens=-2.5, updated_at=9.0)

    given = give_back(state, {"w0": [9.5, 10.5, 11.5], "w1": [12.5]}, "w0", now=10.0)

    assert given is not None
    freed, rest = given
    assert freed.tokens == -0.5, "its two tokens still to come are free again; the one due is spent"
    assert freed.updated_at == 9.0
    assert rest == {"w1": [12.5]}


def test_giving_back_never_lifts_a_shard_above_one_token() -> None:
    given = give_back(BucketState(tokens=0.5, updated_at=10.0), {"w0": [11.0, 12.0, 13.0]}, "w0", now=10.0)

    assert given is not None and given[0].tokens == 1.0


def test_a_holder_with_nothing_reserved_here_gives_nothing_back() -> None:
    assert give_back(BucketState(tokens=-1.0, updated_at=10.0), {"w1": [12.0]}, "w0", now=10.0) is None
    assert give_back(BucketState(tokens=-1.0, updated_at=10.0), {"w0": [9.0]}, "w0", now=10.0) is None


def test_dropping_a_lease_after_now_keeps_the_tokens_already_due() -> None:
    lease = Lease(times=[9.5, 10.0, 10.5, 12.0])

    assert lease.drop_after(10.0) == 2
    assert lease.times == [9.5, 10.0]
