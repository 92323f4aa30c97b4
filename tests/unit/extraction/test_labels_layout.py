"""Layout grouping and label/value search on synthetic pages (no PDF library)."""

from __future__ import annotations

from common.core.schema import INVOICE_PRESET, FieldSpec, FieldType
from common.extraction import labels as L
from common.extraction.fields import extract_fields
from common.extraction.layout import SOFT_SPACE, Char, Document, Word, build_document, build_words


def _doc(rows: list[tuple[float, float, str]], size: float = 10.0) -> Document:
    """Words from (x, y, text): each space-separated token becomes a word,
    laid out with a plain 0.55 em per character advance."""
    words: list[Word] = []
    for x, y, text in rows:
        cx = x
        for tok in text.split(" "):
            w = len(tok) * 0.55 * size
            words.append(Word(tok, cx, y, cx + w, y + size * 1.2, 1))
            cx += w + 0.3 * size
    return build_document([(595.0, 842.0, words)])


def _values(doc: Document, specs: tuple[FieldSpec, ...] = INVOICE_PRESET) -> dict[str, object]:
    return {k: (v.value if v is not None else None) for k, v in extract_fields(doc, specs).items()}


def test_words_split_at_spaces_and_wide_gaps() -> None:
    chars = [
        Char("A", 0, 0, 5, 10),
        Char("B", 5, 0, 10, 10),
        Char(" ", 0, 0, 0, 0),
        Char("C", 14, 0, 19, 10),
        Char("D", 40, 0, 45, 10),
    ]
    assert [w.text for w in build_words(chars, 1)] == ["AB", "C", "D"]


def test_generated_space_inside_a_kerned_word_is_dropped() -> None:
    chars = [Char("k", 0, 0, 5, 10), Char("o", 5, 0, 10, 10), Char(SOFT_SPACE, 0, 0, 0, 0), Char("r", 10.5, 0, 15, 10)]
    assert [w.text for w in build_words(chars, 1)] == ["kor"]


def test_lines_and_segments() -> None:
    doc = _doc([(50, 100, "Invoice No: 123"), (400, 101, "Page 1")])
    (line,) = doc.lines
    assert [s.text for s in line.segments] == ["Invoice No: 123", "Page 1"]


def test_label_value_on_same_line() -> None:
    doc = _doc([(50, 100, "Invoice No.: INV-2024-001")])
    assert _values(doc)["invoice_number"] == "INV-2024-001"


def test_label_value_in_next_column() -> None:
    doc = _doc([(300, 100, "Rechnungsnummer"), (480, 100, "R-4711")])
    assert _values(doc)["invoice_number"] == "R-4711"


def test_label_value_below_label() -> None:
    doc = _doc([(50, 100, "Invoice Date:"), (250, 100, "Due Date:"), (50, 115, "03/20/2023"), (250, 115, "04/04/2023")])
    assert _values(doc)["date"] == "2023-03-20"


def test_customer_number_is_not_the_invoice_number() -> None:
    doc = _doc([(50, 100, "Kunden-Nr.: 009420"), (50, 120, "Rechnungs-Nr.: RE-77")])
    assert _values(doc)["invoice_number"] == "RE-77"


def test_due_date_is_not_the_invoice_date() -> None:
    doc = _doc([(50, 100, "Due date: 2024-02-01"), (50, 120, "Date: 2024-01-02")])
    assert _values(doc)["date"] == "2024-01-02"


def test_invoice_date_after_number_with_vom() -> None:
    doc = _doc([(50, 100, "Rechnung Nr. 4711 vom 3. März 2017")])
    values = _values(doc)
    assert (values["invoice_number"], values["date"]) == ("4711", "2017-03-03")


