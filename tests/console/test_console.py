"""The console in headless Chromium: what a person does with it, end to end, over the public API."""

from __future__ import annotations

import base64
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import Console, sample_pdfs
from tests.kinds import wordcount

pytestmark = pytest.mark.slow

expect: Any = pytest.importorskip("playwright.sync_api").expect


def _open(page: Any, console: Console, route: str = "#/jobs") -> None:
    page.goto(f"{console.url}/{route}")
    page.locator(f"body[data-ready='{route}']").wait_for(state="attached")


def _drop_files(page: Any, selector: str, files: list[Path]) -> None:
    """A real drop event carrying the files, as a person dragging them from a file manager makes."""
    payload = [{"name": f.name, "b64": base64.b64encode(f.read_bytes()).decode()} for f in files]
    transfer = page.evaluate_handle(
        """(files) => { const dt = new DataTransfer();
            for (const f of files) { const bin = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
              dt.items.add(new File([bin], f.name, { type: "application/pdf" })); }
            return dt; }""",
        payload,
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def _job_with_run(console: Console, files: list[Path], **settings: Any) -> tuple[str, dict[str, Any]]:
    """Set-up through the public API: a job, its files, a started run."""
    job_id = _job_with_files(console, files, **settings)
    run = console.call("POST", f"/v1/jobs/{job_id}/runs", {})
    return job_id, run


def _job_with_files(console: Console, files: list[Path], **settings: Any) -> str:
    """Set-up through the public API: a job and its files."""
    import urllib.request
    import uuid

    job = console.call("POST", "/v1/jobs", {"name": "setup", "preset": "invoice", **settings})
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{f.name}"\r\n'
            f"Content-Type: application/pdf\r\n\r\n".encode()
            + f.read_bytes()
            + b"\r\n"
            for f in files
        )
        + f"--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(f"{console.url}/v1/jobs/{job['id']}/files", data=body, method="POST")
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    urllib.request.urlopen(req, timeout=30).read()
    job_id: str = job["id"]
    return job_id


def _exports_done(console: Console, run_id: str) -> bool:
    items = console.call("GET", f"/v1/runs/{run_id}/exports")["items"]
    return bool(items) and all(e["status"] in ("completed", "failed") for e in items)


def _run_status(console: Console, run_id: str) -> str:
    status: str = console.call("GET", f"/v1/runs/{run_id}")["status"]
    return status


def _xlsx_strings(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return "".join(z.read(n).decode() for n in z.namelist() if n.startswith("xl/") and n.endswith(".xml"))


def test_create_a_job_drop_three_pdfs_start_and_watch_progress_reach_100(page: Any, console: Console) -> None:
    _open(page, console)
    page.get_by_label("Name").fill("March invoices")
    page.get_by_role("button", name="Create job").click()
    expect(page.get_by_role("heading", name="March invoices")).to_be_visible()

    files = sample_pdfs(3)
    _drop_files(page, "#drop", files)
    for f in files:
        expect(page.locator("#files")).to_contain_text(f.name)

    page.get_by_role("button", name="Start run").click()
    expect(page.get_by_role("heading", name="Run 1")).to_be_visible()
    expect(page.locator("#pct")).to_have_text("100%", timeout=60_000)
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#counts")).to_contain_text("3 done")
    expect(page.locator("#tasks tr")).to_have_count(3)
    expect(page.locator("a.download[data-format=xlsx]")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("group", name="Run controls")).not_to_contain_text("null")


def test_the_jobs_page_reads_at_390_px(browser: Any, console: Console, tmp_path: Path) -> None:
    console.call("POST", "/v1/jobs", {"name": "A job with a rather long name for a phone", "preset": "invoice"})
    context = browser.new_context(viewport={"width": 390, "height": 844})  # with the page's CSP in force
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    try:
        page.goto(f"{console.url}/#/jobs")
        page.locator("body[data-ready='#/jobs']").wait_for(state="attached")
        expect(page.get_by_role("link", name="A job with a rather long name for a phone")).to_be_visible()
        # Nothing wider than the screen: the form, the table and the navigation fit.
        for selector in ("main", "form", "table", "header"):
            box = page.locator(selector).first.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
        assert not [m for m in messages if "Content Security Policy" in m], messages
        page.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)
    finally:
        context.close()


