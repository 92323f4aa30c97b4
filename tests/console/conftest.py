"""The console in a real headless Chromium against a real ``sluice serve`` (in this process).

The browser is Debian's Chromium, driven by playwright without a browser of its
own; ``scripts/install_chromium.sh`` installs it when missing (under CI a
missing browser fails the run). Each test's page is photographed into its
temporary directory when the test ends (``screenshot.png``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.core.schema import DocumentExtraction, FieldSpec
from common.ports.extractor import DocumentRef, Extractor
from common.serve import Serving, serving
from common.service.context import Deps

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "invoices"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "install_chromium.sh")], check=os.environ.get("CI") == "true")
        found = shutil.which("chromium")
    return found


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = chromium_path()
    if exe is None:
        pytest.skip("Chromium is not installed (scripts/install_chromium.sh)")
    # playwright starts the browser with a fresh, empty profile of its own (it refuses --user-data-dir).
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


class Gate:
    """Holds every extraction until opened (a run stays running while the test steers it)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()

    def wrap(self, inner: Extractor) -> Extractor:
        gate = self

        class Held:
            name = inner.name

            def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
                if not gate.open.wait(timeout=120):
                    raise TimeoutError("the test never opened the gate")
                return inner.extract(doc, fields, prompt=prompt)

        return Held()


@dataclass
class Console:
    served: Serving
    gate: Gate
    tmp: Path
    token: str = ""
    _pages: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def deps(self) -> Deps:
        return self.served.deps

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The public API, for a test's setup and its checks (the page itself is what is tested)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = check()
            if got:
                return got
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def fetch(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body: bytes = resp.read()
            return body


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    gate = Gate()

    def prepare(deps: Deps) -> None:
        real = deps.extractor_factory
        deps.extractor_factory = lambda name: gate.wrap(real(name))

    with serving(tmp_path / "data", dev_identity="alice", prepare=prepare) as served:
        yield Console(served, gate, tmp_path)
        gate.open.set()


@pytest.fixture
def page(browser: Any, console: Console, tmp_path: Path) -> Iterator[Any]:
    # playwright's own waits evaluate strings, which the page's CSP forbids: lift it for them
    # (test_the_jobs_page_reads_at_390_px keeps it and fails on any violation).
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, bypass_csp=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        try:
            pg.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)
        finally:
            context.close()


def sample_pdfs(n: int) -> list[Path]:
    return sorted(SAMPLES.glob("*.pdf"))[:n]
