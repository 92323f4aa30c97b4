"""The console's first load on the embedded backend with 1,000 jobs, in headless Chromium.

Seeds 1,000 jobs (one through the API, the rest through the job service with
the same owner), then loads ``/`` in a fresh browser context several times and
reports, per load, the time from navigation to the jobs list drawn (the page
marks it: ``body[data-ready]``, ``data-ready-at`` in ms since navigation) and
the bytes of the console's own files (HTML, JS, CSS, config), API answers
counted apart. Targets: under 1 s and under 300 KB. The last line is one JSON object.

    .venv/bin/python bench/console.py [--jobs 1000] [--loads 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.core.models import Job
from common.core.schema import preset
from common.serve import serving
from common.service import jobs, repo
from tests.console.conftest import CHROMIUM_FLAGS, chromium_path


def _seed(url: str, deps: Any, n: int) -> None:
    req = urllib.request.Request(
        f"{url}/v1/jobs",
        data=json.dumps({"name": "job 0", "preset": "invoice"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        first = json.loads(resp.read())
    found = repo.get(deps.store, Job, first["id"])
    assert found is not None
    owner = found[0].owner
    fields = list(preset("invoice"))
    for i in range(1, n):
        jobs.create_job(deps, owner=owner, name=f"job {i}", fields=fields)


def _load(browser: Any, url: str) -> tuple[float, int, int]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sizes = {"assets": 0, "api": 0}

    def on_response(response: Any) -> None:
        from playwright.sync_api import Error as PlaywrightError

        try:
            body = response.body()
        except PlaywrightError:  # a streamed or aborted response has no body to count
            return
        sizes["api" if "/v1/" in response.url else "assets"] += len(body)

    page.on("response", on_response)
    try:
        page.goto(f"{url}/#/jobs")
        page.locator("body[data-ready='#/jobs']").wait_for(state="attached", timeout=30_000)
        ms = float(page.locator("body").get_attribute("data-ready-at") or "nan")
        rows = page.locator("table[aria-label=Jobs] tbody tr").count()
        assert rows == 50, rows
    finally:
        context.close()
    return ms, sizes["assets"], sizes["api"]


def main() -> int:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--loads", type=int, default=5)
    args = ap.parse_args()
    exe = chromium_path()
    if exe is None:
        print("Chromium is missing: bash scripts/install_chromium.sh", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="sluice-bench-console-") as tmp,
        serving(Path(tmp) / "data", dev_identity="bench") as served,
    ):
        _seed(served.url, served.deps, args.jobs)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
            try:
                loads = [_load(browser, served.url) for _ in range(args.loads)]
            finally:
                browser.close()
    times = [t for t, _, _ in loads]
    assets = max(a for _, a, _ in loads)
    api = max(b for _, _, b in loads)
    median, worst = statistics.median(times), max(times)
    print(f"jobs: {args.jobs}; loads: {args.loads} (each a fresh browser context, nothing cached)")
    print(f"first load to the jobs list drawn: median {median:.0f} ms, worst {worst:.0f} ms (target < 1000 ms)")
    print(f"console assets: {assets / 1024:.1f} KB (target < 300 KB); API answers on that load: {api / 1024:.1f} KB")
    ok = worst < 1000 and assets < 300 * 1024
    print(
        json.dumps(
            {
                "bench": "console",
                "jobs": args.jobs,
                "loads": args.loads,
                "first_load_ms_median": round(median, 1),
                "first_load_ms_max": round(worst, 1),
                "asset_bytes": assets,
                "api_bytes": api,
                "ok": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