def test_correcting_a_value_in_the_review_reaches_the_xlsx(page: Any, console: Console) -> None:
    _, run = _job_with_run(console, sample_pdfs(2))
    console.wait_for("the run to complete", lambda: _run_status(console, run["id"]) == "completed")

    _open(page, console, f"#/runs/{run['id']}/review")
    cell = page.locator("#grid button[data-field=invoice_number]").first
    old = cell.inner_text()
    cell.click()
    expect(page.locator("#page-view img")).to_be_visible()
    expect(page.locator("#highlight")).to_be_visible()
    page.get_by_label("Corrected invoice_number").fill("INV-CORRECTED-42")
    page.get_by_role("button", name="Save correction").click()
    expect(page.locator("#grid")).to_contain_text("INV-CORRECTED-42")

    _open(page, console, f"#/runs/{run['id']}")
    page.get_by_role("button", name="Export again").click()
    links = page.locator("a.download[data-format=xlsx]")
    expect(links).to_have_count(2, timeout=30_000)
    newest = [e for e in console.call("GET", f"/v1/runs/{run['id']}/exports")["items"] if e["url"]]
    texts = [_xlsx_strings(console.fetch(e["url"])) for e in newest]
    assert any("INV-CORRECTED-42" in t for t in texts), "the new export carries the correction"
    assert any("INV-CORRECTED-42" not in t and old in t for t in texts), "the export before it does not"
    review = console.call("GET", f"/v1/runs/{run['id']}/review")
    fields = [f for t in review["tasks"] for f in t["fields"] if f["review"] == "corrected"]
    assert [(f["read"], f["value"], f["reviewed_by"]) for f in fields] == [
        (old, "INV-CORRECTED-42", fields[0]["reviewed_by"])
    ]
    assert "alice" in fields[0]["reviewed_by"]


def test_a_run_under_the_review_threshold_exports_only_after_every_flagged_value_is_reviewed(
    page: Any, console: Console
) -> None:
    _, run = _job_with_run(console, sample_pdfs(1), review_below=1.0)
    console.wait_for("the run to wait for review", lambda: _run_status(console, run["id"]) == "needs_review")
    assert console.call("GET", f"/v1/runs/{run['id']}/exports")["items"] == []

    _open(page, console, f"#/runs/{run['id']}")
    expect(page.locator("#run-status")).to_contain_text("needs review")
    expect(page.locator("#exports")).to_contain_text("Exports wait for the review")
    page.get_by_role("link", name="Review values (required)").click()
    page.wait_for_function("document.body.dataset.ready.endsWith('/review')")
    flagged = page.locator("#grid td.cell.flagged button")
    n = flagged.count()
    assert n > 0
    for i in range(n):
        page.locator("#grid td.cell.flagged button").first.click()
        page.get_by_role("button", name="Confirm as read").click()
        expect(page.locator("#grid td.cell.flagged")).to_have_count(n - i - 1)
        if i < n - 1:
            assert _run_status(console, run["id"]) == "needs_review", "the gate holds while a value waits"
    expect(page.locator("#review-summary")).to_contain_text("0 value(s) wait")
    console.wait_for("the run to complete", lambda: _run_status(console, run["id"]) == "completed")
    _open(page, console, f"#/runs/{run['id']}")
    expect(page.locator("a.download[data-format=xlsx]")).to_be_visible(timeout=30_000)


