"""A quota shared by every instance, without a hot document: token leases
from sharded buckets, and a slowdown stamp that carries a 429 to everyone.

:mod:`common.core.leases` has the arithmetic and the reasons. Here the
documents (collection ``ratelimits``):

* ``{key}:shard-NNN`` -- one bucket per shard, written once per lease;
* ``{key}:slowdown`` -- ``slow_until``, written once per penalty.

An instance keeps one :class:`LeasedRateLimiter` per key for its lifetime
(:func:`shared`), so its lease outlives a single message.

The store is kept off the call path: a *keeper* thread per limiter (started
by the first call, a daemon, stopped by :meth:`LeasedRateLimiter.close`)
renews the lease ahead of need and reads the slowdown stamp every
``poll_s`` (:func:`common.core.leases.chores` decides what is due). So
``acquire`` normally only spends a token it already holds, locally; it waits
for the keeper's store round trip only when it holds nothing and no shard
has said when it will have a token (a cold start, or a demand spike). An
instance with no call for ``idle_s`` stops its keeper: it neither writes nor
reads, and what it holds expires. ``background=False`` does the keeper's
chores inline, on the calling thread (tests that step a manual clock).

``acquire`` waits at most ``max_wait_s`` for the quota and otherwise raises a
``THROTTLED`` :class:`RetryableError` carrying the wait, so the message is
retried later instead of holding the instance idle; :meth:`try_acquire`
never waits for the quota and returns the wait (an API's ``Retry-After``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from common.core import leases
from common.core.errors import ErrorKind, PreconditionFailed, RetryableError
from common.core.ratelimit import PENALTY_FACTOR, BucketState
from common.ports.clock import Clock
from common.ports.store import Snapshot, Store, Transaction

log = logging.getLogger(__name__)

COLLECTION = "ratelimits"
_UNSAFE_ID = re.compile(r"[/\s]")  # Firestore document ids may not contain "/"
_SHARD_TRIES = 2  # shards refusing a renewal before it waits
# A quota of at most this many shards is gone round whole in one renewal; a larger one
# (thousands a minute: a shard per call a second) two shards at a time, or one renewal
# would be a transaction per shard of hundreds.
_ROUND_MAX = 10
_MAX_HOLD_S = 0.5  # after refusals, ask again within this, whatever the shards said
_MAX_NAP_S = 0.25  # the keeper looks again at least this often (real seconds)
_KEEPER_BACKOFF_S = 1.0  # after a store error, the keeper tries again after this
# An instance noted as a holder with no caller for this long gives back what it reserved
# ahead: its tokens would come due unspent (a second of them is a second of the quota lost).
_GIVE_BACK_AFTER_S = 0.5
# A keeper whose instance made no call for this long (real time) stops, whatever
# the injected clock says (a test's manual clock that no longer moves).
_REAL_IDLE_S = 60.0


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
        background: bool = True,
        io_wait_s: float = 5.0,
        holder: str | None = None,
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
        self._background = background
        self._io_wait_s = io_wait_s  # how long a call waits for the keeper's store round trip
        # This instance's name among those a supervisor runs: the shards note the tokens it
        # reserves ahead, given back when it dies (release_reservations(holder=...)). None: not noted.
        self._holder = holder
        self._cond = threading.Condition(threading.Lock())
        self._lease = leases.Lease(grace_s=plan.grace_s, spacing_s=plan.spacing_s)
        # The last refused renewal: the shards are asked again ``renew_gap_s``
        # after it (a granted renewal may be followed at once, if still short).
        self._last_try = -math.inf
        self._renewing = False
        self._asked: deque[float] = deque()  # when recent tokens were spent (the demand), for the lease size
        self._active_since = -math.inf
        self._waiting = 0  # tokens callers inside acquire wait for
        self._booked = -math.inf  # the latest turn handed to a caller turned away (epoch seconds)
        self._last_call = -math.inf
        self._last_call_real = -math.inf
        self._next_poll = -math.inf
        # When the shards last asked said a token could be spent (all refused, or a slowdown).
        self._ready_at = -math.inf
        # Bumped when a slowdown drops the lease: a renewal begun before it is discarded.
        self._epoch = 0
        self._order = self._rng.sample(range(plan.shards), plan.shards)
        self._cursor = 0
        self._keeper: threading.Thread | None = None
        self._keeper_on = False
        self._closed = False
        self.slow_until = 0.0  # the latest slowdown this instance knows of
        self.renewals = 0  # lease transactions made (for benchmarks and tests)
        self.keeper_errors = 0
        self.ticks = 0  # keeper rounds done
        self.store_waits = 0  # calls that waited for the keeper's store round trip
        self.given_back = 0  # shards given back this instance's reservations when it went idle
        self._leased_from: set[int] = set()  # shards this instance holds reservations from

    @property
    def stamp_id(self) -> str:
        return f"{self.key}:slowdown"

    def shard_doc(self, index: int) -> str:
        return f"{self.key}:{self.plan.shard_id(index)}"

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def held(self) -> int:
        """Tokens this instance holds now (leased, not yet spent or expired)."""
        with self._cond:
            self._lease.expire(self._now())
            return len(self._lease)

    @property
    def keeper_running(self) -> bool:
        with self._cond:
            return self._keeper_on

    # -- taking tokens ------------------------------------------------------------

    def acquire(self, cost: float = 1.0) -> Acquired:
        """Take ``cost`` tokens (rounded up), sleeping up to ``max_wait_s`` in all for the quota.

        A caller behind more waiting callers than the quota serves within
        ``max_wait_s`` is turned away at once with its own turn, booked after
        theirs and after those already turned away, at the quota's pace:
        hundreds of workers waiting on a small quota would otherwise each be
        turned away every ``max_wait_s`` (a retried task costs writes), and
        those retries, not the quota, would set the pace.
        """
        waited = 0.0
        tokens = max(1, math.ceil(cost))
        turn = self._book_turn(tokens)
        if turn is not None:
            raise self._throttled(turn, jitter=False)
        deadline = self._demand(tokens)
        spent = 0
        try:
            while spent < tokens:
                wait = self._try_one(deadline)
                if wait == 0.0:
                    spent += 1
                    continue
                # Come back when a held token is due, a shard said it would have
                # one, or another shard may be asked, whichever is first.
                wait = max(1e-3, min(wait, self.plan.renew_gap_s))
                if waited + wait > self._max_wait_s:
                    raise self._throttled(wait)
                self._sleep(wait)
                waited += wait
        finally:
            self._settle_demand(tokens - spent)
        return Acquired(waited_s=waited)

    def turn(self, cost: float = 1.0) -> float | None:
        """For a caller about to do the work that ends in :meth:`acquire`: the
        seconds until it should come back, its turn booked, when more callers
        wait than the quota serves within ``max_wait_s``; None if it may go on.
        Asked before a task is claimed, so one that would be turned away
        costs no writes and no preparation (reading its document, building
        the request)."""
        return self._book_turn(max(1, math.ceil(cost)))

    def _book_turn(self, tokens: int) -> float | None:
        """Seconds until a caller arriving now should come back (None: it may wait here)."""
        rate = self.plan.rpm / 60.0
        with self._cond:
            ahead_s = self._waiting / rate  # at least, at the full quota
            if self._max_wait_s <= 0 or ahead_s <= self._max_wait_s:
                return None
            now = self._now()
            # A caller turned away is still a call: the keeper must not take
            # the instance for idle while its callers come and go this way.
            self._last_call = now
            self._last_call_real = time.monotonic()
            self._start_keeper()
            self._booked = max(self._booked, now + ahead_s) + tokens / rate
            # A little early: the caller then waits here briefly for its token.
            return max(0.0, self._booked - now - self._max_wait_s / 2)

    def try_acquire(self) -> float:
        """Take one token if one may be spent now (0.0); otherwise take nothing
        and return the seconds until one may be. Waits for the quota never, for
        the keeper's store round trip at most ``io_wait_s``."""
        wait = math.inf
        try:
            wait = self._try_one(self._demand(1))
        finally:
            self._settle_demand(0 if wait == 0.0 else 1)
        return wait

    def _demand(self, tokens: int) -> float:
        """Record a caller wanting ``tokens``; return the deadline (monotonic)
        for waiting on the store. The demand that sizes leases is what callers
        spend plus what callers inside wait for, so a caller turned away and
        asking again does not count twice."""
        with self._cond:
            now = self._now()
            if not self._asked or self._asked[-1] < now - 2 * self.plan.horizon_s:
                self._active_since = now  # calling again after a quiet spell
            self._waiting += tokens
            self._last_call = now
            self._last_call_real = time.monotonic()
            self._start_keeper()
        return time.monotonic() + self._io_wait_s

    def _settle_demand(self, unspent: int) -> None:
        with self._cond:
            self._waiting -= unspent

    def _try_one(self, deadline: float) -> float:
        """Spend one token now (0.0), or say how long until one may be spent."""
        if not self._background:
            self.tick()
        waiting = False
        with self._cond:
            while True:
                now = self._now()
                if self._lease.spend(now):
                    self._asked.append(now)
                    self._waiting -= 1
                    self._cond.notify_all()  # the keeper may want to lease ahead
                    return 0.0
                held = self._lease.next_wait(now)
                if held == 0.0:
                    return self._lease.pace_wait(now)  # a token is due: calls are spread at the quota's pace
                # Tokens held but not yet due: a renewal the keeper is about to
                # make (from another shard) may serve this call now, so wait for
                # it rather than turn away a caller that is within the quota.
                if held is not None and not self._renewal_due(now):
                    return held
                if self._ready_at > now:
                    return self._ready_at - now
                if self._last_try + self.plan.renew_gap_s > now:
                    return held if held is not None else self._last_try + self.plan.renew_gap_s - now
                # A renewal is due: the keeper is at it (or, inline, just tried).
                left = deadline - time.monotonic()
                if held is not None and left <= 0:
                    return held
                if not self._background or left <= 0:
                    return self.plan.renew_gap_s if not self._background else self._store_too_slow()
                if not waiting:
                    waiting = True
                    self.store_waits += 1
                self._start_keeper()
                self._cond.notify_all()
                self._cond.wait(timeout=min(left, _MAX_NAP_S))

    def _renewal_due(self, now: float) -> bool:
        """Whether the keeper would lease more now (called with the lock held).
        Not while a 429's slowdown holds: then calls wait for the slowed quota."""
        return (
            self._background
            and self.slow_until <= now
            and leases.should_renew(self.plan, self._lease, now, self._last_try, self._recent_rate(now))
        )

    def _store_too_slow(self) -> float:
        raise RetryableError(
            f"rate limit {self.key}: no lease within {self._io_wait_s:.0f} s",
            kind=ErrorKind.THROTTLED,
            retry_after=_KEEPER_BACKOFF_S + random.uniform(0.0, 2.0),
            code="rate_limit_store_slow",
            hint="The limiter's store is slow or unreachable; the work is retried on its own.",
        )

    def _recent_rate(self, now: float) -> float:
        """Tokens asked per second over the last ``2 * horizon_s``, or over the
        time this instance has been calling if shorter (at least a second): a
        fresh instance's first lease is sized by its first calls, not diluted."""
        window = 2 * self.plan.horizon_s
        while self._asked and self._asked[0] < now - window:
            self._asked.popleft()
        if not self._asked and not self._waiting:
            return 0.0
        return (len(self._asked) + self._waiting) / min(window, max(1.0, now - self._active_since))

    # -- the keeper ---------------------------------------------------------------

    def tick(self) -> float | None:
        """Do the chores due now (read the stamp, lease ahead); return the
        seconds until the next may be due, or None once the instance is idle.
        The store is called without holding the lock, so calls spend tokens meanwhile."""
        try:
            return self._chores()
        finally:
            with self._cond:
                self.ticks += 1
                self._cond.notify_all()

    def wake(self) -> None:
        """Have the keeper look now (its clock may have moved on)."""
        with self._cond:
            self._cond.notify_all()

    def _chores(self) -> float | None:
        with self._cond:
            now = self._now()
            todo = leases.chores(
                self.plan,
                self._lease,
                now=now,
                last_call=self._last_call,
                next_poll=self._next_poll,
                last_try=self._last_try,
                demand_per_s=self._recent_rate(now),
            )
            if todo.idle:
                return None
            if todo.poll:
                self._next_poll = now + self.plan.poll_s
        if todo.poll:
            self._poll(now)
        self._give_back_if_idle()
        with self._cond:
            now = self._now()
            rate = self._recent_rate(now)
            if self._renewing or not leases.should_renew(self.plan, self._lease, now, self._last_try, rate):
                return todo.next_s
            self._renewing = True
            want = leases.lease_size(self.plan, rate)
            epoch, slow_until = self._epoch, self.slow_until
        try:
            self._renew(now, want, epoch, slow_until)
        finally:
            with self._cond:
                self._renewing = False
        return todo.next_s

    def _give_back_if_idle(self) -> None:
        """An instance noted as a holder that has had no caller for ``_GIVE_BACK_AFTER_S`` gives
        back the tokens it reserved ahead, for its siblings still calling: kept, they
        would only expire. Dropped from its own lease first, so none is spent twice."""
        with self._cond:
            now = self._now()
            idle = self._waiting == 0 and now - self._last_call >= _GIVE_BACK_AFTER_S
            if self._holder is None or not idle or not self._lease.drop_after(now):
                return
            shards, self._leased_from = self._leased_from, set()
        for index in sorted(shards):
            try:
                given = self._store.transaction(
                    functools.partial(_release_shard, self._collection, self.shard_doc(index), now, self._holder, 0.0)
                )
            except Exception:  # the store failed: those tokens expire, as they would have
                log.warning("rate limiter %s: giving back a reservation failed", self.key, exc_info=True)
                continue
            with self._cond:
                self.given_back += int(given)

    def _start_keeper(self) -> None:
        """Start the keeper thread if it is not running (the caller holds the lock)."""
        if not self._background or self._keeper_on or self._closed:
            return
        self._keeper_on = True
        self._keeper = threading.Thread(target=self._keep, name=f"sluice-lease-{self.key}", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        while True:
            try:
                nxt = self.tick()
            except Exception:  # the store failed: calls wait (bounded), the keeper tries again
                log.warning("rate limiter %s: lease renewal failed", self.key, exc_info=True)
                self.keeper_errors += 1
                nxt = _KEEPER_BACKOFF_S
            with self._cond:
                idle = self._now() - self._last_call > self.plan.idle_s
                forgotten = time.monotonic() - self._last_call_real > max(_REAL_IDLE_S, self.plan.idle_s)
                if self._closed or forgotten or (nxt is None and idle):
                    self._keeper_on = False
                    self._cond.notify_all()
                    return
                self._cond.wait(timeout=min(nxt or 0.0, _MAX_NAP_S))

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the keeper (what is held expires on its own)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout_s)

    def _renew(self, now: float, want: int, epoch: int, slow_until: float) -> None:
        """Lease from the next shards in this instance's order: another is
        asked while what the instance holds still leaves it short (its tokens
        come due later than the calls), until ``_SHARD_TRIES`` have refused.

        So a cold instance (or one whose demand jumped) goes round every shard
        at once and starts at the quota's pace: one shard's lease holds a
        single token due now, the rest a second apart. A busy fleet's shards
        are reserved ahead, so there a renewal still asks about two.
        """
        wait = ready = math.inf
        granted = False
        refused = 0
        for index in self._shard_round():
            grant = self._take(index, now, want, slow_until)
            with self._cond:
                if epoch != self._epoch:
                    return  # a slowdown came meanwhile: this lease belongs to a spent quota
                ready = min(ready, grant.ready_s)
                if not grant.times:
                    wait = min(wait, grant.wait_s)
                    refused += 1
                    if refused >= _SHARD_TRIES:
                        break
                    continue
                granted = True
                self._lease.add(grant.times)
                self._leased_from.add(index)
                if not leases.should_renew(self.plan, self._lease, now, -math.inf, self._recent_rate(now)):
                    break
        with self._cond:
            # Only refusals from every shard asked say when a token may come;
            # after a grant, another shard may have one at once.
            self._ready_at = -math.inf if granted else now + ready
            if not granted:
                # Refusals say when those shards will have a batch; the others
                # are drained alike, so wait a little before asking again.
                hold = min(wait, _MAX_HOLD_S)
                self._last_try = now + max(0.0, hold - self.plan.renew_gap_s)
            self._cond.notify_all()

    def _shard_round(self) -> Iterator[int]:
        """The shards to ask, one round at most: this instance goes round them
        in its own random order, so it spreads its leases and rarely meets its
        own reservations; the next renewal starts after the last one asked."""
        # A quota of a few shards is gone round in one renewal (a cold instance then starts
        # at its pace); one of many shards (thousands a minute) is asked a couple at a time.
        for _ in range(self.plan.shards if self.plan.shards <= _ROUND_MAX else _SHARD_TRIES):
            index = self._order[self._cursor]
            self._cursor = (self._cursor + 1) % self.plan.shards
            yield index

    def _take(self, index: int, now: float, want: int, slow_until: float) -> leases.Grant:
        doc_id = self.shard_doc(index)

        def tx(t: Transaction) -> leases.Grant:
            snap = t.get(self._collection, doc_id)
            state = BucketState.from_doc(snap.data) if snap is not None else None
            if slow_until > (state.slow_until if state is not None else 0.0):
                state = leases.apply_slowdown(self.bucket, state, now, slow_until)
            grant = leases.take_lease(self.bucket, state, now, want, self.plan.horizon_s, self.plan.min_grant)
            if grant.times:
                holders: leases.Holders = snap.data.get("holders", {}) if snap is not None else {}
                if self._holder is not None:
                    holders = leases.note_holder(holders, self._holder, grant.times, now)
                t.set(self._collection, doc_id, {**grant.state.to_doc(), **({"holders": holders} if holders else {})})
            return grant

        self.renewals += 1
        try:
            return self._store.transaction(tx, max_attempts=3)
        except PreconditionFailed:
            # Others are renewing from this shard right now: try another.
            wait = 1.0 / self.bucket.refill_per_s
            return leases.Grant(times=(), wait_s=wait, state=BucketState(0.0, now), ready_s=wait)

    def _throttled(self, wait: float, *, jitter: bool = True) -> RetryableError:
        # Spread the retries of callers turned away together (a booked turn
        # is spread already: jitter would only bring them back late).
        return RetryableError(
            f"rate limit {self.key}: no token for {wait:.1f} s",
            kind=ErrorKind.THROTTLED,
            retry_after=wait + (random.uniform(0.0, min(60.0, max(1.0, wait))) if jitter else 0.0),
            code="rate_limited_locally",
            hint=self._hint,
        )

    # -- the slowdown stamp -------------------------------------------------------

    def _poll(self, now: float) -> None:
        """Read the slowdown stamp; a new one drops the lease."""
        snap = self._store.get(self._collection, self.stamp_id)
        if snap is not None:
            with self._cond:
                self._learn(float(snap.data.get("slow_until", 0.0)), now)

    def _learn(self, until: float, now: float) -> None:
        """A slowdown until ``until`` (the caller holds the lock)."""
        if until > self.slow_until:
            self.slow_until = until
            if until > now:
                # Tokens leased before the 429 belong to a quota that is spent,
                # and so do those of a renewal under way.
                self._lease.times.clear()
                # Each shard is emptied for the slowdown and refills at half
                # speed: no token comes sooner, so calls wait for the quota, not
                # for the keeper's first renewal under it.
                self._ready_at = now + 1.0 / (self.bucket.refill_per_s * PENALTY_FACTOR)
                self._epoch += 1
                self._cond.notify_all()

    def penalise(self, *, duration_s: float | None = None) -> None:
        """The server said 429: stamp the slowdown for every instance (unless a
        stamp already covers it) and drop this instance's lease at once."""
        now = self._now()
        with self._cond:
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
            with self._cond:
                self._learn(stamped, now)


