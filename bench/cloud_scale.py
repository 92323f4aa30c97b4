"""Cloud scale: many instances share one model quota on the Firestore emulator.

``--instances`` threads (20) stand for function instances. Each has its own
Firestore client, its own google-genai client and its own Gemini extractor
with the leased rate limiter (``SLUICE_MODEL_RPM`` = ``--rpm``, 2,000), and
calls the model as fast as the limiter lets it, against a fake Vertex AI
server that enforces the quota (a 429 past ``--rpm`` calls in 60 s) and
answers every call with a 429 for ``--burst-s`` seconds in the middle of the
run (``retryDelay`` ``--retry-delay``). Runs ``--duration`` seconds (180).

The store is wrapped here, in the benchmark, by a counter of committed writes
per document and of transaction attempts; production code is not
instrumented. Printed:

* writes per document: the most-written document, its writes, and the
  largest and p99 count over 10-second windows (per document and window);
* transaction retries (aborted attempts) per model call;
* limiter overhead per call, p50/p99: time inside ``acquire`` not spent
  sleeping for the quota (a token not yet due, a shard with none to give):
  waiting for the keeper's store round trip, locking and bookkeeping;
* calls per minute against the quota;
* after the 429 burst: seconds until every instance knew of the slowdown,
  and how many calls instances made meanwhile before they knew.

The last line is one JSON object with the figures.

    .venv/bin/python bench/cloud_scale.py [--duration 180] [--instances 20] [--rpm 2000]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.oauth2.credentials import Credentials
from pypdf import PdfWriter

from common.adapters.gcp.firestore_store import FirestoreStore
from common.adapters.gcp.gemini import GeminiExtractor
from common.adapters.local.clock import SystemClock
from common.adapters.local.fs_blobs import FsBlobStore
from common.bootstrap import bootstrap, local_app
from common.config import Settings
from common.core.errors import ErrorKind, RetryableError
from common.core.leases import QuotaPlan
from common.core.models import Run
from common.core.schema import INVOICE_PRESET, DocumentExtraction, FieldSpec
from common.core.states import ExportStatus
from common.ports.extractor import DocumentRef
from common.ports.store import Transaction
from common.service.leased_ratelimit import Acquired, LeasedRateLimiter
from tests.emulators import harness
from tests.fakes.vertex import FakeVertex, RecordedRequest, Reply, answer, rate_limited
from tests.support import Pipeline, ScriptedExtractor

MODEL = "gemini-2.5-flash"
WINDOW_S = 10.0
ANSWER = answer({"columns": ["invoice_number"], "results": [["F-1"]], "pages": [1]})


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Ledger:
    """What the counting stores saw, shared by every instance."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writes: list[tuple[float, str]] = []  # (time, collection/doc)
        self.tx_attempts = 0
        self.tx_commits = 0


class CountingStore:
    """A Firestore store of its own client, counting committed writes per document
    and transaction attempts (an attempt that does not commit was aborted)."""

    def __init__(self, inner: FirestoreStore, ledger: Ledger) -> None:
        self._inner = inner
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _count(self, *docs: str) -> None:
        now = time.monotonic()
        with self._ledger.lock:
            self._ledger.writes.extend((now, d) for d in docs)

    def set(self, collection: str, doc_id: str, data: Any, **kw: Any) -> Any:
        snap = self._inner.set(collection, doc_id, data, **kw)
        self._count(f"{collection}/{doc_id}")
        return snap

    def create(self, collection: str, doc_id: str, data: Any) -> Any:
        snap = self._inner.create(collection, doc_id, data)
        self._count(f"{collection}/{doc_id}")
        return snap

    def update(self, collection: str, doc_id: str, changes: Any, **kw: Any) -> Any:
        snap = self._inner.update(collection, doc_id, changes, **kw)
        self._count(f"{collection}/{doc_id}")
        return snap

    def delete(self, collection: str, doc_id: str, **kw: Any) -> Any:
        deleted = self._inner.delete(collection, doc_id, **kw)
        if deleted:
            self._count(f"{collection}/{doc_id}")
        return deleted

    def transaction(self, fn: Callable[[Transaction], Any], *, max_attempts: int = 10) -> Any:
        written: list[str] = []

        def counted(t: Transaction) -> Any:
            written.clear()
            with self._ledger.lock:
                self._ledger.tx_attempts += 1
            outer = written

            class Tx:
                def get(self, c: str, d: str) -> Any:
                    return t.get(c, d)

                def set(self, c: str, d: str, data: Any) -> None:
                    outer.append(f"{c}/{d}")
                    t.set(c, d, data)

                def create(self, c: str, d: str, data: Any) -> None:
                    outer.append(f"{c}/{d}")
                    t.create(c, d, data)

                def delete(self, c: str, d: str) -> None:
                    outer.append(f"{c}/{d}")
                    t.delete(c, d)

            return fn(Tx())

        result = self._inner.transaction(counted, max_attempts=max_attempts)
        with self._ledger.lock:
            self._ledger.tx_commits += 1
        self._count(*written)
        return result


