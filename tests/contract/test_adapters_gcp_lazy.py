"""The cloud adapters cost nothing at import and build each client once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.adapters.gcp import clients

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_adapters_imports_no_google_client_library() -> None:
    code = (
        "import sys\n"
        "import common.adapters.gcp.firestore_store, common.adapters.gcp.pubsub_bus\n"
        "import common.adapters.gcp.gcs_blobs, common.adapters.gcp.tasks_scheduler, common.adapters.gcp.clients\n"
        "# google.cloud itself is a namespace a .pth file may create at start-up; its packages must not load.\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('google.cloud.', 'google.api_core', 'grpc')))\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""


def test_a_client_is_built_once_per_shape_and_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:1")
    clients.reset()
    try:
        first = clients.firestore_client("p")
        assert clients.firestore_client("p") is first
        assert clients.firestore_client("q") is not first
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:2")
        assert clients.firestore_client("p") is not first
    finally:
        clients.reset()
