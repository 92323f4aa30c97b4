"""The disclaimer auditor: each required text is printed, close enough, on the pages it must be on.

Matching is fuzzy, over words: text is lower-cased and reduced to letters and
digits (line breaks, hyphenation spaces and punctuation do not count), then
the best-matching run of words on each page is scored with difflib's ratio.
Candidate runs are first ranked by how many of the required words they hold
(linear in the page's words), so only a few are compared character by
character.
"""

from __future__ import annotations

import re
from collections import Counter
from difflib import SequenceMatcher

from common.audit.document import AuditDocument
from common.audit.report import AuditorResult, Finding, Severity
from common.audit.settings import AuditSettings, Disclaimer, select_pages

NAME = "disclaimer"
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CANDIDATES = 4


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def best_match(required: list[str], page: list[str]) -> tuple[float, int, int]:
    """(ratio, start, end) of the run of ``page`` words that best matches ``required`` (0 if none)."""
    n = len(required)
    if not n or not page:
        return 0.0, 0, 0
    target = " ".join(required)
    want = Counter(required)
    # Runs of n words, ranked by the required words they contain (a sliding multiset count).
    have: Counter[str] = Counter(page[:n])
    overlap = sum(min(c, want[w]) for w, c in have.items())
    scored = [(overlap, 0)]
    for start in range(1, max(1, len(page) - n + 1)):
        out, new = page[start - 1], page[start + n - 1]
        if want[out] and have[out] <= want[out]:
            overlap -= 1
        have[out] -= 1
        have[new] += 1
        if want[new] and have[new] <= want[new]:
            overlap += 1
        scored.append((overlap, start))
    best = (0.0, 0, 0)
    for _, start in sorted(scored, key=lambda s: (-s[0], s[1]))[:_CANDIDATES]:
        # A slightly shorter or longer run can match better (a word dropped or added).
        for end in range(max(start + 1, min(start + n - 2, len(page))), min(len(page), start + n + 2) + 1):
            ratio = SequenceMatcher(None, target, " ".join(page[start:end]), autojunk=False).ratio()
            if ratio > best[0]:
                best = (ratio, start, end)
    return best


def audit(doc: AuditDocument, settings: AuditSettings) -> AuditorResult:
    findings: list[Finding] = []
    page_words = {p.number: words(p.text) for p in doc.pages}
    for rule in settings.disclaimers:
        findings.extend(_check(rule, page_words, len(doc.pages)))
    return AuditorResult.of(NAME, doc.name, findings, pages=len(doc.pages))


def _check(rule: Disclaimer, page_words: dict[int, list[str]], count: int) -> list[Finding]:
    required = words(rule.text)
    short = rule.text if len(rule.text) <= 60 else rule.text[:57] + "..."
    pages = select_pages(rule.pages, count)
    found: dict[int, tuple[float, str]] = {}
    for number in pages:
        ratio, start, end = best_match(required, page_words[number])
        if ratio >= rule.min_ratio:
            found[number] = (ratio, " ".join(page_words[number][start:end]))
    out: list[Finding] = []
    for number, (ratio, quote) in sorted(found.items()):
        exact = ratio >= 0.999
        out.append(
            Finding(
                auditor=NAME,
                code="disclaimer_found" if exact else "disclaimer_differs",
                severity=Severity.INFO if exact else Severity.WARNING,
                message=f"{short!r} found" + ("" if exact else f" with differences (ratio {ratio:.2f})"),
                page=number,
                quote=quote,
                suggestion=None if exact else rule.text,
                score=round(ratio, 3),
            )
        )
    missing = [] if rule.pages == "any" and found else [p for p in pages if p not in found]
    if rule.pages == "any" and not found:
        missing = [0]
    for number in missing:
        out.append(
            Finding(
                auditor=NAME,
                code="disclaimer_missing",
                severity=Severity.ERROR,
                message=f"{short!r} is not printed" + (" anywhere" if number == 0 else " on this page"),
                page=number or None,
                suggestion=rule.text,
                details={"required_pages": rule.pages, "min_ratio": rule.min_ratio},
            )
        )
    return out
