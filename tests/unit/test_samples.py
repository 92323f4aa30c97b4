"""The committed sample invoices are reproducible and carry a usable text layer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "invoices"
EXPECTED = json.loads((SAMPLES / "expected.json").read_text(encoding="utf-8"))
PDF_NAMES = sorted(p.name for p in SAMPLES.glob("*.pdf"))

# The grand total as each document prints it, written out by hand.
PRINTED_TOTALS = {
    "us_saas_invoice.pdf": "$1,756.94",
    "de_rechnung.pdf": "2.817,92 €",
    "fr_facture.pdf": "5 388,00 €",  # Total TTC; the deposit makes Net à payer 3 888,00 €
    "uk_invoice.pdf": "£1,999.80",
    "us_credit_note.pdf": "-$693.38",
    "ie_invoice_two_pages.pdf": "€3,980.53",
}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    subprocess.run(
        [sys.executable, str(ROOT / "samples" / "generate.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def _text(name: str) -> list[str]:
    return [page.extract_text() for page in PdfReader(SAMPLES / name).pages]


def test_expected_json_lists_exactly_the_committed_pdfs() -> None:
    assert sorted(EXPECTED) == PDF_NAMES
    assert len(PDF_NAMES) == 6


def test_regeneration_writes_the_same_set_of_files(regenerated: Path) -> None:
    committed = sorted(p.name for p in SAMPLES.iterdir() if p.is_file())
    fresh = sorted(p.name for p in regenerated.iterdir())
    assert fresh == committed


@pytest.mark.parametrize("name", PDF_NAMES)
def test_regenerated_pdf_is_byte_identical(regenerated: Path, name: str) -> None:
    assert (regenerated / name).read_bytes() == (SAMPLES / name).read_bytes()


def test_regenerated_expected_json_is_identical(regenerated: Path) -> None:
    fresh = (regenerated / "expected.json").read_bytes()
    assert fresh == (SAMPLES / "expected.json").read_bytes()


@pytest.mark.parametrize("name", PDF_NAMES)
def test_text_layer_contains_invoice_number(name: str) -> None:
    assert EXPECTED[name]["invoice_number"] in "\n".join(_text(name))


@pytest.mark.parametrize("name", PDF_NAMES)
def test_text_layer_contains_printed_total(name: str) -> None:
    assert PRINTED_TOTALS[name] in "\n".join(_text(name))


def test_printed_totals_agree_with_expected_json() -> None:
    for name, printed in PRINTED_TOTALS.items():
        digits = printed.replace("€", "").replace("$", "").replace("£", "").strip()
        if "," in digits[-3:]:  # 1.234,56 or 1 234,56
            digits = digits.replace(".", "").replace(" ", "").replace(",", ".")
        amount = float(digits.replace(",", ""))
        assert amount == EXPECTED[name]["total"], name


def test_two_page_invoice_prints_its_total_on_page_two_only() -> None:
    pages = _text("ie_invoice_two_pages.pdf")
    assert len(pages) == 2
    total = PRINTED_TOTALS["ie_invoice_two_pages.pdf"]
    assert total not in pages[0]
    assert total in pages[1]


def test_credit_note_total_is_negative() -> None:
    assert EXPECTED["us_credit_note.pdf"]["total"] < 0
