"""The ``enrich`` kind through the API on the embedded backend: a local CSV, the
OpenAI-compatible adapter's real HTTP client and a fake model server that counts
how often each row is answered."""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from common.adapters.local.table_files import output_path
from common.core.models import Run, WorkItem
from common.core.states import TaskStatus
from common.service import repo
from tests.api.conftest import Env, Keys, build_env
from tests.fakes.openai_chat import FakeOpenAI, RowModel

ROWS = 45


def _csv(tmp: Path, rows: int = ROWS) -> Path:
    src = tmp / "products.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "price"])
        for i in range(rows):
            w.writerow([f"bread {i}" if i % 2 else f"hammer {i}", i])
    return src


def _category(number: int, text: str) -> dict[str, Any]:
    return {"category": "food" if "bread" in text else "tools"}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as f:
        yield f


def _env(tmp_path: Path, keys: Keys, fake: FakeOpenAI) -> Env:
    model = {"text_model": "openai", "openai_base_url": fake.base_url, "openai_model": "fake", "openai_rpm": 100_000}
    return build_env(tmp_path, keys, pipeline=model)


def _settings(src: Path, **kw: Any) -> dict[str, Any]:
    return {
        "source": str(src),
        "prompt": "Product: {name} at {price}",
        "outputs": [{"name": "category", "type": "enum", "values": ["food", "tools"]}],
        "rows_per_call": 5,
        "rows_per_item": 20,
        **kw,
    }


def _written(src: Path) -> dict[int, str]:
    with open(output_path(src), newline="") as f:
        rows = list(csv.DictReader(f))
    return {i + 2: r["category"] for i, r in enumerate(rows)}


def _start(env: Env, settings: dict[str, Any]) -> dict[str, Any]:
    r = env.alice.post("/v1/jobs", {"name": "enrich", "kind": "enrich", "settings": settings})
    assert r.status_code == 201, r.get_json()
    run = env.alice.post(f"/v1/jobs/{r.get_json()['id']}/runs", {}).get_json()
    assert isinstance(run, dict)
    return run


def test_an_enrich_job_fills_every_row_in_ranges_and_reports_row_counts(
    tmp_path: Path, keys: Keys, fake: FakeOpenAI
) -> None:
    src = _csv(tmp_path)
    model = RowModel(_category)
    fake.default = model
    env = _env(tmp_path, keys, fake)
    job = env.alice.post("/v1/jobs", {"name": "e", "kind": "enrich", "settings": _settings(src)}).get_json()
    # The rows to fill were read from the file when the job was created.
    assert job["settings"]["first_row"] == 2 and job["settings"]["row_count"] == ROWS
    run = env.alice.post(f"/v1/jobs/{job['id']}/runs", {}).get_json()
    env.drain(advance_clock=True)
    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    items = env.alice.get(f"/v1/runs/{run['id']}/tasks").get_json()["items"]
    assert got["unit"] == "rows"
    assert got["status"] == "completed", [(i["status"], i.get("error"), i.get("history")) for i in items]
    assert got["counters"]["total"] == 3  # rows 2-21, 22-41, 42-46
    assert got["outputs"]["rows_written"] == ROWS and got["outputs"]["rows_failed"] == 0
    assert got["outputs"]["model_calls"] == model.calls == 9  # 5 rows per call
    written = _written(src)
    assert written == {n: ("food" if (n - 2) % 2 else "tools") for n in range(2, ROWS + 2)}
    assert model.twice() == []


def test_without_a_text_model_an_enrich_job_is_refused_before_it_exists(tmp_path: Path, keys: Keys) -> None:
    env = build_env(tmp_path, keys)
    r = env.alice.post("/v1/jobs", {"name": "e", "kind": "enrich", "settings": _settings(_csv(tmp_path))})
    assert r.status_code == 422
    body = r.get_json()["error"]
    assert body["code"] == "not_configured" and "SLUICE_TEXT_MODEL" in body["details"]["hint"]
    assert env.alice.get("/v1/jobs").get_json()["items"] == []


def test_a_prompt_naming_no_column_is_refused_at_create(tmp_path: Path, keys: Keys, fake: FakeOpenAI) -> None:
    env = _env(tmp_path, keys, fake)
    settings = _settings(_csv(tmp_path), prompt="Colour of {colour}")
    r = env.alice.post("/v1/jobs", {"name": "e", "kind": "enrich", "settings": settings})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "unknown_placeholder"


