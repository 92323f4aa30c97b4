"""Progress write coalescing: the one memory of when each operation was last written.

Firestore sustains about one write per second per document, so progress
writes are coalesced; the decision is the pure
:func:`common.core.progress.should_write`, and this gate only remembers, per
process (one per :class:`common.service.context.Deps`), when each key was last
let through. Bounded: the oldest keys are forgotten first, which only costs
one early write.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

from common.core.progress import should_write


class ProgressGate:
    def __init__(self, *, max_tracked: int = 10_000) -> None:
        self._last_written: OrderedDict[str, datetime] = OrderedDict()
        self._max_tracked = max_tracked
        self._lock = threading.Lock()

    def due(self, key: str, now: datetime, *, final: bool, min_interval_s: float) -> bool:
        """Whether ``key``'s progress should be written now; if so, counted as written."""
        with self._lock:
            if not should_write(self._last_written.get(key), now, final=final, min_interval_s=min_interval_s):
                return False
            self._last_written[key] = now
            self._last_written.move_to_end(key)
            while len(self._last_written) > self._max_tracked:
                self._last_written.popitem(last=False)
            return True
