"""``stepped``: a test-only kind with both effectful run steps (``plan`` and ``finish``).

Its plan and finish stand for model calls: each call is counted, and a test
scripts errors for them (:data:`SCRIPT`). Its items square a number; its
fan-in sums the squares; its finish writes a summary line over the items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.core.errors import SluiceError
from common.core.models import Job, Run, SourceFile, TaskResult, WorkItem
from common.core.states import TaskStatus
from common.kinds import ItemCall, ItemDone, ItemSpec, Kind, StepCall, register
from tests.kinds import wordcount


class SteppedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parts: int = Field(default=3, ge=1, le=50)


@dataclass
class Script:
    """Calls counted, and what the next calls do (an error to return, or a hook to run first)."""

    plan_calls: int = 0
    finish_calls: int = 0
    plan_errors: list[SluiceError] = field(default_factory=list)
    finish_errors: list[SluiceError] = field(default_factory=list)
    on_plan: Callable[[StepCall], object] | None = None
    on_finish: Callable[[StepCall], object] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


SCRIPT = Script()


def plan(call: StepCall) -> list[ItemSpec] | SluiceError:
    with SCRIPT.lock:
        SCRIPT.plan_calls += 1
        error = SCRIPT.plan_errors.pop(0) if SCRIPT.plan_errors else None
    if SCRIPT.on_plan is not None:
        SCRIPT.on_plan(call)
    if error is not None:
        return error
    settings = call.settings
    assert isinstance(settings, SteppedSettings)
    return [ItemSpec(key=f"part-{i}", name=f"part {i}", params={"n": i}) for i in range(1, settings.parts + 1)]


def fan_out(job: Job, inputs: Sequence[SourceFile], settings: SteppedSettings) -> list[ItemSpec]:
    raise AssertionError("a kind with a plan never fans out purely")


def handle(call: ItemCall) -> ItemDone | SluiceError:
    n = int(call.item.params["n"])
    return ItemDone(result=TaskResult(columns=["n", "square"], results=[[n, n * n]], method="stepped"))


def fan_in(run: Run, items: Iterable[WorkItem]) -> dict[str, Any]:
    done = [i for i in items if i.status is TaskStatus.COMPLETED and i.result is not None]
    return {"sum": sum(int(i.result.results[0][1]) for i in done if i.result is not None), "parts": len(done)}


def finish(call: StepCall) -> dict[str, Any] | SluiceError:
    with SCRIPT.lock:
        SCRIPT.finish_calls += 1
        error = SCRIPT.finish_errors.pop(0) if SCRIPT.finish_errors else None
    if SCRIPT.on_finish is not None:
        SCRIPT.on_finish(call)
    if error is not None:
        return error
    names = sorted(i.file_name for i in call.items if i.status is TaskStatus.COMPLETED)
    return {"summary": f"{len(names)} parts: {', '.join(names)}", "finish_attempt": call.attempt}


KIND = register(
    Kind(
        name="stepped",
        settings_model=SteppedSettings,
        fan_out=fan_out,
        plan=plan,
        handle=handle,
        fan_in=fan_in,
        finish=finish,
        function="stepped",
        uses_uploads=False,
    )
)


def topology_file(directory: Path) -> Path:
    """topology.yaml with the stepped kind's entry (its topic also carries ``stepped.finish``)."""
    entry = wordcount.topology_entry("stepped")
    entry["topics"]["stepped"]["kinds"].append("stepped.finish")
    return wordcount.topology_file(directory, entry)