def test_pause_mid_range_then_resume_writes_every_row_once_and_asks_no_row_twice(
    tmp_path: Path, keys: Keys, fake: FakeOpenAI
) -> None:
    src = _csv(tmp_path)
    env = _env(tmp_path, keys, fake)
    paused = threading.Event()
    holder: dict[str, str] = {}

    def answer(number: int, text: str) -> dict[str, Any]:
        if number == 10 and not paused.is_set():
            # The owner pauses while the model is answering rows 7-11 of the first range.
            r = env.alice.post(f"/v1/runs/{holder['run']}/pause", {})
            assert r.status_code in (200, 202), r.get_json()
            paused.set()
        return _category(number, text)

    model = RowModel(answer)
    fake.default = model
    # overwrite: filled rows are not skipped, so only the checkpoint keeps written rows from the model.
    run = _start(env, _settings(src, rows_per_item=50, overwrite=True))
    holder["run"] = run["id"]
    env.drain(advance_clock=True)
    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert paused.is_set() and got["status"] == "paused"
    calls_at_pause = model.calls
    # The range stopped after the batch that was being answered: rows up to 11 written, none after.
    assert calls_at_pause == 2 and set(_written(src)) == set(range(2, ROWS + 2))
    assert [n for n, v in _written(src).items() if v] == list(range(2, 12))

    assert env.alice.post(f"/v1/runs/{run['id']}/resume", {}).status_code in (200, 202)
    env.drain(advance_clock=True)
    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert got["status"] == "completed"
    assert model.twice() == []
    assert sorted(model.answered) == list(range(2, ROWS + 2))
    assert all(_written(src).values())


def _working_run(env: Env, owner: str, n: int, kind: str = "enrich") -> WorkItem:
    """An item of another run of ``owner``, held by a live attempt (a sheet being worked on)."""
    now = env.p.deps.clock.now()
    item = WorkItem(
        id=f"task_other_{kind}_{n}",
        owner=owner,
        run_id=f"run_other_{kind}_{n}",
        job_id=f"job_other_{n}",
        kind=kind,
        file_id=f"rows-{n}",
        file_name=f"rows {n}",
        status=TaskStatus.RUNNING,
        attempts=1,
        lease_until=now + timedelta(hours=1),
        created_at=now,
        updated_at=now,
    )
    env.p.deps.store.set(WorkItem.collection, item.id, item.model_dump(mode="json"))
    return item


def test_an_owners_fourth_sheet_waits_queued_until_one_of_three_finishes(
    tmp_path: Path, keys: Keys, fake: FakeOpenAI
) -> None:
    model = RowModel(_category)
    fake.default = model
    env = _env(tmp_path, keys, fake)
    run = _start(env, _settings(_csv(tmp_path, rows=10)))
    owner = repo.require(env.p.deps.store, Run, run["id"])[0].owner
    others = [_working_run(env, owner, n) for n in range(3)]
    _working_run(env, "someone-else", 9)  # another owner's sheet does not count
    _working_run(env, owner, 8, kind="wordcount")  # nor does another kind's run
    env.drain(max_deliveries=6)
    items = env.alice.get(f"/v1/runs/{run['id']}/tasks").get_json()["items"]
    assert [i["status"] for i in items] == ["queued"] and items[0]["attempts"] == 0
    assert model.calls == 0

    done = others[0].model_copy(update={"status": TaskStatus.COMPLETED, "lease_until": None})
    env.p.deps.store.set(WorkItem.collection, done.id, done.model_dump(mode="json"))
    env.drain(advance_clock=True)
    assert env.alice.get(f"/v1/runs/{run['id']}").get_json()["status"] == "completed"
    assert sorted(model.answered) == list(range(2, 12))


def test_cancel_mid_range_stops_asking_the_model_and_delete_removes_the_job(
    tmp_path: Path, keys: Keys, fake: FakeOpenAI
) -> None:
    src = _csv(tmp_path)
    env = _env(tmp_path, keys, fake)
    holder: dict[str, str] = {}

    def answer(number: int, text: str) -> dict[str, Any]:
        if number == 10 and "cancelled" not in holder:
            # The owner cancels while the model is answering rows 7-11 of the first range.
            assert env.alice.post(f"/v1/runs/{holder['run']}/cancel", {}).status_code == 200
            holder["cancelled"] = "yes"
        return _category(number, text)

    model = RowModel(answer)
    fake.default = model
    run = _start(env, _settings(src, rows_per_item=50))
    holder["run"] = run["id"]
    env.drain(advance_clock=True)
    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert got["status"] == "cancelled"
    # The range stopped after the batch the model was answering; nothing after it was asked or written.
    assert model.calls == 2 and sorted(model.answered) == list(range(2, 12))
    assert [n for n, v in _written(src).items() if v] == list(range(2, 12))
    assert env.alice.delete(f"/v1/jobs/{run['job_id']}").status_code == 204
    assert env.alice.get(f"/v1/jobs/{run['job_id']}").status_code == 404
    assert env.alice.get(f"/v1/runs/{run['id']}").status_code == 404
