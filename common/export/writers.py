"""CSV and XLSX writers that are fast, stream, and are safe to open in Excel.

Formula injection (OWASP ASVS 5.0 1.2.10): a text cell that starts with
``= + - @``, a tab or a carriage return is written as inert text -- in CSV
prefixed with ``'``, in XLSX written as a string cell (never a formula).
Numbers that are numbers stay numbers: a negative total is a number cell.

Both writers take rows as an iterable and hold only one row at a time; XLSX
uses xlsxwriter's constant-memory mode.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import date
from typing import IO

from common.core.schema import FieldType, Scalar
from common.core.table import TableHeader

_DANGEROUS = frozenset("=+-@\t\r")


def inert(text: str) -> str:
    """The CSV form of a text cell: formulas defused with a leading quote."""
    return "'" + text if text[:1] in _DANGEROUS else text


def _text_positions(header: TableHeader) -> tuple[int, ...]:
    if header.text_positions is None:
        return tuple(range(len(header.columns)))
    return header.text_positions


def write_csv(header: TableHeader, rows: Iterable[list[Scalar]], out: IO[str], *, bom: bool = False) -> int:
    """Write RFC 4180 CSV; return the number of rows. Failed documents are
    not rows: the export records their count."""
    if bom:
        out.write("\ufeff")
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([inert(c) for c in header.columns])
    writerow = w.writerow
    positions = _text_positions(header)
    dangerous = _DANGEROUS
    n = 0
    for row in rows:
        # Only columns that ever hold text are inspected; a row is copied only
        # when one of its cells needs defusing (rare in real data).
        fixed = row
        for i in positions:
            v = fixed[i]
            if v.__class__ is str and v[:1] in dangerous:
                if fixed is row:
                    fixed = list(row)
                fixed[i] = "'" + v
        writerow(fixed)
        n += 1
    return n


def _as_date(value: str) -> date | None:
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def write_xlsx(header: TableHeader, rows: Iterable[list[Scalar]], path: str) -> int:  # noqa: C901 (split pending)
    """Write an XLSX file: typed cells, a styled frozen header, a Failures sheet.

    Returns the number of rows. Strings are written with ``write_string`` and
    the workbook refuses to interpret text, so nothing becomes a formula.
    """
    import xlsxwriter  # imported here: only the export stage pays for it

    wb = xlsxwriter.Workbook(
        path,
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            # in_memory would override constant_memory: it writes to a file.
            "in_memory": False,
        },
    )
    head_fmt = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})
    date_fmt = wb.add_format({"num_format": "yyyy-mm-dd"})
    ws = wb.add_worksheet("Results")
    columns = header.columns
    widths = [max(8, min(50, len(c) + 2)) for c in columns]
    for i, name in enumerate(columns):
        ws.write_string(0, i, name, head_fmt)
    date_cols = frozenset(i for i, c in enumerate(columns) if header.types.get(c) is FieldType.DATE)
    write_string, write_number, write_boolean = ws.write_string, ws.write_number, ws.write_boolean
    write_datetime = ws.write_datetime
    r = 0
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row):
            cls = value.__class__
            if cls is str:
                assert isinstance(value, str)
                if c in date_cols and (d := _as_date(value)) is not None:
                    write_datetime(r, c, d, date_fmt)
                    continue
                write_string(r, c, value)
                if r <= 200 and len(value) + 2 > widths[c]:  # widths from a sample: no second pass
                    widths[c] = min(60, len(value) + 2)
            elif cls is float or cls is int:
                write_number(r, c, value)
            elif cls is bool:
                write_boolean(r, c, value)
    for c, width in enumerate(widths):
        ws.set_column(c, c, width)
    ws.freeze_panes(1, 0)
    if header.failures:
        fs = wb.add_worksheet("Failures")
        for i, name in enumerate(("source_file", "status", "error", "hint", "duplicate_of")):
            fs.write_string(0, i, name, head_fmt)
        for fr, f in enumerate(header.failures, start=1):
            for fc, v in enumerate((f.source_file, f.status, f.error, f.hint, f.duplicate_of)):
                if v:
                    fs.write_string(fr, fc, v)
        fs.set_column(0, 0, 40)
        fs.set_column(2, 3, 60)
    wb.close()
    return r
