"""The enrich kind's pure parts: the fan-out into row ranges and the fan-in of their counts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from common import kinds
from common.core.enrich import EnrichSettings, parse_output
from common.core.errors import PermanentError
from common.core.models import Job, Run, TaskResult, WorkItem
from common.core.states import TaskStatus
from common.kinds import enrich

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _settings(**kw: Any) -> EnrichSettings:
    base: dict[str, Any] = {"source": "p.csv", "prompt": "{name}", "outputs": (parse_output("c:text"),)}
    return EnrichSettings(**{**base, **kw})


def _job() -> Job:
    return Job(id="job_1", owner="u", name="e", created_at=NOW, updated_at=NOW, kind="enrich")


def test_enrich_is_a_built_in_kind_counting_rows_on_its_own_function() -> None:
    kind = kinds.get("enrich")
    assert (kind.function, kind.unit, kind.start_message, kind.item_message) == (
        "enrich",
        "rows",
        "enrich.start",
        "enrich.item",
    )
    assert kind.uses_uploads is False and kind.prepare is not None and kind.runs_per_user is not None


def test_a_run_fans_out_into_consecutive_ranges_that_cover_every_row_once() -> None:
    specs = enrich.fan_out(_job(), [], _settings(first_row=5, row_count=450, rows_per_item=200))
    ranges = [(s.params["first"], s.params["last"]) for s in specs]
    assert ranges == [(5, 204), (205, 404), (405, 454)]
    assert [s.key for s in specs] == ["rows-5-204", "rows-205-404", "rows-405-454"]
    assert len({s.key for s in specs}) == len(specs)


def test_the_fan_out_needs_the_row_count_resolved_when_the_job_was_created() -> None:
    with pytest.raises(PermanentError) as caught:
        enrich.fan_out(_job(), [], _settings())
    assert caught.value.code == "enrich_rows_unknown"


def _item(n: int, status: TaskStatus, written: int, failed: int = 0) -> WorkItem:
    row = [1, 10, written, failed, 0, 2, written + failed, "/x/p.enriched.csv"]
    return WorkItem(
        id=f"t{n}",
        owner="u",
        run_id="run_1",
        job_id="job_1",
        kind="enrich",
        file_id=f"rows-{n}",
        file_name=f"rows {n}",
        status=status,
        result=TaskResult(columns=enrich.RESULT_COLUMNS, results=[row], method="enrich"),
        created_at=NOW,
        updated_at=NOW,
    )


def test_the_fan_in_sums_the_completed_ranges_counts() -> None:
    run = Run(id="run_1", owner="u", job_id="job_1", run_number=1, operation_id="op", created_at=NOW, updated_at=NOW)
    items = [_item(1, TaskStatus.COMPLETED, 9, 1), _item(2, TaskStatus.COMPLETED, 10), _item(3, TaskStatus.FAILED, 4)]
    out = enrich.fan_in(run, items)
    assert out["rows_written"] == 19 and out["rows_failed"] == 1 and out["model_calls"] == 4
    assert out["output"] == "/x/p.enriched.csv"


def _range(status: TaskStatus, checkpoint: dict[str, Any] | None = None) -> WorkItem:
    return WorkItem(
        id="t",
        owner="u",
        run_id="run_1",
        job_id="job_1",
        kind="enrich",
        file_id="rows-2-201",
        file_name="rows 2-201",
        status=status,
        params={"first": 2, "last": 201},
        checkpoint=checkpoint,
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_range_measures_its_progress_in_rows_from_its_checkpoint() -> None:
    units = kinds.get("enrich").item_units
    assert units is not None
    assert units(_range(TaskStatus.QUEUED)) == (0, 200)
    # Rows up to the last written one; answers saved but not yet written are not counted.
    assert units(_range(TaskStatus.RUNNING, {"written_through": 41, "pending": [{"row": 42, "values": {}}]})) == (
        40,
        200,
    )
    assert units(_range(TaskStatus.COMPLETED, {"written_through": 41})) == (200, 200)
