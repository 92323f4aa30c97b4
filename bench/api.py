"""Job API latency on the embedded backend with many existing jobs.

Seeds one user with ``--jobs`` jobs (10,000 by default), then measures, in
process through the Flask app (bearer JWT verified, rate limiter and
idempotency store on, SQLite with fsync on every commit): create a job,
start a run, list jobs (a page of 50, newest first, each with its latest
run) and poll an operation. Prints p50/p99 per call; the last line is one
JSON object with the figures.

    .venv/bin/python bench/api.py [--jobs 10000] [--samples 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from common.api.app import create_app
from common.api.auth import BearerAuthenticator, OidcVerifier
from common.api.settings import ApiSettings, IssuerConfig
from common.bootstrap import bootstrap
from common.config import Settings
from common.core.schema import INVOICE_PRESET
from common.service import jobs

ISSUER = "https://issuer.bench"


def _token() -> tuple[str, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": "b1", "alg": "RS256"})
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "bench", "sub": "bench-user", "iat": now, "exp": now + 3600}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "b1"}), {"keys": [jwk]}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-api-") as tmp:
        data = Path(tmp) / "data"
        t0 = time.perf_counter()
        seed = bootstrap(Settings(backend="local", data_dir=data, durable=False))
        for i in range(args.jobs):
            jobs.create_job(seed, owner="bench-user", name=f"job {i}", fields=INVOICE_PRESET)
        seeded_s = time.perf_counter() - t0
        print(f"seeded {args.jobs} jobs in {seeded_s:.1f} s")

        deps = bootstrap(Settings(backend="local", data_dir=data, durable=True))
        token, jwks = _token()
        verifier = OidcVerifier([IssuerConfig(issuer=ISSUER, audience="bench", jwks_url="x")], fetcher=lambda _u: jwks)
        app = create_app(deps, ApiSettings(rate_limit_rpm=10_000_000), authenticator=BearerAuthenticator(verifier))
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        created: list[str] = []
        operations: list[str] = []

        def create() -> None:
            r = client.post("/v1/jobs", json={"name": "bench", "preset": "invoice"}, headers=headers)
            assert r.status_code == 201, r.get_data()
            created.append(r.get_json()["id"])

        def start() -> None:
            r = client.post(f"/v1/jobs/{created[len(operations)]}/runs", json={"priority": "high"}, headers=headers)
            assert r.status_code == 202, r.get_data()
            operations.append(r.get_json()["operation_id"])

        def listing() -> None:
            r = client.get("/v1/jobs?limit=50", headers=headers)
            assert r.status_code == 200 and len(r.get_json()["items"]) == 50

        def poll() -> None:
            r = client.get(f"/v1/operations/{operations[-1]}", headers=headers)
            assert r.status_code == 200

        figures: dict[str, Any] = {"jobs": args.jobs, "samples": args.samples, "durable": True}
        steps: list[tuple[str, Callable[[], None]]] = [
            ("create_job", create),
            ("start_run", start),
            ("list_jobs", listing),
            ("poll_operation", poll),
        ]
        for name, fn in steps:
            fn()  # warm up
            if name == "start_run":
                operations.clear()
            times: list[float] = []
            for _ in range(args.samples):
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1000)
            p50, p99 = statistics.median(times), _pct(times, 0.99)
            figures[f"{name}_p50_ms"] = round(p50, 2)
            figures[f"{name}_p99_ms"] = round(p99, 2)
            print(f"{name:15s} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
        figures["target_median_ms"] = 100
        figures["all_under_target"] = all(figures[f"{n}_p50_ms"] < 100 for n, _ in steps)
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
