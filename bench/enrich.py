"""Sheet enrichment under a model quota, with the worker killed (-9) three times mid-run.

Three sheets × ``--rows`` rows (5,000 by default) are enriched at once by one
``sluice serve`` process (the API and every stage worker, embedded backend).
The sheets are **local CSV files** (the embedded backend's adapter behind the
same sheets port as Google Sheets); the model is a fake OpenAI-compatible
server in this process with ``--latency-ms`` (50) per call and a quota of
``--rpm`` (1,200) requests a minute, enforced server-side (a 429 past it) and
paced client-side by the shared rate limiter (``SLUICE_OPENAI_RPM``). Several
rows go into one model call (``--rows-per-call``, 20): one structured answer
with one validated entry per row.

The worker process is killed with SIGKILL ``--kills`` times (3) at evenly
spaced points of the model calls (sent by a separate process after a random
0-100 ms, so the instant is independent of the fake model's deliveries; see
``Worker.kill``), and started again on the same data directory each time.
A call the worker was waiting on when it died is never answered (its caller
is gone: the fake server finds the connection closed, sends nothing and does
not count it), and an answer sent to a worker killed before it read it is
not counted either (its kernel resets the connection: ``answers_unread``).
A row whose complete answer the server delivered twice, read by the worker
both times, is a duplicate. For each duplicate the bench prints how long
before the kill its first answer was read: the time the killed worker held
that answer without having saved it. Every row of every output
file is checked against the answer its own row gets.

Prints per-sheet rows/min (wall clock from run start to completion, kills and
restarts included), model calls, rows per call, duplicates, 429s, job-create
p99 (``--creates`` creates through the API) and run-status p99 (polled
during the run); the last line is one JSON object.

    .venv/bin/python bench/enrich.py [--rows 5000] [--kills 3]
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.adapters.local.table_files import output_path
from tests.fakes.openai_chat import ChatRequest, FakeOpenAI, Reply, RowModel, too_many_requests

REPO = Path(__file__).resolve().parent.parent
SHEETS = 3


def _answer(number: int, text: str) -> dict[str, Any]:
    return {"category": "food" if "bread" in text else "tools"}


def _sheet_and_row(number: int, text: str) -> tuple[str, int]:
    return text.split("Product: ", 1)[-1].split(" ", 1)[0], number


def _expected(i: int) -> str:
    return "food" if i % 2 else "tools"


def _csv(path: Path, rows: int, sheet: int) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "price"])
        for i in range(rows):
            # The sheet's number is in every row's text: rows are counted per (sheet, row).
            w.writerow([f"s{sheet} bread {i}" if i % 2 else f"s{sheet} hammer {i}", i])


class QuotaModel:
    """The fake model: ``latency_s`` per call and ``rpm`` calls per sliding minute (429 past it).

    Rows are counted per (sheet, row) when their answer was *delivered*: the
    fake server writes an answer only to a caller still connected, so a call
    whose worker was killed while the model was answering is dropped and not
    counted (``FakeOpenAI.dropped``); and it waits for the worker to read the
    answer and close the connection, so an answer sent to a worker killed
    before it read it (its kernel resets the connection) is not counted either
    (``FakeOpenAI.unread``). A row counts as a duplicate when the server
    delivered a complete answer for it twice and the worker read it.
    """

    def __init__(self, latency_s: float, rpm: int) -> None:
        self.rows = RowModel(
            _answer, key=lambda number, text: (text.split("Product: ", 1)[-1].split(" ", 1)[0], number)
        )
        self.kill_times: list[float] = []
        self.latency_s = latency_s
        self.rpm = rpm
        self.rejected = 0
        self._recent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        return self.rows.calls

    @property
    def answered(self) -> dict[Any, int]:
        return self.rows.answered

    def _nearest_kill(self, key: Any) -> tuple[float | None, float]:
        """The kill nearest to a row's first delivered answer, and ms from that delivery to the kill
        (negative: delivered after the SIGKILL was sent, while the process was being torn down)."""
        at = self.rows.first_sent[key]
        if not self.kill_times:
            return None, float("inf")
        kill = min(self.kill_times, key=lambda k: abs(k - at))
        return kill, round((kill - at) * 1000, 1)

    def duplicate_gaps_ms(self) -> list[float]:
        """For each row answered twice: ms from its first answer's delivery to the nearest kill."""
        return [self._nearest_kill(key)[1] for key, n in list(self.rows.answered.items()) if n > 1]

    def kills_with_duplicates(self) -> int:
        """How many of the kills lost a delivered answer."""
        return len({self._nearest_kill(key)[0] for key, n in list(self.rows.answered.items()) if n > 1})

    def duplicates(self) -> int:
        return len(self.rows.twice())

    def __call__(self, req: ChatRequest) -> Reply:
        now = time.monotonic()
        with self._lock:
            while self._recent and now - self._recent[0] >= 60.0:
                self._recent.popleft()
            if len(self._recent) >= self.rpm:
                self.rejected += 1
                return too_many_requests(retry_after="2")
            self._recent.append(now)
        time.sleep(self.latency_s)
        return self.rows(req)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """``sluice serve`` as a subprocess on one data directory, started again after each kill."""

    def __init__(self, data: Path, env: dict[str, str]) -> None:
        self.data, self.env = data, env
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "common.cli", "serve", "--port", str(self.port), "--data-dir", str(self.data)]
        cmd += ["--dev-identity", "bench"]
        log = open(self.data.parent / "serve.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/v1/jobs", timeout=2).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sluice serve did not come up; see serve.log")

    def kill(self, at: list[float], *, inline: bool = False) -> None:
        """SIGKILL, noting the instant the signal was sent in ``at``.

        By default another process sends it, after a random 0-100 ms of its own:
        sent from this process, the kill would tend to land just as a fake-model
        thread is delivering an answer (the bench's thread gets the GIL when that
        thread releases it to write), which an OOM kill or a preemption does not.
        ``inline`` sends it from here, at that correlated instant.
        """
        assert self.proc is not None
        if inline:
            os.kill(self.proc.pid, signal.SIGKILL)
            at.append(time.monotonic())
        else:
            code = (
                "import os, random, signal, sys, time; time.sleep(random.uniform(0, 0.1)); "
                f"os.kill({self.proc.pid}, signal.SIGKILL); print(time.monotonic())"
            )
            killer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            at.append(float(killer.stdout))  # CLOCK_MONOTONIC: the same clock in every process
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def _call(url: str, method: str = "GET", body: Any = None) -> tuple[float, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        out = json.loads(r.read() or b"null")
    return (time.perf_counter() - t0) * 1000, out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0.0


def _settings(src: Path, rows_per_call: int) -> dict[str, Any]:
    return {
        "source": str(src),
        "prompt": "Product: {name} at {price}",
        "outputs": [{"name": "category", "type": "enum", "values": ["food", "tools"]}],
        "rows_per_call": rows_per_call,
        "rows_per_item": 500,
    }


def _check(src: Path, rows: int) -> int:
    """Rows of the output whose cell is not their own row's answer (0: every row written, and right)."""
    with open(output_path(src), newline="") as f:
        got = [r["category"] for r in csv.DictReader(f)]
    return sum(1 for i in range(rows) if i >= len(got) or got[i] != _expected(i))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--inline-kill", action="store_true", help="send SIGKILL from the bench's own thread")
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--rpm", type=int, default=1200)
    ap.add_argument("--rows-per-call", type=int, default=20)
    ap.add_argument("--creates", type=int, default=30)
    args = ap.parse_args()
    model = QuotaModel(args.latency_ms / 1000, args.rpm)
    fake_model = FakeOpenAI(confirm_receipt=True)
    with tempfile.TemporaryDirectory(prefix="sluice-bench-enrich-") as tmp, fake_model as fake:
        fake.default = model
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env.update(
            PYTHONPATH=str(REPO),
            SLUICE_TEXT_MODEL="openai",
            SLUICE_OPENAI_BASE_URL=fake.base_url,
            SLUICE_OPENAI_MODEL="fake",
            SLUICE_OPENAI_RPM=str(args.rpm),
            SLUICE_LOG_LEVEL="WARNING",
        )
        worker = Worker(root / "data", env)
        worker.start()
        api = f"{worker.url}/v1"
        sources = []
        for n in range(SHEETS):
            src = root / f"sheet{n}.csv"
            _csv(src, args.rows, n)
            sources.append(src)
        create_ms: list[float] = []
        jobs = []
        for i in range(max(args.creates, SHEETS)):
            src = sources[i % SHEETS]
            ms, job = _call(
                f"{api}/jobs",
                "POST",
                {"name": src.name, "kind": "enrich", "settings": _settings(src, args.rows_per_call)},
            )
            create_ms.append(ms)
            if i < SHEETS:
                jobs.append(job)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        runs = [_call(f"{api}/jobs/{j['id']}/runs", "POST", {})[1] for j in jobs]
        done_at: dict[str, float] = {}
        status_ms: list[float] = []
        total_calls = SHEETS * -(-args.rows // args.rows_per_call)
        kill_at = [total_calls * (k + 1) // (args.kills + 1) for k in range(args.kills)]
        kills = 0
        while len(done_at) < SHEETS:
            if kills < len(kill_at) and model.calls >= kill_at[kills]:
                worker.kill(model.kill_times, inline=args.inline_kill)
                kills += 1
                print(f"kill -9 #{kills} after {model.calls} model calls", file=sys.stderr)
                worker.start()
            for run in runs:
                if run["id"] in done_at:
                    continue
                try:
                    ms, got = _call(f"{api}/runs/{run['id']}")
                except OSError:
                    continue
                status_ms.append(ms)
                if got["status"] in ("completed", "failed", "cancelled"):
                    done_at[run["id"]] = time.monotonic()
                    if got["status"] != "completed":
                        print(f"run {run['id']} ended {got['status']}: {got.get('error')}", file=sys.stderr)
            time.sleep(0.1)
        worker.stop()
        per_sheet = [round(args.rows / ((done_at[r["id"]] - started) / 60), 1) for r in runs]
        wrong = sum(_check(src, args.rows) for src in sources)
        figures = {
            "sheets": SHEETS,
            "rows_per_sheet": args.rows,
            "source": "local CSV files (embedded backend)",
            "kills": kills,
            "killer": "inline" if args.inline_kill else "separate process, random 0-100 ms",
            "rows_per_min_per_sheet": per_sheet,
            "min_rows_per_min_per_sheet": min(per_sheet),
            "target_rows_per_min_per_sheet": 1000,
            "model_calls": model.calls,
            "rows_per_call": round(sum(model.answered.values()) / max(model.calls, 1), 2),
            "rows_answered": len(model.answered),
            "duplicates": model.duplicates(),
            "kills_with_duplicates": model.kills_with_duplicates(),
            "duplicates_ms_before_a_kill": sorted(set(model.duplicate_gaps_ms())),
            "rows_wrong_or_missing": wrong,
            "calls_dropped_at_kills": fake.dropped,
            "answers_unread_at_kills": fake.unread,
            "quota_rpm": args.rpm,
            "quota_429s": model.rejected,
            "latency_ms": args.latency_ms,
            "job_create_p99_ms": _pct(create_ms, 0.99),
            "job_creates": len(create_ms),
            "status_p99_ms": _pct(status_ms, 0.99),
            "status_p50_ms": _pct(status_ms, 0.5),
            "status_polls": len(status_ms),
            "wall_s": round(max(done_at.values()) - started, 1),
            "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
    for sheet, rate in enumerate(per_sheet):
        print(f"sheet {sheet}: {rate} rows/min")
    print(
        f"model calls {figures['model_calls']}, rows/call {figures['rows_per_call']}, "
        f"duplicates {figures['duplicates']} (kills that lost a delivered answer: {figures['kills_with_duplicates']}"
        f" of {kills}; their answers delivered {figures['duplicates_ms_before_a_kill']} ms before the kill), "
        f"wrong or missing rows {wrong}, 429s {model.rejected}"
    )
    print(f"job create p99 {figures['job_create_p99_ms']} ms, status p99 {figures['status_p99_ms']} ms")
    print(json.dumps(figures))
    return 0 if figures["duplicates"] == 0 and wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
