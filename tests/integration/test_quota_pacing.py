"""An item the model's quota would turn away waits for its turn before it is claimed.

With hundreds of items queued on a quota of a few calls a second, each item
used to be claimed (a write), prepared (its document read, the request built),
turned away by the rate limiter and requeued (another write): at the start of
a large run every item went round once, and that churn, not the quota, set
the pace. The extract kind now asks the extractor's quota first.
"""

from __future__ import annotations

from pathlib import Path

from common.core.states import TaskStatus
from tests.support import ScriptedExtractor, make_pipeline


class PacedExtractor(ScriptedExtractor):
    """The scripted model behind a quota booked ahead: ``turn`` says when to come back."""

    def __init__(self, turns: list[float]) -> None:
        super().__init__()
        self.turns = turns
        self.asked = 0

    def turn(self) -> float | None:
        self.asked += 1
        return self.turns.pop(0) if self.turns else None


def test_an_item_waits_its_turn_unclaimed_and_runs_when_it_comes(tmp_path: Path) -> None:
    extractor = PacedExtractor([30.0, 10.0])
    p = make_pipeline(tmp_path, extractor=extractor)
    job = p.job()
    p.upload(job, "ok-a.pdf")
    run = p.start(job)

    p.drain()  # the run starts; its item is told to come back in 30 s
    [task] = p.tasks(run.id)
    version = p.deps.store.get("tasks", task.id).version  # type: ignore[union-attr]
    assert task.status is TaskStatus.PENDING and task.attempts == 0 and not task.history
    assert extractor.calls == {}, "no model call before its turn"

    p.clock.advance(29.0)
    assert p.drain() == 0, "not before its turn"
    p.clock.advance(1.0)
    p.drain()  # its turn: the quota is still booked; another 10 s
    assert p.deps.store.get("tasks", task.id).version == version, "waiting wrote nothing to the item"  # type: ignore[union-attr]
    assert extractor.calls == {}

    p.clock.advance(10.0)
    p.drain()
    [done] = p.tasks(run.id)
    assert done.status is TaskStatus.COMPLETED and done.attempts == 1
    assert extractor.calls == {"ok-a.pdf": 1}
    assert extractor.asked == 3
