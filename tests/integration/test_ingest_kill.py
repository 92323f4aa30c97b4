"""``sluice ingest`` killed with SIGKILL mid-way through 300 documents, then run again:
every document's chunks are in the index once (0 lost, 0 duplicated)."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from common.core.chunking import ChunkSettings, chunk_document
from common.extraction.doctext import document_pages

REPO_ROOT = Path(__file__).resolve().parents[2]
N = 300


def _write_docs(folder: Path) -> list[Path]:
    folder.mkdir()
    out = []
    for n in range(N):
        body = "\n\n".join(
            f"## Part {p}\n\n" + " ".join(f"Item {n}-{p}-{i} costs {n * 7 + i} euros." for i in range(25))
            for p in range(4)
        )
        f = folder / f"doc{n:03d}.md"
        f.write_text(f"# Document {n}\n\nReference REF-{n:04d}.\n\n{body}\n")
        out.append(f)
    return out


def _expected_chunk_ids(files: list[Path]) -> set[str]:
    settings = ChunkSettings()  # sluice ingest's defaults: 256 tokens, 32 overlap
    ids: set[str] = set()
    for f in files:
        data = f.read_bytes()
        pages = document_pages(data, name=str(f), mime=None, max_pages=10_000)
        ids |= {c.id for c in chunk_document(hashlib.sha256(data).hexdigest(), pages, settings)}
    return ids


def _indexed(db: Path) -> list[str]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in conn.execute("SELECT chunk_id FROM chunks")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _documents_indexed(db: Path) -> int:
    return len({cid.split("-")[0] for cid in _indexed(db)})


def test_kill_9_mid_ingest_then_the_same_command_loses_and_duplicates_no_chunk(tmp_path: Path) -> None:
    files = _write_docs(tmp_path / "docs")
    expected = _expected_chunk_ids(files)
    cmd = [sys.executable, "-m", "common.cli", "ingest", "docs", "--collection", "kb", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    db = tmp_path / ".sluice" / "search.db"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _documents_indexed(db) < 20 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    at_kill = _documents_indexed(db)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 20 <= at_kill < N, f"the kill must land mid-ingest ({at_kill} documents indexed)"

    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    chunk_ids = _indexed(db)
    duplicates = [c for c, n in Counter(chunk_ids).items() if n > 1]
    assert duplicates == []
    assert expected - set(chunk_ids) == set(), "lost chunks"
    assert set(chunk_ids) == expected
    search = subprocess.run(
        [sys.executable, "-m", "common.cli", "search", "kb", "REF-0299", "-k", "1", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert search.returncode == 0, search.stderr
    assert '"document": "docs/doc299.md"' in search.stdout
