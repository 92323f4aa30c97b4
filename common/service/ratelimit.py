"""A rate limiter shared by every function instance, kept in the document store.

One document per limiter key (``ratelimits/gemini:{project}:{model}``) holds
the token bucket's state; each take or penalty is a read-modify-write in a
store transaction, so N instances together stay within the bucket's bound
(:mod:`common.core.ratelimit` has the arithmetic). One transaction per model
call is cheap next to the call itself.

The limiter never sleeps long: :meth:`StoreRateLimiter.acquire` waits at most
``max_wait_s`` for a token and otherwise raises a ``RATE_LIMITED``
:class:`RetryableError` carrying the wait, so the message is retried later
instead of holding a function instance idle.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.core import ratelimit as bucket
from common.core.errors import ErrorKind, PreconditionFailed, RetryableError
from common.ports.clock import Clock
from common.ports.store import Store, Transaction

COLLECTION = "ratelimits"
_UNSAFE_ID = re.compile(r"[/\s]")  # Firestore document ids may not contain "/"


@dataclass(frozen=True)
class Acquired:
    waited_s: float  # time slept before the token was granted


class StoreRateLimiter:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        key: str,
        config: bucket.BucketConfig,
        max_wait_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        collection: str = COLLECTION,
    ) -> None:
        self._store = store
        self._clock = clock
        self.key = _UNSAFE_ID.sub("_", key)
        self.config = config
        self._max_wait_s = max_wait_s
        self._sleep = sleep
        self._collection = collection

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _state(self, t: Transaction) -> bucket.BucketState | None:
        snap = t.get(self._collection, self.key)
        return bucket.BucketState.from_doc(snap.data) if snap is not None else None

    def try_take(self, cost: float = 1.0) -> bucket.Decision:
        """One attempt: take ``cost`` tokens now, or learn how long to wait."""
        now = self._now()

        def tx(t: Transaction) -> bucket.Decision:
            decision = bucket.take(self.config, self._state(t), now, cost)
            if decision.allowed:
                t.set(self._collection, self.key, decision.state.to_doc())
            return decision

        try:
            return self._store.transaction(tx)
        except PreconditionFailed:
            # So many instances raced for the bucket that the transaction gave
            # up: the bucket is certainly busy. Come back in a moment.
            return bucket.Decision(
                allowed=False, wait_s=1.0 / self.config.refill_per_s, state=bucket.BucketState(0, now)
            )

    def acquire(self, cost: float = 1.0) -> Acquired:
        """Take a token, sleeping up to ``max_wait_s`` in all for one; otherwise
        raise ``RetryableError(RATE_LIMITED)`` whose ``retry_after`` is the wait
        plus jitter, so that callers turned away together do not all return
        at the same instant."""
        waited = 0.0
        while True:
            decision = self.try_take(cost)
            if decision.allowed:
                return Acquired(waited_s=waited)
            if waited + decision.wait_s > self._max_wait_s:
                spread = min(60.0, self.config.capacity / self.config.refill_per_s)
                raise RetryableError(
                    f"rate limit {self.key}: no token for {decision.wait_s:.1f} s",
                    kind=ErrorKind.THROTTLED,
                    retry_after=decision.wait_s + random.uniform(0.0, spread),
                    code="rate_limited_locally",
                    hint="Sluice is pacing calls to stay within the model quota (SLUICE_MODEL_RPM); "
                    "the task is retried on its own.",
                )
            self._sleep(decision.wait_s)
            waited += decision.wait_s

    def penalise(self, *, duration_s: float | None = None) -> None:
        """The server said 429: empty the shared bucket and slow it for everyone."""
        now = self._now()

        def tx(t: Transaction) -> None:
            penalised = bucket.penalise(self.config, self._state(t), now, duration_s=duration_s)
            t.set(self._collection, self.key, penalised.to_doc())

        # Losing the race to other writers only delays the slowdown until the
        # next 429; the error that caused it is raised by the caller either way.
        with contextlib.suppress(PreconditionFailed):
            self._store.transaction(tx)
