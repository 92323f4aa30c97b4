"""Structured logging: one JSON object per line.

Each line carries ``severity`` (Cloud Logging's name for the level), the
message, a timestamp, the trace and span ids, and the ids of whatever is being
worked on (job, run, task, export, operation) from a context variable that
handlers (and :mod:`common.obs.tracing`'s spans) set with :func:`log_context`.

Two JSON shapes, both with ``severity``, ``message`` and ``time``:

- compact (locally): ``trace_id``, ``span_id`` and ``labels`` as plain keys;
- Cloud Logging (``configure(..., project=P)``, in the cloud): the special
  fields ``logging.googleapis.com/trace`` (``projects/P/traces/TRACE_ID``),
  ``logging.googleapis.com/spanId``, ``logging.googleapis.com/trace_sampled``,
  ``logging.googleapis.com/labels`` and ``logging.googleapis.com/sourceLocation``,
  which the logging agent lifts into the LogEntry, so a trace's lines show
  beside its spans in Cloud Trace.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("sluice_log_context", default=_EMPTY)

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}

LABEL_KEYS = (
    "job_id",
    "run_id",
    "task_id",
    "file_id",
    "export_id",
    "operation_id",
    "message_id",
)


def new_trace_id() -> str:
    return uuid.uuid4().hex


@contextmanager
def log_context(**labels: str | None) -> Iterator[Mapping[str, str]]:
    """Add labels (and ``trace_id``) to every log line written inside the block."""
    merged = {**_context.get(), **{k: v for k, v in labels.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield merged
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, str]:
    return _context.get()


# Cloud Logging's special JSON fields (structured logging on Cloud Run functions).
CLOUD_TRACE = "logging.googleapis.com/trace"
CLOUD_SPAN_ID = "logging.googleapis.com/spanId"
CLOUD_TRACE_SAMPLED = "logging.googleapis.com/trace_sampled"
CLOUD_LABELS = "logging.googleapis.com/labels"
CLOUD_SOURCE_LOCATION = "logging.googleapis.com/sourceLocation"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; with ``project``, in Cloud Logging's structured shape."""

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        ctx = _context.get()
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        labels = {k: ctx[k] for k in LABEL_KEYS if k in ctx}
        if self.project:
            if "trace_id" in ctx:
                entry[CLOUD_TRACE] = f"projects/{self.project}/traces/{ctx['trace_id']}"
            if "span_id" in ctx:
                entry[CLOUD_SPAN_ID] = ctx["span_id"]
            if "trace_sampled" in ctx:
                entry[CLOUD_TRACE_SAMPLED] = ctx["trace_sampled"] == "1"
            entry[CLOUD_SOURCE_LOCATION] = {
                "file": record.pathname,
                "line": str(record.lineno),
                "function": record.funcName,
            }
        else:
            if "trace_id" in ctx:
                entry["trace_id"] = ctx["trace_id"]
            if "span_id" in ctx:
                entry["span_id"] = ctx["span_id"]
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            entry.update(extra)
        if labels:
            entry[CLOUD_LABELS if self.project else "labels"] = labels
        if record.exc_info:
            # Error Reporting picks up a stack trace in ``exception`` (or ``stack_trace``).
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = _context.get()
        labels = " ".join(f"{k}={ctx[k]}" for k in LABEL_KEYS if k in ctx)
        line = f"{record.levelname:<7} {record.getMessage()}"
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping) and extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if labels:
            line += f" [{labels}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "INFO", fmt: str = "json", stream: Any = None, *, project: str | None = None) -> None:
    """Install Sluice's formatter on the root logger (idempotent).

    ``project`` (the cloud's): JSON lines take Cloud Logging's special fields,
    with traces named ``projects/PROJECT/traces/TRACE_ID``.
    """
    root = logging.getLogger()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(project) if fmt == "json" else TextFormatter())
    handler.set_name("sluice")
    root.handlers = [h for h in root.handlers if h.get_name() != "sluice"] + [handler]
    root.setLevel(level.upper())


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def fields(**values: Any) -> dict[str, Any]:
    """``log.info("...", extra=fields(count=3))`` puts ``count`` on the JSON line."""
    return {"fields": values}


def failure_point(err: BaseException, default: str = "unknown") -> str:
    """Where ``err`` was raised: ``common/x/y.py:LINE in FUNCTION``, the innermost frame of Sluice's own code
    (``default`` for an error that was built and returned, never raised)."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if "/common/" in f.filename] or frames
    if not ours:
        return default
    frame = ours[-1]
    path = "common/" + frame.filename.rsplit("/common/", 1)[1] if "/common/" in frame.filename else frame.filename
    return f"{path}:{frame.lineno} in {frame.name}"
