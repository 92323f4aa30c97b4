"""The leased limiter's keeper thread over a real store: the store is kept off
the call path, a 429 still reaches every instance, an idle instance stops.

The clock is manual; the keeper thread runs for real, so each step waits (with
a generous timeout, never a fixed sleep) until the keeper has looked at the
new time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.adapters.local.clock import ManualClock
from common.adapters.local.sqlite_store import SqliteStore
from common.core.errors import RetryableError
from common.core.leases import QuotaPlan
from common.service.leased_ratelimit import LeasedRateLimiter

PLAN = QuotaPlan.per_minute(600)  # 10 shards of a call a second


class ThreadAwareStore:
    """The store, recording which thread made each call."""

    def __init__(self, inner: SqliteStore) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()  # thread name -> store calls

    def _record(self) -> None:
        self.calls[threading.current_thread().name] += 1

    def get(self, *a: Any, **kw: Any) -> Any:
        self._record()
        return self._inner.get(*a, **kw)

    def transaction(self, *a: Any, **kw: Any) -> Any:
        self._record()
        return self._inner.transaction(*a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def eventually(what: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, "the keeper did not get there"
        time.sleep(0.005)


def settle(lim: LeasedRateLimiter) -> None:
    """Wait until the keeper has run two rounds after now (one began after it)."""
    seen = lim.ticks
    lim.wake()
    eventually(lambda: lim.ticks >= seen + 2 or not lim.keeper_running)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def limiters(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[[], tuple[LeasedRateLimiter, ThreadAwareStore]]]:
    made: list[LeasedRateLimiter] = []

    def make() -> tuple[LeasedRateLimiter, ThreadAwareStore]:
        store = ThreadAwareStore(SqliteStore(tmp_path / "state.db", durable=False))
        lim = LeasedRateLimiter(store, clock, key="gemini:p:m", plan=PLAN, max_wait_s=0)
        made.append(lim)
        return lim, store

    yield make
    for lim in made:
        lim.close()


def test_calls_spend_leased_tokens_and_never_touch_the_store(limiters: Any, clock: ManualClock) -> None:
    lim, store = limiters()
    caller = threading.current_thread().name
    spent = 0
    for _ in range(60):  # 30 s at two calls a second
        clock.advance(0.5)
        settle(lim)
        lim.acquire()
        spent += 1
    assert store.calls[caller] == 0, "the calling thread made no store call"
    assert sum(store.calls.values()) > 0 and lim.renewals > 0, "the keeper did the store's work"
    assert lim.store_waits <= 1, "a call waited for the store at most once (the cold start)"
    assert lim.renewals < spent / 2, "each renewal leased several tokens"


def test_the_keeper_stops_when_the_instance_goes_idle_and_restarts_on_the_next_call(
    limiters: Any, clock: ManualClock
) -> None:
    lim, store = limiters()
    lim.acquire()
    assert lim.keeper_running
    clock.advance(PLAN.idle_s + 0.1)
    lim.wake()
    eventually(lambda: not lim.keeper_running)
    quiet = sum(store.calls.values())
    clock.advance(30)
    lim.wake()
    assert sum(store.calls.values()) == quiet, "an idle instance neither reads nor writes"
    assert lim.held() == 0, "and holds no token"

    clock.advance(1)
    lim.acquire()
    assert lim.keeper_running, "the next call starts it again"


def test_close_stops_the_keeper_thread(limiters: Any) -> None:
    lim, _ = limiters()
    lim.acquire()
    keeper = lim._keeper
    assert keeper is not None and keeper.is_alive() and keeper.daemon
    lim.close()
    assert not keeper.is_alive()


def test_a_429_reaches_another_instance_through_its_keeper(limiters: Any, clock: ManualClock) -> None:
    a, _ = limiters()
    b, b_store = limiters()
    for _ in range(4):  # both active (a call may find its token not due yet: no matter)
        clock.advance(0.5)
        for lim in (a, b):
            settle(lim)
            with contextlib.suppress(RetryableError):
                lim.acquire()
    a.penalise(duration_s=30)
    t429 = clock.now().timestamp()
    clock.advance(PLAN.poll_s)
    settle(b)
    assert b.slow_until == pytest.approx(t429 + 30), "b's keeper read the stamp within the poll interval"
    waits = b.store_waits
    assert b.try_acquire() > 0, "b's calls are slowed"
    assert b.store_waits == waits, "and wait for the slowed quota, not for the store"
    assert b_store.calls[threading.current_thread().name] == 0


def test_a_call_that_finds_nothing_leased_waits_for_the_keeper_not_for_the_quota(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqliteStore(tmp_path / "state.db", durable=False)
    lim = LeasedRateLimiter(store, clock, key="api:u", plan=PLAN, max_wait_s=0)
    try:
        assert lim.try_acquire() == 0.0, "the first call is served once the keeper's first lease is in"
    finally:
        lim.close()
