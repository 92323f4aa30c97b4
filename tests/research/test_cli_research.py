"""``sluice research``: real subprocesses (``sluice ingest`` first), the OpenAI-compatible adapter's HTTP
client, and a fake model server in this process that counts how often each sub-question is answered."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.openai_chat import FakeOpenAI, Reply, error
from tests.fakes.research_model import ResearchModel
from tests.research import data
from tests.support import REPO_ROOT

OFFICES = "Where are the company's offices?"
EXPIRY = "When do unused vacation days expire?"
FIVE = [*data.SUBQUESTIONS, OFFICES, EXPIRY]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as f:
        yield f


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


def _sluice(*args: str) -> list[str]:
    return [sys.executable, "-m", "common.cli", *args]


@pytest.fixture
def ingested(tmp_path: Path) -> Path:
    """The handbook collection, ingested by ``sluice ingest`` into tmp_path's data directory."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "handbook.pdf").write_bytes(data.handbook_pdf())
    (docs / "travel.md").write_text(data.TRAVEL)
    cmd = _sluice("ingest", str(docs), "--collection", "handbook", "--max-tokens", "32", "--overlap", "0")
    res = subprocess.run(cmd, cwd=tmp_path, env=_env(None), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return tmp_path


def _research(*extra: str) -> list[str]:
    return _sluice("research", "--collection", "handbook", "What does the handbook say?", *extra)


def test_without_a_text_model_the_command_says_so_in_one_line_and_exits_2(ingested: Path) -> None:
    res = subprocess.run(_research(), cwd=ingested, env=_env(None), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "no text model is configured" in res.stderr and "SLUICE_TEXT_MODEL" in res.stderr


def test_an_unknown_collection_is_a_usage_error(ingested: Path, fake: FakeOpenAI) -> None:
    cmd = _sluice("research", "--collection", "nosuch", "What does it say?")
    res = subprocess.run(cmd, cwd=ingested, env=_env(fake), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no collection 'nosuch'" in res.stderr
    assert fake.requests == []


def test_research_prints_its_phases_and_where_the_report_is(ingested: Path, fake: FakeOpenAI) -> None:
    model = ResearchModel(data.SUBQUESTIONS, fail=[data.EXPENSES])
    fake.default = model
    res = subprocess.run(_research(), cwd=ingested, env=_env(fake), capture_output=True, text=True, timeout=300)

    assert res.returncode == 1, res.stderr  # a sub-question failed; the report was still written
    assert "planning: the model is splitting the question into sub-questions" in res.stderr
    assert "writing the report (2 of 3 sub-questions answered)" in res.stderr
    assert "sub-questions: 2 answered, 1 failed" in res.stdout and f"  failed: {data.EXPENSES}" in res.stdout
    reports = [line.split("report: ", 1)[1] for line in res.stdout.splitlines() if line.startswith("report: ")]
    assert [Path(r).name for r in reports] == ["report.md", "report.pdf"]
    markdown = Path(reports[0]).read_text()
    # sluice ingest names a document by its path.
    sources = markdown.split("## Sources\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert sources == [f"1. {ingested / 'docs/handbook.pdf'}, page 2", f"2. {ingested / 'docs/travel.md'}, page 1"]
    assert f"- {data.EXPENSES} (" in markdown
    assert Path(reports[1]).read_bytes().startswith(b"%PDF")

    again = subprocess.run(_research(), cwd=ingested, env=_env(fake), capture_output=True, text=True, timeout=120)
    assert "answered before (run 1)" in again.stderr and again.stdout == res.stdout
    assert model.plans == 1 and model.reports == 1


def test_kill_9_mid_run_then_the_same_command_resumes_and_answers_each_sub_question_once(
    ingested: Path, fake: FakeOpenAI
) -> None:
    model = ResearchModel(FIVE)
    release = threading.Event()
    lock = threading.Lock()
    state = {"answered": 0, "killed": False}

    def gate(sub: str) -> Reply | None:
        with lock:
            if state["killed"]:
                return None  # the second process: answered
            if state["answered"] < 2:
                state["answered"] += 1
                return None  # the first two sub-questions are answered before the kill
        release.wait(120)  # the others are held until the process is dead ...
        return error(500, "the caller is gone")  # ... and never answered

    model.before_answer = gate
    fake.default = model
    proc = subprocess.Popen(_research(), cwd=ingested, env=_env(fake), stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stderr or []:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        while "2 of 5 sub-questions answered" not in lines.get(timeout=120):
            pass  # both answers are stored (their items completed) before the kill
        with lock:
            state["killed"] = True
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        release.set()
    answered_before = sorted(model.answers)
    assert len(answered_before) == 2 and model.plans == 1 and model.reports == 0

    res = subprocess.run(_research(), cwd=ingested, env=_env(fake), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "resuming run 1" in res.stderr and "sub-questions: 5 answered, 0 failed" in res.stdout
    assert model.plans == 1, "the saved plan was reused"
    assert model.twice() == [], "no sub-question answered twice by the model"
    assert sorted(model.answers) == sorted(FIVE) and model.reports == 1
    for sub in answered_before:
        assert model.asked[sub] == 1, f"{sub!r} was asked again after the kill"
