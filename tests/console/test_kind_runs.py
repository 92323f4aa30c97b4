"""The run pages of the ``enrich`` and ``audit`` kinds in headless Chromium: rows, and the merged audit report."""

from __future__ import annotations

import csv
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.audit.generate import A5, DISCLAIMER, Spec, build, logo_png
from tests.console.conftest import Console
from tests.fakes.openai_chat import ChatRequest, FakeOpenAI, Reply, RowModel, chat_answer

pytestmark = pytest.mark.slow

expect: Any = pytest.importorskip("playwright.sync_api").expect

ROWS = 45
SEVERITIES = ["error", "warning", "info"]


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible model on localhost, configured before the console's server reads its settings."""
    with FakeOpenAI() as fake:
        monkeypatch.setenv("SLUICE_TEXT_MODEL", "openai")
        monkeypatch.setenv("SLUICE_OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("SLUICE_OPENAI_MODEL", "fake")
        monkeypatch.setenv("SLUICE_OPENAI_RPM", "100000")
        yield fake


def _open(page: Any, console: Console, route: str) -> None:
    page.goto(f"{console.url}/{route}")
    page.locator(f"body[data-ready='{route}']").wait_for(state="attached")


def _upload(console: Console, job_id: str, files: dict[str, bytes]) -> None:
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
            + content
            + b"\r\n"
            for name, content in files.items()
        )
        + f"--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(f"{console.url}/v1/jobs/{job_id}/files", data=body, method="POST")
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    urllib.request.urlopen(req, timeout=30).read()


def _finished(console: Console, run_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] = console.call("GET", f"/v1/runs/{run_id}")
    return run if run["status"] in ("completed", "failed") and run["outputs"] is not None else None


def _category(number: int, text: str) -> dict[str, Any] | None:
    # Every seventh row gets no answer, so the run's failed-row figure is not zero.
    return None if number % 7 == 0 else {"category": "food" if "bread" in text else "tools"}


def test_an_enrich_run_shows_its_progress_in_rows(page: Any, console: Console, fake_model: FakeOpenAI) -> None:
    src = console.tmp / "products.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "price"])
        w.writerows([f"bread {i}" if i % 2 else f"hammer {i}", i] for i in range(ROWS))
    fake_model.default = RowModel(_category)
    settings = {
        "source": str(src),
        "prompt": "Product: {name} at {price}",
        "outputs": [{"name": "category", "type": "enum", "values": ["food", "tools"]}],
        "rows_per_call": 5,
        "rows_per_item": 20,
    }
    job = console.call("POST", "/v1/jobs", {"name": "Products", "kind": "enrich", "settings": settings})
    run = console.call("POST", f"/v1/jobs/{job['id']}/runs", {})
    done = _poll(console, "the enrich run to finish", lambda: _finished(console, run["id"]))
    out = done["outputs"]
    assert done["unit"] == "rows" and done["counters"]["total"] == 3  # three ranges of at most 20 rows

    _open(page, console, f"#/runs/{run['id']}")
    expect(page.locator("#pct")).to_have_text("100%")
    # The API's own row figures, not the three ranges.
    expected = (
        f"{out['rows_written']} written · {out['rows_failed']} failed · {out['rows_skipped']} skipped · {ROWS} total"
    )
    expect(page.locator("#counts")).to_have_text(expected)
    expect(page.locator("#unit")).to_have_text(f"{expected}rows")
    assert out["rows_failed"] > 0 and out["rows_written"] + out["rows_failed"] + out["rows_skipped"] == ROWS
    expect(page.locator("#counts")).not_to_contain_text("3 total")
    # Reviewing values is the extract kind's; an enrich run offers no review.
    expect(page.locator("#open-review")).to_have_count(0)
    # Each item is a range described in the kind's unit (rows), not in pages.
    items = page.get_by_role("table", name="Items")
    expect(items.get_by_role("columnheader").first).to_have_text("Item")
    expect(items.locator("tbody tr")).to_have_count(3)
    expect(items.locator("tbody tr td:nth-child(4)")).to_have_text(["20 of 20 rows", "20 of 20 rows", "5 of 5 rows"])
    expect(items.locator(".err")).to_have_count(0)
    expect(items).not_to_contain_text("page")


