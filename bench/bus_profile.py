"""Where the embedded bus and runtime spend their time, per stage.

Runs the orchestration shape (chains of no-op stages through the real
:class:`LocalRuntime` and durable :class:`SqliteBus`) with every SQLite
connection the bus opens instrumented, and prints per stage:

* transactions (each durable commit is one fdatasync of the WAL) and SQL
  statements, by verb;
* time spent waiting for SQLite's write lock (``BEGIN IMMEDIATE``: lock
  hand-offs between the bus's connections) and committing (the fsync);
* Python time per dispatch (``LocalRuntime.handle``: decode, span, handler,
  metrics), wall and CPU;
* the runtime's bus transactions (each settles what the workers finished and
  leases what they can take: :meth:`SqliteBus.exchange`), and how many
  settlements and deliveries each carried;
* time in SQL statements (wall, the lock wait and commits apart).

The driver's initial sends (one per chain) are counted apart from the run.
The last line is one JSON object with the figures.

    .venv/bin/python bench/bus_profile.py [--chains 2000] [--hops 5] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orchestration

from common.adapters.local import sqlite_bus
from common.bootstrap import bootstrap, local_bus
from common.config import Settings
from common.core.messages import Noop
from common.runtime.local import LocalRuntime
from common.service.context import TopologySender

_stats_lock = threading.Lock()
_verbs: Counter[str] = Counter()
_timers: dict[str, float] = {}


def _add(verb: str, seconds: float) -> None:
    with _stats_lock:
        _verbs[verb] += 1
        _timers[verb] = _timers.get(verb, 0.0) + seconds


class _TimedConnection(sqlite3.Connection):
    """Counts and times every statement the bus runs (by its first word)."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        t0 = time.perf_counter()
        try:
            return super().execute(sql, parameters)
        finally:
            _add(sql.split(None, 1)[0].upper(), time.perf_counter() - t0)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        rows = list(parameters)
        t0 = time.perf_counter()
        try:
            return super().executemany(sql, rows)
        finally:
            _add(sql.split(None, 1)[0].upper() + "(many)", time.perf_counter() - t0)
            with _stats_lock:
                _verbs["rows(many)"] += len(rows)


_real_connect = sqlite3.connect


def _connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    kwargs["factory"] = _TimedConnection
    conn: sqlite3.Connection = _real_connect(*args, **kwargs)
    return conn


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--chains", type=int, default=2000)
    ap.add_argument("--hops", type=int, default=5)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    sqlite3.connect = _connect  # type: ignore[assignment]  # the bus opens its connections through this

    handle_wall = [0.0]
    handle_cpu = [0.0]
    real_handle = LocalRuntime.handle

    def timed_handle(self: LocalRuntime, function: str, delivery: sqlite_bus.Delivery) -> sqlite_bus.Settlement:
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            return real_handle(self, function, delivery)
        finally:
            with _stats_lock:
                handle_wall[0] += time.perf_counter() - w0
                handle_cpu[0] += time.thread_time() - c0

    LocalRuntime.handle = timed_handle  # type: ignore[method-assign]

    exchanges: list[tuple[int, int]] = []  # (settlements, deliveries leased) per bus transaction of the runtime
    real_exchange = sqlite_bus.SqliteBus.exchange

    def exchange(self: sqlite_bus.SqliteBus, settlements: Any, pulls: Any, **k: Any) -> sqlite_bus.Exchanged:
        out = real_exchange(self, settlements, pulls, **k)
        exchanges.append((len(settlements), sum(len(v) for v in out.deliveries.values())))
        return out

    sqlite_bus.SqliteBus.exchange = exchange  # type: ignore[method-assign]

    total = args.chains * args.hops
    with tempfile.TemporaryDirectory(prefix="sluice-profile-") as tmp:
        settings = Settings(backend="local", data_dir=Path(tmp), durable=True)
        deps = bootstrap(settings, topology=orchestration.topology(args.workers))
        bus = local_bus(deps)
        runtime = LocalRuntime(
            deps, bus, handlers={"bench": {"bench.noop": "orchestration:noop"}}, max_workers=args.workers
        )
        runtime.declare()
        orchestration._remaining = total
        orchestration._done.clear()
        sender = TopologySender(deps.topology, settings, bus, deps.clock)
        # The driver's sends first, measured apart: the run is what a stage costs.
        _verbs.clear()
        _timers.clear()
        d0 = time.perf_counter()
        for c in range(args.chains):
            sender.send(Noop(chain=f"c{c}", hops=args.hops, sent_at=time.time()))
        driver_s = time.perf_counter() - d0
        driver = {"seconds": round(driver_s, 3), "commits": _verbs["COMMIT"]}
        _verbs.clear()
        _timers.clear()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        runtime.start()
        finished = orchestration._done.wait(timeout=600)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        runtime.stop()
    if not finished:
        raise SystemExit("timed out")
    verbs = dict(_verbs)
    statements = sum(v for k, v in verbs.items() if k != "rows(many)")
    commits = verbs.get("COMMIT", 0)
    figures = {
        "bench": "bus_profile",
        "stages": total,
        "seconds": round(elapsed, 3),
        "stages_per_s": round(total / elapsed, 1),
        "process_cpu_s": round(cpu, 3),
        "cpu_ms_per_stage": round(cpu / total * 1000, 3),
        "commits_per_stage": round(commits / total, 3),
        "statements_per_stage": round(statements / total, 3),
        "statements_by_verb": verbs,
        "lock_wait_ms_per_stage": round(_timers.get("BEGIN", 0.0) / total * 1000, 3),
        "commit_ms_per_commit": round(_timers.get("COMMIT", 0.0) / max(1, commits) * 1000, 3),
        "commit_ms_per_stage": round(_timers.get("COMMIT", 0.0) / total * 1000, 3),
        "handle_wall_ms_per_dispatch": round(handle_wall[0] / total * 1000, 3),
        "handle_cpu_ms_per_dispatch": round(handle_cpu[0] / total * 1000, 3),
        "sql_ms_per_stage": round(sum(v for k, v in _timers.items() if k not in ("BEGIN", "COMMIT")) / total * 1000, 3),
        "bus_transactions": len(exchanges),
        "deliveries_per_transaction": round(sum(d for _, d in exchanges) / max(1, len(exchanges)), 2),
        "settlements_per_transaction": round(sum(n for n, _ in exchanges) / max(1, len(exchanges)), 2),
        "empty_transactions": sum(1 for n, d in exchanges if n == 0 and d == 0),
        "driver": driver,
    }
    for k, v in figures.items():
        if k != "bench":
            print(f"{k + ':':30s}{v}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
