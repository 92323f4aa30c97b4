"""The leased limiter over a real store: instances share a quota through
sharded documents, a 429 reaches every instance, an idle one gives way."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from common.adapters.local.clock import ManualClock
from common.adapters.local.sqlite_store import SqliteStore
from common.core.errors import ErrorKind, RetryableError
from common.core.leases import QuotaPlan
from common.core.ratelimit import PENALTY_FACTOR
from common.ports.store import Store, Transaction
from common.service.leased_ratelimit import LeasedRateLimiter, release_reservations


class CountingStore:
    """The store with a count of writes per document (transactions' writes included)."""

    def __init__(self, inner: Store, counts: Counter[str], lock: threading.Lock) -> None:
        self._inner = inner
        self.counts = counts
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def transaction(self, fn: Any, *, max_attempts: int = 10) -> Any:
        written: list[str] = []  # by the last attempt, the one that committed

        def counted(t: Transaction) -> Any:
            written.clear()

            class Tx:
                def get(self, c: str, d: str) -> Any:
                    return t.get(c, d)

                def set(self, c: str, d: str, data: Any) -> None:
                    written.append(d)
                    t.set(c, d, data)

            return fn(Tx())

        result = self._inner.transaction(counted, max_attempts=max_attempts)
        with self._lock:
            self.counts.update(written)
        return result


def limiter(store: Any, clock: ManualClock, plan: QuotaPlan, **kw: Any) -> LeasedRateLimiter:
    # The keeper's chores inline, so that the test steps them with its clock
    # (tests/integration/test_lease_keeper.py runs the keeper thread).
    return LeasedRateLimiter(store, clock, key="gemini:p:m", plan=plan, max_wait_s=0, background=False, **kw)


def try_acquire(lim: LeasedRateLimiter) -> bool:
    try:
        lim.acquire()
    except RetryableError as err:
        assert err.kind is ErrorKind.THROTTLED and err.retry_after is not None
        return False
    return True


def take_turns(*instances: LeasedRateLimiter) -> int:
    """Greedy instances calling in turn until none gets a token; the calls made."""
    made = 0
    while True:
        got = sum(try_acquire(lim) for lim in instances)
        if not got:
            return made
        made += got


def test_threads_with_their_own_stores_share_the_quota_without_a_hot_document(tmp_path: Path) -> None:
    clock = ManualClock()
    plan = QuotaPlan.per_minute(600)  # 10 shards
    path = tmp_path / "state.db"
    workers, steps, dt = 8, 300, 0.1  # 30 s of greedy callers
    grants: list[float] = []
    writes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(workers + 1, timeout=30)

    def worker() -> None:
        # Each thread stands for a function instance: its own store client and limiter.
        lim = limiter(CountingStore(SqliteStore(path, durable=False), writes, lock), clock, plan)
        for _ in range(steps):
            barrier.wait()
            while try_acquire(lim):
                with lock:
                    grants.append(clock.now().timestamp())
            barrier.wait()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for _ in range(steps):
        barrier.wait()  # the threads race for tokens at this instant
        barrier.wait()
        clock.advance(dt)
    for t in threads:
        t.join(timeout=30)

    elapsed = steps * dt
    assert len(grants) <= plan.shards + 600 / 60 * elapsed, "never more than the shards' bound"
    assert len(grants) >= 0.9 * 600 / 60 * elapsed, "the quota is used"
    assert max(writes.values()) <= elapsed, "no shard document is written more than once a second"
    assert sum(writes.values()) <= len(grants) / 2, "a write hands out several tokens"
    assert len(writes) == plan.shards, "every shard is used"


def test_a_429_reaches_every_instance_within_the_poll_interval(tmp_path: Path) -> None:
    clock = ManualClock()
    plan = QuotaPlan.per_minute(600)
    path = tmp_path / "state.db"
    a, b = (limiter(SqliteStore(path, durable=False), clock, plan) for _ in range(2))
    for _ in range(6):
        clock.advance(0.5)
        take_turns(a, b)
    assert b.held() > 0

    a.penalise(duration_s=30)
    t429 = clock.now().timestamp()
    clock.advance(plan.poll_s)
    try_acquire(b)
    assert b.slow_until == pytest.approx(t429 + 30), "b read the stamp"
    assert b.held() == 0 or b.renewals > 0, "b dropped the tokens it leased before the 429"

    slow = 0
    for _ in range(40):  # 20 s of greedy calls, all under the slowdown
        clock.advance(0.5)
        slow += take_turns(a, b)
    assert slow <= 600 / 60 * 20 * PENALTY_FACTOR * 1.1 + plan.shards


def test_many_instances_meeting_the_same_429_stamp_it_once(tmp_path: Path) -> None:
    clock = ManualClock()
    plan = QuotaPlan.per_minute(600)
    writes: Counter[str] = Counter()
    lock = threading.Lock()
    store = CountingStore(SqliteStore(tmp_path / "state.db", durable=False), writes, lock)
    instances = [limiter(store, clock, plan) for _ in range(10)]
    for lim in instances:
        lim.penalise(duration_s=10)
        clock.advance(0.1)
    assert writes["gemini:p:m:slowdown"] == 1


def test_an_idle_instance_gives_its_capacity_back(tmp_path: Path) -> None:
    clock = ManualClock()
    plan = QuotaPlan(rpm=120, shards=1)  # one shard of about 2 calls a second
    path = tmp_path / "state.db"
    idle, busy = (limiter(SqliteStore(path, durable=False), clock, plan) for _ in range(2))
    for _ in range(10):
        clock.advance(0.5)
        while try_acquire(idle):
            pass
    assert idle.held() > 0, "the idle instance holds tokens it will not spend"

    clock.advance(plan.horizon_s + plan.grace_s + 0.1)
    assert idle.held() == 0, "its tokens expired"
    got = 0
    for _ in range(40):
        clock.advance(0.5)
        while try_acquire(busy):
            got += 1
    assert got >= 0.95 * 120 / 60 * 20, "the busy instance gets the whole quota"


def test_a_caller_behind_a_long_queue_is_told_its_turn_at_once(tmp_path: Path) -> None:
    clock = ManualClock()
    gate = threading.Event()
    slept = threading.local()

    def sleep(_seconds: float) -> None:
        slept.yes = True
        gate.wait(timeout=30)  # waiting callers stay queued until the test lets them go

    plan = QuotaPlan.per_minute(600)  # 10 calls a second
    lim = LeasedRateLimiter(
        SqliteStore(tmp_path / "state.db", durable=False),
        clock,
        key="k",
        plan=plan,
        max_wait_s=2.0,
        sleep=sleep,
        background=False,
    )
    refused: list[tuple[float, bool]] = []  # (retry_after, slept first)
    lock = threading.Lock()

    def caller() -> None:
        slept.yes = False
        try:
            lim.acquire()
        except RetryableError as err:
            assert err.kind is ErrorKind.THROTTLED and err.retry_after is not None
            with lock:
                refused.append((err.retry_after, slept.yes))

    threads = [threading.Thread(target=caller) for _ in range(60)]
    for t in threads:
        t.start()
        t.join(timeout=0.05)  # one at a time, so the queue builds up in order
    gate.set()
    for t in threads:
        t.join(timeout=30)
    at_once = [after for after, did_sleep in refused if not did_sleep]
    # More than 2 s of quota (20 calls) was queued ahead of the later callers.
    assert len(at_once) >= 20, "callers behind the queue are turned away at once, not after waiting"
    assert min(at_once) >= 1.0, "each is told to come back when its turn is near"
    assert len(set(at_once)) == len(at_once), "one turn each, a tenth of a second apart"
    assert max(at_once) == pytest.approx(min(at_once) + (len(at_once) - 1) / 10, abs=0.01)


def test_callers_turned_away_keep_the_instance_active(tmp_path: Path) -> None:
    clock = ManualClock()
    gate = threading.Event()

    def sleep(_seconds: float) -> None:
        gate.wait(timeout=30)

    plan = QuotaPlan.per_minute(600)
    store = SqliteStore(tmp_path / "state.db", durable=False)
    lim = LeasedRateLimiter(store, clock, key="k", plan=plan, max_wait_s=2.0, sleep=sleep, background=False)
    granted: list[int] = []
    lock = threading.Lock()

    def caller(i: int) -> None:
        with contextlib.suppress(RetryableError):
            lim.acquire()
            with lock:
                granted.append(i)

    first = [threading.Thread(target=caller, args=(i,)) for i in range(40)]
    for t in first:
        t.start()
        t.join(timeout=0.05)  # the queue fills; the rest wait on the gate
    at_first = len(granted)
    clock.advance(plan.idle_s + 1)  # the queued callers' own calls are now older than idle_s
    late = threading.Thread(target=caller, args=(99,))
    late.start()
    late.join(timeout=10)  # turned away at once: the queue is long
    gate.set()
    for t in first:
        t.join(timeout=30)
    assert len(granted) > at_first, "the queued callers still get the quota's tokens"


def _calls_over(lim: LeasedRateLimiter, clock: ManualClock, seconds: float) -> int:
    """Calls a greedy instance makes while the clock moves on by ``seconds`` in 0.05 s steps
    (finer than the quota's interval, so calls spread at its pace are not held back)."""
    made = 0
    for _ in range(round(seconds * 20)):
        clock.advance(0.05)
        while try_acquire(lim):
            made += 1
    return made


@pytest.mark.parametrize("released", [True, False])
def test_a_successor_gets_the_quota_a_killed_instance_had_reserved(tmp_path: Path, released: bool) -> None:
    clock = ManualClock()
    plan = QuotaPlan.per_minute(600)  # ten shards of a call a second each
    path = tmp_path / "state.db"
    killed = limiter(SqliteStore(path, durable=False), clock, plan, rng=random.Random(1))
    _calls_over(killed, clock, 5.0)  # busy at the whole quota: it leases ahead
    reserved = killed.held()
    assert reserved >= 10, "a busy instance holds about a second of the quota or more"

    store = SqliteStore(path, durable=False)  # the successor, once the killed one's process is gone
    if released:
        assert release_reservations(store, clock) > 0
    successor = limiter(store, clock, plan, rng=random.Random(2))
    made = _calls_over(successor, clock, 2.0)

    # One greedy caller (it leases little at first) out of a quota of 20 calls in those 2 s.
    if released:
        assert made >= 10
    else:
        assert made <= 3, "without the release the killed instance's reservations hold the successor back"


def test_releasing_reservations_leaves_spendable_tokens_and_slowdowns_alone(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqliteStore(tmp_path / "state.db", durable=False)
    now = clock.now().timestamp()
    store.set("ratelimits", "k:shard-000", {"tokens": -2.5, "updated_at": now - 0.5, "slow_until": now + 30})
    store.set("ratelimits", "k:shard-001", {"tokens": 0.5, "updated_at": now})
    store.set("ratelimits", "k:slowdown", {"slow_until": now + 30, "stamped_at": now})

    assert release_reservations(store, clock) == 1

    assert store.get("ratelimits", "k:shard-000").data == {"tokens": 0.0, "updated_at": now, "slow_until": now + 30}  # type: ignore[union-attr]
    assert store.get("ratelimits", "k:shard-001").data == {"tokens": 0.5, "updated_at": now}  # type: ignore[union-attr]
    assert store.get("ratelimits", "k:slowdown").data == {"slow_until": now + 30, "stamped_at": now}  # type: ignore[union-attr]


def test_a_caller_asking_before_its_work_is_told_its_turn_when_the_queue_is_long(tmp_path: Path) -> None:
    clock = ManualClock()
    gate = threading.Event()

    def hold(_seconds: float) -> None:
        gate.wait(timeout=30)  # callers inside acquire stay queued

    plan = QuotaPlan.per_minute(600)  # 10 calls a second
    lim = LeasedRateLimiter(
        SqliteStore(tmp_path / "state.db", durable=False),
        clock,
        key="k",
        plan=plan,
        max_wait_s=2.0,
        sleep=hold,
        background=False,
    )
    assert lim.turn() is None, "nobody waits: go on"

    def caller() -> None:
        with contextlib.suppress(RetryableError):
            lim.acquire()

    waiting = [threading.Thread(target=caller) for _ in range(45)]
    for t in waiting:
        t.start()
        t.join(timeout=0.05)
    try:
        first, second = lim.turn(), lim.turn()
    finally:
        gate.set()
        for t in waiting:
            t.join(timeout=30)

    # 20 calls (2 s of quota) or more wait ahead: each later caller gets its own turn, 0.1 s apart.
    assert first is not None and second is not None
    assert first >= 1.0
    assert second == pytest.approx(first + 0.1, abs=0.01)


def test_a_cold_instance_with_many_callers_leases_from_every_shard_in_its_first_renewal(tmp_path: Path) -> None:
    """A fresh instance (a worker just started, or its successor after a crash)
    starts at the quota's pace: each shard's lease holds one token due now and
    the rest a second apart, so it asks every shard at once instead of two per
    renewal (which took about a second to reach the pace, a second of quota lost)."""
    clock = ManualClock()
    store_open = threading.Event()
    callers_go = threading.Event()
    inner = SqliteStore(tmp_path / "state.db", durable=False)

    class GatedStore:
        """The store, its transactions held until the test opens it."""

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def transaction(self, fn: Any, *, max_attempts: int = 10) -> Any:
            store_open.wait(timeout=30)
            return inner.transaction(fn, max_attempts=max_attempts)

    def wait_for_the_test(_seconds: float) -> None:
        callers_go.wait(timeout=30)

    plan = QuotaPlan.per_minute(600)  # 10 shards of a call a second
    lim = LeasedRateLimiter(
        GatedStore(),
        clock,
        key="k",
        plan=plan,
        max_wait_s=30.0,
        sleep=wait_for_the_test,
        background=False,
    )
    callers = [threading.Thread(target=try_acquire, args=(lim,)) for _ in range(20)]
    for t in callers:
        t.start()  # the first one's renewal waits at the store, the others for a token
    deadline = time.monotonic() + 30
    while lim._waiting < 20 and time.monotonic() < deadline:
        time.sleep(0.01)

    store_open.set()
    while all(t.is_alive() for t in callers) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the caller that renewed has spent its token

    assert lim.renewals == plan.shards, "the first renewal asked every shard"
    due_now = [t for t in lim._lease.times if t <= clock.now().timestamp()]
    assert len(due_now) == plan.shards - 1, "a token due now from each shard (the first caller spent one)"
    callers_go.set()
    for t in callers:
        t.join(timeout=30)


def _busy_together(instances: list[LeasedRateLimiter], clock: ManualClock, seconds: float) -> list[int]:
    """Calls each greedy instance makes while they share the quota for ``seconds``."""
    made = [0] * len(instances)
    for step in range(round(seconds * 20)):
        clock.advance(0.05)
        for k in range(len(instances)):  # each goes first in turn: all of them are busy
            i = (step + k) % len(instances)
            while try_acquire(instances[i]):
                made[i] += 1
    return made


@pytest.mark.parametrize("released", [True, False])
def test_a_dead_siblings_reservations_go_to_the_survivor_and_the_survivors_stay_its_own(
    tmp_path: Path, released: bool
) -> None:
    """A supervisor's worker process dies: what it had reserved ahead is given back at
    once, and only that, so the survivor gets the whole quota and no more."""
    clock = ManualClock()
    plan = QuotaPlan.per_minute(600)  # ten shards of a call a second each
    path = tmp_path / "state.db"
    dead = limiter(SqliteStore(path, durable=False), clock, plan, rng=random.Random(1), holder="w0-dead")
    alive = limiter(SqliteStore(path, durable=False), clock, plan, rng=random.Random(2), holder="w1-alive")
    _busy_together([dead, alive], clock, 5.0)
    assert dead.held() >= 5, "the instance that dies had reserved ahead"

    if released:
        assert release_reservations(SqliteStore(path, durable=False), clock, holder="w0-dead") > 0
    made = _calls_over(alive, clock, 3.0)

    # The quota allows 30 calls in 3 s (and a token per shard more, after a pause): nothing twice.
    assert made <= 30 + plan.shards
    if released:
        assert made >= 27
    else:
        assert made <= 24, "without the release the dead sibling's reservations go unused"


@pytest.mark.parametrize("noted", [True, False])
def test_an_instance_gone_idle_gives_what_it_reserved_ahead_to_a_sibling_still_calling(
    tmp_path: Path, noted: bool
) -> None:
    """A worker process whose items are done holds up to ``horizon_s`` of the quota,
    which would only expire while its sibling's callers wait: after ``lookahead_s``
    without a caller it gives it back (a supervisor's children are noted as holders)."""
    clock = ManualClock()
    plan = QuotaPlan.per_minute(600)
    path = tmp_path / "state.db"
    done = limiter(SqliteStore(path, durable=False), clock, plan, rng=random.Random(1), holder="w0" if noted else None)
    busy = limiter(SqliteStore(path, durable=False), clock, plan, rng=random.Random(2), holder="w1")
    _busy_together([done, busy], clock, 5.0)
    assert done.held() >= 5, "the instance about to go idle had reserved ahead"

    made = 0
    for _ in range(60):  # 3 s: the idle instance's keeper looks in, its sibling calls
        clock.advance(0.05)
        done.tick()
        while try_acquire(busy):
            made += 1

    assert made <= 30 + plan.shards, "nothing is handed out twice"
    # The sibling starts cold (it found every shard reserved): about 2 s of the 3 at the quota's pace.
    if noted:
        assert done.given_back > 0 and done.held() == 0
        assert made >= 18
    else:
        assert made <= 13, "reservations of an instance not noted as a holder expire unused"
