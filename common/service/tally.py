"""A run's counters, counted from its tasks.

No task writes the run document when it finishes (that one document would take
every task's write; Firestore sustains about one write per second per
document). The counters are derived instead: count queries over the run's
tasks by status (Firestore count aggregations; indexed ``COUNT`` in SQLite).
They are stored on the run once, exactly, when it completes; until then the
stored counters are a snapshot and readers ask :func:`live_counters`.
"""

from __future__ import annotations

from common.core import lifecycle
from common.core.models import ExtractionTask, Run, RunCounters
from common.core.states import OPEN_TASK_STATES, TERMINAL_TASK_STATES
from common.ports.store import Filter, Store

_OPEN = sorted(s.value for s in OPEN_TASK_STATES)


def count_tasks(store: Store, run: Run) -> RunCounters:
    """The run's counters as its tasks stand now."""
    terminal = {
        status: store.count(
            ExtractionTask.collection,
            filters=[Filter("run_id", "==", run.id), Filter("status", "==", status.value)],
        )
        for status in sorted(TERMINAL_TASK_STATES)
    }
    return lifecycle.tally(run.counters.total, terminal)


def live_counters(store: Store, run: Run) -> RunCounters:
    """Exact counters: the stored ones once the run finished, else counted now."""
    if lifecycle.counters_settled(run) or run.counters.total == 0:
        return run.counters
    return count_tasks(store, run)


def with_live_counters(store: Store, run: Run) -> Run:
    """The run with exact counters, for people and clients to read."""
    counters = live_counters(store, run)
    return run if counters is run.counters else run.model_copy(update={"counters": counters})


def any_open(store: Store, run_id: str) -> bool:
    """Whether a task of the run is still pending, queued or running (one indexed lookup, not a count)."""
    page = store.query(
        ExtractionTask.collection,
        filters=[Filter("run_id", "==", run_id), Filter("status", "in", _OPEN)],
        limit=1,
    )
    return bool(page.items)
