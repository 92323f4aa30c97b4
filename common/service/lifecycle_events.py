"""Lifecycle events of jobs, runs and items, for dashboards (``sluice_{jobs,runs,items}_total``).

The handlers call these after the change that made an event has committed,
and only the caller whose change it was (the one that moved the record), so
each event counts once however often a message is redelivered or a
transaction retried. Items are a run's units of work at each stage: an
extraction task (``extract``), an export (``export``).

``kind`` is the job's kind; every job is an extraction job today. A new kind
of job passes its own name and appears on the dashboards as a new label
value, with no change to them.
"""

from __future__ import annotations

from common.config import Settings
from common.core.errors import ErrorKind, RetryableError, SluiceError
from common.core.models import Export, ExtractionTask, Run
from common.core.states import ExportStatus, RunStatus, TaskStatus
from common.obs import metrics
from common.obs.metrics import Event

EXTRACT = "extract"

_TASK_EVENTS: dict[TaskStatus, Event] = {
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
}
_RUN_EVENTS: dict[RunStatus, Event] = {
    RunStatus.COMPLETED: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
}


def model_name(settings: Settings, extractor: str) -> str:
    """The model an extractor calls (the configured Gemini model), or the extractor's own name."""
    return settings.gemini_model if extractor == "gemini" else extractor


def model_called(settings: Settings, extractor: str, outcome: object) -> None:
    """One extraction call: ok, rate limited (a 429: the quota alert watches these) or another error."""
    if isinstance(outcome, RetryableError) and outcome.kind is ErrorKind.THROTTLED:
        return  # Sluice's own pacing held the call back: the model was not called
    if isinstance(outcome, RetryableError) and outcome.kind is ErrorKind.RATE_LIMITED:
        metrics.record_model_request(model_name(settings, extractor), "rate_limited")
    elif isinstance(outcome, SluiceError):
        metrics.record_model_request(model_name(settings, extractor), "error")
    else:
        metrics.record_model_request(model_name(settings, extractor), "ok")


def job_created(*, kind: str = EXTRACT) -> None:
    metrics.record_lifecycle("job", "created", kind=kind, stage="submit")


def run_created(*, kind: str = EXTRACT) -> None:
    metrics.record_lifecycle("run", "created", kind=kind, stage="submit")


def run_started(*, kind: str = EXTRACT) -> None:
    metrics.record_lifecycle("run", "started", kind=kind, stage="extract")


def run_ended(run: Run, *, stage: str = "extract", kind: str = EXTRACT) -> None:
    """A run reached a final state (completed, failed or cancelled)."""
    event = _RUN_EVENTS.get(run.status)
    if event is not None:
        metrics.record_lifecycle("run", event, kind=kind, stage=stage)


def run_stalled(*, kind: str = EXTRACT) -> None:
    metrics.record_lifecycle("run", "stalled", kind=kind, stage="cleanup")


def tasks_created(count: int, *, kind: str = EXTRACT) -> None:
    metrics.record_lifecycle("item", "created", kind=kind, stage="extract", count=count)


def task_started(task: ExtractionTask, *, takeover: bool, kind: str = EXTRACT) -> None:
    """An attempt began: the first is the item's start. A takeover means the last attempt stalled
    (its worker died: the same delivery came back, or the cleanup sweep re-sent it past its lease);
    counted here, once, where the stall is acted on."""
    if takeover:
        metrics.record_lifecycle("item", "stalled", kind=kind, stage="extract")
    elif task.attempts == 1:
        metrics.record_lifecycle("item", "started", kind=kind, stage="extract")


def task_ended(status: TaskStatus, *, kind: str = EXTRACT) -> None:
    event = _TASK_EVENTS.get(status)
    if event is not None:
        metrics.record_lifecycle("item", event, kind=kind, stage="extract")


def tasks_cancelled(count: int, *, kind: str = EXTRACT) -> None:
    metrics.record_lifecycle("item", "cancelled", kind=kind, stage="extract", count=count)


def exports_created(count: int, *, kind: str = EXTRACT) -> None:
    metrics.record_lifecycle("item", "created", kind=kind, stage="export", count=count)


def export_started(*, resumed: bool, kind: str = EXTRACT) -> None:
    """An export attempt began; ``resumed``: the last attempt stalled (its worker died running it)."""
    metrics.record_lifecycle("item", "stalled" if resumed else "started", kind=kind, stage="export")


def export_ended(export: Export, *, kind: str = EXTRACT) -> None:
    if export.status is ExportStatus.COMPLETED:
        metrics.record_lifecycle("item", "completed", kind=kind, stage="export")
    elif export.status is ExportStatus.FAILED:
        metrics.record_lifecycle("item", "failed", kind=kind, stage="export")
