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

With ``--processes N`` (N > 1) the stages run in N worker processes under a
supervisor, as ``sluice serve --processes N`` runs them, and the API in this
process: the stream then sees the workers' writes through the store's watch
of other processes' commits (``SLUICE_STORE_WATCH_S``).

    .venv/bin/python bench/progress_lag.py [--tasks 300] [--rounds 2] [--processes 1]
"""

from __future__ import annotations

import argparse
import contextlib
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


def _model(seed: int) -> Any:
    """A model that takes 20-300 ms per document."""
    from tests.support import ScriptedExtractor

    rng = random.Random(seed)

    class Model(ScriptedExtractor):
        def extract(self, doc: Any, fields: Any, *, prompt: str = "") -> Any:
            time.sleep(rng.uniform(0.02, 0.3))
            return super().extract(doc, fields, prompt=prompt)

    return Model()


def prepare_child(deps: Any) -> None:
    """A supervised worker process's extractor (a module-level function: pickled to the child)."""
    model = _model(os.getpid())
    deps.extractor_factory = lambda _n: model


def one_round(tmp: Path, tasks: int, mode: str, seed: int, processes: int = 1) -> dict[str, Any]:
    import requests
    from werkzeug.serving import make_server

    from common.adapters.local.clock import SystemClock
    from common.api.app import api_of, create_app
    from common.api.settings import ApiSettings
    from common.bootstrap import local_app
    from common.cli_support import data_dir_lock
    from common.core.models import ExtractionTask
    from common.core.schema import INVOICE_PRESET
    from common.ports.store import Filter
    from common.runtime.supervisor import Supervisor
    from common.service import jobs, repo

    data_dir = tmp / mode / "data"
    settings = Settings(backend="local", data_dir=data_dir, durable=True, log_level="WARNING")
    model = _model(seed)
    held = contextlib.ExitStack()
    held.enter_context(data_dir_lock(data_dir))  # as sluice serve holds it (the supervisor's caller must)
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
    supervisor = None
    if processes > 1:
        supervisor = Supervisor(data_dir, processes, app.bus, local_api_url=base, prepare=prepare_child, deps=deps)
        supervisor.start()
        for child in supervisor.children:
            if not child.ready.wait(120):
                raise SystemExit(f"worker process {child.pid} did not start")
    else:
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
        if supervisor is not None:
            supervisor.stop()
        else:
            app.runtime.stop()
        server.shutdown()
        held.close()
    found = repo.scan(deps.store, ExtractionTask, filters=[Filter("run_id", "==", run["id"])])
    finished = sorted(t.finished_at.timestamp() for t in found if t.finished_at is not None)
    lags = []
    for rank, at in enumerate(finished, start=1):
        seen = next((t for t, count in events if count >= rank), None)
        if seen is not None:
            lags.append(max(0.0, seen - at))
    return {
        "mode": mode,
        "processes": processes,
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
    ap.add_argument("--processes", type=int, default=1, help="worker processes running the stages (1: in this process)")
    args = ap.parse_args()
    if args.processes < 1:
        ap.error("--processes must be at least 1")
    # The worker processes read their settings from the environment, as sluice serve's do.
    os.environ.update(SLUICE_DURABLE="true", SLUICE_LOG_LEVEL="WARNING")
    import logging

    from common.api.settings import ApiSettings

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one request line each otherwise

    poll_s = ApiSettings().sse_poll_s
    target_ms = poll_s / 2 * 1000 + 50
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sluice-lag-") as tmp:
        for i in range(args.rounds):
            for mode in ("wake", "poll") if i % 2 == 0 else ("poll", "wake"):
                r = one_round(Path(tmp) / f"r{i}", args.tasks, mode, seed=i, processes=args.processes)
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
        "processes": args.processes,
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
