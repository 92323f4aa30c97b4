"""Property-based fuzzing of the API against its own OpenAPI document, on a real
``sluice serve`` (scripts/schemathesis_serve.py): no 5xx, no response that
breaks the schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_server_error_and_no_schema_violation() -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "schemathesis_serve.py"), "--max-examples", "5"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    m = re.search(r"(\d+) generated, (\d+) passed", res.stdout)
    assert m is not None, res.stdout[-2000:]
    generated, passed = int(m.group(1)), int(m.group(2))
    assert generated > 100 and passed == generated
