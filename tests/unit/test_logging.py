"""Structured logs: one JSON object per line with severity, trace and ids."""

from __future__ import annotations

import io
import json
import logging

from common.obs import tracing
from common.obs.logging import configure, fields, log_context


def _capture(project: str | None = None) -> io.StringIO:
    buf = io.StringIO()
    configure("DEBUG", "json", stream=buf, project=project)
    return buf


# Cloud Logging's structured-logging contract: these keys are lifted into the LogEntry.
_SEVERITIES = {"DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"}


def _as_cloud_entry(line: str) -> dict[str, object]:
    """Parse a line as Cloud Logging would: JSON with a known severity and a string message."""
    entry = json.loads(line)
    assert isinstance(entry, dict)
    assert entry["severity"] in _SEVERITIES and isinstance(entry["message"], str)
    labels = entry.get("logging.googleapis.com/labels", {})
    assert isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
    if "logging.googleapis.com/trace" in entry:
        trace = entry["logging.googleapis.com/trace"]
        assert isinstance(trace, str) and trace.startswith("projects/") and "/traces/" in trace
    return entry


def test_a_log_line_is_json_with_severity_and_message() -> None:
    buf = _capture()
    logging.getLogger("t").warning("disk %s", "full")
    entry = json.loads(buf.getvalue().splitlines()[-1])
    assert (entry["severity"], entry["message"], entry["logger"]) == ("WARNING", "disk full", "t")


def test_context_ids_and_trace_ride_on_every_line_inside_the_block() -> None:
    buf = _capture()
    with log_context(trace_id="abc", job_id="j1"), log_context(run_id="r1", task_id=None):
        logging.getLogger("t").info("inside")
    logging.getLogger("t").info("outside")
    inside, outside = (json.loads(x) for x in buf.getvalue().splitlines()[-2:])
    assert inside["trace_id"] == "abc"
    assert inside["labels"] == {"job_id": "j1", "run_id": "r1"}
    assert "labels" not in outside and "trace_id" not in outside


def test_structured_fields_are_top_level_keys() -> None:
    buf = _capture()
    logging.getLogger("t").info("done", extra=fields(rows=3, uri="local://x/y"))
    entry = json.loads(buf.getvalue().splitlines()[-1])
    assert (entry["rows"], entry["uri"]) == (3, "local://x/y")


def test_exceptions_are_kept_on_the_line() -> None:
    buf = _capture()
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("t").exception("failed")
    entry = json.loads(buf.getvalue().splitlines()[-1])
    assert entry["severity"] == "ERROR" and "ValueError: boom" in entry["exception"]


def test_in_the_cloud_lines_are_cloud_logging_structured_entries() -> None:
    buf = _capture(project="demo-project")
    parent = tracing.SpanRef("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", sampled=True)
    with tracing.span("extract/task.extract", parent=parent) as span, log_context(job_id="j1", run_id="r1"):
        logging.getLogger("t").info("working", extra=fields(rows=2))
    logging.getLogger("t").error("outside")
    inside, outside = (_as_cloud_entry(x) for x in buf.getvalue().splitlines()[-2:])
    assert inside["logging.googleapis.com/trace"] == "projects/demo-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    assert inside["logging.googleapis.com/spanId"] == span.span_id
    assert inside["logging.googleapis.com/trace_sampled"] is True
    assert inside["logging.googleapis.com/labels"] == {"job_id": "j1", "run_id": "r1"}
    assert (inside["severity"], inside["message"], inside["rows"]) == ("INFO", "working", 2)
    assert "trace_id" not in inside and "labels" not in inside
    source = inside["logging.googleapis.com/sourceLocation"]
    assert (
        isinstance(source, dict)
        and source["function"] == "test_in_the_cloud_lines_are_cloud_logging_structured_entries"
    )
    assert outside["severity"] == "ERROR" and "logging.googleapis.com/trace" not in outside


def test_locally_the_compact_lines_carry_the_span_too() -> None:
    buf = _capture()
    with tracing.span("cli.run", parent=None) as span:
        logging.getLogger("t").info("inside")
    entry = json.loads(buf.getvalue().splitlines()[-1])
    assert (entry["trace_id"], entry["span_id"]) == (span.trace_id, span.span_id)
    assert not any(k.startswith("logging.googleapis.com/") for k in entry)
