"""A circuit breaker's state machine, shared by many processes.

Pure functions over a stored :class:`BreakerState`: given the breaker's
settings, its last state and the time, decide whether a call to the dependency
may go now and what the new state is. Storing the state is the caller's
business (:mod:`common.service.breaker` keeps one document per dependency).

- **closed**: calls go. Each failure that says the dependency itself is
  unwell (:func:`counts_as_failure`) adds to a count of consecutive failures;
  a success resets it. ``failure_threshold`` in a row open the breaker.
- **open**: no call goes until ``open_until``; callers are told how long to
  wait, so their work is delayed rather than failed. Each time the breaker
  re-opens without having closed, the cool-down doubles, up to
  ``max_cooldown_s``.
- **half-open**: the cool-down is over. Exactly one caller is admitted as the
  probe (for at most ``probe_timeout_s``, in case it dies with the probe);
  everyone else waits. The probe's success closes the breaker, its failure
  opens it again.

The state changes only when the breaker moves or a failure is counted, so
callers write it rarely: a healthy dependency's successes write nothing.
Times are seconds since the epoch (floats), so the state is plain JSON.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.core.errors import ErrorKind, RetryableError, SluiceError


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> int:
        """The value a metric shows: 0 closed, 1 half-open, 2 open."""
        return {"closed": 0, "half_open": 1, "open": 2}[self.value]


# Failures that say the dependency is unwell. A 429 is a quota (the rate
# limiter's business), a 4xx is the request's fault, an auth failure the
# user's: none of them says the service is down.
_FAILURE_KINDS = frozenset({ErrorKind.NETWORK, ErrorKind.SERVER, ErrorKind.UNAVAILABLE})


def counts_as_failure(error: SluiceError) -> bool:
    return error.kind in _FAILURE_KINDS


class BreakerConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    failure_threshold: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    max_cooldown_s: float = Field(default=600.0, gt=0)
    probe_timeout_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _cooldowns(self) -> Self:
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("max_cooldown_s must be at least cooldown_s")
        return self


class BreakerState(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: CircuitState = CircuitState.CLOSED
    failures: int = 0  # consecutive failures counted while closed
    open_until: float = 0.0  # open: when the cool-down ends
    probe_until: float = 0.0  # half-open: when the admitted probe is presumed dead
    cooldown_s: float = 0.0  # the cool-down of the latest opening (doubles on re-opening)
    opened_at: float | None = None
    opens: int = 0  # how many times it has opened, ever
    last_error: str | None = None  # the code of the failure that last counted
    updated_at: float = 0.0


CLOSED = BreakerState()


class Admission(BaseModel):
    model_config = ConfigDict(frozen=True)

    allowed: bool
    probe: bool = False  # this call is the half-open probe: its outcome decides
    wait_s: float = 0.0  # not allowed: how long until a call may be admitted
    state: BreakerState  # the state to store (if ``changed``)
    changed: bool = False


def admit(config: BreakerConfig, state: BreakerState | None, now: float) -> Admission:
    """May a call go now? Admitting the half-open probe changes the state."""
    current = state or CLOSED
    if current.state is CircuitState.CLOSED:
        return Admission(allowed=True, state=current)
    if current.state is CircuitState.OPEN and now < current.open_until:
        return Admission(allowed=False, wait_s=current.open_until - now, state=current)
    if current.state is CircuitState.HALF_OPEN and now < current.probe_until:
        # The probe is out; its outcome is due by probe_until at the latest.
        return Admission(allowed=False, wait_s=min(current.probe_until - now, config.cooldown_s), state=current)
    # Cool-down over (or the last probe vanished): this caller probes.
    probing = current.model_copy(
        update={"state": CircuitState.HALF_OPEN, "probe_until": now + config.probe_timeout_s, "updated_at": now}
    )
    return Admission(allowed=True, probe=True, state=probing, changed=True)


def peek(config: BreakerConfig, state: BreakerState | None, now: float) -> float:
    """Seconds a caller should wait before trying (0: try now), changing nothing.

    For callers that want to avoid starting work the breaker would refuse;
    the admission itself is :func:`admit`'s.
    """
    decision = admit(config, state, now)
    return 0.0 if decision.allowed else decision.wait_s


def record_success(state: BreakerState | None, now: float) -> tuple[BreakerState, bool]:
    """A call went through. Returns the new state and whether it changed.

    A success in the open state came from a call admitted before it opened:
    it says little about now, so only the probe (half-open) closes the breaker.
    """
    current = state or CLOSED
    if current.state is CircuitState.HALF_OPEN:
        closed = current.model_copy(
            update={
                "state": CircuitState.CLOSED,
                "failures": 0,
                "open_until": 0.0,
                "probe_until": 0.0,
                "cooldown_s": 0.0,
                "updated_at": now,
            }
        )
        return closed, True
    if current.state is CircuitState.CLOSED and current.failures:
        return current.model_copy(update={"failures": 0, "updated_at": now}), True
    return current, False


def record_failure(
    config: BreakerConfig, state: BreakerState | None, now: float, *, code: str | None = None
) -> tuple[BreakerState, bool]:
    """A call failed in a way that counts (see :func:`counts_as_failure`)."""
    current = state or CLOSED
    if current.state is CircuitState.OPEN:
        return current, False  # admitted before it opened: already accounted for
    if current.state is CircuitState.HALF_OPEN:
        # The probe failed: open again, for longer.
        cooldown = min(config.max_cooldown_s, max(current.cooldown_s, config.cooldown_s) * 2)
        return _open(current, now, cooldown, code), True
    failures = current.failures + 1
    if failures >= config.failure_threshold:
        return _open(current.model_copy(update={"failures": failures}), now, config.cooldown_s, code), True
    return current.model_copy(update={"failures": failures, "last_error": code, "updated_at": now}), True


def _open(current: BreakerState, now: float, cooldown: float, code: str | None) -> BreakerState:
    return current.model_copy(
        update={
            "state": CircuitState.OPEN,
            "open_until": now + cooldown,
            "probe_until": 0.0,
            "cooldown_s": cooldown,
            "opened_at": now,
            "opens": current.opens + 1,
            "last_error": code,
            "updated_at": now,
        }
    )


class CircuitOpen(RetryableError):
    """The dependency's breaker is open: the call was not made.

    ``THROTTLED``: like waiting for a rate-limit token, waiting for a breaker
    is not a failed attempt, so callers requeue the work after ``retry_after``
    and refund the attempt.
    """

    code = "circuit_open"

    def __init__(self, dependency: str, wait_s: float, *, last_error: str | None = None) -> None:
        cause = f" after {last_error}" if last_error else ""
        super().__init__(
            f"{dependency} is failing{cause}; calls to it are paused for {wait_s:.0f} s (circuit open)",
            kind=ErrorKind.THROTTLED,
            retry_after=wait_s,
            code=self.code,
            hint=(
                f"Sluice retries on its own once {dependency} answers again; GET /v1/stats shows the breaker's state."
            ),
        )
        self.dependency = dependency
