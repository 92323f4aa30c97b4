"""Guards that bind an effect's transaction to a condition that must still hold.

The API's ``Idempotency-Key`` reservation is one: a request's effect (the job
it creates, the run it starts) commits only while that request still holds
its reservation, and the response to replay is recorded in the same
transaction. Services take an optional guard and call it inside the
transaction that makes their effect, so "exactly one effect per key" holds
however requests interleave.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from common.ports.store import Transaction

T_contra = TypeVar("T_contra", contravariant=True)


class EffectGuard(Protocol[T_contra]):
    def check(self, t: Transaction) -> None:
        """Read what must hold (before the effect's writes: Firestore's rule); raise if it does not."""
        ...

    def record(self, t: Transaction, result: T_contra) -> None:
        """Write, in the effect's transaction, that the effect happened (with ``result``)."""
        ...
