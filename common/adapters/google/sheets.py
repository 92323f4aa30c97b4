"""Google Sheets (API v4) behind the sheets port (:mod:`common.ports.sheets`).

One discovery client (the shipped discovery document, built on first use)
serves every user: each request is executed with its user's authorized http
(scope ``spreadsheets``, from :class:`common.ports.google.GoogleAuth`), as
Drive's are. Reads use ``values.get``; writes use ``values.batchUpdate`` with
``RAW`` input -- a model's answer starting with ``=`` stays text, never a
formula -- split so that each request stays under the API's payload and
range limits.

Quota: Sheets allows a per-minute number of read and write requests per
project and per user, and answers 429 past it. Each request first takes a
token from the shared rate limiters the composition root gives
(``limiter("read")``, ``limiter("read:OWNER")``, the same for ``write``),
so instances together stay under the quotas rather than meeting them as
429s; a limiter that cannot give one soon raises THROTTLED, and the item is
retried later from its checkpoint. Every failure is classified by
:mod:`common.adapters.google.errors` (``SHEETS``); a 429 or 503 is waited out
here (the server's ``Retry-After``, else exponential backoff) a few times,
because the alternative -- failing the item -- would throw away model answers
already paid for; past that the RetryableError goes to Sluice's retry policy.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from common.adapters.gcp.gemini import RateLimiter
from common.adapters.google.errors import SHEETS, classify_exception
from common.core.errors import ErrorKind, PermanentError, RetryableError
from common.core.retry import Backoff
from common.ports.clock import Clock
from common.ports.google import GoogleAuth
from common.ports.sheets import SPREADSHEETS, CellValue, RowWrite, SheetRow

T = TypeVar("T")
_ID_IN_URL = re.compile(r"/spreadsheets/d/([A-Za-z0-9_-]+)")
_ID = re.compile(r"^[A-Za-z0-9_-]{20,}$")
# Google advises payloads of at most 2 MB; stay well under it, and under a range count that keeps requests fast.
MAX_REQUEST_BYTES = 1_000_000
MAX_RANGES_PER_REQUEST = 500
QUOTA_BACKOFF = Backoff(base_s=2.0, factor=2.0, cap_s=60.0)


def spreadsheet_id(source: str) -> str:
    """The spreadsheet id of a sheet URL or of a bare id."""
    m = _ID_IN_URL.search(source)
    if m is not None:
        return m.group(1)
    if _ID.match(source.strip()):
        return source.strip()
    raise PermanentError(
        f"{source!r} is neither a Google Sheets URL nor a spreadsheet id",
        code="sheets_bad_source",
        hint="Give the sheet's URL (https://docs.google.com/spreadsheets/d/...) or its id.",
    )


def column_letter(index: int) -> str:
    """A 0-based column index in A1 notation (0 -> A, 26 -> AA)."""
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


class _UnboundHttp:
    """The shared client's default http: every request must name its user's http instead."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Sheets requests must be executed with the user's authorized http")


class GoogleSheets:
    def __init__(
        self,
        auth: GoogleAuth,
        clock: Clock,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_quota_waits: int = 4,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        limiter: Callable[[str], RateLimiter] | None = None,
    ) -> None:
        self._auth = auth
        self._limiter = limiter
        self._clock = clock
        self._sleep = sleep
        self._max_quota_waits = max_quota_waits
        self._max_request_bytes = max_request_bytes
        self._service: Any = None
        self._lock = threading.Lock()

    def service(self) -> Any:
        if self._service is None:
            with self._lock:
                if self._service is None:
                    from googleapiclient.discovery import build

                    self._service = build(
                        "sheets", "v4", http=_UnboundHttp(), static_discovery=True, cache_discovery=False
                    )
        return self._service

    def open(self, source: str, *, owner: str, sheet: str | None = None, header_row: int = 1) -> GoogleSheet:
        http = self._auth.authorized_http(owner, [SPREADSHEETS])
        return GoogleSheet(self, http, spreadsheet_id(source), sheet, header_row, owner=owner)

    def _pace(self, op: str, owner: str) -> None:
        """A token for one ``op`` ("read" or "write") request from the project's and the user's quota."""
        if self._limiter is not None:
            self._limiter(op).acquire()
            self._limiter(f"{op}:{owner}").acquire()

    def call(self, what: str, request: Any, http: Any, *, op: str = "read", owner: str = "") -> Any:
        """Execute ``request`` with the user's http, paced by the quota, waiting out 429/503 a few times;
        Sluice errors only."""
        waits = 0
        while True:
            self._pace(op, owner)
            try:
                return request.execute(http=http)
            except Exception as exc:
                err = classify_exception(exc, api=SHEETS, what=what, now=self._clock.now())
                if err is None:
                    raise
                quota = isinstance(err, RetryableError) and err.kind in (ErrorKind.RATE_LIMITED, ErrorKind.UNAVAILABLE)
                if not quota or waits >= self._max_quota_waits:
                    raise err from exc
                waits += 1
                retry_after = err.retry_after if isinstance(err, RetryableError) else None
                self._sleep(retry_after if retry_after is not None else QUOTA_BACKOFF.delay(waits))

    @property
    def max_request_bytes(self) -> int:
        return self._max_request_bytes