def release_reservations(store: Store, clock: Clock, *, holder: str | None = None, collection: str = COLLECTION) -> int:
    """Give back the tokens the shards have reserved ahead; return how many shards held some.

    With ``holder``, only that instance's (a supervisor's worker process that
    died: its siblings keep theirs). Without, every instance's: for a caller
    that knows every instance that could hold a lease is dead, such as the
    local runtime at start-up holding the data directory's lock (as it
    releases the dead process's bus leases). A killed instance's reservations
    (up to ``horizon_s`` of its share of the quota) would otherwise keep the
    quota unused that long.
    """
    now = clock.now().timestamp()
    quotas: dict[str, list[Snapshot]] = {}
    for snap in store.query(collection).items:
        if ":shard-" in snap.id:
            quotas.setdefault(snap.id.rsplit(":shard-", 1)[0], []).append(snap)
    released = 0
    for shards in quotas.values():
        for index, snap in enumerate(sorted(shards, key=lambda s: s.id)):
            holds = holder in snap.data.get("holders", {}) if holder is not None else snap.data.get("tokens", 0.0) < 0
            if not holds:
                continue  # nothing reserved here (as read: the transaction reads again)
            level = index / len(shards)  # phases spread over the quota's shards
            released += store.transaction(functools.partial(_release_shard, collection, snap.id, now, holder, level))
    if released:
        log.info(
            "gave back the quota %d shards had reserved for a dead process", released, extra={"holder": holder or "*"}
        )
    return released


