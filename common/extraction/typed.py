"""How a field's type guides the search for its value.

The catalogue (:mod:`common.core.field_catalog`) gives known fields printed
labels in several languages; the type gives a parser that reads only values
of its shape next to a label (an IBAN, not the "BIC : ..." printed after it),
and for shapes that identify themselves -- an IBAN with a valid mod-97
check, a VAT id with its country's format, an e-mail address -- a scan of the
whole page when no label is printed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from common.core import fieldtypes
from common.core.field_catalog import known_field
from common.core.schema import FieldSpec, FieldType, Scalar
from common.extraction import labels as L
from common.extraction.fields import Candidate
from common.extraction.layout import Document
from common.extraction.normalize import find_dates

__all__ = ["labels_for", "parser_for", "phrases", "scan_document", "synonym_pattern"]

Parsed = tuple[Scalar, int, int] | None

# Words before a label that make it the buyer's ("Your VAT no.", "Kunden-USt-IdNr.").
_BUYER_SIDE = re.compile(
    r"(?:your|ihre?|customer|kunden?|client|buyer|käufer|acheteur|empfänger|destinataire|bill\s*to|klant)\S*[\s\-]*$",
    re.IGNORECASE,
)
_NEGATIVES: dict[FieldType, re.Pattern[str]] = {FieldType.VAT_ID: _BUYER_SIDE}


def synonym_pattern(text: str) -> str:
    """A printed label as a pattern: case-insensitive, any spacing or
    punctuation between its words, not inside a longer word."""
    words = [w for w in re.split(r"[\s\-./]+", text.strip()) if w]
    body = r"[\s\-./]*".join(re.escape(w) for w in words)
    end = r"(?![a-zäöüß])" if text[-1:].isalpha() else ""
    return r"(?<![A-Za-zÀ-ÿ])" + body + end


def labels_for(spec: FieldSpec) -> L.LabelSet:
    """The field's catalogue synonyms, then the labels its name and description spell."""
    known = known_field(spec.name)
    # a catalogue field's description is prose for people and models; its
    # synonyms are the labels ("The date by which ..." must not match "Date:")
    generic = L.generic_labels(spec.name, "" if known is not None else spec.description)
    extra: list[L.Label] = []
    if known is not None:
        for syn in known.synonyms:
            if re.fullmatch(r"[\w\s\-./'°ßäöüÄÖÜéèà%]+", syn):
                extra.append(L.Label(re.compile(synonym_pattern(syn), re.IGNORECASE), 3.2))
    return L.LabelSet(labels=(*extra, *generic.labels), negative=_NEGATIVES.get(spec.type))


def _lead(text: str) -> int:
    m = re.match(r"^[\s:;#.\-–=|]*(?:(?:no|nr|n°|number)\.?[\s:;.\-]*)?", text, re.IGNORECASE)
    return m.end() if m else 0


def _at_start(check: Callable[[str], str | None]) -> Callable[[str, object], Parsed]:
    """A parser that reads the value right after the label (and its colon)."""

    def parse(text: str, _ctx: object = None) -> Parsed:
        pos = _lead(text)
        v = check(text[pos:])
        return (v, pos, len(text)) if v is not None else None

    return parse


def _email(text: str, _ctx: object = None) -> Parsed:
    v = fieldtypes.email(text[:120])
    return (v, 0, len(text)) if v is not None else None


def _percentage(text: str, _ctx: object = None) -> Parsed:
    m = re.search(r"(-?\d{1,3}(?:[.,]\d{1,4})?)\s*%", text[:40])
    if not m:
        return None
    v = fieldtypes.percentage(m.group(1))
    return (v, m.start(), m.end()) if v is not None else None


def _enum(spec: FieldSpec) -> Callable[[str, object], Parsed]:
    pats = [(c, re.compile(r"(?<!\w)" + re.escape(c) + r"(?!\w)", re.IGNORECASE)) for c in spec.choices]

    def parse(text: str, _ctx: object = None) -> Parsed:
        found = [(m.start(), c, m.end()) for c, p in pats for m in [p.search(text[:80])] if m]
        if not found:
            return None
        start, choice, end = min(found)
        return choice, start, end

    return parse


