"""Structured logs: one JSON object per line with severity, trace and ids."""

from __future__ import annotations

import io
import json
import logging

from common.obs.logging import configure, fields, log_context


def _capture() -> io.StringIO:
    buf = io.StringIO()
    configure("DEBUG", "json", stream=buf)
    return buf


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
