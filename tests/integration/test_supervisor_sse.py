"""``sluice serve --processes N``: an operation's event stream in the serving process follows
the progress the worker processes write, without waiting for its poll."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import requests

from common.core.schema import INVOICE_PRESET, DocumentExtraction, FieldSpec
from common.ports.extractor import DocumentRef
from common.service import jobs
from common.service.context import Deps
from tests.support import ScriptedExtractor

DOCS = 4


def _gate(deps: Deps) -> Path:
    return deps.settings.data_dir.parent / "gate-open"


def held_until_the_gate_opens(deps: Deps) -> None:
    """Every process's extractor (module-level: pickled to the workers): waits for the test's gate file."""
    gate = _gate(deps)

    class Held(ScriptedExtractor):
        def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
            deadline = time.monotonic() + 120
            while not gate.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never opened the gate")
                time.sleep(0.02)
            return super().extract(doc, fields, prompt=prompt)

    model = Held()
    deps.extractor_factory = lambda _name: model


def test_the_stream_follows_the_workers_progress_without_waiting_for_its_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.serve import serving

    # A poll of an hour: only the store's watch of the workers' commits can end the stream in time.
    monkeypatch.setenv("SLUICE_API_SSE_POLL_S", "3600")
    monkeypatch.setenv("SLUICE_API_SSE_MAX_S", "7200")
    # Nor any write of the serving process: its per-user request limiter writes its leases.
    monkeypatch.setenv("SLUICE_API_RATE_LIMIT_RPM", "0")
    with serving(tmp_path / "data", dev_identity="alice", processes=2, prepare=held_until_the_gate_opens) as served:
        assert served.supervisor is not None
        deps = served.deps
        job = jobs.create_job(deps, owner="alice", name="lag", fields=INVOICE_PRESET)
        for i in range(DOCS):
            path = tmp_path / f"ok-{i}.pdf"
            path.write_bytes(f"%PDF-1.4 {i}".encode())
            jobs.add_upload(deps, job, path)
        run = requests.post(f"{served.url}/v1/jobs/{job.id}/runs", json={}, timeout=30).json()
        events: list[tuple[str, dict[str, object]]] = []
        # A read timeout far below the poll: a stream waiting out its poll fails here.
        with requests.get(f"{served.url}/v1/operations/{run['operation_id']}/events", stream=True, timeout=60) as r:
            name = ""
            for raw in r.iter_lines():
                line = raw.decode()
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    events.append((name, json.loads(line[5:])))
                    if len(events) == 1:
                        _gate(deps).touch()  # the workers' writes start only after the stream's first event
                    if name == "done":
                        break
    assert events[0][0] == "progress" and events[0][1]["done"] == 0
    assert events[-1][0] == "done", "the stream ended before the operation did"
    assert events[-1][1]["done"] == DOCS
