"""End-to-end on crafted PDFs: English, German and French layouts, user
schemas and line items (reportlab generates the documents)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.core.schema import INVOICE_PRESET, FieldSpec, FieldType
from common.extraction.offline import extract_pdf
from tests.unit.extraction._pdfs import Text, text_pdf

Pages = list[list[Text]]

EN: Pages = [
    [
        (50, 60, "Northwind Traders Ltd", 16),
        (50, 80, "12 Harbour Road, Bristol BS1 4DJ", 9),
        (360, 60, "INVOICE", 18),
        (360, 90, "Invoice #", 10),
        (460, 90, "NW-20931", 10),
        (360, 105, "Invoice date", 10),
        (460, 105, "Aug 3, 2014", 10),
        (360, 120, "Due date", 10),
        (460, 120, "Sep 2, 2014", 10),
        (50, 150, "Bill to:", 10),
        (50, 165, "Contoso Retail Inc.", 10),
        (50, 180, "1 Main Street", 10),
        (50, 230, "Description", 10),
        (300, 230, "Qty", 10),
        (370, 230, "Unit price", 10),
        (490, 230, "Amount", 10),
        (50, 250, "Espresso beans 1kg", 10),
        (305, 250, "3", 10),
        (380, 250, "$20.00", 10),
        (495, 250, "$60.00", 10),
        (50, 265, "Paper cups (100)", 10),
        (305, 265, "2", 10),
        (385, 265, "$4.50", 10),
        (500, 265, "$9.00", 10),
        (370, 300, "Subtotal", 10),
        (495, 300, "$69.00", 10),
        (370, 315, "Sales tax 10%", 10),
        (500, 315, "$6.90", 10),
        (370, 330, "Balance due", 10),
        (495, 330, "$75.90", 10),
        (50, 400, "Order number: PO-7781", 10),
    ]
]

DE: Pages = [
    [
        (50, 50, "Kessler Werkzeuge GmbH · Am Hang 3 · 70173 Stuttgart", 7),
        (50, 90, "Brauerei Haldenwang KG", 10),
        (50, 103, "Talweg 9", 10),
        (50, 116, "88410 Bad Wurzach", 10),
        (350, 90, "Rechnungsnummer:", 10),
        (460, 90, "RE-2025-1187", 10),
        (350, 103, "Rechnungsdatum:", 10),
        (460, 103, "3. März 2025", 10),
        (350, 116, "Lieferdatum:", 10),
        (460, 116, "28.02.2025", 10),
        (50, 200, "Pos.", 9),
        (90, 200, "Bezeichnung", 9),
        (330, 200, "Menge", 9),
        (400, 200, "Einzelpreis", 9),
        (490, 200, "Gesamt", 9),
        (50, 215, "1", 9),
        (90, 215, "Drehmomentschlüssel", 9),
        (340, 215, "2", 9),
        (405, 215, "1.234,50", 9),
        (490, 215, "2.469,00", 9),
        (330, 260, "Nettobetrag", 9),
        (490, 260, "2.469,00 €", 9),
        (330, 275, "MwSt. 19 %", 9),
        (495, 275, "469,11 €", 9),
        (330, 290, "Gesamtbetrag", 9),
        (490, 290, "2.938,11 €", 9),
    ]
]

FR: Pages = [
    [
        (50, 60, "Atelier Lumen SARL", 14),
        (350, 80, "Facture n°", 10),
        (450, 80, "F2026-0042", 10),
        (350, 95, "Date :", 10),
        (450, 95, "12/01/2026", 10),
        (50, 150, "Client", 10),
        (50, 163, "Maison Verbois SAS", 10),
        (300, 300, "Total HT", 10),
        (450, 300, "4 490,00 €", 10),
        (300, 315, "TVA 20 %", 10),
        (450, 315, "898,00 €", 10),
        (300, 330, "Total TTC", 10),
        (450, 330, "5 388,00 €", 10),
    ]
]


def _row(pages: Sequence[Sequence[Text]], specs: tuple[FieldSpec, ...] = INVOICE_PRESET) -> dict[str, Any]:
    res = extract_pdf(text_pdf(pages), specs)
    assert res.method == "offline-text"
    return dict(zip(res.columns, res.results[0], strict=True))


def test_english_invoice() -> None:
    assert _row(EN) == {
        "invoice_number": "NW-20931",
        "date": "2014-08-03",
        "total": 75.9,
        "currency": "USD",
        "seller": "Northwind Traders Ltd",
        "buyer": "Contoso Retail Inc.",
    }


def test_german_invoice() -> None:
    row = _row(DE)
    assert row == {
        "invoice_number": "RE-2025-1187",
        "date": "2025-03-03",
        "total": 2938.11,
        "currency": "EUR",
        "seller": "Kessler Werkzeuge GmbH",
        "buyer": row["buyer"],  # no buyer label on this page: not asserted
    }


def test_french_invoice() -> None:
    assert _row(FR) == {
        "invoice_number": "F2026-0042",
        "date": "2026-01-12",
        "total": 5388.0,
        "currency": "EUR",
        "seller": "Atelier Lumen SARL",
        "buyer": "Maison Verbois SAS",
    }


def test_fields_carry_confidence_page_and_snippet() -> None:
    res = extract_pdf(text_pdf(EN), INVOICE_PRESET)
    fv = res.fields["invoice_number"]
    assert fv.page == 1 and 0.0 < fv.confidence <= 1.0 and fv.snippet and "NW-20931" in fv.snippet
    assert res.pages == 1


def test_user_schema_generic_fields() -> None:
    specs = (
        FieldSpec(name="order_number", description="Order number"),
        FieldSpec(name="due_date", type=FieldType.DATE),
        FieldSpec(name="vat_id"),
    )
    assert _row(EN, specs) == {"order_number": "PO-7781", "due_date": "2014-09-02", "vat_id": None}


def test_line_items_one_row_per_item() -> None:
    specs = (
        FieldSpec(name="invoice_number"),
        FieldSpec(name="description"),
        FieldSpec(name="quantity", type=FieldType.NUMBER),
        FieldSpec(name="unit_price", type=FieldType.NUMBER),
        FieldSpec(name="amount", type=FieldType.NUMBER),
    )
    res = extract_pdf(text_pdf(EN), specs)
    assert res.results == [
        ["NW-20931", "Espresso beans 1kg", 3.0, 20.0, 60.0],
        ["NW-20931", "Paper cups (100)", 2.0, 4.5, 9.0],
    ]
    assert res.row_pages == [1, 1]


def test_german_line_items() -> None:
    specs = (
        FieldSpec(name="description"),
        FieldSpec(name="quantity", type=FieldType.NUMBER),
        FieldSpec(name="amount", type=FieldType.NUMBER),
    )
    res = extract_pdf(text_pdf(DE), specs)
    assert res.results == [["Drehmomentschlüssel", 2.0, 2469.0]]


def test_document_level_schema_gives_one_row() -> None:
    res = extract_pdf(text_pdf(EN), INVOICE_PRESET)
    assert len(res.results) == 1 and res.columns == [f.name for f in INVOICE_PRESET]
