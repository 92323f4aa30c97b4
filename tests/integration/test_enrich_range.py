"""Enriching a range of rows: a local CSV, the OpenAI-compatible adapter's real HTTP client, a fake model server.

Each test names one behaviour the issue asks for: batches of rows per call,
a failing row that leaves the others done, malformed answers retried twice,
checkpoints that never let the model answer a written row again.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.adapters.local.clock import ManualClock
from common.adapters.local.table_files import LocalTable, LocalTables
from common.adapters.openai_chat import OpenAIChatModel
from common.core.enrich import ERROR_PREFIX, EnrichSettings, parse_output
from common.core.errors import PermanentError
from common.ports.sheets import RowWrite
from common.service.enrich import enrich_range, prepare
from tests.fakes.openai_chat import FakeOpenAI, RowModel, chat_answer, rows_in

ROWS = 23


def categorise(number: int, text: str) -> dict[str, Any]:
    return {"category": "food" if "bread" in text else "tools", "summary": f"summary of {text}"}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as f:
        yield f


@pytest.fixture
def table(tmp_path: Path) -> LocalTable:
    src = tmp_path / "products.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "price"])
        for i in range(ROWS):
            w.writerow([f"bread {i}" if i % 2 else f"hammer {i}", i])
    return LocalTables().open(str(src), owner="local")


def settings(**kw: Any) -> EnrichSettings:
    base: dict[str, Any] = {
        "source": "products.csv",
        "prompt": "Product: {name} at {price}",
        "outputs": (parse_output("category:enum[food,tools]"), parse_output("summary:text")),
        "rows_per_call": 5,
        "rows_per_write": 5,  # a write per batch, unless a test says otherwise
    }
    return EnrichSettings(**{**base, **kw})


def model(fake: FakeOpenAI) -> OpenAIChatModel:
    return OpenAIChatModel(base_url=fake.base_url, model="local", clock=ManualClock())


def output_rows(table: LocalTable) -> list[dict[str, str]]:
    with open(table.out, newline="") as f:
        return list(csv.DictReader(f))


class Checkpoints:
    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def __call__(self, cp: dict[str, Any]) -> None:
        self.saved.append(cp)

    @property
    def last(self) -> dict[str, Any] | None:
        return self.saved[-1] if self.saved else None


def run(table: LocalTable, fake: FakeOpenAI, s: EnrichSettings, cp: Checkpoints, **kw: Any) -> Any:
    first, last = prepare(table, s)
    return enrich_range(table, model(fake), s, first=first, last=last, checkpoint=cp.last, save_checkpoint=cp, **kw)


def test_rows_are_filled_several_per_model_call_and_written_beside_the_input(
    table: LocalTable, fake: FakeOpenAI
) -> None:
    rows = RowModel(categorise)
    fake.default = rows
    out = run(table, fake, settings(), Checkpoints())
    assert (out.written, out.failed, out.calls) == (ROWS, 0, 5)  # 23 rows, 5 per call
    got = output_rows(table)
    assert [r["category"] for r in got] == ["food" if i % 2 else "tools" for i in range(ROWS)]
    assert got[3]["summary"] == "summary of Product: bread 3 at 3"
    assert rows.twice() == []
    assert "{name}" not in fake.requests[0].user_text
    assert fake.requests[0].schema["properties"]["rows"]["items"]["properties"]["category"]["enum"] == ["food", "tools"]


def test_a_malformed_entry_is_asked_again_twice_then_its_row_gets_error_cells_and_the_others_are_done(
    table: LocalTable, fake: FakeOpenAI
) -> None:
    def answer(number: int, text: str) -> dict[str, Any]:
        if number == 4:
            return {"category": "toys", "summary": "x"}  # never an allowed value
        return categorise(number, text)

    rows = RowModel(answer)
    fake.default = rows
    out = run(table, fake, settings(), Checkpoints())
    assert (out.written, out.failed) == (ROWS - 1, 1)
    assert rows.answered[4] == 3  # the first answer and two retries
    assert [n for n, k in rows.answered.items() if k > 1] == [4]
    retries = [rows_in(r.user_text) for r in fake.requests if len(rows_in(r.user_text)) == 1]
    assert [[n for n, _ in r] for r in retries] == [[4], [4]]  # asked again alone, not with its batch
    got = output_rows(table)
    assert got[2]["category"].startswith(ERROR_PREFIX) and "toys" in got[2]["category"]
    assert all(not r["category"].startswith(ERROR_PREFIX) for i, r in enumerate(got) if i != 2)


def test_an_answer_that_is_not_json_fails_its_call_whose_rows_are_asked_again(
    table: LocalTable, fake: FakeOpenAI
) -> None:
    fake.push(chat_answer("Sorry, I cannot do tables."))
    rows = RowModel(categorise)
    fake.default = rows
    out = run(table, fake, settings(row_count=5), Checkpoints())
    assert (out.written, out.failed, out.calls) == (5, 0, 2)


def test_a_row_the_model_leaves_out_fails_alone(table: LocalTable, fake: FakeOpenAI) -> None:
    fake.default = RowModel(lambda n, t: None if n == 3 else categorise(n, t))
    out = run(table, fake, settings(row_count=5), Checkpoints())
    assert (out.written, out.failed) == (4, 1)
    assert "no answer for this row" in output_rows(table)[1]["summary"]


def test_a_stopped_range_resumes_at_the_next_unwritten_row_and_never_asks_for_a_written_one(
    table: LocalTable, fake: FakeOpenAI
) -> None:
    rows = RowModel(categorise)
    fake.default = rows
    cp = Checkpoints()
    batches = iter([False, False, True])
    first = run(table, fake, settings(), cp, should_stop=lambda: next(batches))
    assert first.stopped and cp.last is not None and cp.last["written_through"] == 11  # rows 2..11: two batches
    second = run(table, fake, settings(), cp)
    # The checkpoint carries the range's counts: the resumed attempt reports the whole range.
    assert second.written == ROWS and second.calls == 5
    assert rows.twice() == []
    assert sorted(rows.answered) == list(range(2, ROWS + 2))


def test_answers_saved_before_a_crash_in_the_write_are_written_without_asking_the_model_again(
    table: LocalTable, fake: FakeOpenAI
) -> None:
    rows = RowModel(categorise)
    fake.default = rows
    cp = Checkpoints()

    class Crash(Exception):
        pass

    real_write = table.write_rows
    calls = {"n": 0}

    def dying_write(writes: list[RowWrite]) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash  # the worker dies between saving the answers and writing them
        return real_write(writes)

    table.write_rows = dying_write  # type: ignore[method-assign,assignment]
    with pytest.raises(Crash):
        run(table, fake, settings(), cp)
    assert [p["row"] for p in cp.last["pending"]] == [7, 8, 9, 10, 11]  # type: ignore[index]
    asked_before = fake.requests.copy()
    table.write_rows = real_write  # type: ignore[method-assign]
    run(table, fake, settings(), cp)
    assert rows.twice() == []
    assert len(fake.requests) - len(asked_before) == 3  # rows 12..24 only
    assert all(r["category"] in ("food", "tools") for r in output_rows(table))


def test_filled_rows_are_skipped_unless_overwrite(table: LocalTable, fake: FakeOpenAI) -> None:
    table.add_columns(["category", "summary"])
    table.write_rows([RowWrite(2, {"category": "tools", "summary": "mine"})])
    rows = RowModel(categorise)
    fake.default = rows
    out = run(table, fake, settings(row_count=3), Checkpoints())
    assert (out.skipped, out.written) == (1, 2)
    assert output_rows(table)[0]["summary"] == "mine"
    out = run(table, fake, settings(row_count=3, overwrite=True), Checkpoints())
    assert (out.skipped, out.written) == (0, 3)
    assert output_rows(table)[0]["summary"] == "summary of Product: hammer 0 at 0"


def test_an_unknown_placeholder_is_an_error_before_any_model_call(table: LocalTable, fake: FakeOpenAI) -> None:
    with pytest.raises(PermanentError) as err:
        prepare(table, settings(prompt="Classify {name} by {vendor}"))
    assert err.value.code == "unknown_placeholder"
    assert fake.requests == []


class Recorder:
    """The order of a range's effects: model calls, checkpoint saves, sheet reads and writes."""

    def __init__(self, table: LocalTable, fake: FakeOpenAI, *, crash_on_call: int | None = None) -> None:
        self.events: list[str] = []
        self.model = model(fake)
        self.crash_on_call = crash_on_call
        self.cp = Checkpoints()
        real_generate, real_write, real_read = self.model.generate, table.write_rows, table.read_rows

        def generate(*a: Any, **kw: Any) -> Any:
            if self.events.count("call") + 1 == self.crash_on_call:
                raise Crash  # the worker dies while this call is with the model
            self.events.append("call")
            return real_generate(*a, **kw)

        def write(writes: list[RowWrite]) -> int:
            self.events.append("write")
            return real_write(writes)

        def read(first: int, last: int) -> Any:
            self.events.append("read")
            return real_read(first, last)

        self.model.generate = generate  # type: ignore[method-assign]
        table.write_rows = write  # type: ignore[method-assign,assignment]
        table.read_rows = read  # type: ignore[method-assign]

    def save(self, cp: dict[str, Any]) -> None:
        self.events.append("save")
        self.cp(cp)

    def run(self, table: LocalTable, s: EnrichSettings) -> Any:
        first, last = prepare(table, s)
        return enrich_range(
            table, self.model, s, first=first, last=last, checkpoint=self.cp.last, save_checkpoint=self.save
        )


