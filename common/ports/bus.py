"""The message bus port (Pub/Sub in the cloud, a SQLite bus locally).

Handlers only publish; consuming is the runtime's business (push
subscriptions in the cloud, the local runtime's worker pools here).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol


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
