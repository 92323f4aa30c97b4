"""Structured logging: one JSON object per line.

Each line carries ``severity`` (Cloud Logging's name for the level), the
message, a timestamp, the trace id, and the ids of whatever is being worked on
(job, run, task, export, operation) from a context variable that handlers set
with :func:`log_context`. Cloud Logging's special fields are added later by
changing only the formatter.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = _context.get()
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        if "trace_id" in ctx:
            entry["trace_id"] = ctx["trace_id"]
        labels = {k: ctx[k] for k in LABEL_KEYS if k in ctx}
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            entry.update(extra)
        if labels:
            entry["labels"] = labels
        if record.exc_info:
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


def configure(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """Install Sluice's formatter on the root logger (idempotent)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name("sluice")
    root.handlers = [h for h in root.handlers if h.get_name() != "sluice"] + [handler]
    root.setLevel(level.upper())


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def fields(**values: Any) -> dict[str, Any]:
    """``log.info("...", extra=fields(count=3))`` puts ``count`` on the JSON line."""
    return {"fields": values}
