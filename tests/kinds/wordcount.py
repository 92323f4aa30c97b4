"""``wordcount``: a job kind that lives only in the tests (docs/JOB_KINDS.md).

It fans out over a job's uploaded text files (one item each), counts each
file's words, and its fan-in writes the run's total. Everything else (run
numbering, items, retries, queued, pause/resume/cancel, timeouts, stalled
items, progress, exports of the per-file rows) is the platform's.

Its one topology entry is :data:`TOPOLOGY` (a function plus its topic); the
tests add it to topology.yaml's content (:func:`topology_file`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from common.core.errors import PermanentError, SluiceError
from common.core.models import Job, Run, SourceFile, TaskResult, WorkItem
from common.core.states import TaskStatus
from common.kinds import Estimate, ItemCall, ItemDone, ItemSpec, Kind, register
from common.service import repo
from common.topology import DEFAULT_PATH


class WordcountSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Words shorter than this are not counted.
    min_length: int = Field(default=1, ge=1, le=100)


def fan_out(job: Job, inputs: Sequence[SourceFile], settings: WordcountSettings) -> list[ItemSpec]:
    """One item per text file (other files are not this kind's inputs)."""
    texts = [f for f in inputs if (f.mime_type or "").startswith("text/") or f.name.endswith(".txt")]
    return [ItemSpec(key=f.id, name=f.name) for f in sorted(texts, key=lambda f: f.name)]


def count(text: str, min_length: int) -> int:
    return sum(1 for word in text.split() if len(word) >= min_length)


def handle(call: ItemCall) -> ItemDone | SluiceError:
    settings = call.settings
    assert isinstance(settings, WordcountSettings)
    found = repo.get(call.ctx.store, SourceFile, call.item.file_id)
    if found is None or found[0].blob_uri is None:
        return PermanentError(f"file {call.item.file_name} is gone", code="file_missing")
    text = call.ctx.blobs.get_bytes(found[0].blob_uri).decode("utf-8", errors="replace")
    words = count(text, settings.min_length)
    return ItemDone(
        result=TaskResult(columns=["file", "words"], results=[[call.item.file_name, words]], method="wordcount")
    )


def fan_in(run: Run, items: Iterable[WorkItem]) -> dict[str, Any]:
    """The run's total words, over the items that completed."""
    total = counted = 0
    for item in items:
        if item.status is TaskStatus.COMPLETED and item.result is not None:
            total += int(item.result.results[0][1])
            counted += 1
    return {"total_words": total, "files": counted}


def estimate(job: Job, inputs: Sequence[SourceFile], settings: WordcountSettings) -> Estimate:
    return Estimate(items=len(fan_out(job, inputs, settings)))


KIND = register(
    Kind(
        name="wordcount",
        settings_model=WordcountSettings,
        fan_out=fan_out,
        handle=handle,
        fan_in=fan_in,
        function="wordcount",
        unit="files",
        estimate=estimate,
    )
)


def topology_entry(name: str, *, ack_deadline_s: int = 60) -> dict[str, Any]:
    """A kind's topology entry: its function, the topic carrying its messages, and a dead-letter topic."""
    return {
        "functions": {
            name: {
                "source": f"functions/{name}",
                "entry_point": "handle",
                "trigger": name,
                "max_instances": 5,
                "concurrency": 4,
                "timeout_s": 300,
                "memory": "256Mi",
            }
        },
        "topics": {
            name: {
                "kinds": [f"{name}.start", f"{name}.item"],
                "subscription": {
                    "function": name,
                    "ack_deadline_s": ack_deadline_s,
                    "max_delivery_attempts": 5,
                    "min_backoff_s": 1,
                    "max_backoff_s": 60,
                    "dead_letter_topic": f"{name}-dlq",
                },
            },
            f"{name}-dlq": {"kinds": [], "dead_letter": True},
        },
    }


# wordcount's one topology entry.
TOPOLOGY = topology_entry("wordcount")


def topology_file(directory: Path, *entries: dict[str, Any]) -> Path:
    """topology.yaml with the kinds' entries added (default: wordcount's), written under ``directory``."""
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    for entry in entries or (TOPOLOGY,):
        for section, items in entry.items():
            doc.setdefault(section, {}).update(items)
    path = directory / "topology.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
