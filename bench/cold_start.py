"""Cold-start cost of each Cloud Function, against a bare functions-framework import.

For every ``functions/<name>/main.py`` it starts fresh interpreters and times
(a) ``import functions_framework`` alone, (b) ``import main`` (everything the
entrypoint imports at module level), and (c) ``import main`` plus resolving
every handler the function serves (what its first invocation imports). Each
figure is the median of ``--repeat`` runs. Target: (b) at most 3x (a).
The last line is one JSON object with the figures.

    .venv/bin/python bench/cold_start.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_BARE = "import time; t = time.perf_counter(); import functions_framework; print((time.perf_counter() - t) * 1000)"
_MAIN = "import time; t = time.perf_counter(); import main; print((time.perf_counter() - t) * 1000)"
_FIRST = (
    "import time; t = time.perf_counter(); import main\n"
    "from common.service.registry import HANDLERS, resolve\n"
    "for kind in HANDLERS.get({fn!r}, {{}}): resolve({fn!r}, kind)\n"
    "print((time.perf_counter() - t) * 1000)"
)


def _time(code: str, cwd: Path, repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    samples = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True)
        samples.append(float(out.stdout.strip()))
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    functions = sorted(p.parent.name for p in (REPO / "functions").glob("*/main.py"))
    bare = _time(_BARE, REPO, args.repeat)
    rows: dict[str, dict[str, float]] = {}
    print(f"{'function':<16}{'import main':>14}{'ratio':>8}{'+ handlers':>13}{'ratio':>8}")
    print(f"{'(bare ff)':<16}{bare:>12.0f}ms")
    for fn in functions:
        cwd = REPO / "functions" / fn
        imp = _time(_MAIN, cwd, args.repeat)
        first = _time(_FIRST.format(fn=fn), cwd, args.repeat)
        rows[fn] = {
            "import_ms": round(imp, 1),
            "ratio": round(imp / bare, 2),
            "first_call_ms": round(first, 1),
            "first_call_ratio": round(first / bare, 2),
        }
        print(f"{fn:<16}{imp:>12.0f}ms{imp / bare:>7.2f}x{first:>11.0f}ms{first / bare:>7.2f}x")
    worst = max(r["ratio"] for r in rows.values())
    print(f"worst import ratio: {worst:.2f}x (target <= 3x)")
    print(
        json.dumps(
            {
                "bench": "cold_start",
                "bare_functions_framework_ms": round(bare, 1),
                "functions": rows,
                "worst_ratio": worst,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
