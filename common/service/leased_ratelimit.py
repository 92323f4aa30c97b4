"""A quota shared by every instance, without a hot document: token leases
from sharded buckets, and a slowdown stamp that carries a 429 to everyone.

:mod:`common.core.leases` has the arithmetic and the reasons. Here the
documents (collection ``ratelimits``):

* ``{key}:shard-NNN`` -- one bucket per shard, written once per lease;
* ``{key}:slowdown`` -- ``slow_until``, written once per penalty.

An instance keeps one :class:`LeasedRateLimiter` per key for its lifetime
(:func:`shared`), so its lease outlives a single message. ``acquire`` spends
a leased token (no I/O), renews the lease from a random shard when it is
spent (one transaction), and reads the slowdown stamp at most every
``poll_s``; it waits at most ``max_wait_s`` for a token and otherwise raises
a ``THROTTLED`` :class:`RetryableError` carrying the wait, so the message is
retried later instead of holding the instance idle.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from common.core import leases
from common.core.errors import ErrorKind, PreconditionFailed, RetryableError
from common.core.ratelimit import BucketState
from common.ports.clock import Clock
from common.ports.store import Store, Transaction

COLLECTION = "ratelimits"
_UNSAFE_ID = re.compile(r"[/\s]")  # Firestore document ids may not contain "/"
_SHARD_TRIES = 2  # shards asked per renewal before waiting
_MAX_HOLD_S = 0.5  # after refusals, ask again within this, whatever the shards said


@dataclass(frozen=True)
class Acquired:
    waited_s: float  # time slept before the token was granted


class LeasedRateLimiter:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        key: str,
        plan: leases.QuotaPlan,
        max_wait_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        collection: str = COLLECTION,
        hint: str = "Sluice is pacing calls to stay within the quota; the work is retried on its own.",
    ) -> None:
        self._store = store
        self._clock = clock
        self.key = _UNSAFE_ID.sub("_", key)
        self.plan = plan
        self.bucket = plan.shard_bucket()
        self._max_wait_s = max_wait_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._collection = collection
        self._hint = hint
        self._lock = threading.Lock()
        self._lease = leases.Lease(grace_s=plan.grace_s)
        self._last_try = -math.inf
        self._asked: deque[float] = deque()  # recent acquire times (the demand), for the lease size
        self._next_poll = -math.inf
        self.slow_until = 0.0  # the latest slowdown this instance knows of
        self.renewals = 0  # lease transactions made (for benchmarks and tests)

    @property
    def stamp_id(self) -> str:
        return f"{self.key}:slowdown"

    def shard_doc(self, index: int) -> str:
        return f"{self.key}:{self.plan.shard_id(index)}"

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def held(self) -> int:
        """Tokens this instance holds now (leased, not yet spent or expired)."""
        with self._lock:
            self._lease.expire(self._now())
            return len(self._lease)

    # -- taking tokens ------------------------------------------------------------

    def acquire(self, cost: float = 1.0) -> Acquired:
        """Take ``cost`` tokens (rounded up), sleeping up to ``max_wait_s`` in all."""
        waited = 0.0
        tokens = max(1, math.ceil(cost))
        with self._lock:
            self._asked.extend([self._now()] * tokens)
        for _ in range(tokens):
            while True:
                wait = self._try_one()
                if wait == 0.0:
                    break
                if waited + wait > self._max_wait_s:
                    raise self._throttled(wait)
                self._sleep(wait)
                waited += wait
        return Acquired(waited_s=waited)

    def _try_one(self) -> float:
        """Spend one token now (0.0), or say how long until one may be spent."""
        with self._lock:
            now = self._now()
            self._poll(now)
            shard_wait = math.inf
            if leases.should_renew(self.plan, self._lease, now, self._last_try):
                shard_wait = self._renew(now)
                # Refusals say when those shards will have a batch; the others
                # are drained alike, so wait a little before asking again.
                hold = min(shard_wait, _MAX_HOLD_S) if shard_wait < math.inf else 0.0
                self._last_try = now + max(0.0, hold - self.plan.renew_gap_s)
            if self._lease.spend(now):
                return 0.0
            held = self._lease.next_wait(now)
            # Come back when a held token is due, a shard said it would have
            # a batch, or another shard may be asked, whichever is first.
            return max(1e-3, min(held if held is not None else math.inf, shard_wait, self.plan.renew_gap_s))

    def _recent_rate(self, now: float) -> float:
        window = 2 * self.plan.horizon_s
        while self._asked and self._asked[0] < now - window:
            self._asked.popleft()
        return len(self._asked) / window

    def _renew(self, now: float) -> float:
        """Lease from a random shard (trying another if it has no batch to
        give): the shortest wait a shard announced, or inf when a lease was
        taken (its tokens' times then say when to come back)."""
        want = leases.lease_size(self.plan, self._recent_rate(now))
        tries = self._rng.sample(range(self.plan.shards), min(_SHARD_TRIES, self.plan.shards))
        best = math.inf
        for index in tries:
            grant = self._take(index, now, want)
            if grant.times:
                self._lease.add(grant.times)
                return math.inf
            best = min(best, grant.wait_s)
        return best

    def _take(self, index: int, now: float, want: int) -> leases.Grant:
        doc_id = self.shard_doc(index)
        slow_until = self.slow_until

        def tx(t: Transaction) -> leases.Grant:
            snap = t.get(self._collection, doc_id)
            state = BucketState.from_doc(snap.data) if snap is not None else None
            if slow_until > (state.slow_until if state is not None else 0.0):
                state = leases.apply_slowdown(self.bucket, state, now, slow_until)
            grant = leases.take_lease(self.bucket, state, now, want, self.plan.horizon_s, self.plan.min_grant)
            if grant.times:
                t.set(self._collection, doc_id, grant.state.to_doc())
            return grant

        self.renewals += 1
        try:
            return self._store.transaction(tx, max_attempts=3)
        except PreconditionFailed:
            # Others are renewing from this shard right now: try another.
            return leases.Grant(times=(), wait_s=1.0 / self.bucket.refill_per_s, state=BucketState(0.0, now))

    def _throttled(self, wait: float) -> RetryableError:
        # Spread the retries of callers turned away together.
        return RetryableError(
            f"rate limit {self.key}: no token for {wait:.1f} s",
            kind=ErrorKind.THROTTLED,
            retry_after=wait + random.uniform(0.0, min(60.0, max(1.0, wait))),
            code="rate_limited_locally",
            hint=self._hint,
        )

    # -- the slowdown stamp -------------------------------------------------------

    def _poll(self, now: float) -> None:
        """Read the slowdown stamp if it is time to; a new one drops the lease."""
        if now < self._next_poll:
            return
        self._next_poll = now + self.plan.poll_s
        snap = self._store.get(self._collection, self.stamp_id)
        if snap is not None:
            self._learn(float(snap.data.get("slow_until", 0.0)), now)

    def _learn(self, until: float, now: float) -> None:
        if until > self.slow_until:
            self.slow_until = until
            if until > now:
                # Tokens leased before the 429 belong to a quota that is spent.
                self._lease.times.clear()

    def penalise(self, *, duration_s: float | None = None) -> None:
        """The server said 429: stamp the slowdown for every instance (unless a
        stamp already covers it) and drop this instance's lease at once."""
        now = self._now()
        with self._lock:
            local = leases.stamp_needed(self.slow_until, now, duration_s)
            if local is None:
                self._lease.times.clear()
                return
            self._learn(local, now)

        def tx(t: Transaction) -> float:
            snap = t.get(self._collection, self.stamp_id)
            stored = float(snap.data.get("slow_until", 0.0)) if snap is not None else None
            until = leases.stamp_needed(stored, now, duration_s)
            if until is None:
                assert stored is not None
                return stored
            t.set(self._collection, self.stamp_id, {"slow_until": until, "stamped_at": now})
            return until

        # Losing the race to another instance's stamp is fine: it said the same.
        with contextlib.suppress(PreconditionFailed):
            stamped = self._store.transaction(tx, max_attempts=3)
            with self._lock:
                self._learn(stamped, now)


_shared: dict[tuple[int, str], LeasedRateLimiter] = {}
_shared_lock = threading.Lock()


def shared(store: Store, clock: Clock, *, key: str, plan: leases.QuotaPlan, **kw: object) -> LeasedRateLimiter:
    """This process's limiter for ``key`` on ``store``: one per key, so leases
    outlive the message that took them."""
    cache_key = (id(store), key)
    with _shared_lock:
        limiter = _shared.get(cache_key)
        if limiter is None or limiter.plan != plan:
            limiter = _shared[cache_key] = LeasedRateLimiter(store, clock, key=key, plan=plan, **kw)  # type: ignore[arg-type]
        return limiter
