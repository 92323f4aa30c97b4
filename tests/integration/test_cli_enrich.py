"""``sluice enrich``: a real subprocess, the OpenAI-compatible adapter's HTTP client, a fake model server
(in this process) that counts how often each row is answered."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.adapters.local.table_files import output_path
from tests.fakes.openai_chat import ChatRequest, FakeOpenAI, Reply, RowModel
from tests.support import REPO_ROOT

ROWS = 120


def _csv(directory: Path, rows: int = ROWS) -> Path:
    src = directory / "products.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "price"])
        for i in range(rows):
            w.writerow([f"bread {i}" if i % 2 else f"hammer {i}", i])
    return src


def _answer(number: int, text: str) -> dict[str, Any]:
    return {"category": "food" if "bread" in text else "tools", "summary": f"s{number}"}


def _expected(rows: int = ROWS) -> dict[int, str]:
    return {n: ("food" if (n - 2) % 2 else "tools") for n in range(2, rows + 2)}


def _written(src: Path) -> dict[int, str]:
    with open(output_path(src), newline="") as f:
        return {i + 2: r["category"] for i, r in enumerate(csv.DictReader(f))}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as f:
        yield f


def _cmd(src: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "common.cli",
        "enrich",
        str(src),
        "--prompt",
        "Product: {name} at {price}",
        "--output",
        "category:enum[food,tools]",
        "--output",
        "summary:text",
        "--rows-per-call",
        "5",
        "--rows-per-item",
        "40",
        *extra,
    ]


def _env(fake: FakeOpenAI | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for name in [k for k in env if k.startswith("SLUICE_")]:
        env.pop(name)
    if fake is not None:
        env.update(
            SLUICE_TEXT_MODEL="openai",
            SLUICE_OPENAI_BASE_URL=fake.base_url,
            SLUICE_OPENAI_MODEL="fake",
            SLUICE_OPENAI_RPM="100000",
        )
    return env


def test_without_a_text_model_the_command_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    src = _csv(tmp_path, rows=3)
    res = subprocess.run(_cmd(src), cwd=tmp_path, env=_env(None), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no text model is configured" in lines[0] and "SLUICE_TEXT_MODEL" in lines[0]
    assert not output_path(src).exists()


def test_a_prompt_naming_no_column_is_a_usage_error_before_anything_runs(tmp_path: Path, fake: FakeOpenAI) -> None:
    src = _csv(tmp_path, rows=3)
    cmd = _cmd(src)
    cmd[cmd.index("--prompt") + 1] = "Colour: {colour}"
    res = subprocess.run(cmd, cwd=tmp_path, env=_env(fake), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "{colour}" in res.stderr and "name, price" in res.stderr
    assert fake.requests == []


def test_enrich_fills_every_row_shows_rows_and_is_listed_by_sluice_runs(tmp_path: Path, fake: FakeOpenAI) -> None:
    src = _csv(tmp_path, rows=30)
    model = RowModel(_answer)
    fake.default = model
    res = subprocess.run(_cmd(src), cwd=tmp_path, env=_env(fake), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "30 written, 0 failed" in res.stdout and str(output_path(src)) in res.stdout
    assert "30/30 rows" in res.stderr  # the progress bar counts rows
    assert _written(src) == _expected(30)
    runs = subprocess.run(
        [sys.executable, "-m", "common.cli", "runs", "--json"], cwd=tmp_path, env=_env(fake), capture_output=True
    )
    assert b'"enrich"' in runs.stdout and b"completed" in runs.stdout
    # Run again: the job is found again and its run is done; nothing is asked of the model.
    calls = model.calls
    again = subprocess.run(_cmd(src), cwd=tmp_path, env=_env(fake), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert model.calls == calls and "0 written" in again.stdout and "30 skipped" in again.stdout


def test_kill_9_mid_run_then_the_same_command_writes_every_row_once_and_asks_no_row_twice(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    src = _csv(tmp_path)
    model = RowModel(_answer)
    holder: dict[str, subprocess.Popen[bytes]] = {}
    seen = {"n": 0}
    lock = threading.Lock()

    def responder(req: ChatRequest) -> Reply:
        with lock:
            seen["n"] += 1
            kill_now = seen["n"] == 9
        if kill_now:
            # The worker dies while its ninth call is with the model: the fake finds the caller gone
            # and never sends that answer, so it is not counted as given.
            proc = holder["proc"]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        return model(req)

    fake.default = responder
    # One range (one item): calls are sequential, so the ninth call is the only one in flight at the kill.
    # --overwrite: filled rows are not skipped, so only the checkpoint keeps written rows from the model.
    cmd = _cmd(src, "--rows-per-item", str(ROWS), "--rows-per-write", "5", "--overwrite")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(fake), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    holder["proc"] = proc
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    answered_before = dict(model.answered)
    assert len(answered_before) == 8 * 5  # eight calls of five rows answered before the kill
    assert fake.dropped == 1  # the ninth: computed, never delivered
    assert 0 < len([v for v in _written(src).values() if v]) < ROWS

    res = subprocess.run(cmd, cwd=tmp_path, env=_env(fake), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "resuming run 1" in res.stderr
    assert _written(src) == _expected(), "every row written, with its own answer"
    assert model.twice() == [], "no row answered twice by the model"
    assert sorted(model.answered) == list(range(2, ROWS + 2))