def test_pause_and_resume_a_run(page: Any, console: Console) -> None:
    console.gate.open.clear()  # extractions wait: the run stays running while we steer it
    _, run = _job_with_run(console, sample_pdfs(3))
    console.wait_for("the run to start", lambda: _run_status(console, run["id"]) == "running")
    _open(page, console, f"#/runs/{run['id']}")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#run-status")).to_contain_text("paused")
    assert _run_status(console, run["id"]) == "paused"
    console.gate.open.set()
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#pct")).to_have_text("100%", timeout=60_000)
    console.wait_for("the run to complete", lambda: _run_status(console, run["id"]) == "completed")
    expect(page.locator("#tasks")).not_to_contain_text("null")
    # The export finishes after the run does: wait for it, or the page and the API's series below may differ by it.
    console.wait_for("the run's exports", lambda: _exports_done(console, run["id"]))

    # The finished run shows on the stats page as a picture (SVG drawn by the page).
    # Per stage, from /v1/stats' series: the run's 3 documents and its export, in the bucket holding now.
    _open(page, console, "#/stats")
    series = console.call("GET", "/v1/stats")["series"]
    for stage in series["stages"]:
        done = sum(b["completed"] for b in stage["buckets"])
        failed = sum(b["failed"] for b in stage["buckets"])
        chart = page.locator(f"#chart-{stage['stage']} svg")
        expect(chart).to_be_visible()
        label = chart.get_attribute("aria-label") or ""
        assert f"completed total {done}" in label and f"failed total {failed}" in label
        assert len(stage["buckets"]) == 24
    extract = page.locator("#chart-extract")
    expect(extract).to_contain_text("extract: documents per 1 h")
    assert "completed total 3" in (extract.locator("svg").get_attribute("aria-label") or "")
    assert sum(b["completed"] for b in series["stages"][-1]["buckets"]) >= 1, "the export counts too"
    # The last hour, in 5-minute buckets: the same run, in the picture of that window.
    page.get_by_role("link", name="Last hour (5 min)").click()
    page.locator("body[data-ready='#/stats/1h']").wait_for(state="attached")
    expect(page.locator("#chart-extract")).to_contain_text("documents per 5 min")
    assert "completed total 3" in (page.locator("#chart-extract svg").get_attribute("aria-label") or "")


