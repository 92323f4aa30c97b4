"""100 concurrent document audits on the embedded backend.

Creates N ``audit`` jobs (one generated 2-page PDF each: a quarter with the
logo moved, a quarter without the disclaimer, a quarter on A5), starts every
run at once, and runs them on the real local runtime (SQLite store and bus,
the audit function's worker pool from topology.yaml, logo matching bounded by
SLUICE_LOGO_CONCURRENCY). Four auditors per audit: disclaimer, format, logo
(OpenCV template matching) and grammar, which calls the OpenAI-compatible
text-model adapter (SLUICE_TEXT_MODEL=openai, the real HTTP client code)
against a local fake server answering after ``--model-ms``, so the grammar
figures are the platform's and the client's overhead plus that latency, not
a real model's.

Prints the makespan (first start requested to last run completed), per
auditor p50/p99 of the handler's time and of the item's time from creation
to completion (queueing included), the peak RSS, and checks every verdict
against what was generated. The last line is one JSON object.

    .venv/bin/python bench/audit.py [--audits 100] [--model-ms 200] [--logo-concurrency 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.bootstrap import local_app
from common.config import Settings
from common.core.models import Run, WorkItem
from common.core.states import RunStatus, TaskStatus
from common.kinds.audit import from_item
from common.ports.store import Filter
from common.service import jobs, repo
from tests.audit.generate import A5, DISCLAIMER, Spec, build, logo_png
from tests.fakes.openai_chat import FakeOpenAI, chat_answer

VARIANTS = ("clean", "logo_moved", "no_disclaimer", "a5")
EXPECTED_FAILED = {
    "clean": set(),
    "logo_moved": {"logo"},
    "no_disclaimer": {"disclaimer"},
    "a5": {"format"},
}


def _spec(variant: str, logo: bytes) -> Spec:
    if variant == "logo_moved":
        return Spec(logo=logo, logo_at="bottom-right")
    if variant == "no_disclaimer":
        return Spec(logo=logo, disclaimer=None)
    if variant == "a5":
        return Spec(logo=logo, pagesize=A5, logo_width=90)
    return Spec(logo=logo)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audits", type=int, default=100)
    ap.add_argument("--model-ms", type=float, default=200.0)
    ap.add_argument("--logo-concurrency", type=int, default=2)
    args = ap.parse_args()

    logo = logo_png()
    documents = {v: build(_spec(v, logo)) for v in VARIANTS}
    settings = {
        "disclaimers": [{"text": DISCLAIMER, "pages": "all"}],
        "logo": {"region": "top-left"},
        "logo_file": "logo.png",
    }
    with tempfile.TemporaryDirectory(prefix="sluice-bench-audit-") as tmp:
        root = Path(tmp)
        (root / "logo.png").write_bytes(logo)
        for v, data in documents.items():
            (root / f"{v}.pdf").write_bytes(data)
        fake = FakeOpenAI(latency_s=args.model_ms / 1000).__enter__()
        fake.default = chat_answer({"findings": []})
        config = Settings(
            backend="local",
            data_dir=root / "data",
            logo_concurrency=args.logo_concurrency,
            text_model="openai",
            openai_base_url=fake.base_url,
            openai_model="bench-model",
            openai_rpm=100_000,
        )
        app = local_app(config)
        variant_of: dict[str, str] = {}
        job_list = []
        for i in range(args.audits):
            variant = VARIANTS[i % len(VARIANTS)]
            job = jobs.create_job(
                app.deps, owner=f"user{i % 10}", name=f"audit {i}", fields=[], kind="audit", kind_settings=settings
            )
            jobs.add_upload(app.deps, job, root / f"{variant}.pdf", name=f"doc{i}.pdf")
            jobs.add_upload(app.deps, job, root / "logo.png", name="logo.png")
            variant_of[job.id] = variant
            job_list.append(job)
        app.runtime.start()
        try:
            started = time.perf_counter()
            runs = [jobs.request_run(app.deps, app.sender, job) for job in job_list]
            pending = {r.id for r in runs}
            while pending:
                for run_id in list(pending):
                    run = repo.require(app.deps.store, Run, run_id)[0]
                    if run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
                        pending.discard(run_id)
                time.sleep(0.05)
            makespan = time.perf_counter() - started
        finally:
            app.runtime.stop()
            fake.__exit__(None, None, None)

        handler: dict[str, list[float]] = {}
        end_to_end: dict[str, list[float]] = {}
        wrong: list[str] = []
        statuses: dict[str, int] = {}
        for run in runs:
            final = repo.require(app.deps.store, Run, run.id)[0]
            statuses[final.status.value] = statuses.get(final.status.value, 0) + 1
            items = list(repo.scan(app.deps.store, WorkItem, filters=[Filter("run_id", "==", run.id)]))
            failed = set()
            for item in items:
                result = from_item(item)
                auditor = result.auditor
                if item.status is TaskStatus.COMPLETED:
                    handler.setdefault(auditor, []).append(result.seconds)
                    end_to_end.setdefault(auditor, []).append((item.updated_at - item.created_at).total_seconds())
                if result.status.value != "passed":
                    failed.add(auditor)
            if failed != EXPECTED_FAILED[variant_of[run.job_id]]:
                wrong.append(f"{run.id} ({variant_of[run.job_id]}): failed auditors {sorted(failed)}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"audits: {args.audits} x 4 auditors, runs {statuses}, fake model server latency {args.model_ms:g} ms")
    print(f"makespan: {makespan:.1f} s   peak RSS: {peak_mb:.0f} MB   verdicts wrong: {len(wrong)}")
    print(f"{'auditor':<11} {'handler p50':>12} {'p99':>8} {'item p50':>10} {'p99':>8}   (seconds)")
    figures: dict[str, Any] = {}
    for auditor in ("disclaimer", "format", "logo", "grammar"):
        h, e = handler.get(auditor, []), end_to_end.get(auditor, [])
        figures[auditor] = {
            "n": len(h),
            "handler_p50_s": round(_pct(h, 0.5), 3),
            "handler_p99_s": round(_pct(h, 0.99), 3),
            "item_p50_s": round(_pct(e, 0.5), 3),
            "item_p99_s": round(_pct(e, 0.99), 3),
            "handler_mean_s": round(statistics.fmean(h), 3) if h else 0.0,
        }
        f = figures[auditor]
        print(
            f"{auditor:<11} {f['handler_p50_s']:>12.3f} {f['handler_p99_s']:>8.3f}"
            f" {f['item_p50_s']:>10.3f} {f['item_p99_s']:>8.3f}"
        )
    for line in wrong[:10]:
        print("WRONG:", line)
    print(
        json.dumps(
            {
                "bench": "audit",
                "audits": args.audits,
                "auditors": 4,
                "model_ms": args.model_ms,
                "logo_concurrency": args.logo_concurrency,
                "makespan_s": round(makespan, 2),
                "peak_rss_mb": round(peak_mb, 1),
                "runs": statuses,
                "verdicts_wrong": len(wrong),
                "per_auditor": figures,
            },
            sort_keys=True,
        )
    )
    return 1 if wrong or statuses.get("completed", 0) != args.audits else 0


if __name__ == "__main__":
    raise SystemExit(main())
