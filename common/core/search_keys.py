"""Extra search terms that make dates and identifiers match however they are written.

Word tokenisers split ``05.03.2013`` into ``05 03 2013`` and ``INV/2023/03/0008``
into ``inv 2023 03 0008``: a question written ``2013-03-05`` or ``INV-2023-03-0008``
then matches only common number fragments. The same function runs over a
chunk's text when it is indexed and over a query, adding:

- a **date key** ``d20130305`` for each date written as ISO (``2013-03-05``,
  ``2013/03/05``), day first (``05.03.2013``, ``5/3/2013``: an ambiguous
  ``DD/MM`` vs ``MM/DD`` gives both keys), or with a month name in English or
  German (``March 5, 2013``, ``5 March 2013``, ``5. März 2013``, ``Mar 5 2013``);
- an **identifier key** for each run of letters and digits joined by ``- / . _ #``
  that contains a digit (``INV/2023/03/0008`` → ``inv2023030008``).

Keys are lower case letters and digits only, so any word tokeniser keeps each
whole. :func:`required_terms` says which of a query's terms are specific
enough that a matching chunk should rank above one that only shares common words.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

__all__ = ["required_terms", "search_keys", "words"]

_MONTHS = {
    "jan": 1, "january": 1, "januar": 1, "jänner": 1, "feb": 2, "february": 2, "februar": 2, "mar": 3, "march": 3,
    "märz": 3, "maerz": 3, "mrz": 3, "apr": 4, "april": 4, "may": 5, "mai": 5, "jun": 6, "june": 6, "juni": 6,
    "jul": 7, "july": 7, "juli": 7, "aug": 8, "august": 8, "sep": 9, "sept": 9, "september": 9, "oct": 10,
    "october": 10, "okt": 10, "oktober": 10, "nov": 11, "november": 11, "dec": 12, "december": 12, "dez": 12,
    "dezember": 12,
}  # fmt: skip
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ISO = re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")
_NUMERIC = re.compile(r"(?<![\d.])(\d{1,2})([./-])(\d{1,2})\2(\d{4})(?!\d)")
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})\.?\s+({_MONTH})\.?,?\s+(\d{{4}})(?!\d)", re.IGNORECASE)
_MONTH_DAY = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})(?!\d)", re.IGNORECASE)
# Possessive: a word that is not followed by a joiner fails at once instead of backtracking through its prefixes.
_IDENT = re.compile(r"\b[^\W_]++(?:[-/._#]++[^\W_]++)+")
# A single term this specific: a number or code of at least this many characters with a digit in it.
_SPECIFIC_LEN = 5


def _key(y: int, m: int, d: int) -> str | None:
    try:
        return "d" + date(y, m, d).strftime("%Y%m%d")
    except ValueError:
        return None


def _date_keys(text: str, spans: list[tuple[int, int]]) -> list[str]:
    keys: list[str | None] = []
    for m in _ISO.finditer(text):
        keys.append(_key(int(m[1]), int(m[2]), int(m[3])))
        spans.append(m.span())
    for m in _NUMERIC.finditer(text):
        a, b, y = int(m[1]), int(m[3]), int(m[4])
        keys.append(_key(y, b, a))  # day first: most of the world
        if m[2] == "/" and a <= 12:
            keys.append(_key(y, a, b))  # month first: the US
        spans.append(m.span())
    for m in _DAY_MONTH.finditer(text):
        keys.append(_key(int(m[3]), _MONTHS[m[2].lower()], int(m[1])))
    for m in _MONTH_DAY.finditer(text):
        keys.append(_key(int(m[3]), _MONTHS[m[1].lower()], int(m[2])))
    return [k for k in keys if k]


def _ident_keys(text: str, dates: list[tuple[int, int]]) -> list[str]:
    out = []
    for m in _IDENT.finditer(text):
        inside_a_date = any(a <= m.start() and m.end() <= b for a, b in dates)
        if not inside_a_date and any(c.isdigit() for c in m[0]):
            out.append("".join(re.findall(r"[^\W_]+", m[0])).lower())
    return out


def search_keys(text: str) -> list[str]:
    """The date and identifier keys of ``text``, distinct, in order of appearance."""
    spans: list[tuple[int, int]] = []
    dates = _date_keys(text, spans)
    return list(dict.fromkeys(dates + _ident_keys(text, spans)))


def required_terms(terms: list[str], keys: list[str]) -> list[str]:
    """The query's specific terms: its keys and its long numbers or codes."""
    specific = [t for t in terms if len(t) >= _SPECIFIC_LEN and any(c.isdigit() for c in t)]
    return list(dict.fromkeys(keys + specific))


_WORD = re.compile(r"[^\W_]+")


def words(text: str, limit: int | None = None) -> list[str]:
    """Words as the embedded index's unicode61 tokeniser makes them (lower case,
    diacritics folded, ``_`` splits). With ``limit``: the first distinct ones."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    found = _WORD.findall(folded)
    return list(dict.fromkeys(found))[:limit] if limit is not None else found
