"""Token leases over sharded buckets: a quota shared by many instances without
a hot document.

One bucket document per limiter, read and written on every call, is a hot
document: at 2,000 calls a minute that is 33 transactions a second on one
document, where Firestore sustains about one write a second per document.
So the quota is split, and taken in batches:

* **Shards.** The quota is divided between ``shards`` buckets whose refill
  rates add up to it (:meth:`QuotaPlan.shard_bucket`). An instance takes from
  a shard picked at random, so the shards drain evenly and each sees only a
  fraction of the traffic.
* **Leases.** One transaction takes a *lease* of several tokens from a shard
  (:func:`take_lease`) that the instance spends locally without touching the
  store. A lease may reserve tokens the shard does not hold yet, up to
  ``horizon_s`` of its refill ahead: each token then carries the time from
  which it may be spent (when the shard would have refilled it), so the
  shards' bound holds for the calls made, not only for the tokens handed out.
  A token unspent ``grace_s`` after its time is dropped (:class:`Lease`): an
  instance that goes idle holds no claim on the quota beyond its last lease,
  and the shards' refill, which it no longer drains, goes to the others.
* **Slowdown stamp.** A 429 from the server means the shared quota is spent
  whatever the shards think. The instance that meets it writes a slowdown
  stamp (one small document, written once per penalty, not once per call:
  :func:`stamp_needed`); every instance reads the stamp at least every
  ``poll_s`` while it makes calls, drops its lease when the stamp is new,
  and penalises each shard it next takes from (:func:`apply_slowdown`).
  So every instance slows within about ``poll_s`` of the first 429.

Writes per shard document are ``calls/s / (shards * lease size)``; with the
defaults (:meth:`QuotaPlan.per_minute`: about one call a second per shard,
so even single-token leases of slow instances stay at one write a second,
and busy instances lease several) that holds at any quota, because the shard
count grows with the quota.

Pure: times are seconds since the epoch; storing and locking is
:mod:`common.service.leased_ratelimit`'s business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from common.core.ratelimit import PENALTY_S, BucketConfig, BucketState, refill, time_until

# A slowdown is stamped again only when it ends this much later than the
# stored one, so instances meeting the same burst of 429s write it once.
STAMP_MARGIN_S = 5.0
# An instance spaces its calls at this share of the quota's interval (see QuotaPlan.spacing_s).
_SPREAD = 0.8


@dataclass(frozen=True)
class QuotaPlan:
    """How a per-minute quota is split and leased."""

    rpm: int
    shards: int
    horizon_s: float = 3.0  # a lease reserves at most this far into a shard's refill
    grace_s: float = 1.0  # a leased token may be spent this long after its time, then it is dropped
    max_lease: int = 8  # tokens per lease, at most
    # A shard grants no fewer tokens than this (or than asked, if fewer): a
    # crowded shard makes instances wait for a batch instead of handing out
    # single tokens, each of which would be a write.
    min_grant: int = 3
    poll_s: float = 1.0  # how often an active instance reads the slowdown stamp
    # An instance whose next token is further off than this leases more from
    # another shard: one shard's rate does not cap a busy instance, and
    # shards nobody else is draining are used instead of wasted.
    renew_ahead_s: float = 0.0
    # A keeper leases ahead of need: when the tokens it holds that come due
    # within this are fewer than its recent pace spends in it, so a call
    # normally finds a token already leased (:func:`should_renew`).
    lookahead_s: float = 1.0
    renew_gap_s: float = 0.2  # an instance asks a shard at most this often
    # An instance with no call for this long stops renewing and polling; what
    # it holds expires within ``horizon_s + grace_s``.
    idle_s: float = 5.0
    # Tokens of the whole quota a shard may hold at once, summed over the
    # shards (0: one per shard). A burst is taken from the refill, so no
    # 60-second window exceeds ``rpm`` (an API's per-user limit); with 0 the
    # refill is the whole quota and a window may see ``rpm + shards``.
    burst: int = 0
    min_lease: int = 1  # tokens asked for, at least (a shard grants fewer only if it has no more)
    # Spread one instance's calls at a little under the quota's pace (``spacing_s``): for a server
    # whose own bucket holds about a second of the quota (Vertex AI's model quotas).
    spread: bool = False

    def __post_init__(self) -> None:
        if min(self.rpm, self.shards, self.max_lease, self.min_grant, self.min_lease) < 1:
            raise ValueError("rpm, shards, max_lease, min_grant and min_lease must be at least 1")
        if min(self.horizon_s, self.poll_s, self.idle_s) <= 0 or min(self.grace_s, self.lookahead_s) < 0:
            raise ValueError("horizon_s, poll_s and idle_s must be positive, grace_s and lookahead_s not negative")
        if self.shards > self.rpm:
            raise ValueError("more shards than calls a minute: each shard needs room for one token")
        if self.burst and not self.shards <= self.burst < self.rpm:
            raise ValueError("a burst needs a token per shard and must leave some of the quota to the refill")
        if self.min_lease > self.max_lease:
            raise ValueError("min_lease must not exceed max_lease")

    @classmethod
    def per_minute(cls, rpm: int, *, per_shard_per_s: float = 1.0, **kw: Any) -> QuotaPlan:
        """A plan for ``rpm`` calls a minute, about ``per_shard_per_s`` of them per shard."""
        if rpm < 1:
            raise ValueError("rpm must be at least 1")
        shards = max(1, min(rpm, math.ceil(rpm / 60.0 / per_shard_per_s)))
        return cls(rpm=rpm, shards=shards, **kw)

    @classmethod
    def with_burst(cls, rpm: int, *, burst_fraction: float = 0.1, **kw: Any) -> QuotaPlan:
        """A plan whose shards hold ``burst_fraction`` of the quota as a burst
        and refill the rest: no 60-second window exceeds ``rpm``, and a caller
        may spend a little at once (like :meth:`BucketConfig.per_minute`)."""
        plan = cls.per_minute(rpm, **kw)
        burst = max(plan.shards, math.floor(rpm * burst_fraction))
        if burst >= rpm:
            return plan  # too small a quota to set a burst aside
        return replace(plan, burst=burst)

    @property
    def spacing_s(self) -> float:
        """The least time between two calls of one instance (0: none).

        Shards drained together refill together, so their tokens come due
        together: spent at once, a quota's worth of a second would reach the
        server in one burst, and a server whose own bucket holds about a
        second of the quota (Vertex AI's does) answers 429 to any call in it
        that arrives a little early. So a ``spread`` plan's calls are spaced
        at a little under the quota's pace: a busy instance's backlog of due
        tokens still drains, and an instance with a share of the quota is not
        slowed. Quotas counted per minute (Sheets) are not spread, nor is a
        plan with a ``burst`` (an API's per-user limit), where bursts are the point.
        """
        return _SPREAD * 60.0 / self.rpm if self.spread and not self.burst else 0.0

    def shard_bucket(self) -> BucketConfig:
        """One shard's bucket: the shards' refill rates add up to the quota,
        and each holds at most one token (the burst). A 60-second window sees
        at most ``rpm + shards`` calls (about 1.7 % over, after an idle spell;
        :meth:`per_minute` keeps ``shards`` near ``rpm / 60``), and a busy
        fleet's steady pace is the quota itself.

        With a ``burst``, the shards hold it between them and refill the rest
        of the quota, so a window sees at most ``rpm``."""
        if self.burst:
            return BucketConfig(
                capacity=self.burst / self.shards, refill_per_s=(self.rpm - self.burst) / 60.0 / self.shards
            )
        return BucketConfig(capacity=1.0, refill_per_s=self.rpm / 60.0 / self.shards)

    def shard_id(self, index: int) -> str:
        return f"shard-{index:03d}"


@dataclass(frozen=True)
class Grant:
    """What one lease transaction decided for a shard."""

    times: tuple[float, ...]  # when each leased token may be spent; empty: nothing granted
    wait_s: float  # when nothing was granted: how long until the shard has a token to lease
    state: BucketState  # the shard's state to store (changed only when something was granted)
    # How long until a token of this shard beyond those granted could be spent
    # (later than ``wait_s``: a lease reserves ahead of the refill).
    ready_s: float = 0.0


def take_lease(
    config: BucketConfig,
    state: BucketState | None,
    now: float,
    want: int,
    horizon_s: float,
    min_grant: int = 1,
) -> Grant:
    """Lease up to ``want`` tokens of a shard, reserving at most ``horizon_s``
    of its refill ahead, and none unless ``min(want, min_grant)`` fit. The
    ``k``-th token may be spent once the shard would hold ``k`` tokens, so
    calls never outrun the shard's bucket.

    The shard's tokens go negative while tokens are reserved ahead; refill
    brings them back.
    """
    if want < 1:
        raise ValueError("a lease takes at least one token")
    current = refill(config, state if state is not None else BucketState.full(config, now), now)
    base = max(now, current.updated_at)  # a clock behind the stored one counts from the stored time
    floor = -config.refill_per_s * horizon_s
    n = min(want, math.floor(current.tokens - floor + 1e-9))
    least = min(want, min_grant)
    if n < least:
        return Grant(
            times=(),
            wait_s=(base - now) + time_until(config, current, floor + least),
            state=current,
            ready_s=(base - now) + time_until(config, current, 1.0),
        )
    times = tuple(base + time_until(config, current, k) for k in range(1, n + 1))
    taken = BucketState(tokens=current.tokens - n, updated_at=current.updated_at, slow_until=current.slow_until)
    return Grant(times=times, wait_s=0.0, state=taken, ready_s=(base - now) + time_until(config, current, n + 1))


def apply_slowdown(config: BucketConfig, state: BucketState | None, now: float, slow_until: float) -> BucketState:
    """The shard's state once it knows of a slowdown until ``slow_until``.

    A shard that already knows of it is unchanged; otherwise it is emptied
    (reservations made before the 429 are dropped by their holders anyway) and
    refills slowly until then. Never compounds, like :func:`ratelimit.penalise`.
    """
    current = refill(config, state if state is not None else BucketState.full(config, now), now)
    if slow_until <= current.slow_until or slow_until <= now:
        return current
    return BucketState(tokens=min(current.tokens, 0.0), updated_at=current.updated_at, slow_until=slow_until)


def forget_reservations(state: BucketState, now: float, level: float = 0.0) -> BucketState | None:
    """The shard's state once reservations made by instances now known dead are
    given back; None if it holds none (nothing to write).

    Tokens reserved ahead show as a negative count. The shard is set to hold
    ``level`` (less than one token) as of ``now``: what was reserved beyond
    ``now`` is free again, and a token whose time had come stays spent (its
    holder may have spent it just before it died). The caller spreads
    ``level`` over a quota's shards (the share of a token each would hold had
    its holder been spending it steadily): set alike, every shard's next token
    would come due at the same instant, a second of the quota at once after a
    second of none. Only for a caller that knows *every* holder is dead: a
    live instance's reservations would be handed out twice.
    """
    if state.tokens >= 0.0:
        return None
    if not 0.0 <= level < 1.0:
        raise ValueError("level must be at least 0 and less than one token")
    return BucketState(tokens=level, updated_at=max(now, state.updated_at), slow_until=state.slow_until)


# Reserved tokens per holder, as stored with a shard: holder -> the times of its tokens not yet due.
Holders = dict[str, list[float]]


def note_holder(holders: Holders, holder: str, times: tuple[float, ...], now: float) -> Holders:
    """The shard's holders once ``holder`` leased ``times``. Tokens already due
    are dropped from every holder: one spent or expired cannot be given back,
    so only reservations ahead are worth knowing."""
    kept = {h: [t for t in ts if t > now] for h, ts in holders.items()}
    kept[holder] = sorted([*kept.get(holder, []), *(t for t in times if t > now)])
    return {h: ts for h, ts in kept.items() if ts}


def give_back(state: BucketState, holders: Holders, holder: str, now: float) -> tuple[BucketState, Holders] | None:
    """The shard's state once the tokens ``holder`` reserved ahead are free again
    (it is known dead), or None if it holds none here.

    The shard counts reservations only as a negative level, so each of the
    holder's tokens still to come is added back to it: the next lease is due
    that much sooner, in the dead holder's place. Tokens already due stay
    spent (it may have spent them just before it died). The level is added to
    as stored (the refill is counted from ``updated_at`` when the shard is
    next leased from, and capped then) and never set above one token, the
    least a shard holds when full: no burst beyond the quota comes of it.
    """
    ahead = sum(1 for t in holders.get(holder, []) if t > now)
    if not ahead:
        return None
    freed = BucketState(
        tokens=min(max(state.tokens, 1.0), state.tokens + ahead),
        updated_at=state.updated_at,
        slow_until=state.slow_until,
    )
    return freed, {h: ts for h, ts in holders.items() if h != holder}


def stamp_needed(stored_until: float | None, now: float, duration_s: float | None) -> float | None:
    """The slowdown to stamp after a 429 at ``now``, or None if the stored one
    already covers it (within :data:`STAMP_MARGIN_S`)."""
    until = now + (duration_s if duration_s is not None and duration_s > 0 else PENALTY_S)
    if stored_until is not None and until <= stored_until + STAMP_MARGIN_S:
        return None
    return until


@dataclass
class Lease:
    """Tokens an instance holds (from one shard or several), spent in time
    order, locally. Not thread-safe: the owner locks around it."""

    times: list[float] = field(default_factory=list)
    grace_s: float = 1.0
    spacing_s: float = 0.0  # the least time between two spends (QuotaPlan.spacing_s)
    last_spent: float = -math.inf

    def add(self, times: tuple[float, ...] | list[float]) -> None:
        self.times = sorted([*self.times, *times])

    def expire(self, now: float) -> int:
        """Drop tokens whose time to be spent has passed by more than the grace; return how many."""
        dropped = 0
        while self.times and self.times[0] + self.grace_s < now:
            self.times.pop(0)
            dropped += 1
        return dropped

    def drop_after(self, now: float) -> int:
        """Drop the tokens not yet due (given back to their shards); return how many."""
        kept = [t for t in self.times if t <= now]
        dropped = len(self.times) - len(kept)
        self.times = kept
        return dropped

    def next_wait(self, now: float) -> float | None:
        """Seconds until the next token may be spent (0: now); None if the lease is spent."""
        self.expire(now)
        if not self.times:
            return None
        return max(0.0, self.times[0] - now)

    def spend(self, now: float) -> bool:
        """Spend the next token if its time has come and the last spend is ``spacing_s`` ago."""
        if self.next_wait(now) == 0.0 and self.pace_wait(now) == 0.0:
            self.times.pop(0)
            self.last_spent = now
            return True
        return False

    def pace_wait(self, now: float) -> float:
        """Seconds until the spacing allows another spend (0: now)."""
        return max(0.0, self.last_spent + self.spacing_s - now)

    def __len__(self) -> int:
        return len(self.times)


def should_renew(plan: QuotaPlan, lease: Lease, now: float, last_try: float, demand_per_s: float | None = None) -> bool:
    """Whether to lease more now (at most every ``renew_gap_s``).

    On demand (``demand_per_s`` None): when nothing held can be spent within
    ``renew_ahead_s``. Ahead of need (a keeper, knowing the instance's recent
    pace): when the calls that pace makes within ``lookahead_s`` would not
    each find a token come due, unless the instance already holds what it
    spends over the horizon (a busy instance does not hoard the quota's future).
    """
    if now < last_try + plan.renew_gap_s:
        return False
    wait = lease.next_wait(now)
    if wait is None:
        return True
    if demand_per_s is None:
        return wait > plan.renew_ahead_s
    if len(lease) >= max(plan.min_lease, math.ceil(demand_per_s * plan.horizon_s)):
        return False
    return _short(lease.times, now, demand_per_s, plan.lookahead_s)


def _short(times: list[float], now: float, demand_per_s: float, lookahead_s: float) -> bool:
    """Whether calls at ``demand_per_s`` from ``now`` for ``lookahead_s`` would
    find a token not yet due (or none): the ``k``-th call comes at ``now + k / pace``."""
    calls = max(1, math.ceil(demand_per_s * lookahead_s))
    if len(times) < calls:
        return True
    gap = 1.0 / demand_per_s if demand_per_s > 0 else 0.0
    return any(times[k] > now + k * gap for k in range(calls))


def lease_size(plan: QuotaPlan, recent_calls_per_s: float) -> int:
    """How many tokens to ask for: what this instance spends over the horizon
    at its recent pace, within ``min_lease`` and ``max_lease``. A slow
    instance leases little, so an instance that goes idle strands little."""
    return max(plan.min_lease, min(plan.max_lease, math.ceil(recent_calls_per_s * plan.horizon_s)))


@dataclass(frozen=True)
class Chores:
    """What an instance's keeper (the background renewal) does now."""

    poll: bool  # read the slowdown stamp
    renew: bool  # lease more tokens
    idle: bool  # no call for ``idle_s``: stop; what is held expires on its own
    next_s: float  # seconds until the next chore may be due (when nothing changes meanwhile)


def chores(
    plan: QuotaPlan,
    lease: Lease,
    *,
    now: float,
    last_call: float,
    next_poll: float,
    last_try: float,
    demand_per_s: float,
) -> Chores:
    """The keeper's decision at ``now``. It polls and renews only for an
    instance that made a call within ``idle_s``, so an idle instance writes
    nothing, reads nothing, and gives its capacity back."""
    quiet_for = now - last_call
    if quiet_for > plan.idle_s:
        return Chores(poll=False, renew=False, idle=True, next_s=math.inf)
    poll = now >= next_poll
    renew = should_renew(plan, lease, now, last_try, demand_per_s)
    until_poll = plan.poll_s if poll else next_poll - now
    # Renewal may become due whenever a held token is spent or comes due
    # (the instance wakes its keeper on a spend): look again within the gap.
    until_idle = plan.idle_s - quiet_for + 1e-3
    return Chores(poll=poll, renew=renew, idle=False, next_s=max(0.0, min(until_poll, plan.renew_gap_s, until_idle)))
