"""The ``enrich`` kind on a Google Sheet, end to end: the API on the embedded backend, the real
google-api-python-client (Sheets v4 discovery document) against a local fake Sheets server, the owner's
OAuth grant refreshed by the real GoogleOAuth adapter against a fake token endpoint, and the
OpenAI-compatible adapter against a fake model server that counts every answer it delivers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.adapters.google import GoogleOAuth
from common.adapters.local.clock import ManualClock
from common.api.auth import owner_id
from common.bootstrap import bootstrap, local_app
from common.config import Settings
from common.core.enrich import ERROR_PREFIX
from common.ports.sheets import SPREADSHEETS
from common.service import integrations
from tests.api.conftest import ISSUER, Env, Keys, build_env
from tests.fakes.google_oauth import CLIENT_ID, CLIENT_SECRET, FakeTokenServer, plain_http, with_google
from tests.fakes.openai_chat import FakeOpenAI, RowModel
from tests.fakes.sheets import FakeSheets, RedirectHttp
from tests.support import Pipeline

SHEET_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
URL = f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit#gid=0"
TAB = "Products"
ROWS = 45
CATEGORY_COLUMN = 2  # name, price, then the output column the job adds


def _category(number: int, text: str) -> dict[str, Any]:
    return {"category": "food" if "bread" in text else "tools"}


def _expected() -> dict[int, str]:
    return {n: ("food" if (n - 2) % 2 else "tools") for n in range(2, ROWS + 2)}


@pytest.fixture
def servers() -> Iterator[tuple[FakeTokenServer, FakeSheets, FakeOpenAI]]:
    with FakeTokenServer() as oauth, FakeSheets(oauth) as sheets, FakeOpenAI() as model:
        rows = [["name", "price"]] + [[f"bread {i}" if i % 2 else f"hammer {i}", str(i)] for i in range(ROWS)]
        sheets.add(SHEET_ID, TAB, rows)
        yield oauth, sheets, model


def _env(tmp: Path, keys: Keys, oauth: FakeTokenServer, sheets: FakeSheets, model: FakeOpenAI) -> Env:
    clock = ManualClock()
    settings = Settings(
        backend="local",
        data_dir=tmp / "data",
        durable=False,
        progress_min_interval_s=1.0,
        text_model="openai",
        openai_base_url=model.base_url,
        openai_model="fake",
        openai_rpm=100_000,
        # The Sheets quotas are paced on the store's limiter; the frozen test clock would never refill it.
        sheets_reads_per_min=100_000,
        sheets_writes_per_min=100_000,
        sheets_reads_per_min_per_user=100_000,
        sheets_writes_per_min_per_user=100_000,
    )
    base = bootstrap(settings, clock=clock)
    auth = GoogleOAuth(
        base.store,
        clock,
        key=bytes(32),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_uri=oauth.token_uri,
        transport=lambda: RedirectHttp(sheets.base_url),
        token_transport=plain_http,
    )
    deps = with_google(base, auth)
    env = build_env(tmp, keys, pipeline=Pipeline.of(local_app(deps=deps), tmp=tmp))
    oauth.grant("1//alice", [SPREADSHEETS])
    integrations.connect(
        deps,
        owner=owner_id(ISSUER, "alice"),
        account="alice@example.com",
        refresh_token="1//alice",
        scopes=[SPREADSHEETS],
    )
    return env


def _settings(**kw: Any) -> dict[str, Any]:
    return {
        "source": URL,
        "sheet": TAB,
        "prompt": "Product: {name} at {price}",
        "outputs": [{"name": "category", "type": "enum", "values": ["food", "tools"]}],
        "rows_per_call": 5,
        "rows_per_item": 20,
        **kw,
    }


def test_a_google_sheet_is_enriched_through_the_kind_with_a_429_paused_and_resumed_each_row_written_once(
    tmp_path: Path, keys: Keys, servers: tuple[FakeTokenServer, FakeSheets, FakeOpenAI]
) -> None:
    oauth, sheets, fake = servers
    env = _env(tmp_path, keys, oauth, sheets, fake)
    paused = threading.Event()
    holder: dict[str, str] = {}

    def answer(number: int, text: str) -> dict[str, Any]:
        if number == 10 and not paused.is_set():
            # The owner pauses while the model is answering rows 7-11 of the first range.
            assert env.alice.post(f"/v1/runs/{holder['run']}/pause", {}).status_code in (200, 202)
            paused.set()
        return _category(number, text)

    model = RowModel(answer)
    fake.default = model
    # overwrite: filled rows are not skipped, so only the checkpoint keeps written rows from the model.
    job = env.alice.post("/v1/jobs", {"name": "leads", "kind": "enrich", "settings": _settings(overwrite=True)})
    assert job.status_code == 201, job.get_json()
    # Creating the job read the header row and added the output column to the sheet.
    assert job.get_json()["settings"]["row_count"] == ROWS
    assert sheets.column(SHEET_ID, TAB, "category") == dict.fromkeys(range(2, ROWS + 2), "")
    sheets.fail("values.batchUpdate", 1, retry_after="1")  # the first write-back is over the quota
    run = env.alice.post(f"/v1/jobs/{job.get_json()['id']}/runs", {}).get_json()
    holder["run"] = run["id"]
    env.drain(advance_clock=True)
    assert paused.is_set() and env.alice.get(f"/v1/runs/{run['id']}").get_json()["status"] == "paused"
    written = sheets.column(SHEET_ID, TAB, "category")
    assert [n for n, v in written.items() if v] == list(range(2, 12))  # the batch being answered, then stop

    assert env.alice.post(f"/v1/runs/{run['id']}/resume", {}).status_code in (200, 202)
    env.drain(advance_clock=True)
    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert got["status"] == "completed" and got["outputs"]["rows_written"] == ROWS
    assert sheets.column(SHEET_ID, TAB, "category") == _expected()
    writes = sheets.writes_per_row(TAB, CATEGORY_COLUMN)
    assert sorted(writes) == list(range(1, ROWS + 2)) and set(writes.values()) == {1}, "each row written once"
    assert model.twice() == [] and sorted(model.answered) == list(range(2, ROWS + 2))
    # The 429 was waited out for its Retry-After, then the same write went through.
    batch = sheets.requests("values.batchUpdate")
    assert batch[0].status == 429 and batch[1].status == 200
    assert batch[1].at - batch[0].at >= 1.0
    assert all(s.status == 200 for s in batch[1:])


def test_a_row_the_model_keeps_answering_wrong_gets_an_error_cell_in_the_sheet_and_the_others_are_done(
    tmp_path: Path, keys: Keys, servers: tuple[FakeTokenServer, FakeSheets, FakeOpenAI]
) -> None:
    oauth, sheets, fake = servers
    env = _env(tmp_path, keys, oauth, sheets, fake)
    model = RowModel(lambda n, t: {"category": "toys"} if n == 5 else _category(n, t))
    fake.default = model
    job = env.alice.post("/v1/jobs", {"name": "leads", "kind": "enrich", "settings": _settings()}).get_json()
    run = env.alice.post(f"/v1/jobs/{job['id']}/runs", {}).get_json()
    env.drain(advance_clock=True)
    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert got["status"] == "completed"
    assert (got["outputs"]["rows_written"], got["outputs"]["rows_failed"]) == (ROWS - 1, 1)
    written = sheets.column(SHEET_ID, TAB, "category")
    assert written[5].startswith(ERROR_PREFIX) and "toys" in written[5]
    assert {n: v for n, v in written.items() if n != 5} == {n: v for n, v in _expected().items() if n != 5}
    assert model.answered[5] == 3  # the first answer and two retries
