"""The Cloud Function entrypoint (functions-framework) and ``sluice serve`` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from common import bootstrap
from common.api import app as api_app
from tests.support import REPO_ROOT


@pytest.fixture
def cloud_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SLUICE_BACKEND", "local")
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SLUICE_DURABLE", "false")
    monkeypatch.setenv("SLUICE_API_DEV_IDENTITY", "dev")
    monkeypatch.setattr(bootstrap, "_cached", None)
    monkeypatch.setattr(api_app, "_cloud_app", None)
    yield
    monkeypatch.setattr(bootstrap, "_cached", None)
    monkeypatch.setattr(api_app, "_cloud_app", None)


def test_the_http_function_dispatches_to_the_api_and_builds_nothing_at_import(cloud_env: None) -> None:
    source = str(REPO_ROOT / "functions" / "api" / "main.py")
    app = functions_framework.create_app("handle", source, "http")  # type: ignore[no-untyped-call]
    assert api_app._cloud_app is None and bootstrap._cached is None, "importing built nothing"
    client = app.test_client()
    r = client.post("/v1/jobs", json={"name": "from the function", "preset": "invoice"})
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()
    assert client.get(f"/v1/jobs/{job['id']}").get_json()["name"] == "from the function"
    assert client.get("/v1/nope").status_code == 404
    assert client.get("/v1/openapi.json").get_json()["openapi"] == "3.1.0"


def _call(base: str, method: str, path: str, body: Any = None, raw: bytes | None = None, ctype: str = "") -> Any:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if ctype:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
        return json.loads(text) if resp.headers.get_content_type() == "application/json" else text


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {**os.environ, "SLUICE_DURABLE": "false", "SLUICE_LOG_FORMAT": "text"}
    env.pop("SLUICE_BACKEND", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "common.serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "d"),
            "--dev-identity",
            "dev",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "Sluice API on http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
    base = line.split(" on ", 1)[1].split("/v1", 1)[0]
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sluice_serve_runs_the_whole_product_over_http_and_stops_cleanly(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    base, proc = served
    samples = sorted((REPO_ROOT / "samples" / "invoices").glob("*.pdf"))[:3]
    assert samples
    job = _call(base, "POST", "/v1/jobs", {"name": "served", "preset": "invoice", "exports": [{"format": "csv"}]})
    boundary = "sluiceboundary"
    parts = b""
    for path in samples:
        parts += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                "Content-Type: application/pdf\r\n\r\n"
            ).encode()
            + path.read_bytes()
            + b"\r\n"
        )
    parts += f"--{boundary}--\r\n".encode()
    up = _call(
        base, "POST", f"/v1/jobs/{job['id']}/files", raw=parts, ctype=f"multipart/form-data; boundary={boundary}"
    )
    assert len(up["items"]) == len(samples)
    run = _call(base, "POST", f"/v1/jobs/{job['id']}/runs", {"priority": "urgent"})
    # Live progress over Server-Sent Events until the operation is final.
    events = _call(base, "GET", f"/v1/operations/{run['operation_id']}/events").decode()
    assert "event: done" in events
    op = _call(base, "GET", f"/v1/operations/{run['operation_id']}")
    assert op["status"] == "done" and op["done"] == len(samples), op
    (export,) = _call(base, "GET", f"/v1/runs/{run['id']}/exports")["items"]
    assert export["status"] == "completed" and export["url"].startswith(base)
    csv = _call(base, "GET", export["url"][len(base) :]).decode("utf-8-sig")
    assert csv.count("\n") >= len(samples)
    with pytest.raises(urllib.error.HTTPError) as err:
        _call(base, "GET", "/v1/runs/run_nope")
    assert err.value.code == 404
    # Prometheus metrics of the stages that just ran (base ends in /v1; /metrics is at the root).
    root = base.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as resp:
        exposition = resp.read().decode()
    assert 'sluice_stage_duration_seconds_count{function="extract",kind="task.extract",outcome="done"}' in exposition
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Sluice API stopped" in out


@pytest.mark.slow
def test_sluice_serve_refuses_to_start_without_a_way_to_authenticate(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_API_")}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "common.serve", "--port", "0", "--data-dir", str(tmp_path / "d")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no way to authenticate" in proc.stderr
    assert time.monotonic() - t0 < 60
