"""Benchmark the offline extractor against the invoice corpus.

Usage (from the repo root)::

    .venv/bin/python bench/extraction.py [-v] [DOCS_DIR [TRUTH_DIR]]

DOCS_DIR defaults to ``../shared/corpus/docs`` relative to the repo root and
TRUTH_DIR to ``truth/`` next to it. Scores each preset field per file and per
distinct invoice number (the corpus renders some invoices several times), prints a
table and the speed, and ends with exactly one JSON line of figures.

Scoring: dates compare as ISO strings, totals as numbers within 0.01,
strings after collapsing whitespace and case. Fields whose ground truth is
null are not scored (the count ``n`` says how many were).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.core.errors import UnreadableDocument  # noqa: E402
from common.core.schema import INVOICE_PRESET  # noqa: E402
from common.extraction.offline import extract_pdf  # noqa: E402

FIELDS = [f.name for f in INVOICE_PRESET]
CORE = ["invoice_number", "date", "total", "currency"]


def _norm(v: Any) -> str:
    return re.sub(r"\s+", " ", str(v)).strip().casefold()


def correct(field: str, got: Any, want: Any) -> bool:
    if got is None:
        return False
    if field == "total":
        try:
            return abs(float(got) - float(want)) <= 0.01
        except (TypeError, ValueError):
            return False
    return _norm(got) == _norm(want)


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if not a.startswith("-")]
    verbose = "-v" in argv or "--misses" in argv
    docs = Path(args[0]) if args else ROOT / ".." / "shared" / "corpus" / "docs"
    truth_dir = Path(args[1]) if len(args) > 1 else docs.parent / "truth"
    files = sorted(docs.glob("*.pdf"))
    if not files:
        print(f"no PDFs in {docs}", file=sys.stderr)
        return 2
    per_field: dict[str, list[bool]] = defaultdict(list)
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    pages = 0
    elapsed = 0.0
    errors = 0
    misses: list[str] = []
    for path in files:
        tpath = truth_dir / (path.stem + ".json")
        truth = json.loads(tpath.read_text()) if tpath.exists() else {}
        data = path.read_bytes()
        t0 = time.perf_counter()
        try:
            res = extract_pdf(data, INVOICE_PRESET, filename=path.name)
        except UnreadableDocument as e:
            elapsed += time.perf_counter() - t0
            errors += 1
            print(f"ERROR {path.name}: {e}", file=sys.stderr)
            row: dict[str, Any] = {}
        else:
            elapsed += time.perf_counter() - t0
            pages += res.pages
            row = dict(zip(res.columns, res.results[0], strict=True))
        key = str(truth.get("invoice_number"))
        for f in FIELDS:
            want = truth.get(f)
            if want is None:
                continue
            ok = correct(f, row.get(f), want)
            per_field[f].append(ok)
            groups[key][f].append(ok)
            if not ok:
                misses.append(f"  {path.stem[:70]:70} {f:14} got={row.get(f)!r} want={want!r}")

    def acc(xs: list[bool]) -> float:
        return round(sum(xs) / len(xs), 4) if xs else 0.0

    by_invoice: dict[str, float] = {}
    for f in FIELDS:
        vals = [sum(g[f]) / len(g[f]) for g in groups.values() if g.get(f)]
        by_invoice[f] = round(sum(vals) / len(vals), 4) if vals else 0.0
    accuracy = {f: acc(per_field[f]) for f in FIELDS}
    overall = acc([x for f in FIELDS for x in per_field[f]])
    overall_core = acc([x for f in CORE for x in per_field[f]])
    pps = round(pages / elapsed, 1) if elapsed else 0.0

    if verbose:
        print("misses:")
        print("\n".join(misses))
    print(f"{'field':16}{'per file':>10}{'n':>5}{'per invoice':>13}")
    for f in FIELDS:
        print(f"{f:16}{accuracy[f]:>10.3f}{len(per_field[f]):>5}{by_invoice[f]:>13.3f}")
    print(f"{'overall':16}{overall:>10.3f}")
    print(f"{'overall (core 4)':16}{overall_core:>10.3f}")
    print(
        f"files {len(files)}, distinct invoices {len(groups)}, errors {errors}, pages {pages}, "
        f"{elapsed:.2f} s, {pps} pages/s"
    )
    print(
        json.dumps(
            {
                "bench": "extraction",
                "files": len(files),
                "distinct_invoices": len(groups),
                "errors": errors,
                "pages": pages,
                "pages_per_s": pps,
                "accuracy": accuracy,
                "accuracy_per_invoice": by_invoice,
                "overall": overall,
                "overall_core": overall_core,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
