"""``sluice fields`` and the warning for field names Sluice has no strategy for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.cli import main
from tests.unit.extraction._pdfs import text_pdf


def test_fields_lists_presets_types_and_synonyms(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fields", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "invoice_number" in data["presets"]["invoice"]
    assert "iban" in data["types"]
    due = next(f for f in data["fields"] if f["name"] == "due_date")
    assert due["type"] == "date"
    assert "Fälligkeitsdatum" in due["synonyms"]


def test_extract_warns_about_an_unknown_field_name_but_not_a_known_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(text_pdf([[(50, 60, "Invoice No. 12", 10), (50, 80, "Due date: 2022-01-31", 10)]]))
    assert main(["extract", str(pdf), "--fields", "due_date,flux_capacitor", "--jsonl"]) == 0
    out = capsys.readouterr()
    assert "flux_capacitor" in out.err
    assert "due_date" not in out.err
    assert json.loads(out.out.strip().splitlines()[-1])["fields"]["due_date"] == "2022-01-31"
