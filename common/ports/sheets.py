"""The sheets port: a table with a header row, read in row ranges, its cells written back in batches.

Adapters: :class:`common.adapters.google.sheets.GoogleSheets` (a Google Sheet,
Sheets API v4 with the owner's OAuth grant) and
:class:`common.adapters.local.table_files.LocalTables` (a CSV or XLSX file on
the embedded backend; results go to a new file beside it, never into it).

Rows are numbered as the sheet numbers them (1-based, the header row
included), so a checkpoint "row 1,234 written" means the same thing in
Sheets, in a CSV file and to the user. Failures are Sluice errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

SPREADSHEETS = "https://www.googleapis.com/auth/spreadsheets"

CellValue = str | int | float | bool


@dataclass(frozen=True)
class SheetRow:
    """One row: its number in the sheet and its cells by header (missing cells are empty strings)."""

    number: int
    cells: Mapping[str, str]


@dataclass(frozen=True)
class RowWrite:
    """Values to put in one row, by header."""

    number: int
    values: Mapping[str, CellValue]


class Sheet(Protocol):
    """One opened table (a Google Sheet's tab, a CSV file, an XLSX file's first sheet)."""

    @property
    def title(self) -> str:
        """What the user calls it (the spreadsheet and tab, the file name)."""
        ...

    @property
    def output(self) -> str:
        """Where results are written (the sheet's URL, the new file's path)."""
        ...

    def headers(self) -> list[str]:
        """The header row's cells, in column order."""
        ...

    def last_row(self) -> int:
        """The number of the last row holding data (the header row's when there is none)."""
        ...

    def read_rows(self, first: int, last: int) -> list[SheetRow]:
        """Rows ``first..last`` (inclusive); rows past the data are left out."""
        ...

    def add_columns(self, names: Sequence[str]) -> list[str]:
        """Append the headers missing among ``names`` (idempotent); the header row after."""
        ...

    def write_rows(self, rows: Sequence[RowWrite]) -> int:
        """Write the values (cells outside them untouched), as few requests as the limits allow; how many."""
        ...


class Sheets(Protocol):
    def open(self, source: str, *, owner: str, sheet: str | None = None, header_row: int = 1) -> Sheet:
        """The table at ``source`` (a sheet URL or id, a file path) as ``owner`` may reach it."""
        ...
