"""Check ``sluice run``'s exports against the samples' expected values.

Usage: python samples/check_output.py OUT_DIR EXPECTED_JSON

Finds the CSV and XLSX that ``sluice run`` wrote last into OUT_DIR (its
manifest, ``.sluice-exports.json``, says which files it wrote, for which run,
and when; both must come from the same run), compares every expected field of
every sample (dates as ISO, totals as numbers, text after whitespace and case
folding), and prints one line per mismatch, per missing, repeated or
unexpected row; exits 1 if there is any.
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


def _latest_exports(out: Path) -> tuple[Path, Path]:
    """The newest CSV and XLSX sluice wrote into ``out``, which must belong to one run."""
    try:
        files = json.loads((out / ".sluice-exports.json").read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"check_output: no sluice exports in {out} ({err})") from None
    newest: dict[str, tuple[float, str]] = {}
    for name, entry in files.items():
        fmt, when = entry.get("format"), float(entry.get("written_at", 0))
        if fmt in ("csv", "xlsx") and (out / name).is_file() and when >= newest.get(fmt, (-1.0, ""))[0]:
            newest[fmt] = (when, name)
    for fmt in ("csv", "xlsx"):
        if fmt not in newest:
            raise SystemExit(f"check_output: sluice wrote no .{fmt} file into {out}")
    csv_name, xlsx_name = newest["csv"][1], newest["xlsx"][1]
    if files[csv_name]["run_id"] != files[xlsx_name]["run_id"]:
        raise SystemExit(f"check_output: {csv_name} and {xlsx_name} come from different runs")
    return out / csv_name, out / xlsx_name


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
    if len(by_file) != len(rows):
        problems.append(f"{label}: {len(rows)} rows for {len(by_file)} files: a file has more than one row")
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
    csv_path, xlsx_path = _latest_exports(out)
    problems = compare(_csv_rows(csv_path), expected, f"{csv_path.name}")
    problems += compare(_xlsx_rows(xlsx_path), expected, f"{xlsx_path.name}")
    fields = sum(len(v) for v in expected.values())
    for p in problems:
        print(p)
    print(f"check_output: {len(expected)} documents, {fields} fields per format, {len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
