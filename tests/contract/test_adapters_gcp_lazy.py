"""The cloud adapters cost nothing at import and build each client once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import pytest

from common.adapters.gcp import clients

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_adapters_imports_no_google_client_library() -> None:
    code = (
        "import sys\n"
        "import common.adapters.gcp.firestore_store, common.adapters.gcp.pubsub_bus\n"
        "import common.adapters.gcp.firestore_index\n"
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


class _RecordingTasks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], str]] = []

    def schedule_publish(
        self,
        topic: str,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        at: datetime,
        name: str | None = None,
        queue: str = "normal",
    ) -> str:
        self.calls.append((topic, dict(attributes), queue))
        return f"task-{len(self.calls)}"


def test_a_prioritised_message_waits_in_its_prioritys_cloud_tasks_queue() -> None:
    from common.adapters.gcp.pubsub_bus import PubSubPublisher

    tasks = _RecordingTasks()
    publisher = PubSubPublisher("p", delayed=tasks)
    publisher.publish("sluice-extract", b"{}", {"kind": "task.extract", "priority": "urgent"})
    assert [(t, q) for t, _, q in tasks.calls] == [("sluice-extract", "urgent")]


def test_a_delayed_message_without_priority_uses_the_normal_queue() -> None:
    from datetime import UTC

    from common.adapters.gcp.pubsub_bus import PubSubPublisher

    tasks = _RecordingTasks()
    PubSubPublisher("p", delayed=tasks).publish(
        "sluice-export", b"{}", {"kind": "export.run"}, deliver_after=datetime(2030, 1, 1, tzinfo=UTC)
    )
    assert [q for _, _, q in tasks.calls] == ["normal"]
