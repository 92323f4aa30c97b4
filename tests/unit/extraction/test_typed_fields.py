"""Typed custom fields: values are normalised for their type, invalid ones are
rejected, and the type guides the search (generated documents)."""

from __future__ import annotations

from common.core.schema import fields_from_names
from common.extraction.offline import extract_pdf
from tests.unit.extraction._pdfs import Text, text_pdf

PAGE: list[Text] = [
    (50, 60, "Brasserie du Port SARL", 14),
    (50, 78, "TVA intracommunautaire : FR 40 303 265 045", 9),
    (360, 60, "FACTURE", 16),
    (360, 90, "Facture n° F-2022-118", 10),
    (360, 105, "Date : 03/01/2022", 10),
    (360, 120, "Due date: Jan 31, 2022", 10),
    (360, 135, "Order No.: PO-55812", 10),
    (50, 160, "Client : Contoso SAS", 10),
    (50, 175, "Your VAT no.: DE 811 907 980", 9),
    (50, 260, "Total TTC 1 200,00 EUR", 11),
    (50, 700, "IBAN : FR76 3000 4000 0312 3456 7890 143 - BIC : BREDFRPP", 9),
    (50, 715, "contact: Compta@Brasserie-Port.fr  Tel. +33 (0)4 91 55 12 34", 9),
]


def _row(names: str, page: list[Text] = PAGE) -> dict[str, object]:
    res = extract_pdf(text_pdf([page]), fields_from_names(names.split(",")))
    return dict(zip(res.columns, res.results[0], strict=True))


def test_due_date_is_an_iso_date_read_next_to_its_label() -> None:
    assert _row("due_date")["due_date"] == "2022-01-31"


def test_iban_stops_at_its_registered_length_and_drops_the_junk_after_it() -> None:
    assert _row("iban")["iban"] == "FR7630004000031234567890143"


def test_iban_that_fails_mod97_is_null_not_a_wrong_value() -> None:
    page = [
        t if not t[2].startswith("IBAN") else (50, 700, "IBAN : FR76 3000 4000 0312 3456 7890 144", 9) for t in PAGE
    ]
    assert _row("iban", page)["iban"] is None


def test_bic_is_read_after_its_own_label() -> None:
    assert _row("bic")["bic"] == "BREDFRPP"


def test_vat_id_is_the_sellers_not_the_one_labelled_as_the_customers() -> None:
    assert _row("vat_id")["vat_id"] == "FR40303265045"


def test_vat_id_alias_takes_the_type_and_compacts_the_value() -> None:
    assert _row("vat_number")["vat_number"] == "FR40303265045"


def test_order_number_alias_finds_the_order_label() -> None:
    assert _row("po_number")["po_number"] == "PO-55812"


def test_email_and_phone_are_normalised() -> None:
    row = _row("email,phone")
    assert row["email"] == "Compta@brasserie-port.fr"
    assert row["phone"] == "+33491551234"


def test_explicit_enum_type_takes_one_of_its_choices() -> None:
    page = [*PAGE, (360, 150, "Status: PAID", 10)]
    assert _row("status:enum=paid|open", page)["status"] == "paid"


def test_a_date_typed_field_rejects_a_word_printed_after_its_label() -> None:
    page = [t for t in PAGE if not t[2].startswith("Due date")] + [(360, 120, "Due date: Reference", 10)]
    assert _row("due_date", page)["due_date"] is None


def test_a_due_date_stated_in_a_sentence_is_found_and_a_discount_date_is_not_taken() -> None:
    page: list[Text] = [
        (50, 60, "Muster GmbH", 12),
        (50, 90, "Rechnung Nr. 4711", 10),
        (50, 400, "Zahlbar mit 2% Skonto bis 14.11.2018, ohne Abzug zahlbar bis 20.11.2018.", 9),
    ]
    assert _row("due_date", page)["due_date"] == "2018-11-20"


def test_a_vat_id_after_a_short_vat_word_is_found_by_its_shape() -> None:
    page: list[Text] = [(50, 60, "Shop B.V.", 12), (50, 80, "BTW NL810433941B01", 9), (50, 100, "Order 123", 9)]
    assert _row("vat_id", page)["vat_id"] == "NL810433941B01"