class OwnClientFirestore(FirestoreStore):
    """FirestoreStore on a client of its own (the process-wide cache would share one)."""

    def __init__(self, project: str) -> None:
        super().__init__(project)
        from google.cloud import firestore

        self._own = firestore.Client(project=project)

    @property
    def client(self) -> Any:
        return self._own


class TimedLimiter:
    """Measures each acquire: total time and time slept for a token."""

    def __init__(self, inner: LeasedRateLimiter, slept: list[float]) -> None:
        self.inner = inner
        self._slept = slept
        self.overheads: list[float] = []
        self.slow: list[float] = []  # when (monotonic) a call's overhead exceeded 20 ms

    def acquire(self, cost: float = 1.0) -> Acquired:
        t0 = time.perf_counter()
        m0 = time.monotonic()
        self._slept.clear()
        try:
            return self.inner.acquire(cost)
        finally:
            overhead = time.perf_counter() - t0 - sum(self._slept)
            self.overheads.append(overhead)
            if overhead > 0.020:
                self.slow.append(m0)

    def penalise(self, *, duration_s: float | None = None) -> None:
        self.inner.penalise(duration_s=duration_s)


class QuotaServer:
    """The fake Vertex server's behaviour: the quota, and the 429 burst."""

    def __init__(self, rpm: int, burst: tuple[float, float], retry_delay_s: int) -> None:
        self.rpm = rpm
        self.burst = burst  # (start, end), monotonic
        self.retry_delay = f"{retry_delay_s}s"
        self.lock = threading.Lock()
        self.ok: list[float] = []
        self.refused: list[float] = []
        self.first_429: float | None = None

    def __call__(self, _req: RecordedRequest) -> Reply:
        now = time.monotonic()
        with self.lock:
            in_burst = self.burst[0] <= now < self.burst[1]
            recent = sum(1 for t in self.ok[-self.rpm - 50 :] if t > now - 60)
            if in_burst or recent >= self.rpm * 1.02:
                self.refused.append(now)
                if in_burst and self.first_429 is None:
                    self.first_429 = now
                return rate_limited(retry_delay=self.retry_delay)
            self.ok.append(now)
        return ANSWER


