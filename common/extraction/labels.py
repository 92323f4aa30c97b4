"""Label lexicons (English, German, French, Dutch and a little Spanish/Italian)
and label search over a laid-out document.

A *label* is the printed caption of a value (``Invoice No.``, ``Rechnungsdatum``,
``Montant TTC``). Each preset field has a list of label patterns with a weight
(how strongly the label identifies the field) and a *negative* pattern: words
that, printed just before the label, mean another value (``Due`` date,
``Kunden``-Nr., ``Sub``total...).

User-defined fields get labels built from their name and description by
:func:`generic_labels`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from common.extraction.layout import Document, Segment

__all__ = [
    "BUYER_LABELS",
    "CURRENCY_LABELS",
    "DATE_LABELS",
    "INVOICE_NUMBER_LABELS",
    "SELLER_LABELS",
    "TOTAL_LABELS",
    "Label",
    "LabelHit",
    "LabelSet",
    "find_labels",
    "find_labels_in_text",
    "generic_labels",
]


@dataclass(frozen=True, slots=True)
class Label:
    pattern: re.Pattern[str]
    weight: float
    kind: str = ""  # free-form tag, e.g. "gross" / "due" for totals


@dataclass(frozen=True, slots=True)
class LabelSet:
    labels: tuple[Label, ...]
    # Matched against the text just before the label (same segment, up to the
    # previous colon): a hit rejects the label.
    negative: re.Pattern[str] | None = None
    # Matched against the label text itself plus the rest of the segment up to
    # the first digit; a hit rejects the label (e.g. "Total HT", "Gesamtbetrag der").
    negative_after: re.Pattern[str] | None = None
    # When the negative words are present but so is one of these, keep the
    # label ("Total incl. VAT" mentions VAT but is the gross total).
    override: re.Pattern[str] | None = None


def _labels(*specs: tuple[str, float] | tuple[str, float, str]) -> tuple[Label, ...]:
    out = []
    for spec in specs:
        pat, weight = spec[0], spec[1]
        kind = spec[2] if len(spec) > 2 else ""
        out.append(Label(re.compile(pat, re.IGNORECASE), weight, kind))
    return tuple(out)


_NO = r"(?:number|num\.?|no\.?|nr\.?|nbr\.?|n°|nº|n[o°]\.?|#|nummer|numéro|numero|núm\.?|ref\.?)"

INVOICE_NUMBER_LABELS = LabelSet(
    labels=_labels(
        (r"\binvoice\s*" + _NO, 3.0),
        (r"\binv\.?\s*(?:no\.?|#|number)", 2.5),
        (r"\b(?:credit\s*(?:note|memo)|debit\s*note|bill|receipt)\s*" + _NO, 2.5),
        (
            r"\b(?:nota\s*di\s*credito|note\s*de\s*cr[ée]dit|creditnota|storno(?:rechnung)?|rechnungskorrektur)"
            r"[\s-]*" + _NO,
            3.0,
        ),
        (r"\b\w*rechnungs?[\s-]*(?:nummer|nr\.?|no\.?|n°)", 3.0),
        (r"\bgutschrifts?[\s-]*(?:nummer|nr\.?|no\.?)", 3.0),
        (r"\b(?:facture|avoir)\s*(?:n°|nº|no\.?|numéro|numero|num\.?|#)", 3.0),
        (r"\b(?:numéro|numero|n°)\s*(?:de\s*(?:la\s*)?)?(?:facture|l'avoir|avoir)", 3.0),
        (r"\bfactuur\s*(?:nummer|nr\.?|no\.?)", 3.0),
        (r"\b(?:número|numero)\s*(?:de\s*)?factura|\bfattura\s*n", 3.0),
        # "Rechnung des Versicherers Nr.", "Invoice for services No." -- a few
        # words between the document word and the number word
        (
            r"\b(?:\w*rechnung\w*|invoice|facture|gutschrift|credit\s*note)\b[^\d:]{1,40}?\b(?:nr\.?|no\.?|nummer|number|n°)(?=[\s:.#]|$)",
            2.0,
        ),
        (r"\bbeleg[\s-]*(?:nummer|nr\.?|no\.?)", 2.0),
        (r"\b(?:document|dokument|doc\.?)[\s-]*(?:number|nummer|no\.?|nr\.?)", 1.5),
        (
            r"^(?:invoice|rechnung|facture|factuur|bill|credit note|gutschrift)\b(?!\s*(?:date|datum|to|an|à|period))",
            1.0,
        ),
        (r"^#", 1.0),
    ),
    negative=re.compile(
        r"(?:kunde|customer|client|klant|order|bestell|auftrag|commande|lieferschein|delivery|livraison|"
        r"account|konto|compte|ursprungs|original|vorherige|previous|reklamation|vertrag|contract|mandat|"
        r"tax|steuer|ust|vat|tva|purchase|\bpo\b|tracking|sendung|referenz|reference)\S*\s*$",
        re.IGNORECASE,
    ),
    # words inside a long label that make it another number ("Rechnungsempfänger Kunden-Nr.")
    negative_after=re.compile(
        r"kunde|customer|client|order|bestell|auftrag|commande|lieferschein|empfänger|account|konto|"
        r"steuer|ust|vat|tax|tva|referenz|reference|ursprung|original|seite|page|version",
        re.IGNORECASE,
    ),
)

DATE_LABELS = LabelSet(
    labels=_labels(
        (r"\binvoice\s*date|\bdate\s*of\s*(?:the\s*)?invoice|\bissue\s*date|\bdate\s*of\s*issue|\bbilling\s*date", 3.0),
        (r"\brechnungs[\s-]*datum|\bdatum\s*der\s*rechnung|\bbeleg[\s-]*datum|\bausstellungs[\s-]*datum", 3.0),
        (r"\bgutschrifts?[\s-]*datum|\bcredit\s*note\s*date", 3.0),
        (r"\bdate\s*(?:de\s*(?:la\s*)?)?(?:facture|facturation|l'avoir|émission|emission)", 3.0),
        (r"\bfactuur[\s-]*datum|\bfecha\s*(?:de\s*)?(?:la\s*)?factura|\bdata\s*(?:della\s*)?fattura", 3.0),
        (r"(?:^|\s)(?:date|datum|fecha|data)\b", 1.5),
        (r"\bdated\b", 1.5),
    ),
    negative=re.compile(
        r"(?:due|fällig|faellig|échéance|echeance|payment|zahlung|zahlbar|order|bestell|auftrag|commande|"
        r"delivery|liefer|leistung|livraison|service|ship|versand|period|zeitraum|start|end|print|druck|"
        r"buchung|booking|valid|gültig|expir|birth|geburt|mandat|reklamation|ursprung|vertrag|contract|"
        r"dispatch|despatch|expédition|expedition|tax\s*point|wertstellung|value|eingang|receipt)\S*[\s\-/]*$",
        re.IGNORECASE,
    ),
)

TOTAL_LABELS = LabelSet(
    labels=_labels(
        # gross totals: the invoice amount including tax
        (r"\bgrand\s*total", 10.0, "gross"),
        (
            r"\btotal\s*(?:amount\s*|invoice\s*|sum\s*)?(?:incl\.?|including|inc\.?|with|w/)\s*(?:vat|tax|gst)",
            10.0,
            "gross",
        ),
        (r"\b(?:invoice|rechnungs?)\s*total|\btotal\s*(?:invoice|amount|sum)\b", 9.0, "gross"),
        (
            r"\btotal\s*(?:ttc|t\.t\.c\.?)|\bmontant\s*(?:total\s*)?(?:ttc|t\.t\.c)|\btotal\s*g[ée]n[ée]ral",
            10.0,
            "gross",
        ),
        (r"\bbrutto(?:summe|betrag|gesamt)?\b|\b(?:rechnungs|gesamt)summe\s*brutto|\bsumme\s*brutto", 10.0, "gross"),
        (r"\bgesamt(?:betrag|summe)\b|\brechnungs(?:betrag|summe)\b|\bend(?:betrag|summe)\b", 9.0, "gross"),
        (
            r"\b(?:gesamt|summe|total|betrag)\s*(?:inkl\.?|incl\.?|einschl\.?)\s*(?:mwst|ust|vat|btw|steuer)",
            10.0,
            "gross",
        ),
        (r"\btotaal(?:bedrag)?\b|\btotale\s*(?:fattura|documento)?|\bimporte\s*total", 9.0, "gross"),
        (r"\bmontant\s*total\b", 8.0, "gross"),
        (r"^\s*(?:total|summe|gesamt)\b", 8.0, "gross"),
        (r"\btotal\b", 6.0, "gross"),
        # Amounts due. They equal the gross total unless a deposit or
        # prepayment was deducted ("Total TTC 5 388,00 / Acompte -1 500,00 /
        # Net à payer 3 888,00"). The corpus ground truth (the e-invoice
        # GrandTotalAmount) is the gross total in that case, so "total" prefers
        # gross labels; a field named amount_due reads these labels first.
        (r"\b(?:amount|balance|total|sum)\s*(?:due|payable|to\s*pay)\b|\bplease\s*pay\b", 7.0, "due"),
        (
            r"\bzahlbetrag\b|\bzu\s*zahlen(?:der\s*betrag)?\b|\boffener\s*betrag|\bfälliger\s*betrag|"
            r"\bzahlungsbetrag|\bnoch\s*zu\s*zahlen",
            7.0,
            "due",
        ),
        (r"\b(?:net|reste|montant|total)\s*à\s*payer|\bmontant\s*dû|\bsolde\s*dû", 7.0, "due"),
        (r"\bte\s*betalen|\bopenstaand\s*bedrag", 7.0, "due"),
    ),
    negative=re.compile(
        r"(?:sub|zwischen|teil|tax|vat|mwst|ust|steuer|tva|btw|gst|net|netto|ohne|excl|exkl|hors|discount|"
        r"rabatt|remise|skonto|paid|bezahlt|anzahlung|acompte|credit|shipping|versand|fracht|position|"
        r"waren|line|item|zeilen|page|seite|übertrag|carried|brought|lieferung|previous|vorherig)\S*[\s:]*$",
        re.IGNORECASE,
    ),
    negative_after=re.compile(
        r"\b(?:ht|h\.t\.?|net|netto|nett|excl|exkl|exclusief|ohne|hors|der\s+(?:zu|ab)schl|vat|tax|mwst|ust|"
        r"tva|btw|\w*steuer\w*|paid|bezahlt|anzahlung|qty|quantity|menge|items?|weight|gewicht|pages?|"
        r"discount|rabatt|savings|hours|stunden|excluding)\b",
        re.IGNORECASE,
    ),
    override=re.compile(r"\b(?:incl|inkl|including|einschl|ttc|with|inc)\b|brutto|gross|à\s*payer", re.IGNORECASE),
)

CURRENCY_LABELS = LabelSet(
    labels=_labels(
        (r"\b(?:rechnungs)?währung\b|\bwaehrung\b|\bcurrency\b|\bdevise\b|\bmonnaie\b|\bvaluta\b|\bmoneda\b", 3.0),
        (r"\b(?:beträge|betraege|preise|amounts?|prices|charges|montants)\s*(?:sind\s*)?(?:in|en)\b", 2.0),
        (r"\b(?:are|sont)\s*in\b", 1.5),
    ),
    negative=re.compile(r"(?:steuer|tax|vat|ust|mwst|tva|umsatzsteuer|fremd|original|source)\S*\s*$", re.IGNORECASE),
    negative_after=re.compile(r"\bder\s+umsatzsteuer|\bof\s+(?:vat|tax)|\bsteuer", re.IGNORECASE),
)


def _role(words: str) -> str:
    """A role word ("Seller", "Käufer") is a label only where it stands as one:
    at the start of a segment, or followed by a colon -- not inside a sentence
    ("Der Verkäufer bleibt Eigentümer...") nor inside a name ("Lieferant GmbH")."""
    return r"^\W{0,3}(?:" + words + r")(?:\s*[:/]|\s*$)|\b(?:" + words + r")\s*:"


SELLER_LABELS = LabelSet(
    labels=_labels(
        (
            _role(
                r"verkäufer|verkaeufer|seller|vendor|vendeur|verkoper|supplier|fournisseur|leverancier|lieferant|"
                r"rechnungs?steller|rechnungsersteller|leistungserbringer|absender|émetteur|emetteur"
            ),
            3.0,
        ),
        (r"^\W{0,3}(?:from|von|de)\s*:", 1.0),
        (r"\b(?:sold|issued|invoiced|billed)\s*by\b|\bservice\s*provider\b|\bverkauft\s*(?:durch|von)\b", 3.0),
    ),
)

BUYER_LABELS = LabelSet(
    labels=_labels(
        (
            r"\bbill(?:ed|ing)?\s*to\b|\binvoice(?:d)?\s*to\b|\bsold\s*to\b|\bbilling\s*address\b|"
            r"\bcredit(?:ed)?\s*to\b|\bissued\s*to\b|\bprepared\s*for\b",
            3.0,
        ),
        (
            _role(
                r"käufer|kaeufer|buyer|purchaser|acheteur|koper|rechnungsempfänger|leistungsempfänger|empfänger|"
                r"rechnungsadresse|rechnungsanschrift|destinataire|factuuradres|customer|client|kunde|klant|cliente|"
                r"to|an|à"
            ),
            3.0,
        ),
        (r"\bfactur[ée]\s*à\b|\badress[ée]\s*à\b", 3.0),
    ),
)

# Words that are labels on their own and must not be read as a name.
LABEL_WORD_RE = re.compile(
    r"^(?:verkäufer|käufer|lieferant|seller|buyer|customer|client|kunde|bill to|ship to|sold to|invoice to|"
    r"rechnungsempfänger|warenempfänger|leistungsempfänger|lieferanschrift|lieferadresse|delivery address|"
    r"shipping address|billing address|attn|attention|z\.\s*hd\.?)\s*(?::|$)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class LabelHit:
    segment: Segment
    start: int  # label span within segment.text
    end: int
    label: Label

    @property
    def text(self) -> str:
        return self.segment.text[self.start : self.end]

    @property
    def rest(self) -> str:
        """Text after the label in the same segment."""
        return self.segment.text[self.end :]


def _before(text: str, start: int) -> str:
    """Text just before ``start`` back to the previous colon, at most 30 characters."""
    head = text[max(0, start - 30) : start]
    cut = max(head.rfind(":"), head.rfind("|"))
    return head[cut + 1 :] if cut >= 0 else head


def find_labels(doc: Document, labels: LabelSet, *, pages: Sequence[int] | None = None) -> list[LabelHit]:
    """Every occurrence of a label of ``labels`` in the document, in reading order."""
    hits: list[LabelHit] = []
    for seg in doc.segments():
        if pages is not None and seg.page not in pages:
            continue
        text = seg.text
        taken: list[tuple[int, int]] = []
        for lab in sorted(labels.labels, key=lambda x: -x.weight):
            for m in lab.pattern.finditer(text):
                s, e = m.start(), m.end()
                if s == e or any(not (e <= a or s >= b) for a, b in taken):
                    continue
                ctx = text[max(0, s - 30) : _first_digit(text, e)]
                if labels.override is not None and labels.override.search(ctx):
                    pass
                else:
                    if labels.negative is not None and labels.negative.search(_before(text, s)):
                        continue
                    if labels.negative_after is not None and labels.negative_after.search(
                        text[s : _first_digit(text, e)]
                    ):
                        continue
                taken.append((s, e))
                hits.append(LabelHit(seg, s, e, lab))
    hits.sort(key=lambda h: (h.segment.line, h.segment.x0, h.start))
    return hits


def _first_digit(text: str, start: int) -> int:
    m = re.compile(r"[\d€$£]").search(text, start)
    return m.start() if m else len(text)


# --------------------------------------------------------------------------- generic labels

# Word -> alternatives, so that a field called "order_number" also finds
# "Bestell-Nr." and "N° de commande".
_SYNONYMS: dict[str, str] = {
    "number": _NO,
    "no": _NO,
    "num": _NO,
    "nr": _NO,
    "id": r"(?:id|identifier|" + _NO + r")",
    "date": r"(?:date|datum|dated|fecha|data)",
    "amount": r"(?:amount|betrag|montant|bedrag|sum|summe|importe)",
    "total": r"(?:total|summe|gesamt|totaal|montant\s*total)",
    "order": r"(?:order|purchase\s*order|bestell(?:ung)?|auftrag(?:s)?|commande|bestelling)",
    "po": r"(?:po|p\.o\.|purchase\s*order|bestell)",
    "customer": r"(?:customer|client|kunden?|klant)",
    "client": r"(?:client|customer|kunden?|klant)",
    "account": r"(?:account|acct\.?|konto|compte|rekening)",
    "reference": r"(?:reference|ref\.?|referenz|référence|referentie)",
    "ref": r"(?:reference|ref\.?|referenz|référence|referentie)",
    "due": r"(?:due|fällig(?:keit)?|échéance|vervaldatum|payable)",
    "delivery": r"(?:delivery|liefer(?:ung)?|livraison|levering|leistungs)",
    "payment": r"(?:payment|zahlung(?:s)?|paiement|betaling)",
    "terms": r"(?:terms|bedingungen|conditions|voorwaarden)",
    "tax": r"(?:tax|vat|steuer|mwst|ust|tva|btw|gst)",
    "vat": r"(?:vat|ust|mwst|tva|btw|tax|umsatzsteuer)",
    "iban": r"iban",
    "phone": r"(?:phone|tel\.?|telefon|téléphone|telefoon)",
    "email": r"(?:e-?mail|courriel)",
    "invoice": r"(?:invoice|rechnung(?:s)?|facture|factuur)",
    "net": r"(?:net|netto|ht|hors\s*taxe)",
    "subtotal": r"(?:sub\s*total|zwischensumme|sous[\s-]*total|subtotaal)",
    "contract": r"(?:contract|vertrag(?:s)?|contrat)",
    "project": r"(?:project|projekt|projet)",
    "shipping": r"(?:shipping|versand|expédition|verzending)",
    "tracking": r"(?:tracking|sendungs(?:verfolgung)?|suivi)",
    "quantity": r"(?:quantity|qty|menge|anzahl|quantité|qté|aantal)",
    "price": r"(?:price|preis|prix|prijs)",
    "unit": r"(?:unit|einzel|unitaire|stuk|e\.?)",
    "description": r"(?:description|beschreibung|bezeichnung|désignation|designation|omschrijving|artikel)",
    "name": r"(?:name|bezeichnung|nom|naam)",
}
_STOP = frozenset(
    [
        "the",
        "a",
        "an",
        "of",
        "for",
        "on",
        "in",
        "to",
        "and",
        "or",
        "is",
        "as",
        "at",
        "by",
        "be",
        "this",
        "that",
        "which",
        "with",
        "from",
        "its",
        "it",
        "if",
        "printed",
        "value",
        "field",
        "document",
        "invoice's",
        "e.g",
        "eg",
    ]
)


def _token_pattern(tok: str) -> str:
    return _SYNONYMS.get(tok, re.escape(tok))


def generic_labels(name: str, description: str = "") -> LabelSet:
    """Labels for a user-defined field from its snake_case name and its description.

    ``order_number`` matches ``Order No.:``, ``Order number``, ``Bestell-Nr.``;
    the description contributes its first few content words as a second,
    weaker label (``"Purchase order reference"`` -> ``purchase order reference``).
    """
    specs: list[tuple[str, float]] = []
    toks = [t for t in name.lower().split("_") if t]
    if toks:
        joined = r"[\s\-./]*".join(_token_pattern(t) for t in toks)
        # not inside identifiers such as "po_number_123"
        specs.append((r"(?<![A-Za-z_])" + joined + r"(?![a-z_])", 3.0))
        if len(toks) > 1:
            # compound words (German): "Bestellnummer"
            specs.append((r"(?<![A-Za-z])" + "".join(_token_pattern(t) for t in toks), 2.5))
    words = [w for w in re.findall(r"[A-Za-zÀ-ÿ]+", description.lower()) if w not in _STOP]
    if words and words[: len(toks)] != toks:
        # the leading content words, then shorter prefixes ("Gewicht in kg" -> "Gewicht")
        for n, weight in ((3, 2.0), (2, 1.8), (1, 1.5)):
            phrase = words[:n]
            if len(phrase) < n or (n == 1 and len(phrase[0]) < 4):
                continue
            pat = r"[\s\-./]*".join(_token_pattern(w) for w in phrase)
            specs.append((r"(?<![A-Za-z])" + pat + r"(?![a-z])", weight))
    return LabelSet(labels=_labels(*specs))


def find_labels_in_text(text: str, *sets: LabelSet) -> bool:
    """Whether ``text`` contains a label of any of ``sets`` (negatives ignored)."""
    return any(lab.pattern.search(text) for ls in sets for lab in ls.labels)
