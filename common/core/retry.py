"""The retry policy: a pure value that turns (error kind, attempt) into a decision.

No sleeping, no I/O: callers apply the decision (nack the message with the
delay, or record a permanent failure and acknowledge).

The table (``attempt`` counts attempts already made, so the first failure is
attempt 1):

=================  ==========  ==============================================
kind               retries     delay
=================  ==========  ==============================================
network, server    3           exponential: 15 s, 60 s, 240 s (x4, cap 300)
unavailable (503)  3           server's delay if given (cap 300 s), else exp.
rate_limited (429) 5           server's delay if given (cap 300 s), else exp.
throttled          unbounded   the limiter's wait; the attempt is refunded
malformed_output   2           5 s, 20 s
conflict           5           1 s, 2 s, 4 s, ...
invalid_input,     0           fail at once
auth, internal
=================  ==========  ==============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

from pydantic import BaseModel, ConfigDict, Field

from common.core.errors import ErrorKind

MAX_SERVER_DELAY_S = 300.0


def parse_retry_after(value: object, *, now: datetime) -> float | None:
    """An HTTP ``Retry-After`` value -- delta-seconds or an HTTP date -- as seconds from ``now``.

    The one parser for every Google API (Drive, Gmail, the token endpoint,
    Cloud Storage, Vertex AI). None when absent or unreadable: the policy then
    picks the delay. A date in the past is 0, never negative.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None or now.tzinfo is None:
        when, now = when.replace(tzinfo=None), now.replace(tzinfo=None)
    return max(0.0, (when - now).total_seconds())


class Backoff(BaseModel):
    """Exponential backoff: ``base * factor**(n-1)``, capped."""

    model_config = ConfigDict(frozen=True)

    base_s: float = Field(gt=0)
    factor: float = Field(ge=1)
    cap_s: float = Field(gt=0)

    def delay(self, attempt: int) -> float:
        return min(self.cap_s, self.base_s * self.factor ** max(0, attempt - 1))


class KindRule(BaseModel):
    model_config = ConfigDict(frozen=True)

    retries: int = Field(ge=0)
    backoff: Backoff | None = None
    honour_server_delay: bool = False


class RetryDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    retry: bool
    delay_s: float = 0.0
    reason: str

    @classmethod
    def fail(cls, reason: str) -> RetryDecision:
        return cls(retry=False, reason=reason)


_EXP = Backoff(base_s=15.0, factor=4.0, cap_s=300.0)

DEFAULT_RULES: Mapping[ErrorKind, KindRule] = {
    ErrorKind.NETWORK: KindRule(retries=3, backoff=_EXP),
    ErrorKind.SERVER: KindRule(retries=3, backoff=_EXP),
    ErrorKind.UNAVAILABLE: KindRule(retries=3, backoff=_EXP, honour_server_delay=True),
    ErrorKind.RATE_LIMITED: KindRule(retries=5, backoff=_EXP, honour_server_delay=True),
    # Our own pacing says "not yet", not "failed": callers refund the attempt.
    ErrorKind.THROTTLED: KindRule(retries=1_000_000, backoff=_EXP, honour_server_delay=True),
    ErrorKind.MALFORMED_OUTPUT: KindRule(retries=2, backoff=Backoff(base_s=5.0, factor=4.0, cap_s=60.0)),
    ErrorKind.CONFLICT: KindRule(retries=5, backoff=Backoff(base_s=1.0, factor=2.0, cap_s=30.0)),
    ErrorKind.INVALID_INPUT: KindRule(retries=0),
    ErrorKind.AUTH: KindRule(retries=0),
    ErrorKind.INTERNAL: KindRule(retries=0),
}


class RetryPolicy(BaseModel):
    """Given an error classification and the attempt number, decide."""

    model_config = ConfigDict(frozen=True)

    rules: Mapping[ErrorKind, KindRule] = Field(default_factory=lambda: dict(DEFAULT_RULES))
    max_server_delay_s: float = MAX_SERVER_DELAY_S

    def decide(self, kind: ErrorKind, attempt: int, *, server_delay_s: float | None = None) -> RetryDecision:
        """``attempt`` is the number of attempts made so far (>= 1)."""
        rule = self.rules.get(kind, KindRule(retries=0))
        if attempt > rule.retries:
            if rule.retries == 0:
                return RetryDecision.fail(f"{kind.value} errors are not retried")
            return RetryDecision.fail(f"{kind.value}: gave up after {attempt} attempts")
        if rule.honour_server_delay and server_delay_s is not None:
            delay = min(max(0.0, server_delay_s), self.max_server_delay_s)
            return RetryDecision(
                retry=True,
                delay_s=delay,
                reason=f"{kind.value}: server asked for {delay:g} s",
            )
        assert rule.backoff is not None, "a rule with retries needs a backoff"
        delay = rule.backoff.delay(attempt)
        return RetryDecision(
            retry=True,
            delay_s=delay,
            reason=f"{kind.value}: retry {attempt} in {delay:g} s",
        )