def test_replay_a_dead_letter(page: Any, console: Console) -> None:
    from common.core.messages import ExportRun
    from common.service.context import TopologySender

    job = console.call("POST", "/v1/jobs", {"name": "dl", "preset": "invoice"})
    deps = console.deps
    sender = TopologySender(deps.topology, deps.settings, deps.publisher, deps.clock)
    # A request for an export that does not exist is dead-lettered on its first delivery.
    sender.send(ExportRun(export_id="exp-missing", run_id="run-missing", job_id=job["id"]))
    console.wait_for("the dead letter", lambda: console.call("GET", "/v1/dead-letters")["items"])

    _open(page, console, "#/dead-letters")
    row = page.locator("#dead-letters tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("export.run")
    row.get_by_role("button", name=re.compile("Replay dead letter")).click()
    expect(row.first).to_contain_text("replayed")
    assert console.call("GET", "/v1/dead-letters")["items"][0]["replayed_at"] is not None


def test_the_api_reference_lists_every_route(page: Any, console: Console) -> None:
    from common.api.routes import ROUTES

    _open(page, console, "#/api")
    shown = set(page.locator("code.route").all_inner_texts())
    assert {r.path for r in ROUTES} <= shown
    expect(page.get_by_role("heading", name="review")).to_be_visible()


def _money(v: float) -> str:
    return f"{v:.4f} USD" if 0 < v < 0.01 else f"{v:.2f} USD"


def test_the_estimate_shows_before_a_run_and_the_actual_cost_after(page: Any, console: Console) -> None:
    job_id = _job_with_files(console, sample_pdfs(2))
    estimate = console.call("POST", f"/v1/jobs/{job_id}/estimate", {})
    _open(page, console, f"#/jobs/{job_id}")
    card = page.locator("#estimate-card")
    expect(card).to_contain_text("Estimate before the run")
    expect(card.locator("[data-cost=items]")).to_have_text(str(estimate["items"]))
    expect(card.locator("[data-cost=pages]")).to_have_text(f"{estimate['pages']:,}")
    tokens = estimate["input_tokens"] + estimate["output_tokens"]
    expect(card.locator("[data-cost=tokens]")).to_have_text(f"{tokens:,}")
    expect(card.locator("[data-cost=cost]")).to_have_text(_money(estimate["cost"]))
    budget = estimate["budget"]
    left = "no budget set" if budget["limit"] is None else _money(budget["remaining"])
    expect(card.locator("[data-cost=remaining]")).to_have_text(left)

    page.get_by_role("button", name="Start run").click()
    page.wait_for_function("document.body.dataset.ready.startsWith('#/runs/')")
    run_id = page.evaluate("location.hash.split('/')[2]")
    console.wait_for("the run to complete", lambda: _run_status(console, run_id) == "completed")
    run = console.call("GET", f"/v1/runs/{run_id}")
    assert run["usage"] is not None and run["estimate"] is not None
    _open(page, console, f"#/runs/{run_id}")
    # Progress is counted in the kind's unit (extract: documents, from GET /v1/kinds).
    expect(page.locator("#unit")).to_have_text(re.compile(r"^2 done .* 2 total\s*documents$"))
    cost = page.locator("#cost")
    expect(cost.locator("[data-cost=input_tokens]")).to_have_text(f"{run['usage']['input_tokens']:,}")
    expect(cost.locator("[data-cost=output_tokens]")).to_have_text(f"{run['usage']['output_tokens']:,}")
    expect(cost.locator("[data-cost=cost]")).to_have_text(_money(run["usage"]["cost"]))
    expect(cost.locator("[data-cost=estimate]")).to_have_text(_money(run["estimate"]["cost"]))
    page.screenshot(path=str(console.tmp / "cost.png"), full_page=True)

    stats = console.call("GET", "/v1/stats")
    _open(page, console, "#/stats")
    usage = page.locator("#usage")
    expect(usage.locator("[data-cost=month_cost]")).to_have_text(_money(stats["month"]["cost"]))
    month = stats["month"]
    expect(usage.locator("[data-cost=remaining]")).to_have_text(
        "no limit" if month["remaining"] is None else _money(month["remaining"])
    )
    expect(usage.locator("[data-cost=total_cost]")).to_have_text(_money(stats["cost"]))


def test_the_create_job_form_builds_each_kinds_settings_from_its_schema(page: Any, console: Console) -> None:
    assert wordcount.KIND.name == "wordcount"  # imported: registered in this process, listed by GET /v1/kinds
    _open(page, console)
    expect(page.get_by_label("Fields preset")).to_be_visible()
    offered = page.get_by_label("Kind").locator("option").all_inner_texts()
    assert "wordcount" in offered and "ingest" not in offered  # a collection makes its own ingest job
    page.get_by_label("Kind").select_option("wordcount")
    expect(page.get_by_label("Fields preset")).to_be_hidden()
    field = page.locator("#setting-min_length")
    expect(field).to_have_attribute("min", "1")
    expect(field).to_have_attribute("max", "100")
    page.get_by_label("Name").fill("Word counts")
    field.fill("3")
    page.get_by_role("button", name="Create job").click()
    expect(page.get_by_role("heading", name="Word counts")).to_be_visible()
    (job,) = [j for j in console.call("GET", "/v1/jobs")["items"] if j["name"] == "Word counts"]
    assert (job["kind"], job["settings"]) == ("wordcount", {"min_length": 3})


def test_search_a_collection_from_the_search_box(page: Any, console: Console) -> None:
    import urllib.request
    import uuid

    coll = console.call("POST", "/v1/collections", {"name": "notes"})
    docs = {
        "alpha.md": "# Alpha\n\nThe quarterly report of Globex mentions invoice INV-2023-0042 dated 5 March 2023.",
        "beta.md": "# Beta\n\nMinutes of the meeting about the new office in Springfield.",
    }
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: text/markdown\r\n\r\n{text}\r\n".encode()
            for name, text in docs.items()
        )
        + f"--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(f"{console.url}/v1/collections/{coll['id']}/documents", data=body, method="POST")
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    import json

    run = json.loads(urllib.request.urlopen(req, timeout=30).read())["run"]
    console.wait_for("the ingest run", lambda: console.call("GET", f"/v1/runs/{run['id']}")["status"] == "completed")

    # The run is a run of the collection's ingest job: its page shows the stage counts from its progress.
    _open(page, console, f"#/runs/{run['id']}")
    expect(page.locator("#kind-counts")).to_contain_text("pages read 2 · chunks made 2")
    expect(page.locator("#tasks")).to_contain_text("alpha.md")

    _open(page, console, "#/search")
    expect(page.locator("#search-collection")).to_contain_text("notes (2 documents")
    page.get_by_label("Query").fill("invoice dated 2023-03-05")
    page.get_by_role("button", name="Search").click()
    hits = page.locator("#search-results li")
    expect(hits.first).to_contain_text("alpha.md")
    expect(hits.first).to_contain_text("page 1")
    expect(hits.first).to_contain_text("INV-2023-0042")
    page.get_by_label("Query").fill("zeppelin")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#no-results")).to_be_visible()
