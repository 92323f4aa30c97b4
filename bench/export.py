"""Export writers: Sluice's CSV and XLSX beside raw csv.writer and raw xlsxwriter.

Writes the same 50,000 rows x 20 mixed columns (text with commas and quotes,
negative and positive amounts, integers, ISO dates, empty cells, and about 1 %
formula-like text) with each writer, best of ``--repeat`` runs, and prints
rows/s and the ratios ``csv_ratio`` (Sluice CSV / csv.writer, target >= 0.8)
and ``xlsx_ratio`` (Sluice XLSX / xlsxwriter, target >= 0.9), injection
escaping on. Then, in fresh processes fed by a generator, it measures peak
memory (max RSS above the process's baseline) writing 50k and 1M rows: flat
means 1M uses no more than about 2x the memory of 50k. The last line is one
JSON object with the figures.

    .venv/bin/python bench/export.py [--rows 50000] [--memory-rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.core.schema import FieldType, Scalar
from common.core.table import TableHeader
from common.export.writers import write_csv, write_xlsx

KINDS = ["id", "text", "amount", "int", "date"] * 4  # 20 columns
NAMES = ["Acme GmbH", 'Smith, "Jones" & Co', "Müller AG", "Société Générale", "北京公司", "Plain text value"]
INJECT = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)"]


def header() -> TableHeader:
    columns = [f"c{i}_{k}" for i, k in enumerate(KINDS)]
    types = {
        c: {
            "id": FieldType.STRING,
            "text": FieldType.STRING,
            "amount": FieldType.NUMBER,
            "int": FieldType.INTEGER,
            "date": FieldType.DATE,
        }[k]
        for c, k in zip(columns, KINDS, strict=True)
    }
    text = tuple(i for i, k in enumerate(KINDS) if k in ("id", "text", "date"))
    return TableHeader(columns=columns, types=types, text_positions=text)


def gen_rows(n: int, seed: int = 7) -> Iterator[list[Scalar]]:
    rnd = random.Random(seed)
    for i in range(n):
        row: list[Scalar] = []
        for c, k in enumerate(KINDS):
            if k == "id":
                row.append(f"INV-{i:07d}-{c}")
            elif k == "text":
                r = rnd.random()
                row.append(None if r < 0.1 else rnd.choice(INJECT) if r < 0.11 else rnd.choice(NAMES))
            elif k == "amount":
                row.append(round(rnd.uniform(-500.0, 5000.0), 2))
            elif k == "int":
                row.append(rnd.randint(0, 100_000))
            else:
                row.append(f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}")
        yield row


def _best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def throughput(n: int, repeat: int) -> dict[str, float]:
    import xlsxwriter

    rows = list(gen_rows(n))
    h = header()
    tmp = tempfile.mkdtemp(prefix="sluice-bench-export-")
    csv_path, xlsx_path = os.path.join(tmp, "t.csv"), os.path.join(tmp, "t.xlsx")

    def raw_csv() -> None:
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\r\n")
            w.writerow(h.columns)
            w.writerows(rows)

    def sluice_csv() -> None:
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            write_csv(h, rows, f, bom=True)

    def raw_xlsx() -> None:
        wb = xlsxwriter.Workbook(xlsx_path, {"constant_memory": True})
        ws = wb.add_worksheet()
        ws.write_row(0, 0, h.columns)
        for r, row in enumerate(rows, start=1):
            ws.write_row(r, 0, row)
        wb.close()

    def sluice_xlsx() -> None:
        write_xlsx(h, rows, xlsx_path)

    # Interleaved, best of ``repeat``: load from elsewhere on the machine hits every writer alike.
    writers = {"csv_writer": raw_csv, "sluice_csv": sluice_csv, "xlsxwriter": raw_xlsx, "sluice_xlsx": sluice_xlsx}
    t = dict.fromkeys(writers, float("inf"))
    for _ in range(repeat):
        for name, fn in writers.items():
            t[name] = min(t[name], _best(fn, 1))
    for p in (csv_path, xlsx_path):
        os.unlink(p)
    os.rmdir(tmp)
    return {k: n / v for k, v in t.items()}


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def child(fmt: str, n: int) -> None:
    """Write ``n`` generated rows; print the peak RSS of the writing phase alone.

    Linux resets a process's high-water mark (VmHWM) when 5 is written to
    /proc/self/clear_refs, so start-up and imports do not mask the writing.
    """
    import xlsxwriter  # noqa: F401  -- imported before the baseline, as in the export stage

    h = header()
    list(gen_rows(10))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kib("VmRSS")
    fd, path = tempfile.mkstemp(suffix=f".{fmt}")
    os.close(fd)
    try:
        if fmt == "csv":
            with open(path, "w", newline="", encoding="utf-8") as f:
                write_csv(h, gen_rows(n), f)
        else:
            write_xlsx(h, gen_rows(n), path)
    finally:
        os.unlink(path)
    peak = _status_kib("VmHWM")
    print(json.dumps({"rss_growth_mib": (peak - base) / 1024, "peak_mib": peak / 1024}))


def memory(fmt: str, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", fmt, str(n)], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--memory-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--child", nargs=2, metavar=("FORMAT", "ROWS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0

    rate = throughput(args.rows, args.repeat)
    csv_ratio = rate["sluice_csv"] / rate["csv_writer"]
    xlsx_ratio = rate["sluice_xlsx"] / rate["xlsxwriter"]
    print(f"rows x columns:   {args.rows} x {len(KINDS)} (best of {args.repeat})")
    for k, v in rate.items():
        print(f"{k:<16}  {v:>10,.0f} rows/s")
    print(f"csv_ratio:        {csv_ratio:.2f} (target >= 0.8)")
    print(f"xlsx_ratio:       {xlsx_ratio:.2f} (target >= 0.9)")
    mem: dict[str, dict[str, float]] = {}
    for fmt in ("csv", "xlsx"):
        small = memory(fmt, args.rows)
        large = memory(fmt, args.memory_rows)
        ratio = large["peak_mib"] / small["peak_mib"]
        mem[fmt] = {
            "rows_small": args.rows,
            "peak_small_mib": round(small["peak_mib"], 1),
            "growth_small_mib": round(small["rss_growth_mib"], 1),
            "rows_large": args.memory_rows,
            "peak_large_mib": round(large["peak_mib"], 1),
            "growth_large_mib": round(large["rss_growth_mib"], 1),
            "peak_ratio": round(ratio, 2),
        }
        print(
            f"memory {fmt:<4}        peak {small['peak_mib']:.1f} MiB for {args.rows:,} rows, "
            f"{large['peak_mib']:.1f} MiB for {args.memory_rows:,} rows (x{ratio:.2f}; target <= 2)"
        )
    print(
        json.dumps(
            {
                "bench": "export",
                "rows": args.rows,
                "columns": len(KINDS),
                "rows_per_s": {k: round(v, 1) for k, v in rate.items()},
                "csv_ratio": round(csv_ratio, 3),
                "xlsx_ratio": round(xlsx_ratio, 3),
                "memory": mem,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