def _release_shard(collection: str, doc_id: str, now: float, holder: str | None, level: float, t: Transaction) -> bool:
    current = t.get(collection, doc_id)
    if current is None:
        return False
    state = BucketState.from_doc(current.data)
    holders: leases.Holders = current.data.get("holders", {})
    if holder is None:
        freed = leases.forget_reservations(state, now, level)
        if freed is None:
            return False
        t.set(collection, doc_id, freed.to_doc())
        return True
    given = leases.give_back(state, holders, holder, now)
    if given is None:
        return False
    freed, rest = given
    t.set(collection, doc_id, {**freed.to_doc(), **({"holders": rest} if rest else {})})
    return True


_shared: dict[tuple[int, str], LeasedRateLimiter] = {}
_shared_lock = threading.Lock()
# Limiters kept per process before idle ones are dropped (an API keeps one per user).
_SHARED_MAX = 1000


def shared(store: Store, clock: Clock, *, key: str, plan: leases.QuotaPlan, **kw: object) -> LeasedRateLimiter:
    """This process's limiter for ``key`` on ``store``: one per key, so leases
    outlive the message that took them."""
    cache_key = (id(store), key)
    with _shared_lock:
        limiter = _shared.get(cache_key)
        if limiter is None or limiter.plan != plan:
            if limiter is not None:
                limiter.close(timeout_s=0)
            if len(_shared) >= _SHARED_MAX:
                for k in [k for k, lim in _shared.items() if not lim.keeper_running]:
                    del _shared[k]
            limiter = _shared[cache_key] = LeasedRateLimiter(store, clock, key=key, plan=plan, **kw)  # type: ignore[arg-type]
        return limiter