class GoogleSheet:
    """One tab of one spreadsheet, as one user reaches it."""

    def __init__(
        self, api: GoogleSheets, http: Any, sheet_id: str, tab: str | None, header_row: int, *, owner: str = ""
    ) -> None:
        self._api = api
        self._owner = owner
        self._http = http
        self.spreadsheet_id = sheet_id
        self._wanted_tab = tab
        self._header_row = header_row
        self._tab: str | None = None
        self._tab_id: int | None = None
        self._columns: int = 0
        self._headers: list[str] | None = None

    @property
    def title(self) -> str:
        return f"{self.spreadsheet_id} / {self._resolve_tab()}"

    @property
    def output(self) -> str:
        return f"https://docs.google.com/spreadsheets/d/{self.spreadsheet_id}/edit"

    def _values(self) -> Any:
        return self._api.service().spreadsheets().values()

    def _resolve_tab(self) -> str:
        if self._tab is not None:
            return self._tab
        request = (
            self._api.service()
            .spreadsheets()
            .get(spreadsheetId=self.spreadsheet_id, fields="sheets.properties(sheetId,title,gridProperties)")
        )
        meta = self._api.call(f"spreadsheet {self.spreadsheet_id}", request, self._http, owner=self._owner)
        tabs = [s["properties"] for s in meta.get("sheets", [])]
        found = [t for t in tabs if self._wanted_tab in (None, t["title"])]
        if not found:
            raise PermanentError(
                f"spreadsheet {self.spreadsheet_id} has no sheet named {self._wanted_tab!r}",
                code="sheets_no_such_tab",
                hint=f"Its sheets are: {', '.join(t['title'] for t in tabs)}.",
            )
        self._tab, self._tab_id = found[0]["title"], int(found[0].get("sheetId", 0))
        self._columns = int(found[0].get("gridProperties", {}).get("columnCount", 26))
        return self._tab

    def _a1(self, first_col: int, first_row: int, last_col: int, last_row: int) -> str:
        tab = self._resolve_tab().replace("'", "''")
        return f"'{tab}'!{column_letter(first_col)}{first_row}:{column_letter(last_col)}{last_row}"

    def _get(self, a1: str) -> list[list[str]]:
        request = self._values().get(
            spreadsheetId=self.spreadsheet_id, range=a1, majorDimension="ROWS", valueRenderOption="FORMATTED_VALUE"
        )
        got = self._api.call(f"read of {a1}", request, self._http, owner=self._owner)
        return [[str(c) for c in row] for row in got.get("values", [])]

    def headers(self) -> list[str]:
        if self._headers is None:
            self._resolve_tab()
            width = max(self._columns, 1)
            rows = self._get(self._a1(0, self._header_row, width - 1, self._header_row))
            found = [h.strip() for h in rows[0]] if rows else []
            while found and not found[-1]:
                found.pop()  # formatting past the last header is not a column
            self._headers = found
        return list(self._headers)

    def last_row(self) -> int:
        headers = self.headers()
        if not headers:
            return self._header_row
        # values.get stops at the last row holding a value in the range, so its length is the data's extent.
        rows = self._get(self._a1(0, self._header_row + 1, len(headers) - 1, 10_000_000))
        return self._header_row + len(rows)

    def read_rows(self, first: int, last: int) -> list[SheetRow]:
        headers = self.headers()
        if not headers or last < first:
            return []
        rows = self._get(self._a1(0, first, len(headers) - 1, last))
        return [
            SheetRow(first + i, {h: (row[j] if j < len(row) else "") for j, h in enumerate(headers) if h})
            for i, row in enumerate(rows)
        ]

    def add_columns(self, names: Sequence[str]) -> list[str]:
        headers = self.headers()
        missing = [n for n in names if n not in headers]
        if not missing:
            return headers
        start = len(headers)
        needed = start + len(missing)
        if needed > self._columns:
            # values.update refuses ranges beyond the grid: widen it first.
            body = {
                "requests": [
                    {
                        "appendDimension": {
                            "sheetId": self._tab_id,
                            "dimension": "COLUMNS",
                            "length": needed - self._columns,
                        }
                    }
                ]
            }
            request = self._api.service().spreadsheets().batchUpdate(spreadsheetId=self.spreadsheet_id, body=body)
            self._api.call("adding columns", request, self._http, op="write", owner=self._owner)
            self._columns = needed
        a1 = self._a1(start, self._header_row, needed - 1, self._header_row)
        request = self._values().update(
            spreadsheetId=self.spreadsheet_id, range=a1, valueInputOption="RAW", body={"values": [missing]}
        )
        self._api.call(f"write of {a1}", request, self._http, op="write", owner=self._owner)
        self._headers = headers + missing
        return list(self._headers)

    def write_rows(self, rows: Sequence[RowWrite]) -> int:
        if not rows:
            return 0
        headers = self.headers()
        index = {h: i for i, h in enumerate(headers)}
        data = [rng for block in _blocks(rows, index) for rng in [self._range_body(*block)]]
        requests = 0
        for chunk in _chunks(data, self._api.max_request_bytes):
            body = {"valueInputOption": "RAW", "data": chunk}
            request = self._values().batchUpdate(spreadsheetId=self.spreadsheet_id, body=body)
            self._api.call(f"write of {len(chunk)} ranges", request, self._http, op="write", owner=self._owner)
            requests += 1
        return requests

    def _range_body(self, first_row: int, first_col: int, values: list[list[CellValue]]) -> dict[str, Any]:
        last_col = first_col + len(values[0]) - 1
        return {"range": self._a1(first_col, first_row, last_col, first_row + len(values) - 1), "values": values}


