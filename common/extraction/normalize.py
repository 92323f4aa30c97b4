"""Normalisation of printed values: dates, amounts, currencies.

Pure Python, no PDF libraries: these helpers see only strings, so they are
cheap to import and easy to unit-test. Every ``find_*`` function returns the
matches with their character span, so callers can tell which match sits
closest to a label.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

__all__ = [
    "AmountMatch",
    "CurrencyMatch",
    "DateMatch",
    "find_amounts",
    "find_currencies",
    "find_dates",
    "guess_dayfirst",
    "normalize_currency",
    "parse_amount",
    "parse_date",
]

# --------------------------------------------------------------------------- dates

# Month names in English, German, French, Dutch, Spanish and Italian, with the
# abbreviations invoices use. Keys are lower case and accent-bearing forms also
# appear without accents because text layers often lose them.
_MONTHS: dict[str, int] = {}
for _num, _names in enumerate(
    (
        "january jan januar jänner janner janvier janv januari enero gennaio ene gen",
        "february feb februar février fevrier févr fevr fév fev februari febrero febbraio",
        "march mar märz maerz marz mrz mär mars maart marzo",
        "april apr avril avr abril aprile",
        "may mai mei mayo maggio mag",
        "june jun juni juin junio giugno giu",
        "july jul juli juillet juil julio luglio lug",
        "august aug august août aout augustus agosto ago",
        "september sep sept septembre settembre septiembre set",
        "october oct oktober okt octobre octubre ottobre ott",
        "november nov novembre noviembre",
        "december dec dezember dez décembre decembre déc diciembre dicembre dic",
    ),
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _num

_MONTH_RE = "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True))

# Digits must not touch other digits (or a decimal point followed by digits):
# that keeps "1.12244" or an IBAN from being read as a date.
_NB = r"(?<![\d.,/-])"  # no digit-ish character before
_NA = r"(?![\d]|[.,/-]\d)"  # no digit (or separator + digit) after

_ISO_RE = re.compile(_NB + r"(\d{4})([-./])(\d{1,2})\2(\d{1,2})" + _NA)
_NUMERIC_RE = re.compile(_NB + r"(\d{1,2})\s?([./-])\s?(\d{1,2})\s?\2\s?(\d{4}|\d{2})" + _NA)
_DAY_MONTH_YEAR_RE = re.compile(
    r"(?<![\d])(\d{1,2})(?:st|nd|rd|th|er|e)?\.?\s*(?:de\s+)?(" + _MONTH_RE + r")\.?,?\s*(?:de\s+)?(\d{4})(?!\d)",
    re.IGNORECASE,
)
_MONTH_DAY_YEAR_RE = re.compile(
    r"(?<![\w])(" + _MONTH_RE + r")\.?\s+(\d{1,2})(?:st|nd|rd|th)?\s*,?\s*(\d{4})(?!\d)",
    re.IGNORECASE,
)
# "20180305" is how CII writes dates (format 102); printed pages rarely do,
# so compact dates are only read by parse_date on a whole value, not searched.
_COMPACT_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


@dataclass(frozen=True, slots=True)
class DateMatch:
    iso: str
    start: int
    end: int
    text: str
    ambiguous: bool = False  # numeric D/M vs M/D where both are <= 12


def _mkdate(y: int, m: int, d: int) -> str | None:
    if y < 100:
        y += 2000 if y < 70 else 1900
    if not 1900 <= y <= 2100:
        return None
    try:
        return _dt.date(y, m, d).isoformat()
    except ValueError:
        return None


def find_dates(text: str, *, dayfirst: bool | None = None) -> list[DateMatch]:
    """All dates in ``text`` in order of position.

    ``dayfirst`` decides ambiguous numeric dates (``03/04/2020``): True reads
    day/month, False month/day, None guesses from the separator (a dot is
    European day-first; a slash is taken day-first too unless told otherwise).
    """
    found: list[DateMatch] = []
    taken: list[tuple[int, int]] = []

    def free(s: int, e: int) -> bool:
        return all(e <= a or s >= b for a, b in taken)

    def add(iso: str | None, m: re.Match[str], ambiguous: bool = False) -> None:
        if iso and free(m.start(), m.end()):
            found.append(DateMatch(iso, m.start(), m.end(), m.group(0), ambiguous))
            taken.append((m.start(), m.end()))

    for m in _ISO_RE.finditer(text):
        add(_mkdate(int(m.group(1)), int(m.group(3)), int(m.group(4))), m)
    for m in _DAY_MONTH_YEAR_RE.finditer(text):
        add(_mkdate(int(m.group(3)), _MONTHS[m.group(2).lower()], int(m.group(1))), m)
    for m in _MONTH_DAY_YEAR_RE.finditer(text):
        add(_mkdate(int(m.group(3)), _MONTHS[m.group(1).lower()], int(m.group(2))), m)
    for m in _NUMERIC_RE.finditer(text):
        a, sep, b, y = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        if a > 12 and b <= 12:
            add(_mkdate(y, b, a), m)
        elif b > 12 and a <= 12:
            add(_mkdate(y, a, b), m)
        else:
            df = dayfirst if dayfirst is not None else True
            if sep == "." and dayfirst is None:
                df = True  # dotted dates are European
            iso = _mkdate(y, b, a) if df else _mkdate(y, a, b)
            add(iso, m, ambiguous=a != b)
    found.sort(key=lambda d: d.start)
    return found


def parse_date(text: str, *, dayfirst: bool | None = None) -> str | None:
    """The first date in ``text`` as ISO ``YYYY-MM-DD``, or None."""
    s = text.strip()
    m = _COMPACT_RE.match(s)
    if m:
        return _mkdate(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    dates = find_dates(s, dayfirst=dayfirst)
    return dates[0].iso if dates else None


def guess_dayfirst(text: str, *, us_hint: bool = False) -> bool:
    """Whether ambiguous slash dates in a document are day-first.

    An unambiguous date decides (``20/03/2023`` is day-first, ``03/20/2023``
    month-first); failing that, dotted dates mean Europe, and a US-dollar
    document (``us_hint``) means month-first.
    """
    votes_df = votes_mf = 0
    for m in _NUMERIC_RE.finditer(text):
        a, b = int(m.group(1)), int(m.group(3))
        if a > 12 >= b:
            votes_df += 1
        elif b > 12 >= a:
            votes_mf += 1
        elif m.group(2) == ".":
            votes_df += 1
    if votes_df != votes_mf:
        return votes_df > votes_mf
    return not us_hint


# --------------------------------------------------------------------------- amounts

# A number as printed on an invoice: optional sign or opening parenthesis,
# digits with optional grouping (. , space, narrow space, apostrophe) and an
# optional decimal part, then an optional trailing minus or closing bracket.
_SPACES = " \u00a0\u202f\u2009"
_AMOUNT_RE = re.compile(
    r"(?<![\w.,\-])"
    r"(?P<neg1>[-\u2212\u2013]\s?)?"
    r"(?P<par>\()?"
    r"(?P<cur1>[€$£¥₹]\s?)?"
    r"(?P<neg2>[-\u2212]\s?)?"
    r"(?P<num>\d{1,3}(?:(?:[.,'’]|[" + _SPACES + r"])\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?)"
    r"(?P<cur2>\s?[€$£¥₹])?"
    r"(?P<close>\))?"
    r"(?P<neg3>-(?!\d))?"
    r"(?![\w]|[.,]\d)"
)


@dataclass(frozen=True, slots=True)
class AmountMatch:
    value: float
    start: int
    end: int
    text: str
    decimals: int  # digits after the decimal separator (0 for whole numbers)


def _to_float(num: str) -> tuple[float, int] | None:
    """Read digits with grouping and decimal separators; return value and decimals."""
    s = num
    for ch in _SPACES + "'’":
        s = s.replace(ch, "")
    last_dot, last_comma = s.rfind("."), s.rfind(",")
    if last_dot >= 0 and last_comma >= 0:
        dec = "." if last_dot > last_comma else ","
        grp = "," if dec == "." else "."
        s = s.replace(grp, "")
    elif last_dot >= 0 or last_comma >= 0:
        sep = "." if last_dot >= 0 else ","
        parts = s.split(sep)
        if len(parts) > 2:
            # 1.234.567 -- several separators of one kind are grouping
            if not all(len(p) == 3 for p in parts[1:]):
                return None
            s = "".join(parts)
            sep = ""
        elif len(parts[1]) == 3 and parts[0] not in ("", "0") and len(parts[0]) <= 3:
            # 1,234 / 1.234: a single separator followed by exactly three digits
            # is grouping on an invoice far more often than a 3-decimal price.
            s = "".join(parts)
            sep = ""
        dec = sep
    else:
        dec = ""
    decimals = 0
    if dec:
        ip, _, fp = s.partition(dec)
        decimals = len(fp)
        s = f"{ip or '0'}.{fp}"
    try:
        return float(s), decimals
    except ValueError:
        return None


def find_amounts(text: str) -> list[AmountMatch]:
    """Every number in ``text`` read as an amount, with sign conventions applied."""
    out: list[AmountMatch] = []
    for m in _AMOUNT_RE.finditer(text):
        num = m.group("num").strip()
        # A trailing space group belongs to the next token ("12 345" is fine,
        # but "2014 12" is two numbers): accept space grouping only with a
        # decimal part, which is how space-grouped amounts are printed.
        if any(c in num for c in _SPACES) and not re.search(r"[.,]\d{1,2}$", num):
            head = re.split(r"[" + _SPACES + r"]", num)[0]
            read = _to_float(head)
            if read is None:
                continue
            end = m.start("num") + len(head)
            val, decimals = read
            neg = bool(m.group("neg1") or m.group("neg2"))
            out.append(
                AmountMatch(
                    -val if neg else val,
                    m.start(),
                    end,
                    text[m.start() : end],
                    decimals,
                )
            )
            continue
        read = _to_float(num)
        if read is None:
            continue
        val, decimals = read
        paren = bool(m.group("par") and m.group("close"))
        neg = bool(m.group("neg1") or m.group("neg2") or m.group("neg3") or paren)
        out.append(AmountMatch(-val if neg else val, m.start(), m.end(), m.group(0), decimals))
    return out


def parse_amount(text: str) -> float | None:
    """The first amount in ``text`` as a float (``1.234,56`` -> 1234.56, ``(12.50)`` -> -12.5)."""
    found = find_amounts(text.strip())
    return found[0].value if found else None


# --------------------------------------------------------------------------- currencies

# ISO codes accepted when printed as a word. Deliberately a list of common
# codes rather than all of ISO 4217: three-letter words such as ALL or CUP
# would otherwise turn ordinary text into currencies.
ISO_CODES = frozenset(
    [
        "EUR",
        "USD",
        "GBP",
        "CHF",
        "JPY",
        "CNY",
        "INR",
        "AUD",
        "CAD",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "CZK",
        "HUF",
        "RON",
        "BGN",
        "HRK",
        "RUB",
        "TRY",
        "BRL",
        "MXN",
        "ZAR",
        "SGD",
        "HKD",
        "KRW",
        "AED",
        "SAR",
        "ILS",
        "THB",
        "MYR",
        "IDR",
        "PHP",
        "ISK",
        "UAH",
        "RSD",
    ]
)
_SYMBOLS = {
    "€": "EUR",
    "$": "USD",
    "£": "GBP",
    "¥": "JPY",
    "₹": "INR",
    "₽": "RUB",
    "₺": "TRY",
    "₩": "KRW",
}
_WORDS = {
    "euro": "EUR",
    "euros": "EUR",
    "us dollar": "USD",
    "us dollars": "USD",
    "u.s. dollars": "USD",
    "dollars": "USD",
    "pound sterling": "GBP",
    "pounds sterling": "GBP",
    "rs.": "INR",
    "rs": "INR",
    "rupees": "INR",
    "us$": "USD",
    "a$": "AUD",
    "au$": "AUD",
    "c$": "CAD",
    "ca$": "CAD",
    "nz$": "NZD",
    "hk$": "HKD",
    "s$": "SGD",
    "sfr.": "CHF",
    "fr.": "CHF",
    "zł": "PLN",
    "kč": "CZK",
}
_CUR_RE = re.compile(
    r"(?<![A-Za-z])(?:(?P<code>" + "|".join(sorted(ISO_CODES)) + r")(?![A-Za-z])"
    r"|(?P<word>us\$|a\$|au\$|c\$|ca\$|nz\$|hk\$|s\$|u\.s\. dollars|us dollars?|pounds? sterling|euros?"
    r"|dollars|rupees|rs\.?(?=\s?-?\d)|sfr\.|zł|kč)"
    r"|(?P<sym>[€$£¥₹₽₺₩]))",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class CurrencyMatch:
    code: str
    start: int
    end: int
    text: str
    is_code: bool  # an ISO code printed as such (stronger evidence than a symbol)


def find_currencies(text: str) -> list[CurrencyMatch]:
    """Currency codes, symbols and names in ``text``, mapped to ISO codes."""
    out: list[CurrencyMatch] = []
    for m in _CUR_RE.finditer(text):
        if m.group("code"):
            code = m.group("code")
            if code != code.upper():
                continue  # "eur" in running text is not a code; printed codes are upper case
            out.append(CurrencyMatch(code, m.start(), m.end(), m.group(0), True))
        elif m.group("word"):
            out.append(
                CurrencyMatch(
                    _WORDS[m.group("word").lower()],
                    m.start(),
                    m.end(),
                    m.group(0),
                    False,
                )
            )
        else:
            out.append(CurrencyMatch(_SYMBOLS[m.group("sym")], m.start(), m.end(), m.group(0), False))
    return out


def normalize_currency(text: str) -> str | None:
    """``"€"`` -> ``"EUR"``, ``"usd"`` -> ``"USD"``; the first currency in ``text``."""
    s = text.strip()
    if s.upper() in ISO_CODES:
        return s.upper()
    found = find_currencies(s)
    return found[0].code if found else None
