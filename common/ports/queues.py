"""Queue inspection: backlog and dead letters, for operators and owners.

Locally the SQLite bus knows everything (depth, oldest message, dead letters).
On Pub/Sub, work subscriptions push to functions and cannot be peeked without
stealing deliveries, so :meth:`Queues.backlog` answers None there and the
service counts the store's open work items instead; dead letters are pulled
from each dead-letter topic's ``--hold`` subscription.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Backlog:
    """A subscription's messages: unacknowledged, the oldest due one's age (s; None: none waits), dead letters."""

    depth: int
    oldest_age_s: float | None
    dead_lettered: int


@dataclass(frozen=True)
class DeadLetterEntry:
    """A message that failed for good, as listed for replay.

    ``id`` names it for :meth:`Queues.replay` (the bus's sequence number
    locally, the dead-letter message's id on Pub/Sub).
    """

    id: str
    subscription: str
    message_id: str
    attempts: int
    last_error: str | None
    dead_lettered_at: datetime
    replayed_at: datetime | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


class Queues(Protocol):
    def backlog(self, subscription: str) -> Backlog | None:
        """The subscription's backlog, or None where the bus cannot see it (Pub/Sub push)."""
        ...

    def dead_lettered(self, subscription: str) -> int:
        """How many of the subscription's messages wait as dead letters (not replayed)."""
        ...

    def dead_letters(self, subscription: str | None = None, *, limit: int = 1000) -> list[DeadLetterEntry]:
        """Dead letters, oldest first (all subscriptions when None)."""
        ...

    def replay(self, dead_letter_id: str) -> str:
        """Deliver the dead letter to its subscription again; the new message's id. NotFound if unknown."""
        ...
