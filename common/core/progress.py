"""Progress math and write coalescing, pure.

Firestore sustains roughly one write per second per document, so progress
writes to an Operation are coalesced: a non-final update is written only if
``min_interval_s`` has passed since the last write; the final state always is.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class Progress(BaseModel):
    model_config = ConfigDict(frozen=True)

    done: int
    failed: int
    total: int
    pct: float
    eta_seconds: float | None


def compute_progress(
    *,
    completed: int,
    failed: int,
    total: int,
    started_at: datetime | None,
    now: datetime,
) -> Progress:
    """Percentage of work in a terminal state, and a linear ETA once some is done."""
    finished = completed + failed
    pct = 100.0 if total == 0 else round(100.0 * min(finished, total) / total, 1)
    eta: float | None = None
    if started_at is not None and 0 < finished < total:
        elapsed = (now - started_at).total_seconds()
        eta = round(elapsed / finished * (total - finished), 1)
    elif total and finished >= total:
        eta = 0.0
    return Progress(done=completed, failed=failed, total=total, pct=pct, eta_seconds=eta)


def should_write(
    last_written_at: datetime | None,
    now: datetime,
    *,
    final: bool,
    min_interval_s: float = 1.0,
) -> bool:
    if final or last_written_at is None:
        return True
    return (now - last_written_at).total_seconds() >= min_interval_s
