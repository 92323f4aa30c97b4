"""CSV and XLSX writers that are safe to open in Excel.

Formula injection (OWASP ASVS 5.0 1.2.10): a text cell that starts with
``= + - @``, a tab or a carriage return is written as inert text -- in CSV
prefixed with ``'``, in XLSX written as a string cell (never a formula).
Numbers that are numbers stay numbers: a negative total is a number cell.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import IO

from common.core.schema import FieldType, Scalar
from common.core.table import Table

_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def inert(text: str) -> str:
    """The CSV form of a text cell: formulas defused with a leading quote."""
    return "'" + text if text.startswith(_DANGEROUS) else text


def _csv_value(value: Scalar) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    return inert(value)


def write_csv(table: Table, out: IO[str], *, bom: bool = False) -> None:
    """Write ``table`` as RFC 4180 CSV; failed documents are counted, not rowed."""
    if bom:
        out.write("\ufeff")
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([inert(c) for c in table.columns])
    for row in table.rows:
        w.writerow([_csv_value(v) for v in row])


def csv_bytes(table: Table, *, bom: bool = True) -> bytes:
    buf = io.StringIO()
    write_csv(table, buf, bom=bom)
    return buf.getvalue().encode("utf-8")


def _as_date(value: Scalar) -> date | None:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def write_xlsx(table: Table, out: str, *, constant_memory: bool = True) -> None:
    """Write ``table`` as XLSX: typed cells, a styled frozen header, a Failures sheet."""
    import xlsxwriter  # imported here: only the export stage pays for it

    wb = xlsxwriter.Workbook(
        out,
        {
            "constant_memory": constant_memory,
            # Text is never interpreted: no formulas, no URLs, no numbers from strings.
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            # in_memory would override constant_memory: write to a file instead.
            "in_memory": False,
        },
    )
    header = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})
    date_fmt = wb.add_format({"num_format": "yyyy-mm-dd"})
    ws = wb.add_worksheet("Results")
    widths = [max(8, min(50, len(c) + 2)) for c in table.columns]
    for i, name in enumerate(table.columns):
        ws.write_string(0, i, name, header)
    kinds = [table.types.get(c, FieldType.STRING) for c in table.columns]
    for r, row in enumerate(table.rows, start=1):
        for c, value in enumerate(row):
            if value is None:
                continue
            if isinstance(value, bool):
                ws.write_boolean(r, c, value)
            elif isinstance(value, int | float):
                ws.write_number(r, c, value)
            elif kinds[c] is FieldType.DATE and (d := _as_date(value)) is not None:
                ws.write_datetime(r, c, d, date_fmt)
            else:
                ws.write_string(r, c, value)
                if r <= 200:  # widths from a sample: constant memory means no second pass
                    widths[c] = max(widths[c], min(60, len(value) + 2))
    for c, width in enumerate(widths):
        ws.set_column(c, c, width)
    ws.freeze_panes(1, 0)
    if table.failures:
        fs = wb.add_worksheet("Failures")
        for i, name in enumerate(("source_file", "status", "error", "hint")):
            fs.write_string(0, i, name, header)
        for r, f in enumerate(table.failures, start=1):
            for c, v in enumerate((f.source_file, f.status, f.error, f.hint)):
                fs.write_string(r, c, v)
        fs.set_column(0, 0, 40)
        fs.set_column(2, 3, 60)
    wb.close()
