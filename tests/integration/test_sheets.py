"""The sheets port's adapters.

Google Sheets: the real google-api-python-client built from the Sheets v4
discovery document it ships, with HttpMockSequence answering (a wrong method
or parameter fails in the client). Local: CSV and XLSX files on disk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import openpyxl
import pytest
from googleapiclient.http import HttpMockSequence

from common.adapters.google.sheets import GoogleSheets, column_letter, spreadsheet_id
from common.adapters.local.clock import ManualClock
from common.adapters.local.table_files import LocalTables
from common.core.errors import ErrorKind, PermanentError, RetryableError
from common.ports.sheets import SPREADSHEETS, RowWrite

SHEET_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
META = {"sheets": [{"properties": {"sheetId": 7, "title": "Leads", "gridProperties": {"columnCount": 3}}}]}


class RecordingHttp(HttpMockSequence):  # type: ignore[misc]
    def __init__(self, iterable: list[tuple[dict[str, str], str]]) -> None:
        super().__init__(iterable)
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, uri: str, method: str = "GET", body: Any = None, headers: Any = None, **kw: Any) -> Any:
        self.requests.append((method, uri, body))
        return super().request(uri, method=method, body=body, headers=headers, **kw)


class StaticAuth:
    def __init__(self, http: Any) -> None:
        self.http = http
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def authorized_http(self, owner: str, scopes: Sequence[str], *, account: str | None = None) -> Any:
        self.asked.append((owner, tuple(scopes)))
        return self.http


def ok(body: Any) -> tuple[dict[str, str], str]:
    return {"status": "200"}, json.dumps(body)


def values(a1: str, rows: list[list[str]]) -> tuple[dict[str, str], str]:
    return ok({"range": a1, "majorDimension": "ROWS", "values": rows})


def rate_limited(retry_after: str) -> tuple[dict[str, str], str]:
    body = {
        "error": {
            "code": 429,
            "message": "Quota exceeded for quota metric 'Write requests'",
            "status": "RESOURCE_EXHAUSTED",
        }
    }
    return {"status": "429", "retry-after": retry_after}, json.dumps(body)


def open_sheet(http: RecordingHttp, sleeps: list[float] | None = None, **kw: Any) -> Any:
    api = GoogleSheets(
        StaticAuth(http), ManualClock(), sleep=(sleeps.append if sleeps is not None else lambda s: None), **kw
    )
    return api.open(f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit#gid=7", owner="u1", sheet="Leads")


def a1_of(uri: str) -> str:
    return unquote(urlparse(uri).path.split("/values/")[1])


def test_a_sheet_is_read_with_its_header_row_and_the_users_spreadsheets_grant() -> None:
    http = RecordingHttp(
        [ok(META), values("Leads!A1:C1", [["name", "city", ""]]), values("Leads!A2:C3", [["Ada", "London"], ["Bob"]])]
    )
    auth = StaticAuth(http)
    sheet = GoogleSheets(auth, ManualClock()).open(SHEET_ID, owner="u1", sheet="Leads")
    rows = sheet.read_rows(2, 3)
    assert auth.asked == [("u1", (SPREADSHEETS,))]
    assert [(r.number, dict(r.cells)) for r in rows] == [
        (2, {"name": "Ada", "city": "London"}),
        (3, {"name": "Bob", "city": ""}),
    ]
    assert [a1_of(u) for _, u, _ in http.requests[1:]] == ["'Leads'!A1:C1", "'Leads'!A2:B3"]
    assert parse_qs(urlparse(http.requests[2][1]).query)["valueRenderOption"] == ["FORMATTED_VALUE"]


def test_the_last_row_is_the_extent_of_the_data() -> None:
    http = RecordingHttp(
        [ok(META), values("Leads!A1:C1", [["name", "city"]]), values("Leads!A2:B4", [["a"], ["b"], ["c"]])]
    )
    assert open_sheet(http).last_row() == 4


def test_missing_output_columns_are_added_widening_the_grid_first() -> None:
    http = RecordingHttp(
        [ok(META), values("Leads!A1:C1", [["name", "city"]]), ok({"replies": [{}]}), ok({"updatedCells": 2})]
    )
    headers = open_sheet(http).add_columns(["city", "category", "summary"])
    assert headers == ["name", "city", "category", "summary"]
    method, uri, body = http.requests[2]
    assert uri.split("?")[0].endswith(f"/spreadsheets/{SHEET_ID}:batchUpdate")
    assert json.loads(body)["requests"][0]["appendDimension"] == {"sheetId": 7, "dimension": "COLUMNS", "length": 1}
    method, uri, body = http.requests[3]
    assert (method, a1_of(uri.split("?")[0])) == ("PUT", "'Leads'!C1:D1")
    assert json.loads(body) == {"values": [["category", "summary"]]}


def test_rows_are_written_back_in_one_batch_update_of_raw_values() -> None:
    http = RecordingHttp(
        [ok(META), values("Leads!A1:D1", [["name", "city", "category", "summary"]]), ok({"totalUpdatedCells": 6})]
    )
    sheet = open_sheet(http)
    requests = sheet.write_rows(
        [
            RowWrite(3, {"category": "b2b", "summary": '=HYPERLINK("x")'}),
            RowWrite(2, {"category": "b2c", "summary": "two"}),
            RowWrite(4, {"category": "b2b", "summary": "four"}),
        ]
    )
    assert requests == 1
    method, uri, body = http.requests[2]
    assert (method, uri.split("?")[0]) == (
        "POST",
        f"https://sheets.googleapis.com/v4/spreadsheets/{SHEET_ID}/values:batchUpdate",
    )
    sent = json.loads(body)
    assert sent["valueInputOption"] == "RAW"  # a model's "=..." stays text, never a formula
    assert sent["data"] == [
        {"range": "'Leads'!C2:D4", "values": [["b2c", "two"], ["b2b", '=HYPERLINK("x")'], ["b2b", "four"]]}
    ]


def test_a_large_write_is_split_under_the_request_size_limit() -> None:
    http = RecordingHttp([ok(META), values("Leads!A1:B1", [["name", "summary"]])] + [ok({})] * 10)
    sheet = open_sheet(http, max_request_bytes=2_000)
    # Every other row: each row is its own range, so the split has ranges to work with.
    rows = [RowWrite(n, {"summary": "x" * 300}) for n in range(2, 40, 2)]
    requests = sheet.write_rows(rows)
    bodies = [json.loads(b) for m, u, b in http.requests[2:]]
    assert requests == len(bodies) > 1
    assert all(len(json.dumps(b["data"])) <= 2_000 for b in bodies)
    written = [d["range"] for b in bodies for d in b["data"]]
    assert written == [f"'Leads'!B{n}:B{n}" for n in range(2, 40, 2)]


def test_a_429_is_waited_out_for_the_retry_after_then_the_write_goes_through() -> None:
    http = RecordingHttp(
        [ok(META), values("Leads!A1:B1", [["name", "summary"]]), rate_limited("7"), rate_limited("3"), ok({})]
    )
    sleeps: list[float] = []
    assert open_sheet(http, sleeps).write_rows([RowWrite(2, {"summary": "s"})]) == 1
    assert sleeps == [7.0, 3.0]
    assert [m for m, _, _ in http.requests[2:]] == ["POST", "POST", "POST"]


def test_a_429_that_persists_becomes_a_rate_limited_error_for_the_retry_policy() -> None:
    http = RecordingHttp([ok(META), values("Leads!A1:B1", [["name", "summary"]])] + [rate_limited("5")] * 3)
    sleeps: list[float] = []
    with pytest.raises(RetryableError) as err:
        open_sheet(http, sleeps, max_quota_waits=2).write_rows([RowWrite(2, {"summary": "s"})])
    assert err.value.kind is ErrorKind.RATE_LIMITED
    assert err.value.retry_after == 5.0
    assert sleeps == [5.0, 5.0]


def test_a_sheet_not_shared_is_a_permanent_error_with_a_hint() -> None:
    body = {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}}
    http = RecordingHttp([({"status": "404"}, json.dumps(body))])
    with pytest.raises(PermanentError) as err:
        open_sheet(http).headers()
    assert err.value.code == "sheets_not_found"
    assert "shared" in err.value.hint


def test_source_ids_and_column_letters() -> None:
    assert spreadsheet_id(f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit#gid=0") == SHEET_ID
    assert spreadsheet_id(SHEET_ID) == SHEET_ID
    with pytest.raises(PermanentError):
        spreadsheet_id("products.csv")
    assert [column_letter(i) for i in (0, 25, 26, 701, 702)] == ["A", "Z", "AA", "ZZ", "AAA"]


# -- local files ------------------------------------------------------------------------------


def test_a_csv_is_read_and_results_go_to_a_new_file_beside_it(tmp_path: Path) -> None:
    src = tmp_path / "products.csv"
    src.write_text("name,price\nhammer,9\nbread,2\n", encoding="utf-8")
    sheet = LocalTables().open(str(src), owner="local")
    assert sheet.headers() == ["name", "price"]
    assert sheet.last_row() == 3
    sheet.add_columns(["category"])
    sheet.write_rows([RowWrite(3, {"category": "food"})])
    assert src.read_text(encoding="utf-8") == "name,price\nhammer,9\nbread,2\n"  # never overwritten
    out = tmp_path / "products.enriched.csv"
    assert sheet.output == str(out)
    assert out.read_text(encoding="utf-8").splitlines() == ["name,price,category", "hammer,9", "bread,2,food"]
    # Reads now come from the output, so a resumed job sees what was written.
    assert dict(sheet.read_rows(3, 3)[0].cells) == {"name": "bread", "price": "2", "category": "food"}


def test_an_xlsx_is_read_and_written_beside_itself(tmp_path: Path) -> None:
    src = tmp_path / "leads.xlsx"
    book = openpyxl.Workbook()
    ws = book.active
    assert ws is not None
    for row in (["name", "employees"], ["Acme", 120], ["Globex", 8]):
        ws.append(row)
    book.save(src)
    sheet = LocalTables().open(str(src), owner="local")
    assert [dict(r.cells) for r in sheet.read_rows(2, 3)] == [
        {"name": "Acme", "employees": "120"},
        {"name": "Globex", "employees": "8"},
    ]
    sheet.add_columns(["size", "b2b"])
    sheet.write_rows([RowWrite(2, {"size": "large", "b2b": True}), RowWrite(3, {"size": "=1+1", "b2b": False})])
    got = openpyxl.load_workbook(tmp_path / "leads.enriched.xlsx").active
    assert got is not None
    assert [list(r) for r in got.iter_rows(values_only=True)] == [
        ["name", "employees", "size", "b2b"],
        ["Acme", 120, "large", True],
        ["Globex", 8, "=1+1", False],
    ]
    assert openpyxl.load_workbook(src).active.max_column == 2


def test_a_file_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PermanentError) as err:
        LocalTables().open(str(tmp_path / "notes.txt"), owner="local")
    assert err.value.code == "table_unsupported"


def test_each_request_first_takes_a_token_from_the_projects_and_the_users_quota_and_waits_for_one(
    tmp_path: Path,
) -> None:
    from common.adapters.local.sqlite_store import SqliteStore
    from common.core.ratelimit import BucketConfig
    from common.service.ratelimit import StoreRateLimiter

    clock = ManualClock()
    waits: list[tuple[str, float]] = []
    store = SqliteStore(tmp_path / "state.db")
    taken: list[str] = []

    class Limiter(StoreRateLimiter):
        def acquire(self, cost: float = 1.0) -> Any:
            taken.append(self.key)
            return super().acquire(cost)

    def limiter(key: str) -> StoreRateLimiter:
        # The user's writes: one token, then one per 30 s (2 a minute); everything else unpaced here.
        config = BucketConfig(1, 1 / 30) if key == "write:u1" else BucketConfig(100, 100)

        def sleep(s: float) -> None:
            waits.append((key, s))
            clock.advance(s)

        return Limiter(store, clock, key=key, config=config, max_wait_s=120, sleep=sleep)

    limiters: dict[str, StoreRateLimiter] = {}
    http = RecordingHttp([ok(META), values("Leads!A1:B1", [["name", "summary"]]), ok({}), ok({}), ok({})])
    api = GoogleSheets(StaticAuth(http), clock, limiter=lambda key: limiters.setdefault(key, limiter(key)))
    sheet = api.open(SHEET_ID, owner="u1", sheet="Leads")
    for n in (2, 3, 4):
        sheet.write_rows([RowWrite(n, {"summary": "s"})])
    assert taken == ["read", "read:u1", "read", "read:u1"] + ["write", "write:u1"] * 3
    assert [k for k, _ in waits] == ["write:u1", "write:u1"]  # the 2nd and 3rd writes waited for the user's quota
    assert sum(s for _, s in waits) == pytest.approx(60.0, abs=0.5)
    assert [m for m, _, _ in http.requests] == ["GET", "GET", "POST", "POST", "POST"]
