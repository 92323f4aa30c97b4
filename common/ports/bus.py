"""The message bus port (Pub/Sub in the cloud, a SQLite bus locally).

Handlers only publish; consuming is the runtime's business (push
subscriptions in the cloud, the local runtime's worker pools here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


class Publisher(Protocol):
    def publish(
        self,
        topic: str,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        deliver_after: datetime | None = None,
        ordering_key: str | None = None,
    ) -> str:
        """Publish durably and return the message id.

        ``deliver_after`` delays delivery (the local bus supports it natively;
        in the cloud, delayed work goes through the Scheduler port instead).
        """
        ...


@dataclass(frozen=True)
class Rejected:
    """A message that can never be processed, as it is dead-lettered.

    ``subscription`` is where it came from (a replay delivers it there again),
    ``topic`` the subscription's dead-letter topic (None: none configured),
    ``error`` the reason, shown where dead letters are listed.
    """

    subscription: str
    topic: str | None
    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    error: str
    attempts: int = 1


@runtime_checkable
class DeadLetters(Protocol):
    def dead_letter(self, rejected: Rejected) -> str:
        """Record ``rejected`` where this backend lists and replays dead letters
        (durably, before returning), with Pub/Sub's dead-letter attributes and
        ``sluice_error``; return the dead letter's id. Raises if it could not."""
        ...
