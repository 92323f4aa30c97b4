"""The scheduler port: deliver a message at a given time (Cloud Tasks in the
cloud, the bus's delayed delivery locally). Names make scheduling idempotent:
scheduling the same name twice delivers once."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from common.core.messages import Message


class Scheduler(Protocol):
    def schedule(self, message: Message, *, at: datetime, name: str, queue: str = "normal") -> str:
        """Deliver ``message`` (to its topic) at ``at``; returns the task name."""
        ...