class Crash(BaseException):
    pass


def toys_for_row_4(number: int, text: str) -> dict[str, Any]:
    return {"category": "toys", "summary": "x"} if number == 4 else categorise(number, text)


def test_every_model_answer_is_saved_before_anything_else_happens_retries_included(
    table: LocalTable, fake: FakeOpenAI
) -> None:
    fake.default = RowModel(toys_for_row_4)
    rec = Recorder(table, fake)
    rec.run(table, settings(row_count=10))
    after_calls = [rec.events[i + 1] for i, e in enumerate(rec.events) if e == "call"]
    assert rec.events.count("call") == 4  # rows 2-6 (row 4 asked twice more), rows 7-11
    assert after_calls == ["save"] * 4


def test_a_restart_during_a_retry_asks_only_the_rows_without_a_saved_answer(
    table: LocalTable, fake: FakeOpenAI
) -> None:
    rows = RowModel(toys_for_row_4)
    fake.default = rows
    rec = Recorder(table, fake, crash_on_call=2)  # dies while row 4 is asked again
    with pytest.raises(Crash):
        rec.run(table, settings(row_count=10))
    rec.crash_on_call = None
    out = rec.run(table, settings(row_count=10))
    assert {n: k for n, k in rows.answered.items() if k > 1} == {4: 4}  # 1 before the restart, 3 after
    assert (out.written, out.failed) == (9, 1)
    got = [r["category"] for r in output_rows(table)][:10]
    assert got[2].startswith(ERROR_PREFIX)
    assert [c for i, c in enumerate(got) if i != 2] == ["food" if i % 2 else "tools" for i in range(10) if i != 2]


