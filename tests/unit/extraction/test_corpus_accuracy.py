"""Accuracy of the offline extractor over the development corpus (../shared/corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.core.schema import INVOICE_PRESET
from common.extraction.offline import extract_pdf

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
DOCS = SHARED / "corpus" / "docs"
TRUTH = SHARED / "corpus" / "truth"
CORE = ("invoice_number", "date", "total", "currency")


def _correct(field: str, got: object, want: object) -> bool:
    if got is None:
        return False
    if field == "total":
        return abs(float(got) - float(want)) <= 0.01  # type: ignore[arg-type]
    return " ".join(str(got).split()).casefold() == " ".join(str(want).split()).casefold()


@pytest.fixture(scope="module")
def scores() -> dict[str, list[bool]]:
    if not DOCS.is_dir() or not TRUTH.is_dir():
        pytest.skip(f"corpus not found at {DOCS} (the repo's sibling shared/ folder)")
    out: dict[str, list[bool]] = {f: [] for f in CORE}
    for pdf in sorted(DOCS.glob("*.pdf")):
        truth = json.loads((TRUTH / f"{pdf.stem}.json").read_text())
        res = extract_pdf(pdf.read_bytes(), INVOICE_PRESET, filename=pdf.name)
        row = dict(zip(res.columns, res.results[0], strict=True))
        for f in CORE:
            if truth.get(f) is not None:
                out[f].append(_correct(f, row[f], truth[f]))
    return out


@pytest.mark.parametrize("field", CORE)
def test_core_field_accuracy_at_least_90_percent(scores: dict[str, list[bool]], field: str) -> None:
    results = scores[field]
    assert len(results) >= 80
    assert sum(results) / len(results) >= 0.90, f"{field}: {sum(results)}/{len(results)}"
