"""A fake Google Sheets API v4 for tests that drive the real google-api-python-client end to end.

A threaded :mod:`http.server` on 127.0.0.1 (free port) serving what the
Sheets adapter calls, with the paths and bodies of the v4 discovery document:

* ``GET  /v4/spreadsheets/{id}`` (spreadsheets.get: the tabs' properties);
* ``POST /v4/spreadsheets/{id}:batchUpdate`` (``appendDimension`` of columns);
* ``GET  /v4/spreadsheets/{id}/values/{range}`` (values.get: rows up to the
  last one holding a value, trailing empty cells left out, as Google does);
* ``PUT  /v4/spreadsheets/{id}/values/{range}`` (values.update);
* ``POST /v4/spreadsheets/{id}/values:batchUpdate`` (values.batchUpdate).

Every request must carry a bearer token the fake token endpoint
(:mod:`tests.fakes.google_oauth`) issued for the ``spreadsheets`` scope (401
otherwise). A write outside the grid is refused (400) like Google does, and
only ``RAW`` input is accepted. :meth:`FakeSheets.fail` makes the next
requests of one method answer 429 (quota) with an optional ``Retry-After``.
Each cell written is logged (:attr:`FakeSheets.writes`), so a test can check
that every row was written exactly once.

The client reaches it through :class:`RedirectHttp`, a transport that sends
requests for ``https://sheets.googleapis.com`` here instead (the HTTP
boundary): nothing in Sluice is mocked.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from common.ports.sheets import SPREADSHEETS
from tests.fakes.google_oauth import FakeTokenServer, plain_http

SHEETS_API = "https://sheets.googleapis.com"
_A1 = re.compile(r"^(?:'((?:[^']|'')+)'|([^!]+))!([A-Z]+)(\d+)(?::([A-Z]+)(\d+))?$")


def column_index(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


@dataclass
class Tab:
    title: str
    sheet_id: int
    columns: int
    cells: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column), both from 1 and 0

    def row(self, number: int, width: int) -> list[str]:
        return [self.cells.get((number, c), "") for c in range(width)]


@dataclass(frozen=True)
class Seen:
    method: str  # "get", "batchUpdate", "values.get", "values.update", "values.batchUpdate"
    path: str
    query: Mapping[str, str]
    status: int
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Write:
    tab: str
    row: int
    column: int
    value: Any


class FakeSheets:
    def __init__(self, oauth: FakeTokenServer) -> None:
        self.oauth = oauth
        self.spreadsheets: dict[str, dict[str, Tab]] = {}
        self.seen: list[Seen] = []
        self.writes: list[Write] = []
        self._failures: dict[str, collections.deque[tuple[int, str | None]]] = collections.defaultdict(
            collections.deque
        )
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- scripting ----------------------------------------------------------------------

    def add(self, spreadsheet_id: str, title: str, rows: list[list[str]], *, sheet_id: int = 0) -> Tab:
        """A tab whose first row is ``rows[0]``; its grid is as wide as the widest row."""
        tab = Tab(title, sheet_id, max(len(r) for r in rows))
        for r, row in enumerate(rows, start=1):
            for c, value in enumerate(row):
                if value != "":
                    tab.cells[(r, c)] = value
        self.spreadsheets.setdefault(spreadsheet_id, {})[title] = tab
        return tab

    def fail(self, method: str, times: int = 1, *, status: int = 429, retry_after: str | None = None) -> None:
        """The next ``times`` requests of ``method`` answer ``status`` (429: quota exceeded)."""
        with self._lock:
            self._failures[method].extend([(status, retry_after)] * times)

    def column(self, spreadsheet_id: str, title: str, name: str) -> dict[int, str]:
        """A column's values by row number, below its header."""
        tab = self.spreadsheets[spreadsheet_id][title]
        headers = tab.row(1, tab.columns)
        c = headers.index(name)
        last = max((r for r, _ in tab.cells), default=1)
        return {r: tab.cells.get((r, c), "") for r in range(2, last + 1)}

    def writes_per_row(self, title: str, column: int) -> collections.Counter[int]:
        with self._lock:
            return collections.Counter(w.row for w in self.writes if w.tab == title and w.column == column)

    def requests(self, method: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method]

    # -- server -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the fake first (use it as a context manager)"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, verb: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                status, answer, headers = fake._answer(verb, self.path, self.headers.get("authorization"), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=UTF-8")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- the API ------------------------------------------------------------------------

    def _answer(
        self, verb: str, raw_path: str, authorization: str | None, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        url = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        method, sheet_id, a1 = _route(verb, url.path)
        status, answer, headers = self._dispatch(method, sheet_id, a1, query, authorization, body)
        with self._lock:
            self.seen.append(Seen(method, url.path, query, status, time.monotonic()))
        return status, answer, headers

    def _dispatch(
        self,
        method: str,
        sheet_id: str,
        a1: str,
        query: dict[str, str],
        authorization: str | None,
        body: dict[str, Any],
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "unknown":
            return _error(404, "NOT_FOUND", "Unknown path.")
        if not self.oauth.authorizes(authorization, SPREADSHEETS):
            return _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        with self._lock:
            scripted = self._failures[method].popleft() if self._failures[method] else None
        if scripted is not None:
            status, retry_after = scripted
            headers = {"retry-after": retry_after} if retry_after is not None else {}
            message = "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per user'"
            return (*_error(status, "RESOURCE_EXHAUSTED", message)[:2], headers)
        tabs = self.spreadsheets.get(sheet_id)
        if tabs is None:
            return _error(404, "NOT_FOUND", "Requested entity was not found.")
        with self._lock:
            try:
                return self._apply(method, sheet_id, tabs, a1, query, body)
            except _Refused as refused:
                return refused.answer

    def _apply(
        self,
        method: str,
        sheet_id: str,
        tabs: dict[str, Tab],
        a1: str,
        query: dict[str, str],
        body: dict[str, Any],
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "get":
            return 200, {"spreadsheetId": sheet_id, "sheets": [_properties(t) for t in tabs.values()]}, {}
        if method == "batchUpdate":
            return self._append_dimension(tabs, body)
        if method == "values.get":
            return self._get(tabs, a1)
        if query.get("valueInputOption", body.get("valueInputOption")) != "RAW":
            return _error(400, "INVALID_ARGUMENT", "valueInputOption must be RAW in this fake")
        ranges = [{"range": a1, "values": body.get("values", [])}] if method == "values.update" else body["data"]
        return self._put(tabs, ranges)

    def _append_dimension(
        self, tabs: dict[str, Tab], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        for req in body.get("requests", []):
            append = req["appendDimension"]
            tab = next(t for t in tabs.values() if t.sheet_id == append["sheetId"])
            if append["dimension"] == "COLUMNS":
                tab.columns += int(append["length"])
        return 200, {"replies": [{} for _ in body.get("requests", [])]}, {}

    def _get(self, tabs: dict[str, Tab], a1: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        tab, c0, r0, c1, r1 = _parse(tabs, a1)
        last = max((r for r, c in tab.cells if r0 <= r <= r1 and c0 <= c <= c1), default=r0 - 1)
        rows = []
        for r in range(r0, last + 1):
            row = [tab.cells.get((r, c), "") for c in range(c0, c1 + 1)]
            while row and row[-1] == "":
                row.pop()
            rows.append(row)
        answer: dict[str, Any] = {"range": a1, "majorDimension": "ROWS"}
        if rows:
            answer["values"] = rows
        return 200, answer, {}

    def _put(self, tabs: dict[str, Tab], ranges: list[dict[str, Any]]) -> tuple[int, dict[str, Any], dict[str, str]]:
        planned: list[Write] = []
        for rng in ranges:
            tab, c0, r0, c1, _r1 = _parse(tabs, rng["range"])
            if c1 >= tab.columns:
                raise _Refused(400, "INVALID_ARGUMENT", f"Range ({rng['range']}) exceeds grid limits.")
            for i, row in enumerate(rng.get("values", [])):
                planned.extend(Write(tab.title, r0 + i, c0 + j, v) for j, v in enumerate(row))
        for w in planned:  # all or nothing, as one request is
            tab = tabs[w.tab]
            tab.cells[(w.row, w.column)] = _shown(w.value)
        self.writes.extend(planned)
        return 200, {"totalUpdatedCells": len(planned), "totalUpdatedRows": len({w.row for w in planned})}, {}


def _shown(value: Any) -> str:
    """How Sheets shows a RAW value when read back as FORMATTED_VALUE."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return "" if value is None else str(value)


def _properties(tab: Tab) -> dict[str, Any]:
    grid = {"rowCount": 1000, "columnCount": tab.columns}
    return {"properties": {"sheetId": tab.sheet_id, "title": tab.title, "gridProperties": grid}}


def _route(verb: str, path: str) -> tuple[str, str, str]:
    """(method, spreadsheet id, A1 range) of a v4 path."""
    rest = path.removeprefix("/v4/spreadsheets/")
    if rest == path:
        return "unknown", "", ""
    if "/values" in rest:
        sheet_id, _, tail = rest.partition("/values")
        if tail == ":batchUpdate" and verb == "POST":
            return "values.batchUpdate", sheet_id, ""
        a1 = unquote(tail.removeprefix("/"))
        return ("values.get" if verb == "GET" else "values.update"), sheet_id, a1
    if rest.endswith(":batchUpdate") and verb == "POST":
        return "batchUpdate", rest.removesuffix(":batchUpdate"), ""
    return ("get" if verb == "GET" else "unknown"), rest, ""


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.answer = _error(status, code, message)


def _parse(tabs: dict[str, Tab], a1: str) -> tuple[Tab, int, int, int, int]:
    m = _A1.match(a1)
    tab = None if m is None else tabs.get((m.group(1) or "").replace("''", "'") or m.group(2))
    if m is None or tab is None:
        raise _Refused(400, "INVALID_ARGUMENT", f"Unable to parse range: {a1}")
    c0, r0 = column_index(m.group(3)), int(m.group(4))
    c1, r1 = (column_index(m.group(5)), int(m.group(6))) if m.group(5) else (c0, r0)
    return tab, c0, r0, c1, r1


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    return status, {"error": {"code": status, "message": message, "status": code}}, {}


class RedirectHttp:
    """The API transport: requests for sheets.googleapis.com go to the fake instead (the HTTP boundary)."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url
        self._http = plain_http()

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        redirections: int = 5,
        connection_type: Any = None,
    ) -> tuple[Any, bytes]:
        assert uri.startswith(SHEETS_API), uri
        return self._http.request(  # type: ignore[no-any-return]
            self._base + uri.removeprefix(SHEETS_API), method, body=body, headers=headers, redirections=redirections
        )
