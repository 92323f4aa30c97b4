"""Choosing the grand total by arithmetic, not only by its label.

An invoice's amounts check each other: net + tax = gross. A labelled
candidate that is the sum of a printed net amount and a printed tax amount is
the total; one that *is* the net or the tax amount (a "Total" column over line
amounts, "Total VAT") is not, when a consistent one exists. When no label
gives a total (insurance-style layouts), the printed net + tax is looked for
among the amounts on the page. Each candidate records whether the check was
possible and whether it held, so the confidence can say so.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from common.extraction import labels as L
from common.extraction.layout import Document
from common.extraction.normalize import find_amounts, find_currencies

if TYPE_CHECKING:
    from common.extraction.fields import Candidate

__all__ = ["NET_LABELS", "TAX_LABELS", "check_totals"]

NET_LABELS = L.LabelSet(
    labels=L._labels(
        (
            r"\bsub[\s-]*total|\bnet\s*(?:amount|total|value)|\btotal\s*(?:net|excl\.?|excluding|before\s*tax|ht)\b|"
            r"\bnetto\w*|\w+netto\b|\bsumme\s*netto|\bzwischensumme|\bwarenwert|\bgesamt\s*netto|"
            r"\b(?:montant|total)\s*h\.?t\.?\b|\bsous[\s-]*total|\btotaal\s*excl|\bsubtotaal|\bimponibile|"
            r"\bbase\s*imponible|\bsumme\s*positionen|\bline\s*total\s*amount",
            5.0,
        ),
    ),
    negative=re.compile(r"(?:brutto|gross|incl|inkl|ttc)\S*\s*$", re.IGNORECASE),
)
TAX_LABELS = L.LabelSet(
    labels=L._labels(
        (
            r"\b(?:total\s*)?(?:vat|tax|gst|hst|sales\s*tax)\b|\bmwst\.?|\bmehrwertsteuer|\bumsatzsteuer|\bust\.?(?!-?id)|"
            r"\bsteuerbetrag|\b\w+steuer\b|\b(?:montant\s*)?(?:de\s*la\s*)?tva\b|\bbtw\b|\biva\b|\bsumme\s*steuer",
            5.0,
        ),
    ),
    negative=re.compile(r"(?:incl|inkl|including|inc|einschl|ttc|with|w/|brutto|gross)\.?\s*$", re.IGNORECASE),
    negative_after=re.compile(
        r"\b(?:id|no\.?|nr\.?|number|reg|registration|identifi|incl|inkl|including|ttc)|idnr|-id", re.I
    ),
)

_TOL = 0.011


def _labelled_amounts(doc: Document, labelset: L.LabelSet) -> list[float]:
    """The last money-like amount after each label, on the label's segment or the next one."""
    from common.extraction.fields import parse_total

    out: list[float] = []
    for hit in L.find_labels(doc, labelset):
        texts = [hit.rest, *[s.text for s in doc.lines[hit.segment.line].segments if s.x0 > hit.segment.x0][:2]]
        for t in texts:
            got = parse_total(t)
            if got is not None and isinstance(got[0], float):
                out.append(abs(got[0]))
                break
    return out


def _printed_amounts(doc: Document) -> list[tuple[float, int]]:
    """Every money-like amount in the document with its line index."""
    out: list[tuple[float, int]] = []
    for line in doc.lines:
        text = line.text
        for a in find_amounts(text):
            if a.decimals == 2 or find_currencies(text[max(0, a.start - 5) : a.end + 5]):
                out.append((abs(a.value), line.index))
    return out


def check_totals(doc: Document, cands: list[Candidate]) -> list[Candidate]:
    """``cands`` (fields.Candidate) rescored by arithmetic consistency, plus a
    computed candidate when no label found a consistent total."""
    from common.extraction.fields import Candidate

    typed = list(cands)
    nets = _labelled_amounts(doc, NET_LABELS)
    taxes = _labelled_amounts(doc, TAX_LABELS)
    if taxes:
        taxes = [*taxes, sum(set(taxes))]
    sums = {round(n + t, 2) for n in nets for t in taxes if t < n}
    parts = {round(x, 2) for x in nets + taxes}
    if not sums:
        out = typed
        if not out:
            out = _fallback(doc)
        return list(out)
    consistent = [c for c in typed if _near(c.value, sums)]
    out = []
    for c in typed:
        if _near(c.value, sums):
            out.append(replace(c, score=c.score + 3.0, checked=True))
        elif consistent and _near(c.value, parts):
            out.append(replace(c, score=c.score - 3.0, checked=False))
        else:
            out.append(replace(c, checked=False))
    if not consistent:
        # no label led to net + tax: look for it among the printed amounts (latest first)
        printed = sorted(_printed_amounts(doc), key=lambda p: -p[1])
        for value, idx in printed:
            if _near(value, sums):
                line = doc.lines[idx]
                out.append(Candidate(value, 7.0, line.page, line.text[:120], idx, "gross", checked=True))
                break
    return list(out)


def _near(v: object, targets: set[float]) -> bool:
    return isinstance(v, float | int) and any(abs(abs(float(v)) - t) <= _TOL for t in targets)


_SUM_WORDS = re.compile(
    r"betrag|amount|summe|\bsum\b|total|montant|bedrag|importe|zu\s*zahlen|payable|à\s*payer|te\s*betalen", re.I
)


def _fallback(doc: Document) -> list[Candidate]:
    """No total label at all: the largest amount on a line with a sum word, weakly."""
    from common.extraction.fields import Candidate

    best: tuple[float, int] | None = None
    for value, idx in _printed_amounts(doc):
        if _SUM_WORDS.search(doc.lines[idx].text) and (best is None or value > best[0]):
            best = (value, idx)
    if best is None:
        return []
    line = doc.lines[best[1]]
    return [Candidate(best[0], 2.0, line.page, line.text[:120], best[1], "gross", checked=None)]
