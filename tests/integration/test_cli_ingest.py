"""``sluice ingest`` with a document that cannot be read: the others are ingested and searchable,
the broken one is named on stderr with its reason, and the exit status is 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _sluice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "common.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_document_that_cannot_be_read_fails_alone_and_the_exit_status_says_so(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nReference REF-4242 is in this note.\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a PDF")
    ingest = _sluice("ingest", "docs", "--collection", "kb", "--quiet", cwd=tmp_path)
    assert ingest.returncode == 1, ingest.stderr[-2000:]
    assert "1 documents ingested, 1 failed" in ingest.stdout
    assert "failed: docs/broken.pdf: The PDF is corrupt" in ingest.stderr
    assert "good.md" not in ingest.stderr
    search = _sluice("search", "kb", "REF-4242", "-k", "1", "--json", cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    assert '"document": "docs/good.md"' in search.stdout
