"""The queue-inspection port over the embedded SQLite bus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.adapters.local.sqlite_bus import SqliteBus
from common.core.errors import NotFound
from common.ports.queues import Backlog, DeadLetterEntry

if TYPE_CHECKING:  # pragma: no cover
    from common.ports.queues import Queues


class BusQueues:
    def __init__(self, bus: SqliteBus) -> None:
        self._bus = bus

    def backlog(self, subscription: str) -> Backlog:
        depth, age, dead = self._bus.backlog(subscription)
        return Backlog(depth, age if depth else None, dead)

    def dead_lettered(self, subscription: str) -> int:
        return self._bus.backlog(subscription)[2]

    def dead_letters(self, subscription: str | None = None, *, limit: int = 1000) -> list[DeadLetterEntry]:
        return [
            DeadLetterEntry(
                id=str(d.seq),
                subscription=d.subscription,
                message_id=d.message_id,
                attempts=d.attempts,
                last_error=d.last_error,
                dead_lettered_at=d.dead_lettered_at,
                replayed_at=d.replayed_at,
                attributes=d.attributes,
            )
            for d in self._bus.dead_letters(subscription, limit=limit)
        ]

    def replay(self, dead_letter_id: str) -> str:
        if not dead_letter_id.isdigit():
            raise NotFound(f"dead letter {dead_letter_id} does not exist")
        return self._bus.replay_dead_letter(int(dead_letter_id))


if TYPE_CHECKING:

    def _conforms(q: BusQueues) -> Queues:
        return q
