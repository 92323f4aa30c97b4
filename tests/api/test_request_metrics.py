"""API request metrics: counted and timed by route template, method and status (bounded labels)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.obs import metrics
from tests.api.conftest import Env, Keys, build_env


@pytest.fixture
def measured(tmp_path: Path, keys: Keys) -> Iterator[Env]:
    metrics.configure("memory")
    yield build_env(tmp_path, keys)
    metrics.reset()


def _series(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric's samples."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def test_requests_are_counted_by_route_template_method_and_status(measured: Env) -> None:
    alice = measured.alice
    first, second = alice.job("a"), alice.job("b")
    assert alice.get(f"/v1/jobs/{first['id']}").status_code == 200
    assert alice.get(f"/v1/jobs/{second['id']}").status_code == 200
    assert alice.get("/v1/jobs/job_that_does_not_exist").status_code == 404
    assert alice.get("/v1/no/such/route").status_code == 404

    text = metrics.prometheus_text()
    counts = _series(text, "sluice_api_requests_total")
    assert counts == {
        'method="POST",route="/v1/jobs",status="201"': 2,
        'method="GET",route="/v1/jobs/{job_id}",status="200"': 2,
        'method="GET",route="/v1/jobs/{job_id}",status="404"': 1,
        'method="GET",route="unmatched",status="404"': 1,
    }
    # Raw ids never become label values: one series per template however many jobs exist.
    assert first["id"] not in text and "job_that_does_not_exist" not in text


def test_request_latency_is_a_histogram_per_route(measured: Env) -> None:
    measured.alice.job("a")
    text = metrics.prometheus_text()
    assert "# TYPE sluice_api_request_duration_seconds histogram" in text
    labels = 'method="POST",route="/v1/jobs",status="201"'
    assert _series(text, "sluice_api_request_duration_seconds_count")[labels] == 1
    assert _series(text, "sluice_api_request_duration_seconds_bucket")[f'{labels},le="+Inf"'] == 1


def test_an_unauthenticated_request_is_counted_with_its_401(measured: Env) -> None:
    r = measured.app.test_client().get("/v1/jobs")
    assert r.status_code == 401
    counts = _series(metrics.prometheus_text(), "sluice_api_requests_total")
    assert counts == {'method="GET",route="/v1/jobs",status="401"': 1}


def test_invented_methods_share_one_label_value(measured: Env) -> None:
    client = measured.app.test_client()
    for method in ("BREW", "PROPFIND", "X-ANYTHING"):
        assert client.open("/v1/jobs", method=method).status_code == 405
    counts = _series(metrics.prometheus_text(), "sluice_api_requests_total")
    assert counts == {'method="other",route="unmatched",status="405"': 3}
