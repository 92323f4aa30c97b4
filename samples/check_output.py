"""Check ``sluice run``'s exports against the samples' expected values.

Usage: python samples/check_output.py OUT_DIR EXPECTED_JSON

Reads the newest CSV and XLSX in OUT_DIR, compares every expected field of
every sample (dates as ISO, totals as numbers, text after whitespace and case
folding) and prints one line per mismatch; exits 1 if there is any.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any


def _norm(field: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if field == "total":
        return round(float(value), 2)
    if isinstance(value, datetime | date):
        return value.strftime("%Y-%m-%d")
    return " ".join(str(value).split()).casefold()


def _newest(out: Path, suffix: str) -> Path:
    files = sorted(out.glob(f"*.{suffix}"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise SystemExit(f"check_output: no .{suffix} file in {out}")
    return files[-1]


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _xlsx_rows(path: Path) -> list[dict[str, Any]]:
    import openpyxl

    ws = openpyxl.load_workbook(path, read_only=True).worksheets[0]
    rows = ws.iter_rows(values_only=True)
    header = [str(h) for h in next(rows)]
    return [dict(zip(header, r, strict=False)) for r in rows]


def compare(rows: list[dict[str, Any]], expected: dict[str, dict[str, Any]], label: str) -> list[str]:
    by_file = {str(r["source_file"]): r for r in rows}
    problems: list[str] = []
    for name, fields in sorted(expected.items()):
        row = by_file.get(name)
        if row is None:
            problems.append(f"{label}: {name}: no row")
            continue
        for field, want in fields.items():
            got = row.get(field)
            if _norm(field, got) != _norm(field, want):
                problems.append(f"{label}: {name}: {field} = {got!r}, expected {want!r}")
    extra = set(by_file) - set(expected)
    problems += [f"{label}: unexpected row for {name}" for name in sorted(extra)]
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, expected_path = Path(argv[1]), Path(argv[2])
    expected = json.loads(expected_path.read_text())
    problems = compare(_csv_rows(_newest(out, "csv")), expected, "csv")
    problems += compare(_xlsx_rows(_newest(out, "xlsx")), expected, "xlsx")
    fields = sum(len(v) for v in expected.values())
    for p in problems:
        print(p)
    print(f"check_output: {len(expected)} documents, {fields} fields per format, {len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