def test_a_batch_costs_one_checkpoint_write(table: LocalTable, fake: FakeOpenAI) -> None:
    fake.default = RowModel(categorise)
    rec = Recorder(table, fake)
    rec.run(table, settings())
    assert rec.events.count("save") == rec.events.count("call") == 5


def test_a_range_is_read_once_and_written_back_rows_per_write_at_a_time(table: LocalTable, fake: FakeOpenAI) -> None:
    fake.default = RowModel(categorise)
    rec = Recorder(table, fake)
    out = rec.run(table, settings(rows_per_write=10))
    assert out.written == ROWS
    # 23 rows, 5 per call; written once 10 answers are saved, and at the end: rows 2-11, 12-21, 22-24.
    assert rec.events.count("read") == 1 and rec.events.count("call") == 5 and rec.events.count("write") == 3
    assert all(r["category"] in ("food", "tools") for r in output_rows(table))


def test_answers_saved_but_not_yet_written_are_written_after_a_restart_without_asking_again(
    table: LocalTable, fake: FakeOpenAI
) -> None:
    rows = RowModel(categorise)
    fake.default = rows
    rec = Recorder(table, fake, crash_on_call=4)  # three batches answered and saved, none written yet
    with pytest.raises(Crash):
        rec.run(table, settings(rows_per_write=20))
    assert rec.events.count("write") == 0 and rec.cp.last is not None
    assert [p["row"] for p in rec.cp.last["pending"]] == list(range(2, 17))
    rec.crash_on_call = None
    rec.run(table, settings(rows_per_write=20))
    assert rows.twice() == [] and rows.calls == 5
    assert [r["category"] for r in output_rows(table)] == ["food" if i % 2 else "tools" for i in range(ROWS)]


def test_saved_answers_are_written_back_early_when_they_would_make_the_checkpoint_too_large(
    table: LocalTable, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.service import enrich

    monkeypatch.setattr(enrich, "MAX_PENDING_BYTES", 600)  # about two batches of this table's answers
    fake.default = RowModel(categorise)
    rec = Recorder(table, fake)
    rec.run(table, settings(rows_per_write=1000))
    assert rec.events.count("write") > 1
    assert max(len(json.dumps(cp.get("pending", []))) for cp in rec.cp.saved) < 2 * 600
