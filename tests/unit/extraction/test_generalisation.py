"""Core fields by reasoning that holds for any invoice: the document's type,
arithmetic consistency of the totals, the role of each date, and confidences
that rank wrong values below right ones (generated documents)."""

from __future__ import annotations

from common.core.schema import INVOICE_PRESET, FieldValue
from common.extraction.offline import extract_pdf
from tests.unit.extraction._pdfs import Text, text_pdf


def _extract(page: list[Text]) -> dict[str, object]:
    res = extract_pdf(text_pdf([page]), INVOICE_PRESET)
    return dict(zip(res.columns, res.results[0], strict=True))


def _fields(page: list[Text]) -> dict[str, FieldValue]:
    return extract_pdf(text_pdf([page]), INVOICE_PRESET).fields


CREDIT_NOTE: list[Text] = [
    (50, 50, "Hansen Bürobedarf GmbH", 12),
    (50, 66, "Am Markt 3, 20095 Hamburg", 9),
    (50, 120, "GUTSCHRIFT", 18),
    (50, 150, "Rechnungsnummer: R-2023-0815", 10),
    (50, 165, "Gutschrift-Nr.: G-2023-0042", 10),
    (50, 180, "Datum: 14.03.2023", 10),
    (50, 220, "Gutschrift zur Rechnung R-2023-0815 vom 01.03.2023", 10),
    (50, 260, "Rücksendung Toner", 10),
    (450, 260, "100,00", 10),
    (50, 300, "Gesamtbetrag EUR 119,00", 11),
]


def test_a_credit_note_takes_its_own_number_not_the_invoice_it_refers_to() -> None:
    assert _extract(CREDIT_NOTE)["invoice_number"] == "G-2023-0042"


def test_an_invoice_number_label_in_a_reference_phrase_loses_to_the_documents_own() -> None:
    page: list[Text] = [
        (50, 50, "Credit note", 18),
        (50, 90, "Credit note no. CN-881", 10),
        (50, 105, "Date: 2023-05-02", 10),
        (50, 140, "This credit note refers to invoice no. INV-77120", 10),
        (50, 200, "Total 50.00 USD", 10),
    ]
    assert _extract(page)["invoice_number"] == "CN-881"


NET_TOTAL_FIRST: list[Text] = [
    (50, 50, "Acme Supplies Ltd", 12),
    (350, 50, "INVOICE", 18),
    (350, 80, "Invoice No.: A-1009", 10),
    (350, 95, "Invoice date: 2023-06-01", 10),
    (50, 300, "Subtotal", 10),
    (450, 300, "200.00", 10),
    (50, 315, "VAT 19%", 10),
    (450, 315, "38.00", 10),
    (50, 330, "Total", 10),
    (450, 330, "200.00", 10),
    (50, 360, "Amount payable", 10),
    (450, 360, "238.00 EUR", 10),
]


def test_the_total_is_the_amount_where_net_plus_tax_adds_up() -> None:
    assert _extract(NET_TOTAL_FIRST)["total"] == 238.0


def test_without_any_total_label_the_printed_net_plus_tax_is_found() -> None:
    page: list[Text] = [
        (50, 50, "Musterversicherung AG", 12),
        (350, 80, "Rechnung Nr. V-55", 10),
        (350, 95, "Datum 01.02.2023", 10),
        (50, 300, "Nettobeitrag", 10),
        (450, 300, "100,00 EUR", 10),
        (50, 315, "Versicherungsteuer", 10),
        (450, 315, "19,00 EUR", 10),
        (50, 340, "Ihr Beitrag für 2023", 10),
        (450, 340, "119,00 EUR", 10),
    ]
    assert _extract(page)["total"] == 119.0


def test_a_total_that_does_not_add_up_scores_lower_than_one_that_does() -> None:
    wrong = [t if t[2] != "38.00" else (450.0, 315.0, "40.00", 10.0) for t in NET_TOTAL_FIRST]
    assert _fields(NET_TOTAL_FIRST)["total"].confidence >= 0.8
    assert _fields(wrong)["total"].confidence <= 0.55


def test_the_letter_date_in_the_header_beats_a_date_column_of_the_items() -> None:
    page: list[Text] = [
        (50, 50, "Hansen Bürobedarf GmbH", 12),
        (350, 60, "Hamburg, 31.03.2023", 10),
        (50, 120, "RECHNUNG", 18),
        (50, 150, "Rechnungsnummer: R-2023-0815", 10),
        (50, 400, "Datum", 10),
        (150, 400, "Leistung", 10),
        (450, 400, "Betrag", 10),
        (50, 415, "01.03.2023", 10),
        (150, 415, "Wartung", 10),
        (450, 415, "100,00", 10),
        (50, 460, "Gesamtbetrag EUR 119,00", 11),
    ]
    assert _extract(page)["date"] == "2023-03-31"


def test_a_weakly_labelled_date_that_is_printed_as_the_due_date_loses_to_another() -> None:
    page: list[Text] = [
        (50, 50, "Remittance slip", 9),
        (50, 62, "Date: 2023-07-01", 9),
        (300, 62, "Payment due: 2023-07-01", 9),
        (50, 150, "Acme Supplies Ltd", 12),
        (350, 180, "Invoice No.: A-1010", 10),
        (350, 195, "Date: 2023-06-01", 10),
        (50, 600, "Total 10.00 USD", 10),
    ]
    assert _extract(page)["date"] == "2023-06-01"