def one_page_pdf() -> bytes:
    w = PdfWriter()
    w.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def instance(
    i: int,
    args: argparse.Namespace,
    project: str,
    base_url: str,
    blobs: FsBlobStore,
    ledger: Ledger,
    server: QuotaServer,
    stop_at: float,
    results: dict[int, dict[str, Any]],
    start_gate: threading.Barrier,
) -> None:
    slept: list[float] = []

    def sleep(s: float) -> None:
        # What the limiter asked to wait for the quota, as long as it really took.
        t = time.perf_counter()
        time.sleep(s)
        slept.append(time.perf_counter() - t)

    store: Any = CountingStore(OwnClientFirestore(project), ledger)
    plan = QuotaPlan.per_minute(args.rpm)
    limiter = LeasedRateLimiter(store, SystemClock(), key=f"gemini:{project}:{MODEL}", plan=plan, sleep=sleep)
    timed = TimedLimiter(limiter, slept)
    ex = GeminiExtractor(
        project=project,
        location="europe-west1",
        model=MODEL,
        blobs=blobs,
        clock=SystemClock(),
        limiter=timed,
        credentials=Credentials(token="bench"),  # type: ignore[no-untyped-call]
        http_base_url=base_url,
    )
    doc = DocumentRef("local://uploads/inv.pdf", "inv.pdf", "application/pdf", None)
    calls: list[float] = []
    knew_at: float | None = None
    start_gate.wait()
    while time.monotonic() < stop_at:
        t = time.monotonic()
        try:
            ex.extract(doc, INVOICE_PRESET[:1])
            calls.append(t)
        except RetryableError as err:
            if err.kind is ErrorKind.RATE_LIMITED:
                calls.append(t)  # the call reached the model
            elif err.retry_after is not None:
                time.sleep(min(err.retry_after, 0.5))  # a real instance would take other work meanwhile
        if knew_at is None and server.first_429 is not None and limiter.slow_until > time.time():
            knew_at = time.monotonic()
    limiter.close()
    results[i] = {
        "calls": calls,
        "knew_at": knew_at,
        "overheads": timed.overheads,
        "slow": timed.slow,
        "renewals": limiter.renewals,
        "store_waits": limiter.store_waits,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=180.0, help="limiter phase, seconds (0: skip it)")
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--rpm", type=int, default=2000)
    ap.add_argument("--burst-s", type=float, default=3.0)
    ap.add_argument("--retry-delay", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=1000, help="pipeline phase: documents in the run (0: skip it)")
    ap.add_argument("--workers", type=int, default=32, help="pipeline phase: runtime worker threads")
    ap.add_argument("--model-call-s", type=float, default=0.1, help="pipeline phase: seconds per model call")
    ap.add_argument("--pipeline-timeout", type=float, default=600.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="sluice-bench-scale-") as tmp:
        emu = harness.start(Path(tmp) / "emulators")
        try:
            import os

            os.environ.update(emu.env())
            figures: dict[str, Any] = {"bench": "cloud_scale"}
            if args.duration > 0:
                figures |= run(args, emu.project, Path(tmp))
            if args.tasks > 0:
                figures |= pipeline_phase(args, emu.project, Path(tmp))
            print(json.dumps(figures))
            return 0
        finally:
            emu.stop()