def parser_for(spec: FieldSpec) -> Callable[[str, object], Parsed] | None:
    """The parser of a validated type; None for the plain types, read as before."""
    t = spec.type
    if t is FieldType.IBAN:
        return _at_start(fieldtypes.iban)
    if t is FieldType.BIC:
        return _at_start(fieldtypes.bic)
    if t is FieldType.VAT_ID:
        return _at_start(fieldtypes.vat_id)
    if t is FieldType.PHONE:
        return _at_start(fieldtypes.phone)
    if t is FieldType.EMAIL:
        return _email
    if t is FieldType.PERCENTAGE:
        return _percentage
    if t is FieldType.ENUM:
        return _enum(spec)
    return None


_CODE_START = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}(?=[ .\-]?[0-9A-Z]{2})")


def scan_document(doc: Document, spec: FieldSpec) -> list[Candidate]:
    """Values whose shape identifies them, anywhere in the document, weakly scored
    (used only when no label was found). The earliest wins: the issuer's
    letterhead and payment block come before anything quoted later."""
    t = spec.type
    if t not in (FieldType.IBAN, FieldType.VAT_ID, FieldType.EMAIL):
        return []
    out: list[Candidate] = []
    for line in doc.lines:
        text = line.text
        if t is FieldType.EMAIL:
            v = fieldtypes.email(text)
            if v is not None:
                out.append(Candidate(v, 1.0 - 0.001 * line.index, line.page, text[:120], line.index))
            continue
        # every place a country code starts a token: a match must not swallow the
        # next one ("BTW NL810433941B01" holds a VAT id after the word "BTW")
        for m in _CODE_START.finditer(text):
            start = m.start()
            if t is FieldType.VAT_ID and _BUYER_SIDE.search(text[:start][-40:]):
                continue
            chunk = text[start : start + 40]
            v = fieldtypes.iban(chunk) if t is FieldType.IBAN else fieldtypes.vat_id(chunk)
            if v is None or (t is FieldType.VAT_ID and not _vat_context(text, start)):
                continue
            out.append(Candidate(v, 1.0 - 0.001 * line.index, line.page, text[:120], line.index))
    return out


_VAT_WORDS = re.compile(
    r"vat|ust|mwst|tva|btw|iva|uid|tax|steuer|umsatzsteuer|identifi|intracom|p\.?\s?iva|nif|cif", re.IGNORECASE
)


def _vat_context(text: str, start: int) -> bool:
    """A VAT-shaped token counts only with a VAT word before it on its line
    ("DE123456789" alone may be an order or account number)."""
    return bool(_VAT_WORDS.search(text[max(0, start - 60) : start]))


# Sentences that state a due date without a caption: "Zahlbar innerhalb 30 Tagen
# netto bis 04.04.2013", "Total amount due on August 3, 2014", "payable by
# 31/01/2022", "à régler avant le 3 mars 2017". A discount's earlier date
# ("3% Skonto ... bis 15.03.") is not the due date: the phrase stops at one.
_DUE_PHRASE = re.compile(
    r"\b(?:payable|pay|due|zahlbar|fällig|zu\s*zahlen|à\s*(?:régler|payer)|payer|te\s*betalen|vervalt)\b"
    r"(?P<mid>[^.;]{0,60}?)\b(?:bis(?:\s*zum)?|by|until|before|on|am|le|avant(?:\s*le)?|vóór|voor|op)\s+(?P<rest>.*)",
    re.IGNORECASE,
)
_DISCOUNT = re.compile(r"skonto|discount|escompte|korting|abzug", re.IGNORECASE)
_PHRASES: dict[str, re.Pattern[str]] = {"due_date": _DUE_PHRASE}


def phrases(doc: Document, spec: FieldSpec, dayfirst: bool) -> list[Candidate]:
    """Values stated in a sentence rather than next to a caption (catalogue
    fields that have such a phrase: due_date)."""
    known = known_field(spec.name)
    pat = _PHRASES.get(known.name) if known is not None else None
    if pat is None or spec.type is not FieldType.DATE:
        return []
    out: list[Candidate] = []
    for line in doc.lines:
        text = line.text
        for m in pat.finditer(text):
            if _DISCOUNT.search(m.group("mid")):
                continue
            dates = find_dates(m.group("rest"), dayfirst=dayfirst)
            if dates and dates[0].start <= 3:
                out.append(Candidate(dates[0].iso, 2.8 - 0.001 * line.index, line.page, text[:120], line.index))
                break
    return out
