"""Operator metrics: stage runtime, failures by error class, tokens, queue age; Prometheus text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.core.errors import ConfigError
from common.core.messages import CleanupSweep, ExtractTask
from common.core.states import RunStatus
from common.obs import metrics
from tests.support import make_pipeline

# One sample line of the text exposition format: name{labels} value
_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? [-+0-9.eInf]+$')


@pytest.fixture
def recorded() -> Iterator[None]:
    metrics.configure("memory")
    yield
    metrics.reset()


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        assert _SAMPLE.match(line), f"not an exposition sample: {line!r}"
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def test_nothing_is_recorded_or_exposed_until_configured() -> None:
    metrics.reset()
    metrics.record_delivery("extract", "task.extract", outcome="done", seconds=1.0)
    metrics.record_tokens("m", input_tokens=1, output_tokens=1)
    assert not metrics.enabled() and metrics.prometheus_text() == ""


def test_a_pipeline_run_records_stage_runtime_per_function_and_kind(tmp_path: Path, recorded: None) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    p.upload(job, "ok-1.pdf")
    run = p.start(job)
    p.drain(advance_clock=True)
    assert p.run(run.id).status is RunStatus.COMPLETED
    s = _samples(metrics.prometheus_text())
    done = 'function="{f}",kind="{k}",outcome="done"'
    assert s[f"sluice_stage_duration_seconds_count{{{done.format(f='extract', k='task.extract')}}}"] == 1
    assert s[f"sluice_stage_duration_seconds_count{{{done.format(f='extract', k='run.start')}}}"] == 1
    assert s[f"sluice_stage_duration_seconds_count{{{done.format(f='export', k='export.run')}}}"] == 1
    assert s[f"sluice_stage_duration_seconds_count{{{done.format(f='import_upload', k='blob.finalized')}}}"] == 1
    le_inf = done.format(f="extract", k="task.extract") + ',le="+Inf"'
    assert s[f"sluice_stage_duration_seconds_bucket{{{le_inf}}}"] == 1
    assert not any(k.startswith("sluice_stage_failures_total") for k in s)


def test_failures_are_counted_by_stage_and_error_class(tmp_path: Path, recorded: None) -> None:
    p = make_pipeline(tmp_path)
    p.sender.send(ExtractTask(task_id="t_missing", run_id="r", job_id="j"))
    p.drain()
    s = _samples(metrics.prometheus_text())
    labels = 'error_class="unknown_task",function="extract",kind="task.extract",outcome="failed"'
    key = f"sluice_stage_failures_total{{{labels}}}"
    assert s[key] == 1


def test_queue_age_is_the_wait_since_the_message_became_deliverable(tmp_path: Path, recorded: None) -> None:
    p = make_pipeline(tmp_path)
    p.sender.send(CleanupSweep())
    p.clock.advance(42)
    p.drain()
    s = _samples(metrics.prometheus_text())
    labels = 'function="cleanup",kind="cleanup.sweep"'
    assert s[f"sluice_queue_age_seconds_sum{{{labels}}}"] == pytest.approx(42, abs=0.01)
    assert s[f'sluice_queue_age_seconds_bucket{{{labels},le="30"}}'] == 0
    assert s[f'sluice_queue_age_seconds_bucket{{{labels},le="60"}}'] == 1


def test_tokens_are_counted_per_model_and_direction(recorded: None) -> None:
    metrics.record_tokens("gemini-2.5-flash", input_tokens=1200, output_tokens=300)
    metrics.record_tokens("gemini-2.5-flash", input_tokens=800, output_tokens=None)
    text = metrics.prometheus_text()
    assert "# TYPE sluice_model_tokens_total counter" in text
    s = _samples(text)
    assert s['sluice_model_tokens_total{direction="input",model="gemini-2.5-flash"}'] == 2000
    assert s['sluice_model_tokens_total{direction="output",model="gemini-2.5-flash"}'] == 300


def test_label_values_are_escaped(recorded: None) -> None:
    metrics.record_delivery('we"ird\\fn', "k\nx", outcome="retry", seconds=0.2, error_class="Boom")
    text = metrics.prometheus_text()
    assert 'function="we\\"ird\\\\fn",kind="k\\nx"' in text
    _samples(text)


def test_unknown_or_unavailable_exporters_fail_loudly() -> None:
    with pytest.raises(ConfigError):
        metrics.configure("statsd")
    with pytest.raises(ConfigError):
        metrics.configure("cloud", project=None)