def test_a_paused_enrich_runs_items_show_the_rows_each_range_has_done(
    page: Any, console: Console, fake_model: FakeOpenAI
) -> None:
    src = console.tmp / "leads.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "price"])
        w.writerows([f"bread {i}" if i % 2 else f"hammer {i}", i] for i in range(ROWS))
    holder: dict[str, str] = {}

    def pause_at_row_10(number: int, text: str) -> dict[str, Any] | None:
        if number == 10 and "paused" not in holder:
            console.call("POST", f"/v1/runs/{holder['run']}/pause", {})  # while rows 7-11 are with the model
            holder["paused"] = "yes"
        return {"category": "food" if "bread" in text else "tools"}

    fake_model.default = RowModel(pause_at_row_10)
    settings = {
        "source": str(src),
        "prompt": "Product: {name} at {price}",
        "outputs": [{"name": "category", "type": "enum", "values": ["food", "tools"]}],
        "rows_per_call": 5,
        "rows_per_item": 50,  # one range, so it is the only one started when the pause comes
    }
    job = console.call("POST", "/v1/jobs", {"name": "Leads", "kind": "enrich", "settings": settings})
    run = console.call("POST", f"/v1/jobs/{job['id']}/runs", {})
    holder["run"] = run["id"]

    def stopped() -> Any:
        items = console.call("GET", f"/v1/runs/{run['id']}/tasks")["items"]
        return items if items and items[0]["status"] != "running" and items[0]["units_done"] else None

    _poll(console, "the range to stop at the pause", stopped)
    _open(page, console, f"#/runs/{run['id']}")
    expect(page.locator("#run-status")).to_contain_text("paused")
    # The range stopped after the batch that was with the model: rows 2-11 written, 10 of its 45 rows.
    cells = page.get_by_role("table", name="Items").locator("tbody tr td:nth-child(4) .measure")
    expect(cells).to_have_text([f"10 of {ROWS} rows"])


def _copy_editor(req: ChatRequest) -> Reply:
    """The grammar auditor's model: one error on every page that prints the sentence."""
    found = "Costs rose less" in req.user_text
    finding = {
        "quote": "Costs rose less",
        "suggestion": "Costs rose by less",
        "severity": "error",
        "explanation": "A word is missing.",
    }
    return chat_answer({"findings": [finding] if found else []})


def _poll(console: Console, what: str, check: Callable[[], Any]) -> Any:
    """Like ``console.wait_for``, at a pace under the API's per-user request limit."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_audit_run_shows_its_merged_report_at_390_px(
    browser: Any, console: Console, tmp_path: Path, fake_model: FakeOpenAI
) -> None:
    fake_model.default = _copy_editor
    logo = logo_png()
    settings = {
        "disclaimers": [{"text": DISCLAIMER, "pages": "all"}],
        "logo": {"region": "top-left"},
        "logo_file": "logo.png",
    }
    job = console.call("POST", "/v1/jobs", {"name": "Brochures", "kind": "audit", "settings": settings})
    _upload(
        console,
        job["id"],
        {
            "good.pdf": build(Spec(logo=logo)),
            "bad.pdf": build(Spec(logo=logo, logo_at="bottom-right", pagesize=A5, disclaimer_pages=[1])),
            "logo.png": logo,
        },
    )
    run = _poll(console, "the upload to be read", lambda: _start(console, job["id"]))
    report = _poll(console, "the audit to finish", lambda: _finished(console, run["id"]))["outputs"]

    context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
    page = context.new_page()
    try:
        _open(page, console, f"#/runs/{run['id']}")
        section = page.get_by_role("region", name="Audit report")
        expect(section).to_be_visible()
        expect(page.locator("#audit-verdict")).to_contain_text(f"Overall verdict {report['verdict']}")
        for doc in report["documents"]:
            article = page.get_by_role("article", name=doc["document"])
            expect(article.locator(".verdict")).to_have_text(f"verdict {doc['verdict']}")
            for name, auditor in doc["auditors"].items():
                part = article.get_by_role("region", name=name)
                expect(part.locator("h4 .badge")).to_have_text(auditor["status"])
                findings = part.get_by_role("list", name=f"{name} findings for {doc['document']}").get_by_role(
                    "listitem"
                )
                expect(findings).to_have_count(len(auditor["findings"]))
                # Listed by page, then the worst first.
                order = sorted(auditor["findings"], key=lambda f: (f["page"] or 0, SEVERITIES.index(f["severity"])))
                for i, f in enumerate(order):
                    where = f"Page {f['page']}" if f["page"] else "Whole document"
                    expect(findings.nth(i)).to_contain_text(
                        f"{f['severity']} {where}: {f['message']}", ignore_case=True
                    )
        # The bad document's findings name the page and severity; nothing is wider than the phone.
        bad = page.get_by_role("article", name="bad.pdf")
        expect(bad.get_by_role("region", name="disclaimer").locator("li.finding.error")).not_to_have_count(0)
        box = section.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)
    finally:
        context.close()


def _start(console: Console, job_id: str) -> dict[str, Any] | None:
    files = console.call("GET", f"/v1/jobs/{job_id}/files")["items"]
    if len(files) < 3 or any(f.get("status") not in (None, "ready", "uploaded") for f in files):
        return None
    run: dict[str, Any] = console.call("POST", f"/v1/jobs/{job_id}/runs", {})
    return run
