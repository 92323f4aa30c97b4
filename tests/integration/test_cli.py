"""``sluice run`` and ``sluice extract`` as a user runs them: real processes,
the real offline extractor, the bundled sample invoices."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, SAMPLES

pytestmark = pytest.mark.slow


def sluice(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "common.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_run_exports_xlsx_and_csv_with_a_row_per_sample(tmp_path: Path) -> None:
    res = sluice("run", str(SAMPLES), "--format", "xlsx", "--format", "csv", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = read_csv(tmp_path / "out" / "invoices-run1.csv")
    expected = json.loads((SAMPLES / "expected.json").read_text())
    assert sorted(r["source_file"] for r in rows) == sorted(expected)
    assert (tmp_path / "out" / "invoices-run1.xlsx").stat().st_size > 0
    assert "6/6 documents" in res.stderr


def test_run_output_matches_the_samples_expected_values(tmp_path: Path) -> None:
    res = sluice("run", str(SAMPLES), "--format", "xlsx", "--format", "csv", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    check = subprocess.run(
        [sys.executable, str(REPO_ROOT / "samples" / "check_output.py"), "out", str(SAMPLES / "expected.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout


def test_the_same_command_again_does_not_run_finished_work_twice(tmp_path: Path) -> None:
    args = ("run", str(SAMPLES), "--format", "csv", "--out", "out")
    assert sluice(*args, cwd=tmp_path).returncode == 0
    again = sluice(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already ran on these inputs" in again.stderr
    assert not (tmp_path / "out" / "invoices-run2.csv").exists()
    rerun = sluice(*args, "--rerun", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert len(read_csv(tmp_path / "out" / "invoices-run2.csv")) == 6


def test_a_missing_path_is_one_clear_usage_error_line(tmp_path: Path) -> None:
    res = sluice("run", "nowhere.pdf", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["sluice: error: nowhere.pdf: no such file or folder"]


def test_an_unknown_preset_is_refused(tmp_path: Path) -> None:
    res = sluice("run", str(SAMPLES), "--preset", "receipts", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "sluice: error: --preset: unknown preset 'receipts'; known presets: invoice"
    ]


def test_an_unreadable_file_fails_its_task_not_the_run_and_the_exit_status_says_so(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.pdf").write_bytes((SAMPLES / "uk_invoice.pdf").read_bytes())
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog")
    res = sluice("run", str(docs), "--format", "csv", "--out", "out", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert "1 of 2 files failed" in res.stderr
    rows = read_csv(tmp_path / "out" / "docs-run1.csv")
    assert [r["source_file"] for r in rows] == ["good.pdf"]


def test_extract_prints_one_json_object_per_document(tmp_path: Path) -> None:
    res = sluice(
        "extract", *sorted(str(p) for p in SAMPLES.glob("*.pdf")), "--preset", "invoice", "--jsonl", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert set(line["fields"]) == {"invoice_number", "date", "total", "currency", "seller", "buyer"}
        assert line["file"].endswith(".pdf")


def test_extract_reports_a_bad_file_and_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "empty.pdf"
    bad.write_bytes(b"")
    res = sluice("extract", str(bad), "--jsonl", cwd=tmp_path)
    assert res.returncode == 1
    (line,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert line["file"] == str(bad) and "error" in line


# -- crash and resume -------------------------------------------------------------


def _make_invoices(folder: Path, n: int) -> None:
    sys.path.insert(0, str(REPO_ROOT / "samples"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    folder.mkdir()
    for i in range(n):
        inv = replace(generate.UK_INVOICE, file_name=f"inv{i:03d}.pdf", number=f"HF-{20000 + i}")
        generate.render(inv, folder / inv.file_name)


def _completed_tasks(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT COUNT(*) FROM doc_tasks WHERE json_extract(data, '$.status') = 'completed'"
        ).fetchone()
        return int(row[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_kill_9_mid_run_then_the_same_command_resumes_and_exports_each_document_once(tmp_path: Path) -> None:
    n = 60
    _make_invoices(tmp_path / "docs", n)
    cmd = [sys.executable, "-m", "common.cli", "run", "docs", "--format", "csv", "--out", "out", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = tmp_path / ".sluice" / "state.db"
    deadline = time.monotonic() + 60
    while _completed_tasks(db) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    done_at_kill = _completed_tasks(db)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 5 <= done_at_kill < n, f"the kill must land mid-run (completed={done_at_kill})"
    assert not (tmp_path / "out").exists()

    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_csv(tmp_path / "out" / "docs-run1.csv")
    names = [r["source_file"] for r in rows]
    assert sorted(names) == [f"inv{i:03d}.pdf" for i in range(n)], "every document exactly once"
    assert sorted(r["invoice_number"] for r in rows) == [f"HF-{20000 + i}" for i in range(n)]


def test_run_with_user_fields_exports_those_columns(tmp_path: Path) -> None:
    res = sluice(
        "run",
        str(SAMPLES / "uk_invoice.pdf"),
        "--fields",
        "invoice_number,total",
        "--format",
        "csv",
        "--out",
        "out",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    (row,) = read_csv(tmp_path / "out" / "uk_invoice-run1.csv")
    assert list(row) == ["invoice_number", "total", "source_file", "page", "duplicate_of"]
    assert (row["invoice_number"], float(row["total"])) == ("HF-10482", 1999.8)


def test_export_writes_a_completed_run_again_in_another_format_and_names_the_file(tmp_path: Path) -> None:
    res = sluice("run", str(SAMPLES), "--format", "xlsx", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run_id = next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("run: "))
    exp = sluice("export", run_id, "--format", "csv", "--out", "again", cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr
    (csv_file,) = (tmp_path / "again").glob("*.csv")
    assert csv_file.name == "invoices-run1.csv"
    assert len(read_csv(csv_file)) == 6
    assert exp.stdout.splitlines()[0] == "again/invoices-run1.csv  (6 rows)"
    assert "url:" not in exp.stdout, "no server serves the link while the CLI holds the data directory"


def test_export_of_an_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    assert sluice("run", str(SAMPLES / "uk_invoice.pdf"), "--format", "csv", cwd=tmp_path).returncode == 0
    res = sluice("export", "run_nope", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == "sluice: error: run run_nope not found (sluice runs lists the runs)"
