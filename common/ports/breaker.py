"""What adapters need of a circuit breaker (common.service.breaker.StoreCircuitBreaker)."""

from __future__ import annotations

from typing import Protocol

from common.core.errors import SluiceError


class CircuitBreaker(Protocol):
    dependency: str

    def admit(self) -> bool:
        """Return (True for the half-open probe) if a call may go; raise CircuitOpen otherwise."""
        ...

    def record_success(self) -> None: ...

    def record_failure(self, error: SluiceError) -> None:
        """Report a failed call; errors that do not say the dependency is unwell count as answers."""
        ...