def run(args: argparse.Namespace, project: str, tmp: Path) -> dict[str, Any]:
    blobs = FsBlobStore(tmp / "blobs", clock=SystemClock())
    blobs.put_bytes("local://uploads/inv.pdf", one_page_pdf(), content_type="application/pdf")
    ledger = Ledger()
    t0 = time.monotonic() + 5.0  # the instances start together once their clients exist
    middle = t0 + args.duration / 2
    server = QuotaServer(args.rpm, (middle, middle + args.burst_s), args.retry_delay)
    results: dict[int, dict[str, Any]] = {}
    gate = threading.Barrier(args.instances)
    with FakeVertex() as fake:
        fake.default = server
        threads = [
            threading.Thread(
                target=instance,
                args=(i, args, project, fake.base_url, blobs, ledger, server, t0 + args.duration, results, gate),
            )
            for i in range(args.instances)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return report(args, ledger, server, results, t0)


def report(
    args: argparse.Namespace, ledger: Ledger, server: QuotaServer, results: dict[int, dict[str, Any]], t0: float
) -> dict[str, Any]:
    calls = sorted(c for r in results.values() for c in r["calls"])
    n_calls = len(calls)
    per_doc = Counter(d for _, d in ledger.writes)
    windows: dict[tuple[str, int], int] = defaultdict(int)
    for t, d in ledger.writes:
        windows[(d, math.floor((t - t0) / WINDOW_S))] += 1
    per_window = list(windows.values())
    top_doc, top_writes = per_doc.most_common(1)[0] if per_doc else ("-", 0)
    worst_window = max(windows.items(), key=lambda kv: kv[1]) if windows else (("-", 0), 0)
    retries = ledger.tx_attempts - ledger.tx_commits
    overheads = [o for r in results.values() for o in r["overheads"]]
    minutes = []
    for m in range(int(args.duration // 60)):
        lo, hi = t0 + 60 * m, t0 + 60 * (m + 1)
        minutes.append(sum(1 for c in server.ok if lo <= c < hi))
    refused_quota = len(server.refused) - sum(1 for r in server.refused if server.burst[0] <= r < server.burst[1])
    first = server.first_429
    knew = [r["knew_at"] for r in results.values()]
    reach = max((k - first) for k in knew if k is not None) if first and all(k is not None for k in knew) else None
    unaware_calls = 0
    burst_by_instance = [
        sum(1 for c in r["calls"] if server.burst[0] <= c < server.burst[1]) for _, r in sorted(results.items())
    ]
    if first is not None:
        for r in results.values():
            end = r["knew_at"] if r["knew_at"] is not None else math.inf
            unaware_calls += sum(1 for c in r["calls"] if first <= c < end)

    print(f"instances {args.instances}, quota {args.rpm}/min, {args.duration:.0f} s, model calls {n_calls}")
    print(f"writes per document: most written {top_doc} ({top_writes} writes, {top_writes / args.duration:.2f}/s)")
    p99_window = pct([float(v) for v in per_window], 0.99)
    print(f"  per 10 s window: max {worst_window[1]} ({worst_window[0][0]}), p99 {p99_window:.0f}")
    per_call = retries / max(1, n_calls)
    print(f"transactions: {ledger.tx_commits} committed, {retries} retried; retries per call {per_call:.4f}")
    p50, p99 = pct(overheads, 0.5) * 1000, pct(overheads, 0.99) * 1000
    print(f"429s answered in the burst: {len(server.refused) - refused_quota} {burst_by_instance}")
    print(f"limiter overhead per call: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    slow = [t - t0 for r in results.values() for t in r["slow"]]
    mid = server.burst[0] - t0
    print(
        f"  calls over 20 ms: {len(slow)} ({len(slow) / max(1, n_calls):.2%}): "
        f"{sum(1 for t in slow if t < 5)} in the first 5 s, "
        f"{sum(1 for t in slow if mid - 1 <= t < mid + 10)} within 10 s of the 429 burst"
    )
    print(f"calls accepted per minute: {minutes} (quota {args.rpm}); refused over quota: {refused_quota}")
    print(
        f"429 burst: every instance knew within {reach if reach is None else round(reach, 2)} s; "
        f"calls made meanwhile by instances not yet aware: {unaware_calls}"
    )
    figures = {
        "instances": args.instances,
        "rpm": args.rpm,
        "duration_s": args.duration,
        "model_calls": n_calls,
        "max_writes_per_doc": top_writes,
        "max_doc": top_doc,
        "max_writes_per_doc_per_10s": worst_window[1],
        "p99_writes_per_doc_per_10s": pct([float(v) for v in per_window], 0.99),
        "tx_retries_per_call": round(retries / max(1, n_calls), 5),
        "limiter_overhead_ms_p50": round(pct(overheads, 0.5) * 1000, 3),
        "limiter_overhead_ms_p99": round(pct(overheads, 0.99) * 1000, 3),
        "calls_per_minute": minutes,
        "refused_over_quota": refused_quota,
        "slowdown_reach_s": None if reach is None else round(reach, 3),
        "calls_before_all_slowed": unaware_calls,
        "burst_429s": len(server.refused) - refused_quota,
        "burst_calls_by_instance": burst_by_instance,
        "lease_renewals": sum(r["renewals"] for r in results.values()),
        "calls_that_waited_for_the_store": sum(r["store_waits"] for r in results.values()),
    }
    return figures


# -- the pipeline: a run's documents under load -------------------------------------------


class PacedModel(ScriptedExtractor):
    """The scripted extractor's answer after ``call_s`` seconds, like a fast remote model."""

    def __init__(self, call_s: float) -> None:
        super().__init__()
        self.call_s = call_s

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        time.sleep(self.call_s)
        return super().extract(doc, fields, prompt=prompt)


def pipeline_phase(args: argparse.Namespace, project: str, tmp: Path) -> dict[str, Any]:
    """A run of ``--tasks`` documents through the real handlers on the local runtime
    (``--workers`` threads), every record in the Firestore emulator: writes per document."""
    ledger = Ledger()
    model = PacedModel(args.model_call_s)
    settings = Settings(backend="local", data_dir=tmp / "pipeline", durable=False, progress_min_interval_s=1.0)
    deps = bootstrap(settings, clock=SystemClock(), extractor_factory=lambda _name: model)
    deps.store = CountingStore(OwnClientFirestore(project), ledger)
    app = local_app(deps=deps, max_workers=args.workers)
    p = Pipeline.of(app, tmp=tmp / "pipeline", extractor=model)
    job = p.job(formats=("csv",))
    u0 = time.monotonic()
    for i in range(args.tasks):
        p.upload(job, f"ok-{i:05d}.pdf")
    uploads = Counter(d for t, d in ledger.writes if t >= u0)
    top_upload = max((d for d in uploads if not d.startswith("files/")), key=lambda d: uploads[d], default="-")
    print(f"uploads: {args.tasks} files; most written document besides the files: {top_upload} {uploads[top_upload]}")
    t0 = time.monotonic()
    app.runtime.start()
    try:
        run = p.start(job)
        while time.monotonic() < t0 + args.pipeline_timeout:
            exports = p.exports(run.id)
            if exports and all(e.status is ExportStatus.COMPLETED for e in exports):
                break
            time.sleep(0.2)
    finally:
        app.runtime.stop()
    elapsed = time.monotonic() - t0
    done = p.run(run.id)
    return pipeline_report(args, ledger, t0, elapsed, done)


def pipeline_report(args: argparse.Namespace, ledger: Ledger, t0: float, elapsed: float, done: Run) -> dict[str, Any]:
    writes = [(t, d) for t, d in ledger.writes if t >= t0]
    windows: dict[tuple[str, int], int] = defaultdict(int)
    for t, d in writes:
        windows[(d, math.floor((t - t0) / WINDOW_S))] += 1
    per_doc = Counter(d for _, d in writes)
    print(
        f"pipeline: {args.tasks} tasks on {args.workers} workers, model call {args.model_call_s * 1000:.0f} ms: "
        f"run {done.status.value} in {elapsed:.1f} s ({args.tasks / elapsed:.1f} tasks/s), "
        f"{done.counters.completed} completed"
    )
    figures: dict[str, Any] = {
        "pipeline_tasks": args.tasks,
        "pipeline_s": round(elapsed, 2),
        "pipeline_run_status": done.status.value,
        "pipeline_tx_retries_per_task": round((ledger.tx_attempts - ledger.tx_commits) / max(1, args.tasks), 5),
    }
    for kind in ("runs", "tasks", "operations", "jobs", "files", "exports"):
        docs = {d: n for d, n in per_doc.items() if d.startswith(kind + "/")}
        if not docs:
            continue
        top = max(docs, key=lambda d: docs[d])
        window = max(n for (d, _), n in windows.items() if d.startswith(kind + "/"))
        print(
            f"  {kind}: {len(docs)} documents, most written {top} {docs[top]} times; "
            f"most in a 10 s window {window} ({window / WINDOW_S:.1f}/s)"
        )
        figures[f"pipeline_{kind}_max_writes"] = docs[top]
        figures[f"pipeline_{kind}_max_writes_per_10s"] = window
    worst = max(windows.items(), key=lambda kv: kv[1]) if windows else (("-", 0), 0)
    print(f"  any document: most in a 10 s window {worst[1]} ({worst[0][0]})")
    figures["pipeline_max_writes_per_doc_per_10s"] = worst[1]
    figures["pipeline_max_doc"] = worst[0][0]
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
