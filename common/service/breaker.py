"""Circuit breakers shared by every function instance, kept in the document store.

One small document per dependency (``circuits/vertex``, ``circuits/drive``,
``circuits/gmail``, ``circuits/oauth_token``) holds the breaker's state
(:mod:`common.core.breaker` has the state machine). It is written only when
the breaker moves or a failure is counted -- never for a success while closed
and healthy -- so it is not a hot document; reading it is cheap, and a closed
state is remembered for ``refresh_s`` so a busy instance reads it about once
a second.

A caller asks :meth:`StoreCircuitBreaker.admit` before the call (it raises
:class:`~common.core.breaker.CircuitOpen` when the breaker is open, so the
work is requeued with the wait instead of failed), then reports the call's
outcome with :meth:`record_success` or :meth:`record_failure`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from common.core import breaker as core
from common.core.breaker import BreakerConfig, BreakerState, CircuitOpen, CircuitState
from common.core.errors import PreconditionFailed, SluiceError
from common.obs import metrics
from common.obs.logging import fields
from common.ports.clock import Clock
from common.ports.store import Store, Transaction

log = logging.getLogger(__name__)

COLLECTION = "circuits"
VERTEX = "vertex"
DRIVE = "drive"
GMAIL = "gmail"
OAUTH_TOKEN = "oauth_token"
DEPENDENCIES = (VERTEX, DRIVE, GMAIL, OAUTH_TOKEN)


class StoreCircuitBreaker:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        dependency: str,
        config: BreakerConfig,
        refresh_s: float = 1.0,
        jitter: Callable[[float], float] | None = None,
        collection: str = COLLECTION,
    ) -> None:
        self._store = store
        self._clock = clock
        self.dependency = dependency
        self.config = config
        self._refresh_s = refresh_s
        # Callers turned away together should not all come back at the same instant.
        self._jitter = jitter or (lambda wait: random.uniform(0.0, min(5.0, wait * 0.1)))
        self._collection = collection
        self._lock = threading.Lock()
        self._cached: BreakerState | None = None
        self._cached_at = float("-inf")

    def _now(self) -> float:
        return self._clock.now().timestamp()

    # -- reading ----------------------------------------------------------------------

    def state(self) -> BreakerState:
        """The stored state (a healthy closed state may be up to ``refresh_s`` old)."""
        now = self._now()
        with self._lock:
            cached, at = self._cached, self._cached_at
        if cached is not None and _healthy(cached) and 0 <= now - at < self._refresh_s:
            return cached
        snap = self._store.get(self._collection, self.dependency)
        state = BreakerState.model_validate(snap.data) if snap is not None else core.CLOSED
        self._remember(state, now)
        return state

    def _remember(self, state: BreakerState, now: float) -> None:
        with self._lock:
            self._cached, self._cached_at = state, now
        metrics.set_circuit_state(self.dependency, state.state.gauge)

    def wait_s(self) -> float:
        """How long a caller should wait before trying (0: now); changes nothing."""
        return core.peek(self.config, self.state(), self._now())

    # -- around a call ----------------------------------------------------------------

    def admit(self) -> bool:
        """Let a call go (True if it is the half-open probe), or raise CircuitOpen."""
        state = self.state()
        now = self._now()
        decision = core.admit(self.config, state, now)
        if decision.allowed and not decision.changed:
            return False
        if not decision.allowed:
            raise self._refusal(decision.wait_s, state)

        def tx(t: Transaction) -> core.Admission:
            current = self._read(t)
            again = core.admit(self.config, current, now)
            if again.changed:
                t.set(self._collection, self.dependency, again.state.model_dump(mode="json"))
            return again

        try:
            final = self._store.transaction(tx)
        except PreconditionFailed:
            # Others raced for the probe; one of them has it.
            raise self._refusal(self.config.cooldown_s, state) from None
        self._remember(final.state, now)
        if not final.allowed:
            raise self._refusal(final.wait_s, final.state)
        if final.probe:
            log.info("circuit half-open: probing", extra=fields(dependency=self.dependency))
        return final.probe

    def _refusal(self, wait_s: float, state: BreakerState) -> CircuitOpen:
        return CircuitOpen(self.dependency, wait_s + self._jitter(wait_s), last_error=state.last_error)

    def record_success(self) -> None:
        state = self.state()
        if _healthy(state):
            return  # nothing to write: the common case stays read-only

        def change(current: BreakerState, now: float) -> tuple[BreakerState, bool]:
            return core.record_success(current, now)

        self._update(change)

    def record_failure(self, error: SluiceError) -> None:
        """Count ``error`` if it says the dependency is unwell (others say nothing about it)."""
        if not core.counts_as_failure(error):
            self.record_success()  # it answered, so it is up
            return

        def change(current: BreakerState, now: float) -> tuple[BreakerState, bool]:
            return core.record_failure(self.config, current, now, code=error.code)

        self._update(change)

    def _update(self, change: Callable[[BreakerState, float], tuple[BreakerState, bool]]) -> None:
        now = self._now()

        def tx(t: Transaction) -> tuple[BreakerState, BreakerState, bool]:
            current = self._read(t)
            updated, changed = change(current, now)
            if changed:
                t.set(self._collection, self.dependency, updated.model_dump(mode="json"))
            return current, updated, changed

        # Losing to other writers loses one count at most; the caller's own
        # outcome (the error it raises) is unaffected.
        with contextlib.suppress(PreconditionFailed):
            before, after, changed = self._store.transaction(tx)
            self._remember(after, now)
            if changed and before.state is not after.state:
                log.warning(
                    f"circuit {after.state.value}",
                    extra=fields(
                        dependency=self.dependency,
                        state=after.state.value,
                        failures=after.failures,
                        cooldown_s=after.cooldown_s,
                        last_error=after.last_error,
                    ),
                )

    def _read(self, t: Transaction) -> BreakerState:
        snap = t.get(self._collection, self.dependency)
        return BreakerState.model_validate(snap.data) if snap is not None else core.CLOSED

    @contextmanager
    def guard(self, classify: Callable[[BaseException], SluiceError | None]) -> Iterator[None]:
        """Admit, run the block, and record its outcome.

        ``classify`` maps an exception escaping the block to Sluice's error
        (None: not the dependency's doing, e.g. a bug -- recorded as nothing).
        """
        self.admit()
        try:
            yield
        except BaseException as exc:
            err = exc if isinstance(exc, SluiceError) else classify(exc)
            if err is not None:
                self.record_failure(err)
            raise
        self.record_success()


def _healthy(state: BreakerState) -> bool:
    return state.state is CircuitState.CLOSED and state.failures == 0


class Breakers:
    """One breaker per dependency, built on first use and kept for the process."""

    def __init__(self, store: Store, clock: Clock, config: BreakerConfig, *, refresh_s: float = 1.0) -> None:
        self._store = store
        self._clock = clock
        self.config = config
        self._refresh_s = refresh_s
        self._built: dict[str, StoreCircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, dependency: str) -> StoreCircuitBreaker:
        with self._lock:
            found = self._built.get(dependency)
            if found is None:
                found = self._built[dependency] = StoreCircuitBreaker(
                    self._store, self._clock, dependency=dependency, config=self.config, refresh_s=self._refresh_s
                )
            return found

    def snapshot(self) -> dict[str, BreakerState]:
        """Every known dependency's stored state (closed when never written), read now."""
        snaps = {s.id: s for s in self._store.get_many(COLLECTION, list(DEPENDENCIES))}
        out: dict[str, BreakerState] = {}
        for dep in DEPENDENCIES:
            snap = snaps.get(dep)
            out[dep] = BreakerState.model_validate(snap.data) if snap is not None else core.CLOSED
            metrics.set_circuit_state(dep, out[dep].state.gauge)
        return out
