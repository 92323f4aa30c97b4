"""CSV and XLSX files behind the sheets port (the embedded backend's "Google Sheet").

The input is never written: results go to a new file beside it
(``products.csv`` -> ``products.enriched.csv``), a copy of the input with the
output columns filled as rows are written. Each write rewrites that file
whole, under an exclusive lock (``fcntl``, so workers in other processes
wait their turn) and by atomic rename, so a crash leaves the previous
version, never half a file. Reads come from the output file once it exists,
so a resumed job sees what was written before it stopped.

XLSX files are read with the standard library (the zip's XML: shared
strings, the first worksheet's cells) and written with xlsxwriter.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from xml.etree import ElementTree

from common.core.errors import PermanentError
from common.ports.sheets import RowWrite, SheetRow

_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_CELL_REF = re.compile(r"^([A-Z]+)(\d+)$")
Cell = str | int | float | bool


def output_path(source: Path) -> Path:
    """Where results of ``source`` go: beside it, ``NAME.enriched.EXT``."""
    return source.with_name(f"{source.stem}.enriched{source.suffix}")


class LocalTables:
    def open(self, source: str, *, owner: str, sheet: str | None = None, header_row: int = 1) -> LocalTable:
        path = Path(source).expanduser()
        if path.suffix.lower() not in (".csv", ".xlsx"):
            raise PermanentError(
                f"{source} is neither a CSV nor an XLSX file",
                code="table_unsupported",
                hint="Give a .csv or .xlsx file, or a Google Sheet's URL.",
            )
        if not path.is_file():
            raise PermanentError(f"{source} does not exist", code="table_not_found", hint="Check the path.")
        return LocalTable(path.resolve(), header_row)


class LocalTable:
    def __init__(self, source: Path, header_row: int) -> None:
        self.source = source
        self.out = output_path(source)
        self._header_row = header_row
        self._lock_path = self.out.with_name(self.out.name + ".lock")

    @property
    def title(self) -> str:
        return self.source.name

    @property
    def output(self) -> str:
        return str(self.out)

    # -- the whole grid, read and written under the lock -----------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _grid(self) -> list[list[Cell]]:
        path = self.out if self.out.exists() else self.source
        return _read_xlsx(path) if path.suffix.lower() == ".xlsx" else _read_csv(path)

    def _save(self, grid: list[list[Cell]]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.out.parent, prefix=f".{self.out.name}.", suffix=self.out.suffix)
        os.close(fd)
        try:
            if self.out.suffix.lower() == ".xlsx":
                _write_xlsx(Path(tmp), grid)
            else:
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerows(grid)
            os.replace(tmp, self.out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # -- the port --------------------------------------------------------------------------

    def headers(self) -> list[str]:
        grid = self._grid()
        return [_text(h).strip() for h in grid[self._header_row - 1]] if len(grid) >= self._header_row else []

    def last_row(self) -> int:
        grid = self._grid()
        while grid and not any(str(c).strip() for c in grid[-1]):
            grid.pop()
        return max(len(grid), self._header_row)

    def read_rows(self, first: int, last: int) -> list[SheetRow]:
        grid = self._grid()
        if len(grid) < self._header_row:
            return []
        headers = [_text(h).strip() for h in grid[self._header_row - 1]]
        rows = []
        for number in range(first, min(last, len(grid)) + 1):
            row = grid[number - 1]
            rows.append(
                SheetRow(number, {h: (_text(row[j]) if j < len(row) else "") for j, h in enumerate(headers) if h})
            )
        return rows

    def add_columns(self, names: Sequence[str]) -> list[str]:
        with self._locked():
            grid = [list(r) for r in self._grid()]
            while len(grid) < self._header_row:
                grid.append([])
            header = [str(h).strip() for h in grid[self._header_row - 1]]
            missing = [n for n in names if n not in header]
            if missing or not self.out.exists():
                grid[self._header_row - 1] = [*header, *missing]
                self._save(grid)
            return [*header, *missing]

    def write_rows(self, rows: Sequence[RowWrite]) -> int:
        if not rows:
            return 0
        with self._locked():
            grid = [list(r) for r in self._grid()]
            header = [str(h).strip() for h in grid[self._header_row - 1]]
            index = {h: i for i, h in enumerate(header)}
            for row in rows:
                while len(grid) < row.number:
                    grid.append([])
                cells = grid[row.number - 1]
                for name, value in row.values.items():
                    if name not in index:
                        raise PermanentError(f"no column {name!r} in {self.title}", code="table_no_such_column")
                    col = index[name]
                    cells.extend([""] * (col + 1 - len(cells)))
                    cells[col] = value
            self._save(grid)
        return 1


def _text(value: Cell) -> str:
    """A cell as the prompt and the port see it (booleans as a spreadsheet shows them)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


def _read_csv(path: Path) -> list[list[Cell]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [list(r) for r in csv.reader(f)]


def _read_xlsx(path: Path) -> list[list[Cell]]:
    """The first worksheet's cells: text, numbers and booleans as typed in the file."""
    try:
        with zipfile.ZipFile(path) as z:
            strings = _shared_strings(z)
            sheet = _first_sheet(z)
            root = ElementTree.fromstring(z.read(sheet))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as exc:
        raise PermanentError(f"{path.name} is not a readable XLSX file ({exc})", code="table_unreadable") from None
    grid: list[list[Cell]] = []
    for row in root.iterfind(".//m:sheetData/m:row", _NS):
        number = int(row.get("r", len(grid) + 1))
        while len(grid) < number:
            grid.append([])
        cells = grid[number - 1]
        for c in row.iterfind("m:c", _NS):
            m = _CELL_REF.match(c.get("r", ""))
            col = _column_index(m.group(1)) if m else len(cells)
            cells.extend([""] * (col + 1 - len(cells)))
            cells[col] = _cell_value(c, strings)
    return grid


def _shared_strings(z: zipfile.ZipFile) -> list[str]:
    if "xl/sharedStrings.xml" not in z.namelist():
        return []
    root = ElementTree.fromstring(z.read("xl/sharedStrings.xml"))
    return ["".join(t.text or "" for t in si.iterfind(".//m:t", _NS)) for si in root.iterfind("m:si", _NS)]


def _first_sheet(z: zipfile.ZipFile) -> str:
    workbook = ElementTree.fromstring(z.read("xl/workbook.xml"))
    first = workbook.find("m:sheets/m:sheet", _NS)
    rels = ElementTree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
    rid = first.get(_REL_NS) if first is not None else None
    for rel in rels:
        if rel.get("Id") == rid:
            target = rel.get("Target", "")
            return target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    return "xl/worksheets/sheet1.xml"


def _cell_value(c: ElementTree.Element, strings: list[str]) -> Cell:
    kind = c.get("t")
    if kind == "inlineStr":
        return "".join(t.text or "" for t in c.iterfind(".//m:t", _NS))
    v = c.find("m:v", _NS)
    text = v.text or "" if v is not None else ""
    if kind == "s" and text:
        return strings[int(text)]
    if kind == "b":
        return text == "1"
    if kind in (None, "n") and text:
        number = float(text)
        return int(number) if number.is_integer() else number
    return text


def _column_index(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + (ord(ch) - 64)
    return n - 1


def _write_xlsx(path: Path, grid: list[list[Cell]]) -> None:
    import xlsxwriter

    book = xlsxwriter.Workbook(str(path), {"strings_to_formulas": False, "strings_to_numbers": False})
    sheet = book.add_worksheet()
    for r, row in enumerate(grid):
        for c, value in enumerate(row):
            if value != "":
                sheet.write(r, c, value)
    book.close()
