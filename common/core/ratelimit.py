"""Token-bucket arithmetic for a rate limit shared by many processes.

Pure functions over a stored state: given the bucket's settings, its last
state and the time, decide whether a call may go now and what the new state
is. Storing and locking the state is the caller's business
(:mod:`common.service.ratelimit` keeps it in the document store).

The bucket holds at most ``capacity`` tokens (the burst) and refills at
``refill_per_s``. Over any window of ``w`` seconds at most
``capacity + refill_per_s * w`` calls are allowed, so
:meth:`BucketConfig.per_minute` splits a per-minute quota between the burst and
the refill so that no 60-second window exceeds it.

A 429 from the server means the shared quota is exhausted whatever the bucket
thinks; :func:`penalise` empties the bucket and refills it at a fraction of
the rate for a while, for every process that shares it.

Times are seconds since the epoch (floats), so the state is plain JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Under a penalty the bucket refills at this fraction of its rate.
PENALTY_FACTOR = 0.5
# How long a penalty lasts when the server gave no delay.
PENALTY_S = 60.0


@dataclass(frozen=True)
class BucketConfig:
    capacity: float  # the burst: tokens the bucket holds when full
    refill_per_s: float

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("a bucket needs room for at least one token")
        if self.refill_per_s <= 0:
            raise ValueError("a bucket must refill")

    @classmethod
    def per_minute(cls, rpm: int, *, burst_fraction: float = 0.1) -> BucketConfig:
        """A bucket allowing at most ``rpm`` calls in any 60-second window.

        The burst takes ``burst_fraction`` of the quota and the refill the rest,
        since a full bucket plus a minute of refill is what one window can see.
        With ``rpm == 1`` the bound is two calls per window (one burst, one refill).
        """
        if rpm < 1:
            raise ValueError("rpm must be at least 1")
        burst = max(1, math.floor(rpm * burst_fraction))
        return cls(capacity=float(burst), refill_per_s=max(rpm - burst, 1) / 60.0)


@dataclass(frozen=True)
class BucketState:
    tokens: float
    updated_at: float  # when ``tokens`` was computed
    slow_until: float = 0.0  # refill runs at PENALTY_FACTOR of the rate before this time

    @classmethod
    def full(cls, config: BucketConfig, now: float) -> BucketState:
        return cls(tokens=config.capacity, updated_at=now)

    def to_doc(self) -> dict[str, float]:
        return {"tokens": self.tokens, "updated_at": self.updated_at, "slow_until": self.slow_until}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> BucketState:
        return cls(
            tokens=float(doc["tokens"]),
            updated_at=float(doc["updated_at"]),
            slow_until=float(doc.get("slow_until", 0.0)),
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    wait_s: float  # 0 when allowed; otherwise how long until enough tokens are there
    state: BucketState  # the state to store (changed only when allowed)


def refill(config: BucketConfig, state: BucketState, now: float) -> BucketState:
    """The state at ``now``: tokens added for the time elapsed, slower during a penalty.

    A clock that went backwards (another process's clock a little behind)
    adds nothing rather than removing tokens.
    """
    if now <= state.updated_at:
        return state
    slow = max(0.0, min(now, state.slow_until) - state.updated_at)
    normal = (now - state.updated_at) - slow
    added = config.refill_per_s * (slow * PENALTY_FACTOR + normal)
    return BucketState(
        tokens=min(config.capacity, state.tokens + added),
        updated_at=now,
        slow_until=state.slow_until,
    )


def time_until(config: BucketConfig, state: BucketState, tokens: float) -> float:
    """Seconds from ``state.updated_at`` until the bucket holds ``tokens``."""
    deficit = tokens - state.tokens
    if deficit <= 0:
        return 0.0
    slow_rate = config.refill_per_s * PENALTY_FACTOR
    slow_window = max(0.0, state.slow_until - state.updated_at)
    if deficit <= slow_window * slow_rate:
        return deficit / slow_rate
    return slow_window + (deficit - slow_window * slow_rate) / config.refill_per_s


def take(config: BucketConfig, state: BucketState | None, now: float, cost: float = 1.0) -> Decision:
    """Take ``cost`` tokens if the bucket holds them; otherwise say how long to wait.

    A missing state is a full bucket. ``cost`` above the capacity can never be
    met and raises.
    """
    if cost > config.capacity:
        raise ValueError(f"a cost of {cost} can never fit a bucket of {config.capacity}")
    current = refill(config, state if state is not None else BucketState.full(config, now), now)
    if current.tokens >= cost:
        taken = BucketState(tokens=current.tokens - cost, updated_at=current.updated_at, slow_until=current.slow_until)
        return Decision(allowed=True, wait_s=0.0, state=taken)
    # ``current.updated_at`` may be ahead of ``now`` if another clock ran ahead.
    wait = (current.updated_at - now) + time_until(config, current, cost)
    return Decision(allowed=False, wait_s=max(0.0, wait), state=current)


def penalise(
    config: BucketConfig,
    state: BucketState | None,
    now: float,
    *,
    duration_s: float | None = None,
) -> BucketState:
    """The server refused a call for quota (429): empty the bucket and refill it
    slowly for ``duration_s`` (the server's delay, or :data:`PENALTY_S`).

    Several processes meeting the same 429 penalise once each; that only
    extends the slow period, it never stacks the factor.
    """
    current = refill(config, state if state is not None else BucketState.full(config, now), now)
    until = now + (duration_s if duration_s is not None and duration_s > 0 else PENALTY_S)
    return BucketState(tokens=0.0, updated_at=current.updated_at, slow_until=max(current.slow_until, until))
