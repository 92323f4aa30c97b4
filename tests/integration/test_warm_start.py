"""A worker does its extractor's first-use work (google-genai's import, the
client) as it starts, not inside the first document's handler, where every
other handler would wait on the import lock behind it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from common.adapters.gcp.gemini import GeminiExtractor
from common.adapters.local.clock import ManualClock
from common.adapters.local.fs_blobs import FsBlobStore
from common.ports.extractor import Warmable
from tests.support import ScriptedExtractor, make_pipeline


class WarmableExtractor(ScriptedExtractor):
    def __init__(self) -> None:
        super().__init__()
        self.warmed = threading.Event()

    def warm(self) -> None:
        self.warmed.set()


def test_the_gemini_extractor_builds_its_client_once_when_warmed(tmp_path: Path) -> None:
    built: list[object] = []

    def client() -> Any:
        built.append(object())
        return built[-1]

    clock = ManualClock()
    ex = GeminiExtractor(
        project="p",
        location="europe-west1",
        model="gemini-2.5-flash",
        blobs=FsBlobStore(tmp_path / "blobs", clock=clock, durable=False),
        clock=clock,
        client_factory=client,
    )
    assert isinstance(ex, Warmable)

    ex.warm()
    ex.warm()

    assert len(built) == 1, "warming builds the client the calls then use"


def test_a_started_runtime_warms_the_configured_extractor_before_any_message(tmp_path: Path) -> None:
    ex = WarmableExtractor()
    p = make_pipeline(tmp_path, extractor=ex)
    p.runtime.start(recover_leases=False)
    try:
        assert ex.warmed.wait(timeout=30), "the extractor was warmed with no message sent"
    finally:
        p.runtime.stop()


def test_twenty_threads_asking_for_an_extractor_at_once_build_one(tmp_path: Path) -> None:
    built: list[ScriptedExtractor] = []
    lock = threading.Lock()

    def factory(_name: str) -> ScriptedExtractor:
        time.sleep(0.01)  # widen the window between the check and the build
        with lock:
            built.append(ScriptedExtractor())
            return built[-1]

    p = make_pipeline(tmp_path)
    p.deps.extractor_factory = factory
    barrier = threading.Barrier(20)
    got: list[object] = []

    def ask() -> None:
        barrier.wait()
        extractor = p.deps.extractor("gemini")
        with lock:
            got.append(extractor)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert len(built) == 1
    assert len(got) == 20 and all(e is built[0] for e in got)
