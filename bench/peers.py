"""Sluice beside the best Redis task queue, on the same machine, alternating.

The shape is the one of ``../shared/bench-peers``: N chains of 5 no-op stages,
all N first stages enqueued at once by a driver, each stage enqueueing the
next. The peer (dramatiq by default, Redis with ``appendfsync always``: every
acknowledged write fsynced) runs through bench-peers' own ``bench.py``; Sluice
runs ``bench/orchestration.py`` (SQLite bus, ``synchronous=FULL``). Rounds
alternate which goes first, so drifting machine load hits both alike. Prints
each figure, the ratio per round and the median ratio; the last line is JSON.

It installs what it needs: ``redis-server`` through apt-get when missing (as
root), and the peers' virtualenv from bench-peers' pinned requirements.

    .venv/bin/python bench/peers.py [--chains 2000] [--rounds 3] [--peer dramatiq]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOPS = 5  # bench-peers' chains are 5 stages (its common.STAGES)

# Runs one bench-peers measurement on a free port (bench.py's own entry point
# fixes port 6390, which another run on this machine may hold).
_PEER_RUNNER = """
import json, sys
here, peer, mode, n, out, port = sys.argv[1:7]
sys.path.insert(0, here)
import bench
bench.PORT = int(port)
print("RESULT " + json.dumps(bench.run(peer, mode, int(n), out, 480.0)))
"""


def _sh(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kw)


def ensure_redis() -> None:
    if shutil.which("redis-server"):
        return
    if os.geteuid() != 0:
        raise SystemExit("redis-server is missing: apt-get update && apt-get install -y redis-server")
    print("installing redis-server (apt-get)", file=sys.stderr)
    _sh(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
    _sh(["apt-get", "install", "-y", "-qq", "redis-server"], stdout=subprocess.DEVNULL)


def ensure_venv(venv: Path, peers_dir: Path) -> Path:
    python = venv / "main" / "bin" / "python"
    if not python.exists():
        print(f"creating the peers' virtualenv in {venv}/main", file=sys.stderr)
        _sh([sys.executable if sys.prefix == sys.base_prefix else "python3", "-m", "venv", str(venv / "main")])
        _sh([str(python), "-m", "pip", "install", "-q", "-r", str(peers_dir / "requirements-main.txt")])
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_peer(python: Path, peers_dir: Path, peer: str, chains: int, out: Path) -> dict[str, Any]:
    cmd = [str(python), "-c", _PEER_RUNNER, str(peers_dir), peer, "durable", str(chains), str(out), str(_free_port())]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=900)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{peer} run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    if result.get("timed_out") or result.get("completed") != chains:
        raise SystemExit(f"{peer} did not finish: {result}")
    return result


def run_sluice(chains: int, workers: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "orchestration.py"),
        f"--chains={chains}",
        f"--hops={HOPS}",
        f"--workers={workers}",
        "--latency-hops=0",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"sluice run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f} on {os.cpu_count()} cores"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--chains", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8, help="Sluice's worker threads")
    ap.add_argument("--peer", default="dramatiq", help="a bench-peers peer (its durable mode is used)")
    ap.add_argument("--peers-dir", type=Path, default=ROOT.parent / "shared" / "bench-peers")
    ap.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "sluice-peers-venv")
    args = ap.parse_args()

    ensure_redis()
    python = ensure_venv(args.venv, args.peers_dir)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sluice-peers-") as tmp:
        for r in range(args.rounds):
            order = ["peer", "sluice"] if r % 2 == 0 else ["sluice", "peer"]
            figures: dict[str, Any] = {"round": r + 1, "order": order}
            for who in order:
                load = _load()
                t0 = time.monotonic()
                if who == "peer":
                    res = run_peer(python, args.peers_dir, args.peer, args.chains, Path(tmp))
                    figures["peer_stages_per_s"] = res["execs_per_s"]
                    figures["peer_duplicates"] = res["duplicates"]
                    figures["peer_enqueue_s"] = res["enqueue_stage1_s"]
                    rate, enqueue_s = res["execs_per_s"], res["enqueue_stage1_s"]
                else:
                    res = run_sluice(args.chains, args.workers)
                    figures["sluice_stages_per_s"] = res["stages_per_s"]
                    figures["sluice_duplicates"] = res["duplicates"]
                    figures["sluice_enqueue_s"] = res["enqueue_s"]
                    rate, enqueue_s = res["stages_per_s"], res["enqueue_s"]
                name = f"{args.peer} (durable)" if who == "peer" else "sluice (fsync)"
                print(
                    f"round {r + 1}  {name:18s} {rate:8,.0f} stages/s   first stages enqueued in {enqueue_s:.2f} s"
                    f"   (load {load}, {time.monotonic() - t0:.0f} s)",
                    flush=True,
                )
            figures["ratio"] = round(figures["sluice_stages_per_s"] / figures["peer_stages_per_s"], 3)
            print(f"round {r + 1}  ratio sluice/{args.peer}: {figures['ratio']:.2f}", flush=True)
            rounds.append(figures)
    median = statistics.median(x["ratio"] for x in rounds)
    summary = {
        "bench": "peers",
        "peer": f"{args.peer}-durable",
        "chains": args.chains,
        "hops": HOPS,
        "sluice_workers": args.workers,
        "rounds": rounds,
        "peer_median_stages_per_s": statistics.median(x["peer_stages_per_s"] for x in rounds),
        "sluice_median_stages_per_s": statistics.median(x["sluice_stages_per_s"] for x in rounds),
        "median_ratio": median,
        "load_after": _load(),
    }
    print(f"median ratio sluice/{args.peer}-durable over {args.rounds} rounds: {median:.2f}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