def _blocks(rows: Sequence[RowWrite], index: dict[str, int]) -> list[tuple[int, int, list[list[CellValue]]]]:
    """Rectangles (first row, first column, values) covering the writes: consecutive rows writing the
    same contiguous columns share one range, so a batch of rows is usually one range."""
    blocks: list[tuple[int, int, list[list[CellValue]]]] = []
    last: tuple[int, tuple[int, ...]] | None = None  # (row number, columns) of the block being grown
    for row in sorted(rows, key=lambda r: r.number):
        unknown = [k for k in row.values if k not in index]
        if unknown:
            raise PermanentError(f"no column {unknown[0]!r} in the sheet", code="sheets_no_such_column")
        for cols in _runs(sorted(index[k] for k in row.values)):
            by_col = {index[k]: v for k, v in row.values.items()}
            values = [by_col[c] for c in cols]
            if last is not None and last == (row.number - 1, cols) and blocks and blocks[-1][1] == cols[0]:
                blocks[-1][2].append(values)
            else:
                blocks.append((row.number, cols[0], [values]))
            last = (row.number, cols)
    return blocks


def _runs(columns: list[int]) -> list[tuple[int, ...]]:
    runs: list[list[int]] = []
    for c in columns:
        if runs and runs[-1][-1] == c - 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    return [tuple(r) for r in runs]


def _chunks(data: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """The ranges split into requests under ``max_bytes`` of JSON and MAX_RANGES_PER_REQUEST ranges each."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for rng in data:
        n = len(json.dumps(rng))
        if n > max_bytes:
            raise PermanentError(
                f"one range of results ({n} bytes) is over the request limit", code="sheets_write_too_large"
            )
        if chunks[-1] and (size + n > max_bytes or len(chunks[-1]) >= MAX_RANGES_PER_REQUEST):
            chunks.append([])
            size = 0
        chunks[-1].append(rng)
        size += n
    return chunks
