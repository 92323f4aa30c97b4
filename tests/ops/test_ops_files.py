"""ops/: the Grafana dashboard and the Prometheus alerts read metrics Sluice really exposes; promtool accepts the rules.

The exposure test reads both files, so renaming a metric in the code (or a typo
in a panel) fails here rather than on an operator's empty graph.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask

from common import serve
from common.adapters.local.clock import ManualClock
from common.api.app import create_app
from common.api.settings import ApiSettings
from common.bootstrap import bootstrap, local_bus
from common.config import Settings
from common.core.messages import ExtractTask
from common.core.models import Job, Run
from common.core.states import RunStatus
from common.obs import metrics
from common.runtime.local import LocalRuntime
from common.service import jobs, repo
from common.service.context import TopologySender
from tests.support import REPO_ROOT, SAMPLES

GRAFANA = REPO_ROOT / "ops" / "grafana" / "sluice.json"
ALERTS = REPO_ROOT / "ops" / "prometheus" / "alerts.yml"
_METRIC = re.compile(r"\b(sluice_[a-z0-9_]+)\b")


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(GRAFANA.read_text())
    return loaded


def _grafana_exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [str(r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _named_metrics(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in _METRIC.findall(e)}


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[str]:
    """/metrics of the served app after the sample documents ran (plus a broken one and a dead letter)."""
    clock = ManualClock()
    settings = Settings(backend="local", data_dir=tmp_path / "data", durable=False)
    deps = bootstrap(settings, clock=clock)  # the real offline extractor
    runtime = LocalRuntime(deps, local_bus(deps))
    runtime.declare()
    app: Flask = create_app(deps, ApiSettings(dev_identity="operator", rate_limit_rpm=0))
    serve._mount_metrics(app, runtime, settings)
    try:
        client = app.test_client()
        created = client.post("/v1/jobs", json={"name": "samples", "preset": "invoice"})
        assert created.status_code == 201, created.get_json()
        job = repo.require(deps.store, Job, created.get_json()["id"])[0]
        for pdf in sorted(SAMPLES.glob("*.pdf")):
            jobs.add_upload(deps, job, pdf)
        broken = tmp_path / "broken.pdf"
        broken.write_bytes(b"%PDF-1.4 not really a PDF")
        jobs.add_upload(deps, job, broken)
        sender = TopologySender(deps.topology, settings, deps.publisher, clock)
        run = jobs.request_run(deps, sender, job)
        sender.send(ExtractTask(task_id="t_gone", run_id=run.id, job_id=job.id))  # dead-lettered
        runtime.drain(advance_clock=True)
        stored = repo.require(deps.store, Run, run.id)[0]
        assert stored.status is RunStatus.COMPLETED and stored.counters.failed == 1
        assert stored.counters.completed == len(list(SAMPLES.glob("*.pdf")))
        response = client.get("/metrics")
        assert response.status_code == 200
        yield response.get_data(as_text=True)
    finally:
        metrics.reset()
        metrics._queue_probes.clear()


def _exposed(text: str) -> set[str]:
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_the_dashboard_and_the_alerts_read_is_exposed_after_a_run(scraped: str) -> None:
    named = _named_metrics(_grafana_exprs()) | _named_metrics(_rule_exprs())
    assert len(named) >= 12, "the files were read"
    missing = sorted(named - _exposed(scraped))
    assert missing == [], f"named in ops/ but not exposed by /metrics: {missing}"


def test_the_exposure_check_catches_a_renamed_metric(scraped: str) -> None:
    renamed = [e.replace("sluice_queue_depth", "sluice_queue_length") for e in _grafana_exprs()]
    assert "sluice_queue_length" in _named_metrics(renamed) - _exposed(scraped)


def test_the_dashboard_has_the_specs_panels_and_one_row_per_subscription() -> None:
    dash = _dashboard()
    titles = {p["title"] for p in dash["panels"]}
    assert {
        "P95 runtime per queue",
        "Failures per queue",
        "Tokens consumed per day",
        "Model API calls per second, with the quota",
        "Queue depth",
        "Oldest unacknowledged message age",
        "Dead-lettered messages",
    } <= titles
    by_title = {p["title"]: p for p in dash["panels"]}
    assert by_title["Failures per queue"]["fieldConfig"]["defaults"]["custom"]["drawStyle"] == "bars"
    assert by_title["Tokens consumed per day"]["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    quota = by_title["Model API calls per second, with the quota"]["targets"]
    assert any("sluice_model_request_limit" in t["expr"] for t in quota)
    (repeated,) = [p for p in dash["panels"] if p["type"] == "row" and p.get("repeat")]
    assert repeated["repeat"] == "subscription"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert "sluice_queue_depth" in variables["subscription"]["definition"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool, unpacked from Debian's prometheus package on first use (scripts/promtool.sh)."""
    if os.geteuid() != 0 and subprocess.run(["which", "promtool"], capture_output=True, check=False).returncode:
        pytest.skip("promtool is not installed and installing it needs root (scripts/promtool.sh)")
    found = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "promtool.sh")], capture_output=True, text=True, timeout=600, check=False
    )
    assert found.returncode == 0, found.stderr
    return found.stdout.strip().splitlines()[-1]


def test_promtool_accepts_the_alerting_rules(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_fire_on_the_series_they_watch(promtool: str) -> None:
    """promtool's rule unit tests (ops/prometheus/alerts_test.yml): each alert fires on a synthetic series."""
    tests = REPO_ROOT / "ops" / "prometheus" / "alerts_test.yml"
    result = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False, cwd=tests.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    tested = {a["alertname"] for t in yaml.safe_load(tests.read_text())["tests"] for a in t["alert_rule_test"]}
    assert tested == alerts, f"alerts without a promtool test: {sorted(alerts - tested)}"


def test_rule_exprs_name_metrics_only_by_their_exposed_form() -> None:
    # OpenTelemetry's dotted names never appear in PromQL.
    assert not any("sluice." in e for e in _rule_exprs() + _grafana_exprs())
