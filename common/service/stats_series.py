"""Throughput over time: completed and failed items per interval, per stage.

A stage is each job kind's work items (``tasks`` by ``kind``) and the exports.
The window is bounded (the last hour in 5-minute buckets, or the last 24 hours
in 1-hour buckets), and each figure is a count aggregation over ``finished_at``
(cheap on Firestore, an index range on SQLite): one count per stage and outcome
over the whole window, then one per bucket only for the stages and outcomes that
had any, so an idle stage costs two counts, whatever the window.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from common import kinds
from common.core.models import Export, ExtractionTask, format_timestamp
from common.core.states import ExportStatus, TaskStatus
from common.ports.store import Filter
from common.service.context import Deps

Window = Literal["1h", "24h"]
WINDOWS: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=5)),
    "24h": (timedelta(hours=24), timedelta(hours=1)),
}
EXPORT_STAGE = "export"


@dataclass(frozen=True)
class Bucket:
    start: datetime
    completed: int
    failed: int


@dataclass(frozen=True)
class StageSeries:
    stage: str
    unit: str
    buckets: list[Bucket]


@dataclass(frozen=True)
class Series:
    window: str
    interval_s: int
    start: datetime
    end: datetime
    stages: list[StageSeries]


def edges(now: datetime, window: str) -> list[datetime]:
    """The bucket boundaries: the last bucket is the one holding ``now``."""
    span, step = WINDOWS[window]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    end = epoch + ((now - epoch) // step + 1) * step
    n = int(span / step)
    return [end - (n - i) * step for i in range(n + 1)]


def series(deps: Deps, owners: Sequence[str], window: str = "24h") -> Series:
    """``owners``' completed and failed items (and exports) per bucket of ``window``."""
    bounds = edges(deps.clock.now(), window)
    mine = [Filter("owner", "==", owners[0]) if len(owners) == 1 else Filter("owner", "in", list(owners))]
    stages: list[tuple[str, str, str, list[Filter], tuple[str, str]]] = [
        (
            name,
            kinds.get(name).unit,
            ExtractionTask.collection,
            [Filter("kind", "==", name)],
            (TaskStatus.COMPLETED.value, TaskStatus.FAILED.value),
        )
        for name in kinds.names()
    ]
    stages.append(
        (EXPORT_STAGE, "exports", Export.collection, [], (ExportStatus.COMPLETED.value, ExportStatus.FAILED.value))
    )
    out = []
    for stage, unit, collection, extra, (done, failed) in stages:
        base = [*mine, *extra]
        completed = _counts(deps, collection, [*base, Filter("status", "==", done)], bounds)
        failures = _counts(deps, collection, [*base, Filter("status", "==", failed)], bounds)
        buckets = [Bucket(start=b, completed=c, failed=f) for b, c, f in zip(bounds, completed, failures, strict=False)]
        out.append(StageSeries(stage=stage, unit=unit, buckets=buckets))
    _, step = WINDOWS[window]
    return Series(window=window, interval_s=int(step.total_seconds()), start=bounds[0], end=bounds[-1], stages=out)


def _counts(deps: Deps, collection: str, filters: list[Filter], bounds: list[datetime]) -> list[int]:
    """How many records finished in each bucket (two counts when none did in the window)."""

    def between(lo: datetime, hi: datetime) -> int:
        rng = [Filter("finished_at", ">=", format_timestamp(lo)), Filter("finished_at", "<", format_timestamp(hi))]
        return deps.store.count(collection, filters=[*filters, *rng])

    if between(bounds[0], bounds[-1]) == 0:
        return [0] * (len(bounds) - 1)
    return [between(lo, hi) for lo, hi in itertools.pairwise(bounds)]
