"""Progress lag: from a task's terminal write to the SSE event a client receives.

Serves the job API and every stage in one process, as ``sluice serve`` does
(werkzeug on 127.0.0.1, the local runtime, the embedded store), runs a job of
``--tasks`` documents through a model that takes 20-300 ms per document, and
reads ``/v1/operations/{id}/events`` over HTTP while it runs. A task's lag is
the time from its terminal write (``finished_at``) to the first event whose
``done + failed`` counts it. Rounds alternate between the stream woken by the
store's change feed (``wake``, the default) and plain polling every
``sse_poll_s`` (``poll``, as before the feed). Target: p99 <= poll / 2 + 50 ms.
The last line is one JSON object with the figures.

    .venv/bin/python bench/progress_lag.py [--tasks 300] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.config import Settings  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def one_round(tmp: Path, tasks: int, mode: str, seed: int) -> dict[str, Any]:
    import requests
    from werkzeug.serving import make_server

    from common.adapters.local.clock import SystemClock
    from common.api.app import api_of, create_app
    from common.api.settings import ApiSettings
    from common.bootstrap import local_app
    from common.core.models import ExtractionTask
    from common.core.schema import INVOICE_PRESET
    from common.ports.store import Filter
    from common.service import jobs, repo
    from tests.support import ScriptedExtractor

    rng = random.Random(seed)

    class Model(ScriptedExtractor):
        def extract(self, doc: Any, fields: Any, *, prompt: str = "") -> Any:
            time.sleep(rng.uniform(0.02, 0.3))
            return super().extract(doc, fields, prompt=prompt)

    settings = Settings(backend="local", data_dir=tmp / mode / "data", durable=True, log_level="WARNING")
    model = Model()
    app = local_app(settings, clock=SystemClock(), extractor_factory=lambda _n: model)
    deps = app.deps
    api_settings = ApiSettings(dev_identity="bench")
    flask_app = create_app(deps, api_settings)
    if mode == "poll":
        api_of(flask_app).sleep = time.sleep  # an injected sleep turns the change feed off
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    job = jobs.create_job(deps, owner="bench", name="lag", fields=INVOICE_PRESET)
    src = tmp / mode / "docs"
    src.mkdir(parents=True)
    for i in range(tasks):
        path = src / f"ok-{i:04d}.pdf"
        path.write_bytes(f"%PDF-1.4 {mode} {i}".encode())
        jobs.add_upload(deps, job, path)
    app.runtime.start()
    events: list[tuple[float, int]] = []  # (received at, done + failed)
    try:
        run = requests.post(f"{base}/v1/jobs/{job.id}/runs", json={}, timeout=30).json()
        with requests.get(f"{base}/v1/operations/{run['operation_id']}/events", stream=True, timeout=120) as r:
            for raw in r.iter_lines():
                line = raw.decode()
                if line.startswith("data:"):
                    op = json.loads(line[5:])
                    events.append((time.time(), int(op["done"]) + int(op["failed"])))
                    if op.get("final"):
                        break
    finally:
        app.runtime.stop()
        server.shutdown()
    found = repo.scan(deps.store, ExtractionTask, filters=[Filter("run_id", "==", run["id"])])
    finished = sorted(t.finished_at.timestamp() for t in found if t.finished_at is not None)
    lags = []
    for rank, at in enumerate(finished, start=1):
        seen = next((t for t, count in events if count >= rank), None)
        if seen is not None:
            lags.append(max(0.0, seen - at))
    return {
        "mode": mode,
        "tasks": len(finished),
        "events": len(events),
        "lag_p50_ms": round(_pct(lags, 0.5) * 1000, 1),
        "lag_p99_ms": round(_pct(lags, 0.99) * 1000, 1),
        "lag_max_ms": round(max(lags) * 1000, 1),
        "lag_mean_ms": round(statistics.mean(lags) * 1000, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of each mode, alternating")
    args = ap.parse_args()
    import logging

    from common.api.settings import ApiSettings

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one request line each otherwise

    poll_s = ApiSettings().sse_poll_s
    target_ms = poll_s / 2 * 1000 + 50
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sluice-lag-") as tmp:
        for i in range(args.rounds):
            for mode in ("wake", "poll") if i % 2 == 0 else ("poll", "wake"):
                r = one_round(Path(tmp) / f"r{i}", args.tasks, mode, seed=i)
                results.append(r)
                print(
                    f"round {i + 1} {mode:4s}: p50 {r['lag_p50_ms']:7.1f} ms  p99 {r['lag_p99_ms']:7.1f} ms"
                    f"  max {r['lag_max_ms']:7.1f} ms  ({r['tasks']} tasks, {r['events']} events)",
                    flush=True,
                )
    wake = [r for r in results if r["mode"] == "wake"]
    poll = [r for r in results if r["mode"] == "poll"]
    figures = {
        "bench": "progress_lag",
        "tasks": args.tasks,
        "sse_poll_s": poll_s,
        "target_p99_ms": target_ms,
        "wake_p50_ms": statistics.median(r["lag_p50_ms"] for r in wake),
        "wake_p99_ms": max(r["lag_p99_ms"] for r in wake),
        "poll_p50_ms": statistics.median(r["lag_p50_ms"] for r in poll),
        "poll_p99_ms": max(r["lag_p99_ms"] for r in poll),
        "rounds": results,
        "load": "{:.1f}/{:.1f}".format(*os.getloadavg()[:2]),
    }
    figures["wake_meets_target"] = figures["wake_p99_ms"] <= target_ms
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
