from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """Time, injectable so tests can skip it (backoff, schedules) instead of sleeping."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...
