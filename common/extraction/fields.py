"""Field extraction from a laid-out text document (no PDF library here).

For each requested field the extractor collects *candidates* -- a value read
next to a label, with a score -- and keeps the best. Values are read

* in the same segment after the label (``Invoice No.: 123``),
* in the next segments of the same line (label and value in two columns), or
* below the label, in the segment that overlaps it horizontally (a label
  row over a value row, a column header over its values).

Scores combine the label's weight with where the value was found; the
confidence reported to callers is derived from the winning score and from
whether other candidates disagreed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from common.core.fieldtypes import normalize_value
from common.core.schema import FieldSpec, FieldType, FieldValue, Scalar
from common.extraction import labels as L
from common.extraction.layout import Document, Line, Segment
from common.extraction.normalize import (
    ISO_CODES,
    find_amounts,
    find_currencies,
    find_dates,
    guess_dayfirst,
)

__all__ = ["Candidate", "DocContext", "extract_fields"]


@dataclass(frozen=True, slots=True)
class Candidate:
    value: Scalar
    score: float
    page: int
    snippet: str
    line: int = 0
    kind: str = ""  # the label's kind ("gross" / "due" for totals)
    # whether an arithmetic check (net + tax = gross) held; None: not possible
    checked: bool | None = None


@dataclass(slots=True)
class DocContext:
    """Per-document facts shared by the field readers."""

    doc: Document
    dayfirst: bool
    # Keyed by value: an id() key could be reused by a later, different label set.
    _hits: dict[L.LabelSet, list[L.LabelHit]] = field(default_factory=dict)
    _memo: dict[str, list[Candidate]] = field(default_factory=dict)
    _doc_type: str | None = None

    @property
    def doc_type(self) -> str:
        """invoice, credit_note or receipt (see :mod:`common.extraction.doctype`)."""
        if self._doc_type is None:
            from common.extraction.doctype import detect_type

            self._doc_type = detect_type(self.doc)
        return self._doc_type

    @classmethod
    def of(cls, doc: Document) -> DocContext:
        text = doc.text()
        us = bool(re.search(r"\$|\bUSD\b", text)) and not re.search(r"€|\bEUR\b", text)
        return cls(doc=doc, dayfirst=guess_dayfirst(text, us_hint=us))

    def labels(self, labelset: L.LabelSet) -> list[L.LabelHit]:
        """Label hits of ``labelset``, searched once per document."""
        if labelset not in self._hits:
            self._hits[labelset] = L.find_labels(self.doc, labelset)
        return self._hits[labelset]

    def memo(self, key: str, fn: Callable[[], list[Candidate]]) -> list[Candidate]:
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]


Parser = Callable[[str, DocContext], "tuple[Scalar, int, int] | None"]

# --------------------------------------------------------------------------- regions


def _following_segments(doc: Document, seg: Segment) -> list[Segment]:
    line = doc.lines[seg.line]
    return [s for s in line.segments if s.x0 > seg.x0]


def _below_segments(doc: Document, hit: L.LabelHit, *, max_lines: int = 4) -> list[tuple[str, Segment]]:
    """Text under the label: for each following line (close below, same page),
    the words that overlap the label horizontally, starting at the first such word."""
    seg = hit.segment
    lx0, lx1 = seg.span_x(hit.start, hit.end)
    # widen a little: values are often left-aligned with the label or right-aligned under it
    lx0 -= 4
    lx1 += 4
    line = doc.lines[seg.line]
    out: list[tuple[str, Segment]] = []
    last_bottom = line.bottom
    for ln in doc.lines[seg.line + 1 : seg.line + 1 + max_lines * 3]:
        if ln.page != line.page:
            break
        if ln.top - last_bottom > 2.5 * max(line.height, 1.0):
            break
        for s in ln.segments:
            if s.x1 < lx0 or s.x0 > lx1:
                continue
            # first word that overlaps the label's span
            idx = next((i for i, w in enumerate(s.words) if w.x1 >= lx0 and w.x0 <= lx1), 0)
            out.append((s.text[s.offsets[idx] :], s))
            break
        last_bottom = ln.bottom
        if len(out) >= max_lines:
            break
    return out


def _regions(doc: Document, hit: L.LabelHit, *, below: bool = True) -> list[tuple[str, Segment, float]]:
    """(text, segment, bonus) places a value for ``hit`` may be, nearest first."""
    out: list[tuple[str, Segment, float]] = [(hit.rest, hit.segment, 0.6)]
    for s in _following_segments(doc, hit.segment)[:2]:
        out.append((s.text, s, 0.4))
    if below:
        for i, (text, s) in enumerate(_below_segments(doc, hit)):
            out.append((text, s, 0.2 - 0.3 * i))
    return out


def _best_from_labels(
    ctx: DocContext,
    labelset: L.LabelSet,
    parse: Parser,
    *,
    below: bool = True,
    page_bonus: bool = True,
    adjust: Callable[[L.LabelHit], float] | None = None,
) -> list[Candidate]:
    cands: list[Candidate] = []
    for hit in ctx.labels(labelset):
        for text, seg, bonus in _regions(ctx.doc, hit, below=below):
            got = parse(text, ctx)
            if got is None:
                continue
            value, _s, _e = got
            score = hit.label.weight + bonus + (adjust(hit) if adjust is not None else 0.0)
            if page_bonus and seg.page == 1:
                score += 0.3
            cands.append(Candidate(value, score, seg.page, _snippet(hit, seg), seg.line))
            break
    return cands


def _snippet(hit: L.LabelHit, seg: Segment) -> str:
    if seg is hit.segment:
        return seg.text[hit.start :][:120]
    return f"{hit.segment.text[hit.start :]} … {seg.text}"[:160]


# --------------------------------------------------------------------------- parsers

_LEAD = re.compile(r"^[\s:;#.\-–—=>|]*(?:(?:no|nr|n°|nº|number|num|#)\.?(?=[\s:#]|$)[\s:;#.\-–]*)?", re.IGNORECASE)
_ID_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_\-.#]*[A-Za-z0-9]|[0-9]")
_PRICE_LIKE = re.compile(r"^-?\d{1,3}(?:[.,]\d{3})*[.,]\d{2}$")


def parse_id(text: str, _ctx: DocContext | None = None) -> tuple[Scalar, int, int] | None:
    """An identifier at the start of ``text``: a token with at least one digit."""
    lead = _LEAD.match(text)
    pos = lead.end() if lead else 0
    m = _ID_TOKEN.match(text, pos)
    if not m:
        return None
    tok = m.group(0)
    if not any(c.isdigit() for c in tok) or len(tok) > 40:
        return None
    if _PRICE_LIKE.match(tok) or find_dates(tok):
        return None
    return tok, m.start(), m.end()


def parse_date_value(text: str, ctx: DocContext) -> tuple[Scalar, int, int] | None:
    lead = len(text) - len(text.lstrip(" :.-"))
    for d in find_dates(text, dayfirst=ctx.dayfirst):
        if d.start - lead > 12:
            return None  # a date far from the label belongs to something else
        return d.iso, d.start, d.end
    return None


def _amount_run(text: str) -> list[tuple[float, int, int, bool]]:
    """Amounts at the start of ``text`` that follow each other with nothing but
    currency marks between them: (value, start, end, money-like)."""
    dates = [(d.start, d.end) for d in find_dates(text)]
    out: list[tuple[float, int, int, bool]] = []
    pos = 0
    for a in find_amounts(text):
        if any(s <= a.start < e for s, e in dates):
            continue
        gap = text[pos : a.start]
        if text[a.end : a.end + 2].lstrip().startswith("%"):
            pos = a.end + text[a.end :].find("%") + 1
            continue
        # between amounts only spaces, currency marks/codes, ":" or "="
        if re.sub(r"[\s:=*]|[€$£¥₹]|\b[A-Z]{3}\b|\bRs\.?", "", gap) and (
            out or re.search(r"[A-Za-zÀ-ÿ]{2,}", re.sub(r"\b[A-Z]{3}\b", "", gap))
        ):
            break
        near = text[max(0, a.start - 5) : a.end + 5]
        money = a.decimals == 2 or bool(find_currencies(near))
        out.append((a.value, a.start, a.end, money))
        pos = a.end
    return out


def parse_total(text: str, _ctx: DocContext | None = None) -> tuple[Scalar, int, int] | None:
    """The last money-like amount of the first run of amounts in ``text``."""
    run = [r for r in _amount_run(text) if r[3]]
    if not run:
        return None
    v, s, e, _ = run[-1]
    return v, s, e


def parse_number(text: str, _ctx: DocContext | None = None) -> tuple[Scalar, int, int] | None:
    run = _amount_run(text)
    if not run:
        return None
    v, s, e, _ = run[0]
    return v, s, e


def parse_integer(text: str, ctx: DocContext | None = None) -> tuple[Scalar, int, int] | None:
    got = parse_number(text, ctx)
    if got is None or not isinstance(got[0], float) or not got[0].is_integer():
        return None
    return int(got[0]), got[1], got[2]


def parse_currency_value(text: str, _ctx: DocContext | None = None) -> tuple[Scalar, int, int] | None:
    for c in find_currencies(text):
        if c.start > 15:
            return None
        return c.code, c.start, c.end
    return None


_TRUE = re.compile(r"^\W*(?:yes|ja|oui|si|sí|true|wahr|vrai|x|☒|☑|✓|✔)\b", re.IGNORECASE)
_FALSE = re.compile(r"^\W*(?:no|nein|non|false|falsch|faux|☐)\b", re.IGNORECASE)


def parse_boolean(text: str, _ctx: DocContext | None = None) -> tuple[Scalar, int, int] | None:
    if _TRUE.match(text):
        return True, 0, len(text)
    if _FALSE.match(text):
        return False, 0, len(text)
    return None


def parse_string(text: str, _ctx: DocContext | None = None) -> tuple[Scalar, int, int] | None:
    s = text.strip(" :;-–|\t")
    if not s or not re.search(r"\w", s):
        return None
    return s[:200], 0, len(text)


_PARSERS: dict[FieldType, Parser] = {
    FieldType.DATE: parse_date_value,
    FieldType.NUMBER: parse_number,
    FieldType.INTEGER: parse_integer,
    FieldType.CURRENCY: parse_currency_value,
    FieldType.BOOLEAN: parse_boolean,
    FieldType.STRING: parse_string,
}

# --------------------------------------------------------------------------- invoice fields


def invoice_number(ctx: DocContext) -> list[Candidate]:
    return ctx.memo("invoice_number", lambda: _invoice_number(ctx))


def _number_adjust(ctx: DocContext) -> Callable[[L.LabelHit], float]:
    """Score changes for a number label from the document's type: a credit
    note's own number is labelled with the credit word; a label in a reference
    ("zur Rechnung Nr.", "for invoice no.") names another document."""
    from common.extraction.doctype import CREDIT_WORDS, INVOICE_WORDS, REFERENCE_BEFORE

    credit = ctx.doc_type == "credit_note"

    def adjust(hit: L.LabelHit) -> float:
        delta = 0.0
        before = hit.segment.text[max(0, hit.start - 40) : hit.start]
        if REFERENCE_BEFORE.search(before):
            delta -= 2.0
        if credit:
            if CREDIT_WORDS.search(hit.text):
                delta += 1.5
            elif INVOICE_WORDS.search(hit.text):
                delta -= 1.5
        return delta

    return adjust


def _invoice_number(ctx: DocContext) -> list[Candidate]:
    cands = _best_from_labels(ctx, L.INVOICE_NUMBER_LABELS, parse_id, adjust=_number_adjust(ctx))
    # the earliest strong label wins ties: numbers are printed in the header
    return [Candidate(c.value, c.score - 0.002 * c.line, c.page, c.snippet, c.line) for c in cands]


_DATE_AFTER_NUMBER = re.compile(r"^\s*(?:vom|du|dated|date[d:]?|from|of|del|van)(?:\s+|$)", re.IGNORECASE)


def invoice_date(ctx: DocContext, number: Candidate | None) -> list[Candidate]:
    cands = _best_from_labels(ctx, L.DATE_LABELS, parse_date_value)
    cands = [Candidate(c.value, c.score - 0.002 * c.line, c.page, c.snippet, c.line) for c in cands]
    # "Rechnung Nr. 4711 vom 05.03.2018", "Facture n° 12 du 3 mars 2017"
    if number is not None:
        for seg in ctx.doc.segments():
            if seg.line != number.line:
                continue
            i = seg.text.find(str(number.value))
            if i < 0:
                continue
            rest = seg.text[i + len(str(number.value)) :]
            m = _DATE_AFTER_NUMBER.match(rest)
            tail = rest[m.end() :] if m else ""
            if not tail and m:
                # the date wrapped onto the next line
                nxt = ctx.doc.lines[seg.line + 1] if seg.line + 1 < len(ctx.doc.lines) else None
                tail = nxt.text if nxt is not None else ""
            got = parse_date_value(tail, ctx) if m else None
            if got:
                cands.append(Candidate(got[0], 3.2, seg.page, seg.text[:120], seg.line))
    cands.extend(_place_and_date(ctx))
    cands = _by_role(ctx, cands)
    if not cands:
        # the first plausible date on the first page, weakly
        for line in ctx.doc.page_lines(1):
            for d in find_dates(line.text, dayfirst=ctx.dayfirst):
                before = line.text[: d.start]
                if L.DATE_LABELS.negative is not None and L.DATE_LABELS.negative.search(before[-30:]):
                    continue
                cands.append(Candidate(d.iso, 0.5, line.page, line.text[:120], line.index))
                break
            if cands:
                break
    return cands


_ROLE_LABELS = L.LabelSet(
    labels=L._labels(
        (
            r"\b(?:due|payable\s*(?:by|on|until)|pay\s*by|fällig\w*|zahlbar\s*bis|zahlungsziel|échéance|echeance|"
            r"vervaldatum|vencimiento|scadenza)\b",
            3.0,
            "due",
        ),
        (
            r"\b(?:deliver\w*|ship\w*|dispatch\w*|liefer\w*|leistungs\w*|livraison|expédition|levering|"
            r"service\s*(?:date|period)|order\s*date|bestell\w*|auftrags\w*|commande|period|zeitraum|période)",
            3.0,
            "other",
        ),
    )
)


# "Hamburg, 31.03.2023", "Paris, le 3 mars 2017", "Milano, 3/3/2017": a letter's date line
_PLACE_DATE = re.compile(r"^\s*[A-ZÄÖÜ][\w\-äöüßéèà. ]{1,30},\s*(?:(?:den|le|il|am)\s+)?(?=\d|[A-Z][a-z]+\s+\d)")


def _place_and_date(ctx: DocContext) -> list[Candidate]:
    height = (ctx.doc.page_sizes[0][1] if ctx.doc.page_sizes else 0.0) or 842.0
    out = []
    for line in ctx.doc.page_lines(1):
        if line.top > 0.45 * height:
            break
        for seg in line.segments:
            m = _PLACE_DATE.match(seg.text)
            if m is None:
                continue
            got = parse_date_value(seg.text[m.end() :], ctx)
            if got is not None:
                out.append(Candidate(got[0], 2.6, seg.page, seg.text[:120], seg.line))
    return out


def _by_role(ctx: DocContext, cands: list[Candidate]) -> list[Candidate]:
    """Weakly labelled dates ("Datum", "Date") that are printed elsewhere as a
    due, delivery or order date lose to dates that are not; the issue date is
    also the one printed in the header, so page-1 header dates gain a little."""
    role_dates: set[Scalar] = set()
    for hit in ctx.labels(_ROLE_LABELS):
        for text, _seg, _b in _regions(ctx.doc, hit, below=False):
            got = parse_date_value(text, ctx)
            if got is not None:
                role_dates.add(got[0])
                break
    height = (ctx.doc.page_sizes[0][1] if ctx.doc.page_sizes else 0.0) or 842.0
    out = []
    for c in cands:
        score = c.score
        if c.value in role_dates and c.score < 3.5:
            score -= 1.5
        line = ctx.doc.lines[c.line] if c.line < len(ctx.doc.lines) else None
        if line is not None and line.page == 1 and line.top < 0.4 * height:
            score += 0.2
        out.append(Candidate(c.value, score, c.page, c.snippet, c.line, c.kind, c.checked))
    return out


def _total_below(ctx: DocContext, hit: L.LabelHit) -> tuple[float, Segment] | None:
    """A column header label ("Endbetrag") over a column of amounts: the last
    amount of the column is the sum row."""
    found: tuple[float, Segment] | None = None
    for text, seg in _below_segments(ctx.doc, hit, max_lines=6):
        got = parse_total(text)
        if got is None:
            if found is not None:
                break
            continue
        assert isinstance(got[0], float)
        found = (got[0], seg)
    return found


def invoice_total(ctx: DocContext) -> list[Candidate]:
    return ctx.memo("total", lambda: _invoice_total(ctx))


def _invoice_total(ctx: DocContext) -> list[Candidate]:
    cands: list[Candidate] = []
    n = max(len(ctx.doc.lines), 1)
    for hit in ctx.labels(L.TOTAL_LABELS):
        got_value: float | None = None
        got_seg: Segment | None = None
        bonus = 0.0
        for text, seg, b in _regions(ctx.doc, hit, below=False):
            got = parse_total(text)
            if got is not None:
                assert isinstance(got[0], float)
                got_value, got_seg, bonus = got[0], seg, b
                break
        if got_value is None and not hit.rest.strip(" :"):
            below = _total_below(ctx, hit)
            if below is not None:
                got_value, got_seg = below
                bonus = -0.5
        if got_value is None or got_seg is None:
            continue
        # totals close the document: later candidates win ties
        score = hit.label.weight + bonus + 0.5 * hit.segment.line / n
        cands.append(Candidate(got_value, score, got_seg.page, _snippet(hit, got_seg), got_seg.line, hit.label.kind))
    from common.extraction.totals import check_totals

    return check_totals(ctx.doc, cands)


def invoice_currency(ctx: DocContext, total: Candidate | None) -> list[Candidate]:
    cands = _best_from_labels(ctx, L.CURRENCY_LABELS, parse_currency_value)
    if total is not None:
        line = ctx.doc.lines[total.line]
        found = find_currencies(line.text)
        if found:
            cands.append(Candidate(found[-1].code, 2.5, line.page, line.text[:120], line.index))
    counts: Counter[str] = Counter()
    first: dict[str, Line] = {}
    for line in ctx.doc.lines:
        for c in find_currencies(line.text):
            counts[c.code] += 2 if c.is_code else 1
            first.setdefault(c.code, line)
    if counts:
        code, _ = counts.most_common(1)[0]
        ln = first[code]
        cands.append(Candidate(code, 1.0, ln.page, ln.text[:120], ln.index))
    return cands


# --------------------------------------------------------------------------- parties

_LEGAL = re.compile(
    r"\b(?:gmbh|ag|kg|ohg|gbr|e\.\s?k\.|e\.\s?v\.|a\.\s?g\.|ug|se|inc|incorporated|llc|llp|ltd|limited|plc|corp|"
    r"corporation|co\.|company|b\.\s?v\.|n\.\s?v\.|bv|nv|s\.\s?a\.|sa|sarl|s\.\s?a\.\s?r\.\s?l\.|sas|sasu|eurl|"
    r"s\.\s?r\.\s?l\.|srl|spa|s\.\s?p\.\s?a\.|oy|ab|as|a/s|aps|pvt|pty|kft|s\.\s?l\.|sl)(?![a-z])",
    re.IGNORECASE,
)
_SALUTATION = re.compile(
    r"^(?:herrn?|frau|firma|mr\.?|mrs\.?|ms\.?|miss|m\.|mme|madame|monsieur|dr\.?)$", re.IGNORECASE
)
_SKIP_LINE = re.compile(
    r"^(?:gln|gtin|ean|nummer|globale\s*nummer|handelsname|ust\S*|vat|tax|steuer\w*|kunden[-\s]*(?:nr|nummer|id)|"
    r"customer\s*(?:no|id|number)|id|lief[-\s]*nr|tel|telefon|fax|e-?mail|phone|www\.|https?|iban|bic|page|seite|"
    r"p\.?\s?o\.?\s*box|nr\.|no\.|number|ref|referenz|reference|datum|date)(?=\W|$)",
    re.IGNORECASE,
)
# a postcode and a town ("DE 69876 Frankfurt", "Seattle, WA 98109") or a street and number
_ADDRESS = re.compile(
    r"(?:^|\s)(?:[A-Z]{1,2}[- ]?)?\d{4,5}(?:-\d{4})?\s+[A-ZÄÖÜ][a-zäöüß]|"
    r"\b[A-Z]{2}\s+\d{5}\b|"
    r"(?:str\.|straße|strasse|weg|allee|platz|gasse|street|avenue|ave\.?|road|rd\.|lane|rue|chemin|boulevard|"
    r"laan|straat|plein)\s*\d+",
    re.IGNORECASE,
)
_ATTN = re.compile(r"^(?:attn\.?|attention|z\.\s*hd\.?|c/o|à l'attention de)\s*:?\s*", re.IGNORECASE)
_TITLE_WORDS = re.compile(
    r"^(?:invoice|tax invoice|rechnung|facture|factuur|gutschrift|credit note|stylesheet|seite|page|bill|receipt|"
    r"retail invoice|quittung|beleg|warenrechnung|handelsrechnung|rechnungskorrektur)\b",
    re.IGNORECASE,
)


def _name_like(text: str) -> bool:
    t = text.strip()
    if not 2 <= len(t) <= 90:
        return False
    letters = sum(c.isalpha() for c in t)
    digits = sum(c.isdigit() for c in t)
    if letters < 2 or digits > 0.3 * len(t):
        return False
    if t.upper() in ISO_CODES:
        return False
    if t[0].isdigit() or "@" in t or re.match(r"(?:www\.|https?:)", t, re.IGNORECASE):
        return False
    if find_dates(t) or L.LABEL_WORD_RE.match(t) or _SKIP_LINE.match(t):
        return False
    if t.endswith(":") or L.find_labels_in_text(t, L.SELLER_LABELS, L.BUYER_LABELS):
        return False
    if _ADDRESS.search(t):
        return False
    # "Nummer : GE2020211", "Phone: 123": a short caption and a colon
    return not (re.match(r"^[^:]{1,25}:\s*\S", t) and not _LEGAL.search(t.split(":", 1)[1]))


def _clean_name(text: str) -> str:
    t = _ATTN.sub("", text.strip())
    # "QualityHosting AG - Uferweg 40-42 - D-63571 Gelnhausen": keep the name part
    parts = re.split(r"\s+[-–|·•]\s+", t)
    if len(parts) > 1 and _name_like(parts[0]):
        t = parts[0]
    t = t.strip(" ,;:-–")
    return t


def _party_below(ctx: DocContext, seg: Segment, x0: float, x1: float) -> tuple[str, Segment] | None:
    """The first name-like line under a party label, aligned with it."""
    doc = ctx.doc
    line = doc.lines[seg.line]
    last_bottom = line.bottom
    steps = 0
    for ln in doc.lines[seg.line + 1 :]:
        if ln.page != line.page or ln.top - last_bottom > 3.0 * max(line.height, 1.0) or steps >= 5:
            break
        steps += 1
        last_bottom = ln.bottom
        cand = next(
            (s for s in ln.segments if abs(s.x0 - x0) <= 15 or (s.x0 <= x0 + 5 and s.x1 >= x0 + 5 and s.x0 < x1)),
            None,
        )
        if cand is None:
            continue
        text = cand.text
        if abs(cand.x0 - x0) > 15:
            # a wider segment under the label: start at the word under the label
            idx = next((i for i, w in enumerate(cand.words) if w.x1 >= x0 + 2), 0)
            text = cand.text[cand.offsets[idx] :]
        text = _clean_name(text)
        if _SALUTATION.match(text):
            nxt = _party_below(ctx, cand, cand.x0, cand.x1)
            if nxt is not None:
                return f"{text} {nxt[0]}", cand
        if _name_like(text):
            return _continue_name(ctx, cand, text), cand
    return None


def _continue_name(ctx: DocContext, seg: Segment, text: str) -> str:
    """Join a second name line that carries the legal form ("MVM Musterhafter" /
    "Versicherungsverein Musterstadt a.G.")."""
    if _LEGAL.search(text):
        return text
    doc = ctx.doc
    if seg.line + 1 >= len(doc.lines):
        return text
    ln = doc.lines[seg.line + 1]
    if ln.page != doc.lines[seg.line].page or ln.top - doc.lines[seg.line].bottom > 0.8 * ln.height:
        return text
    nxt = next((s for s in ln.segments if abs(s.x0 - seg.x0) <= 3), None)
    if nxt is None or any(c.isdigit() for c in nxt.text) or not _LEGAL.search(nxt.text):
        return text
    return f"{text} {nxt.text}"


def _party(ctx: DocContext, labelset: L.LabelSet, exclude: str | None = None) -> list[Candidate]:
    cands: list[Candidate] = []
    for hit in ctx.labels(labelset):
        seg = hit.segment
        raw_rest = hit.rest.strip()
        rest = _clean_name(raw_rest)
        got: tuple[str, Segment] | None = None
        if rest and _name_like(rest) and not raw_rest.endswith(":") and not raw_rest.startswith("/"):
            got = (rest, seg)
            bonus = 0.6
        else:
            for s in _following_segments(ctx.doc, seg)[:1]:
                t = _clean_name(s.text)
                if _name_like(t) and not L.find_labels_in_text(t, L.BUYER_LABELS, L.SELLER_LABELS):
                    got, bonus = (t, s), 0.3
            if got is None:
                x0, x1 = seg.span_x(hit.start, hit.end)
                got = _party_below(ctx, seg, x0, x1)
                bonus = 0.4
        if got is None:
            continue
        name, s = got
        if exclude and name.lower() == exclude.lower():
            continue
        cands.append(Candidate(name, hit.label.weight + bonus - 0.001 * seg.line, s.page, _snippet(hit, s), s.line))
    return cands


def seller(ctx: DocContext, buyer_name: str | None) -> list[Candidate]:
    cands = _party(ctx, L.SELLER_LABELS, exclude=buyer_name)
    doc = ctx.doc
    # companies with a legal form: the issuer repeats in header and footer
    counts: Counter[str] = Counter()
    where: dict[str, Segment] = {}
    for seg in doc.segments():
        if seg.page > 2:
            continue
        for part in re.split(r"\s+[-–|·•]\s+|:\s+", seg.text):
            t = _clean_name(part)
            m = _LEGAL.search(t)
            if not m or not _name_like(t) or len(t) > 60:
                continue
            end = m.end() + (1 if t[m.end() : m.end() + 1] == "." else 0)
            t = t[:end].strip(" ,")  # cut what follows the legal form ("Inc." keeps its dot)
            if buyer_name and t.lower() in buyer_name.lower():
                continue
            counts[t] += 1
            where.setdefault(t, seg)
    for name, k in counts.items():
        s = where[name]
        height = doc.page_sizes[s.page - 1][1] or 842.0
        pos = s.top / height
        score = 1.0 + 0.4 * min(k, 3) + (0.4 if s.page == 1 and pos < 0.25 else 0.0) + (0.2 if pos > 0.8 else 0.0)
        cands.append(Candidate(name, score, s.page, s.text[:120], s.line))
    if not cands:
        # the first name-like line of the first page that is not a title
        for line in doc.page_lines(1)[:8]:
            for s in line.segments:
                t = _clean_name(s.text)
                if _name_like(t) and not _TITLE_WORDS.match(t) and (buyer_name is None or t != buyer_name):
                    cands.append(Candidate(t, 0.5, s.page, s.text[:120], s.line))
                    break
            if cands:
                break
    return cands


def buyer(ctx: DocContext) -> list[Candidate]:
    return _party(ctx, L.BUYER_LABELS)


# --------------------------------------------------------------------------- orchestration


def _pick(cands: Sequence[Candidate], strong: float = 3.9) -> FieldValue | None:
    """The best candidate with a confidence that ranks doubtful values low.

    ``strong`` is the score of a clear reading for this field (a strong label
    with its value beside it on page 1). The confidence grows with the winner's
    score relative to that, with its lead over the best *different* value, with
    other places agreeing, and with an arithmetic check that held; a failed
    check caps it, because such a value is more often wrong.
    """
    if not cands:
        return None
    best = max(cands, key=lambda c: c.score)
    agree = sum(1 for c in cands if c.value == best.value)
    rivals = [c.score for c in cands if c.value != best.value]
    margin = best.score - max(rivals) if rivals else strong
    conf = (
        0.25
        + 0.45 * max(0.0, min(best.score / strong, 1.0))
        + 0.2 * max(0.0, min(margin / (0.3 * strong), 1.0))
        + 0.03 * min(agree - 1, 3)
    )
    if best.checked is True:
        conf += 0.05
    elif best.checked is False:
        conf = min(conf, 0.55)
    conf = min(0.97, max(0.05, conf))
    return FieldValue(value=best.value, confidence=round(conf, 2), page=best.page, snippet=best.snippet)


# The score of a clear reading per preset field (see _pick).
_STRONG = {"total": 11.0, "amount_due": 8.0, "seller": 3.6, "buyer": 3.6}


_PRESET_NAMES = ("invoice_number", "date", "total", "currency", "seller", "buyer", "amount_due")


def extract_fields(doc: Document, fields: Iterable[FieldSpec]) -> dict[str, FieldValue | None]:
    """Document-level values for ``fields`` (None where nothing was found)."""
    ctx = DocContext.of(doc)
    specs = list(fields)
    out: dict[str, FieldValue | None] = {}
    memo: dict[str, FieldValue | None] = {}

    def get(name: str) -> FieldValue | None:
        if name in memo:
            return memo[name]
        v: FieldValue | None
        if name == "invoice_number":
            v = _pick(invoice_number(ctx))
        elif name == "date":
            num = invoice_number(ctx)
            best_num = max(num, key=lambda c: c.score) if num else None
            v = _pick(invoice_date(ctx, best_num))
        elif name == "total":
            v = _pick(invoice_total(ctx), _STRONG["total"])
        elif name == "currency":
            tot = invoice_total(ctx)
            v = _pick(invoice_currency(ctx, max(tot, key=lambda c: c.score) if tot else None))
        elif name == "amount_due":
            # the amount left to pay: "due" labels first, else the gross total
            tot = invoice_total(ctx)
            due = [c for c in tot if c.kind == "due"]
            v = _pick(due or tot, _STRONG["amount_due"])
        elif name == "buyer":
            v = _pick(buyer(ctx), _STRONG["buyer"])
        elif name == "seller":
            b = get("buyer")
            v = _pick(seller(ctx, str(b.value) if b is not None else None), _STRONG["seller"])
        else:
            raise KeyError(name)
        memo[name] = v
        return v

    for spec in specs:
        if spec.name in _PRESET_NAMES and _preset_compatible(spec):
            out[spec.name] = _typed(get(spec.name), spec.type)
        else:
            out[spec.name] = generic_field(ctx, spec)
    return out


def _preset_compatible(spec: FieldSpec) -> bool:
    expected = {
        "invoice_number": {FieldType.STRING},
        "date": {FieldType.DATE, FieldType.STRING},
        "total": {FieldType.NUMBER, FieldType.STRING},
        "amount_due": {FieldType.NUMBER, FieldType.STRING},
        "currency": {FieldType.CURRENCY, FieldType.STRING},
        "seller": {FieldType.STRING},
        "buyer": {FieldType.STRING},
    }
    return spec.type in expected[spec.name]


def _typed(v: FieldValue | None, t: FieldType) -> FieldValue | None:
    if v is None or t != FieldType.STRING or isinstance(v.value, str):
        return v
    return v.model_copy(update={"value": str(v.value)})


def generic_field(ctx: DocContext, spec: FieldSpec) -> FieldValue | None:
    """A user-defined field: a label search on its catalogue synonyms, name and
    description, read by its type's parser; validated types (IBAN, VAT id,
    e-mail, ...) are also searched for by their shape when no label is printed.
    Every value is normalised for its type; a value that fails validation is not
    taken (null is better than wrong)."""
    from common.extraction import typed

    labelset = typed.labels_for(spec)
    parse: Parser | None = typed.parser_for(spec)
    if parse is None:
        parse = _PARSERS.get(spec.type, parse_string)
        if spec.type == FieldType.STRING:
            # "order_number", "customer_id", "tracking_code": an identifier, not free text
            is_id = spec.name.rsplit("_", 1)[-1] in {"number", "no", "nr", "num", "id", "code", "ref", "reference"}
            parse = parse_id if is_id else _string_or_id
    cands = _best_from_labels(ctx, labelset, parse) + typed.phrases(ctx.doc, spec, ctx.dayfirst)
    cands = [c for c in cands if normalize_value(c.value, spec.type, spec.choices) is not None]
    if not cands:
        cands = typed.scan_document(ctx.doc, spec)
    got = _pick(cands)
    if got is None:
        return None
    return got.model_copy(update={"value": normalize_value(got.value, spec.type, spec.choices)})


def _string_or_id(text: str, ctx: DocContext) -> tuple[Scalar, int, int] | None:
    """A string field's value: up to the next wide gap, which segments already
    enforce; a lone leading "No."/":" is dropped."""
    lead = _LEAD.match(text)
    return parse_string(text[lead.end() if lead else 0 :], ctx)
