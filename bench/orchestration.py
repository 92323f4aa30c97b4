"""Orchestration throughput of the embedded backend.

Runs chains of no-op stages through the real local runtime -- SQLite bus with
fsync on every commit (durable settings), worker pools, group-committing
settler -- and prints throughput (stages/s) and per-stage dispatch overhead
(from a stage sending a message to the next stage starting), p50 and p99.
The last line is one JSON object with the figures.

    .venv/bin/python bench/orchestration.py [--chains 200] [--hops 25] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.bootstrap import bootstrap, local_bus
from common.config import Settings
from common.core.messages import Noop
from common.runtime.local import LocalRuntime
from common.service.context import Context, TopologySender
from common.topology import FunctionSpec, SubscriptionSpec, TopicSpec, Topology

_lock = threading.Lock()
_latencies: list[float] = []
_done = threading.Event()
_remaining = 0
_seen: set[tuple[str, int]] = set()
_executions = 0


def noop(msg: Noop, ctx: Context) -> None:
    """A stage that does nothing but pass the message on."""
    global _remaining, _executions
    started = time.time()
    if msg.sent_at:
        with _lock:
            _latencies.append(started - msg.sent_at)
    if msg.hops > 1:
        ctx.send(Noop(chain=msg.chain, hops=msg.hops - 1, sent_at=time.time()))
    with _lock:
        # Distinct (chain, stage) pairs: a duplicate delivery never counts as progress.
        _executions += 1
        if (msg.chain, msg.hops) not in _seen:
            _seen.add((msg.chain, msg.hops))
            _remaining -= 1
            if _remaining == 0:
                _done.set()


def topology(workers: int) -> Topology:
    return Topology(
        functions={
            "bench": FunctionSpec(
                source="bench",
                entry_point="noop",
                trigger="bench-noop",
                max_instances=1,
                concurrency=workers,
                timeout_s=60,
                memory="256Mi",
            )
        },
        topics={
            "bench-noop": TopicSpec(
                kinds=["bench.noop"],
                subscription=SubscriptionSpec(
                    function="bench",
                    ack_deadline_s=60,
                    max_delivery_attempts=5,
                    min_backoff_s=1,
                    max_backoff_s=10,
                    dead_letter_topic="bench-dlq",
                ),
            ),
            "bench-dlq": TopicSpec(dead_letter=True),
        },
    )


def _phase(chains: int, hops: int, workers: int, durable: bool) -> tuple[float, float, list[float]]:
    """Run ``chains`` chains of ``hops`` stages; return (elapsed s, s to send the first stages, dispatch latencies s).

    The first stages are sent one by one, each publish committed (fsynced)
    before the next, as bench-peers' driver enqueues them.
    """
    global _remaining, _executions
    _latencies.clear()
    _done.clear()
    _seen.clear()
    _executions = 0
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        settings = Settings(backend="local", data_dir=Path(tmp), durable=durable)
        deps = bootstrap(settings, topology=topology(workers))
        bus = local_bus(deps)
        runtime = LocalRuntime(deps, bus, handlers={"bench": {"bench.noop": "__main__:noop"}}, max_workers=workers)
        runtime.declare()
        _remaining = chains * hops
        sender = TopologySender(deps.topology, settings, bus, deps.clock)
        runtime.start()
        t0 = time.perf_counter()
        for c in range(chains):
            sender.send(Noop(chain=f"c{c}", hops=hops, sent_at=time.time()))
        enqueued = time.perf_counter() - t0
        finished = _done.wait(timeout=600)
        elapsed = time.perf_counter() - t0
        runtime.stop()
    if not finished:
        raise SystemExit(f"timed out with {_remaining} stages left")
    return elapsed, enqueued, list(_latencies)


def _pct(values_ms: list[float], q: float) -> float:
    ordered = sorted(values_ms)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--chains", type=int, default=200, help="concurrent chains in the throughput phase")
    ap.add_argument("--hops", type=int, default=25, help="stages per chain in the throughput phase")
    ap.add_argument(
        "--latency-hops", type=int, default=300, help="stages of the single chain timing overhead (0: skip it)"
    )
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--no-fsync", action="store_true", help="synchronous=NORMAL instead of FULL")
    args = ap.parse_args()
    durable = not args.no_fsync

    total = args.chains * args.hops
    elapsed, enqueued, queued = _phase(args.chains, args.hops, args.workers, durable)
    rate = total / elapsed
    duplicates = _executions - total
    # Overhead alone: one chain, so no stage ever waits behind another.
    single = _phase(1, args.latency_hops, args.workers, durable)[2] if args.latency_hops > 1 else [0.0]
    lat_ms = [x * 1000 for x in single]
    queued_ms = [x * 1000 for x in queued]
    p50, p99 = statistics.median(lat_ms), _pct(lat_ms, 0.99)

    print(f"stages:             {total} ({args.chains} chains x {args.hops} hops)")
    print(f"durable (fsync):    {durable}")
    print(f"workers:            {args.workers} on {os.cpu_count()} cores")
    print(f"elapsed:            {elapsed:.2f} s (sending the {args.chains} first stages: {enqueued:.2f} s)")
    print(f"duplicate runs:     {duplicates}")
    print(f"throughput:         {rate:,.0f} stages/s")
    print(f"dispatch overhead:  p50 {p50:.2f} ms, p99 {p99:.2f} ms (one chain of {args.latency_hops} stages)")
    print(f"under full load:    p50 {statistics.median(queued_ms):.1f} ms including queueing behind other chains")
    figures = {
        "bench": "orchestration",
        "stages": total,
        "durable": durable,
        "workers": args.workers,
        "seconds": round(elapsed, 3),
        "enqueue_s": round(enqueued, 3),
        "stages_per_s": round(rate, 1),
        "duplicates": duplicates,
        "dispatch_p50_ms": round(p50, 2),
        "dispatch_p99_ms": round(p99, 2),
        "loaded_p50_ms": round(statistics.median(queued_ms), 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
