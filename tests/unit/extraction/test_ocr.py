"""Scanned documents are read by OCR (Tesseract) through the same layout and
field code as the text layer: a generated invoice, rendered at 150 dpi with
noise and rotated by 2 degrees, written as an image-only PDF or an image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.core.schema import INVOICE_PRESET
from common.extraction import ocr
from common.extraction.offline import METHOD_OCR, extract_document, extract_pdf
from tests.unit.extraction._pdfs import Text, scanned, text_pdf

pytestmark = pytest.mark.skipif(not ocr.available(), reason="tesseract is not installed (make ocr)")

INVOICE: list[Text] = [
    (50, 60, "Northwind Traders Ltd", 16),
    (50, 80, "12 Harbour Road, Bristol BS1 4DJ", 10),
    (360, 60, "INVOICE", 20),
    (360, 100, "Invoice No.", 11),
    (460, 100, "NW-20931", 11),
    (360, 118, "Invoice date", 11),
    (460, 118, "03/08/2014", 11),
    (50, 160, "Bill to:", 11),
    (50, 176, "Contoso Retail Inc.", 11),
    (50, 260, "Espresso beans 1kg", 11),
    (460, 260, "60.00", 11),
    (360, 320, "Subtotal", 11),
    (460, 320, "60.00", 11),
    (360, 338, "VAT 20%", 11),
    (460, 338, "12.00", 11),
    (360, 360, "Total GBP", 12),
    (460, 360, "72.00", 12),
]


def _row(data: bytes) -> tuple[dict[str, object], str]:
    res = extract_document(data, INVOICE_PRESET, filename="scan")
    return dict(zip(res.columns, res.results[0], strict=True)), res.method


def test_a_scanned_pdf_rotated_by_two_degrees_is_read() -> None:
    row, method = _row(scanned(text_pdf([INVOICE]), angle=2.0))
    assert method == METHOD_OCR
    assert (row["invoice_number"], row["date"], row["total"], row["currency"]) == (
        "NW-20931",
        "2014-08-03",
        72.0,
        "GBP",
    )


def test_the_other_direction_of_skew_is_straightened_too() -> None:
    row, _ = _row(scanned(text_pdf([INVOICE]), angle=-2.5))
    assert row["invoice_number"] == "NW-20931"
    assert row["total"] == 72.0


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG"])
def test_images_are_read_by_ocr(fmt: str) -> None:
    row, method = _row(scanned(text_pdf([INVOICE]), angle=1.0, fmt=fmt))
    assert method == METHOD_OCR
    assert row["invoice_number"] == "NW-20931"


def test_a_page_scanned_upside_down_is_turned_upright() -> None:
    row, _ = _row(scanned(text_pdf([INVOICE]), angle=180.0))
    assert row["invoice_number"] == "NW-20931"


def test_ocr_values_carry_less_confidence_than_the_same_text_layer_values() -> None:
    pdf = text_pdf([INVOICE])
    text = extract_pdf(pdf, INVOICE_PRESET).fields["invoice_number"]
    scan = extract_pdf(scanned(pdf, angle=2.0), INVOICE_PRESET).fields["invoice_number"]
    assert scan.value == text.value
    assert scan.confidence < text.confidence


def test_sluice_extract_reads_a_png_by_ocr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from common.cli import main

    png = tmp_path / "scan.png"
    png.write_bytes(scanned(text_pdf([INVOICE]), angle=1.5, fmt="PNG"))
    assert main(["extract", str(png), "--jsonl", "--fields", "invoice_number,total"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["fields"] == {"invoice_number": "NW-20931", "total": 72.0}