def test_total_prefers_gross_total_over_net_and_tax() -> None:
    doc = _doc(
        [
            (300, 500, "Total HT"),
            (480, 500, "46,68 €"),
            (300, 515, "TVA 20%"),
            (480, 515, "9,34 €"),
            (300, 530, "Total TTC"),
            (480, 530, "56,02 €"),
        ]
    )
    values = _values(doc)
    assert (values["total"], values["currency"]) == (56.02, "EUR")


def test_total_ignores_subtotal_and_percentages() -> None:
    doc = _doc([(300, 500, "Subtotal: $262.90"), (300, 515, "Tax 15%: $16.94"), (300, 530, "Total: $279.84")])
    assert _values(doc)["total"] == 279.84


def test_credit_note_total_is_negative() -> None:
    doc = _doc([(300, 500, "Total credit"), (480, 500, "-$693.38")])
    assert _values(doc)["total"] == -693.38


def test_amount_due_field_prefers_due_labels() -> None:
    doc = _doc(
        [(300, 500, "Bruttosumme 671,15"), (300, 515, "Erhaltene Anzahlungen -201,00"), (300, 530, "Zahlbetrag 470,15")]
    )
    specs = (FieldSpec(name="total", type=FieldType.NUMBER), FieldSpec(name="amount_due", type=FieldType.NUMBER))
    assert _values(doc, specs) == {"total": 671.15, "amount_due": 470.15}


def test_currency_from_label() -> None:
    doc = _doc([(50, 100, "Rechnungswährung : GBP"), (50, 115, "Währung der Umsatzsteuerbuchung : EUR")])
    assert _values(doc)["currency"] == "GBP"


def test_buyer_below_label_skips_identifiers() -> None:
    doc = _doc(
        [
            (50, 100, "Käufer:"),
            (50, 112, "Nummer : GE2020211"),
            (50, 124, "Kunden AG Mitte"),
            (50, 136, "Kundenstraße 15"),
        ]
    )
    assert _values(doc)["buyer"] == "Kunden AG Mitte"


def test_seller_from_label_and_salutation_joined_for_buyer() -> None:
    doc = _doc(
        [
            (50, 100, "Verkäufer:"),
            (50, 112, "Lieferant GmbH"),
            (50, 124, "Lieferantenstraße 20"),
            (300, 100, "Bill to:"),
            (300, 112, "Herrn"),
            (300, 124, "Max Mustermann"),
        ]
    )
    values = _values(doc)
    assert (values["seller"], values["buyer"]) == ("Lieferant GmbH", "Herrn Max Mustermann")


def test_role_word_inside_a_sentence_is_not_a_label() -> None:
    assert L.find_labels(_doc([(50, 100, "Der Verkäufer bleibt Eigentümer der Ware")]), L.SELLER_LABELS) == []


def test_generic_label_from_field_name() -> None:
    doc = _doc([(50, 100, "Order No.: 12572103"), (50, 115, "Customer No.: 6669263")])
    specs = (FieldSpec(name="order_number"), FieldSpec(name="customer_number"))
    assert _values(doc, specs) == {"order_number": "12572103", "customer_number": "6669263"}


def test_generic_label_from_description_and_type() -> None:
    doc = _doc([(50, 100, "Lieferdatum: 05.08.2013"), (50, 115, "Gewicht: 12,5 kg")])
    specs = (
        FieldSpec(name="delivered_on", type=FieldType.DATE, description="Delivery date"),
        FieldSpec(name="weight", type=FieldType.NUMBER, description="Gewicht in kg"),
    )
    assert _values(doc, specs) == {"delivered_on": "2013-08-05", "weight": 12.5}


def test_missing_values_are_none() -> None:
    doc = _doc([(50, 100, "Hello world")])
    values = _values(doc, (FieldSpec(name="total", type=FieldType.NUMBER), FieldSpec(name="iban")))
    assert values == {"total": None, "iban": None}


def test_generic_labels_match_german_compound() -> None:
    (lab, *_rest) = L.generic_labels("order_number").labels
    assert lab.pattern.search("Bestell-Nr. 4711")
