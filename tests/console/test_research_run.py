"""The run page of a ``research`` run in headless Chromium: the report, its sources, failures and downloads."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.console.conftest import Console
from tests.fakes.openai_chat import FakeOpenAI
from tests.fakes.research_model import ResearchModel
from tests.research import data

pytestmark = pytest.mark.slow

expect: Any = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible model on localhost, configured before the console's server reads its settings."""
    with FakeOpenAI() as fake:
        monkeypatch.setenv("SLUICE_TEXT_MODEL", "openai")
        monkeypatch.setenv("SLUICE_OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("SLUICE_OPENAI_MODEL", "fake")
        monkeypatch.setenv("SLUICE_OPENAI_RPM", "100000")
        yield fake


def _add_documents(console: Console, collection_id: str) -> None:
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{d.name}"\r\n\r\n'.encode()
            + d.data
            + b"\r\n"
            for d in data.documents()
        )
        + f"--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(f"{console.url}/v1/collections/{collection_id}/documents", data=body, method="POST")
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    urllib.request.urlopen(req, timeout=30).read()


def _poll(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)  # a pace under the API's per-user request limit
    raise AssertionError(f"timed out waiting for {what}")


def _finished(console: Console, run_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] = console.call("GET", f"/v1/runs/{run_id}")
    return run if run["status"] == "completed" and (run["outputs"] or {}).get("files") else None


def _ingested(console: Console, collection_id: str) -> bool:
    docs = console.call("GET", f"/v1/collections/{collection_id}/documents")["items"]
    return len(docs) == 2 and all(d["status"] == "done" for d in docs)


def test_a_research_run_shows_its_report_with_sources_failures_and_downloads(
    browser: Any, console: Console, fake_model: FakeOpenAI
) -> None:
    fake_model.default = ResearchModel(data.SUBQUESTIONS, fail=[data.EXPENSES])
    coll = console.call(
        "POST", "/v1/collections", {"name": "handbook", "chunking": {"max_tokens": 32, "overlap_tokens": 0}}
    )
    _add_documents(console, coll["id"])
    _poll("the collection to be ingested", lambda: _ingested(console, coll["id"]))
    settings = {"question": "What does the handbook say?", "collections": ["handbook"], "k": 3}
    job = console.call("POST", "/v1/jobs", {"name": "Handbook", "kind": "research", "settings": settings})
    run = console.call("POST", f"/v1/jobs/{job['id']}/runs", {})
    out = _poll("the research to finish", lambda: _finished(console, run["id"]))["outputs"]

    context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
    page = context.new_page()
    try:
        page.goto(f"{console.url}/#/runs/{run['id']}")
        page.locator(f"body[data-ready='#/runs/{run['id']}']").wait_for(state="attached")
        section = page.get_by_role("region", name="Research report")
        expect(section).to_be_visible()
        expect(page.locator("#research-title")).to_have_text(out["title"])
        vacation = page.get_by_role("article", name=data.VACATION)
        expect(vacation.get_by_role("list", name=f"Sources for {data.VACATION}")).to_have_text("handbook.pdf, page 2")
        expect(page.get_by_role("article", name=data.EXPENSES)).to_have_attribute("data-status", "failed")
        expect(page.locator("#research-failed li")).to_have_text([data.EXPENSES])
        link = page.locator("a.download[data-name='report.pdf']")
        expect(link).to_be_visible()
        assert console.fetch(str(link.get_attribute("href"))).startswith(b"%PDF")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()
