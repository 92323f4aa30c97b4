"""What kind of document this is -- invoice, credit note, receipt -- and
which printed numbers and dates refer to *another* document.

A credit note names the invoice it corrects ("Gutschrift Nr. G-17 zur
Rechnung Nr. R-4711"); its own number is the one labelled with the credit-note
word. The type comes from the title: the largest document word near the top of
the first page.
"""

from __future__ import annotations

import re
from typing import Literal

from common.extraction.layout import Document

__all__ = ["CREDIT_WORDS", "INVOICE_WORDS", "REFERENCE_BEFORE", "DocType", "detect_type"]

DocType = Literal["invoice", "credit_note", "receipt"]

CREDIT_WORDS = re.compile(
    r"\b(?:credit\s*(?:note|memo)|gutschrift\w*|rechnungskorrektur|korrekturrechnung|stornorechnung|storno\w*|"
    r"avoir|facture\s*d'avoir|note\s*de\s*cr[ée]dit|nota\s*(?:di\s*)?credito|nota\s*de\s*cr[ée]dito|"
    r"creditnota|creditfactuur|abono)\b",
    re.IGNORECASE,
)
INVOICE_WORDS = re.compile(
    r"\b(?:invoice|rechnung|facture|factuur|fattura|factura|bill)\b|\brechnungs(?!korrektur)\w*", re.IGNORECASE
)
RECEIPT_WORDS = re.compile(r"\b(?:receipt|quittung|kassenbon|kassenbeleg|reçu|ticket\s*de\s*caisse)\b", re.I)

# Words just before a number's label that make it a reference to another
# document: "zur Rechnung Nr.", "for invoice no.", "sur facture n°", "Ref. invoice".
REFERENCE_BEFORE = re.compile(
    r"(?:\b(?:zur|zu|zum|bezüglich|bzgl\.?|betr(?:eff|\.)?|for|to|of|against|re:?|refers?\s*to|regarding|"
    r"relating\s*to|sur|de\s*la|concernant|relative\s*à|della|alla|original(?:e|en)?|ursprüngliche[nr]?|"
    r"korrigierte[nr]?|corrected|previous|vorherige[nr]?|referenz|reference|ref\.?|bezug)\W*)$",
    re.IGNORECASE,
)


def detect_type(doc: Document) -> DocType:
    """The document's type from its title: a document word standing out on the
    upper half of page 1 (the largest one wins; a credit word beats an invoice
    word of the same size, because credit notes often say "Gutschrift zur Rechnung")."""
    best: tuple[float, int, DocType] | None = None
    for line in doc.page_lines(1):
        height = doc.page_sizes[0][1] or 842.0
        if line.top > 0.5 * height:
            break
        for seg in line.segments:
            text = seg.text
            size = max((w.height for w in seg.words), default=0.0)
            kind: DocType | None = None
            rank = 0
            if CREDIT_WORDS.search(text):
                kind, rank = "credit_note", 2
            elif RECEIPT_WORDS.search(text) and not INVOICE_WORDS.search(text):
                kind, rank = "receipt", 1
            elif INVOICE_WORDS.search(text):
                kind, rank = "invoice", 1
            if kind is None:
                continue
            key = (round(size, 0), rank, kind)
            if best is None or key[:2] > best[:2]:
                best = key
    return best[2] if best is not None else "invoice"
