"""Validation and normalisation of typed field values (pure, no I/O).

Every extractor -- the offline text reader, the e-invoice XML reader, Gemini --
passes its values through :func:`normalize_value`, so a field typed ``iban``
holds an IBAN without spaces whose mod-97 check passes, or null: a null is
better than a wrong value, because a reviewer sees that it is missing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import date

from common.core.schema import FieldType, Scalar

__all__ = [
    "IBAN_LENGTHS",
    "bic",
    "email",
    "iban",
    "normalize_value",
    "percentage",
    "phone",
    "vat_id",
]

# IBAN length by country (the SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def _mod97(s: str) -> int:
    digits = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(digits) % 97


def iban(text: str) -> str | None:
    """The IBAN at the start of ``text`` without spaces, or None.

    The country's registered length says where the IBAN ends, so whatever is
    printed after it ("... - BIC : BREDFRPP") is not taken; the mod-97 check
    rejects misreadings.
    """
    t = re.sub(r"^\W+", "", text.upper())
    m = re.match(r"([A-Z]{2})\s?(\d{2})", t)
    if not m or m.group(1) not in IBAN_LENGTHS:
        return None
    want = IBAN_LENGTHS[m.group(1)]
    out = []
    for c in t:
        if c.isalnum():
            out.append(c)
        elif c not in " -.":
            break
        if len(out) == want:
            break
    s = "".join(out)
    if len(s) != want or _mod97(s) != 1:
        return None
    return s


# ISO 3166-1 alpha-2 codes (for BICs' country part).
_COUNTRY_CODES = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY "
    "BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK "
    "FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR "
    "IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK "
    "ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM "
    "PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF "
    "TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW"
)
_COUNTRIES = frozenset(_COUNTRY_CODES.split())
_BIC = re.compile(r"([A-Z]{4})([A-Z]{2})([A-Z0-9]{2})([A-Z0-9]{3})?(?![A-Z0-9])")


def bic(text: str) -> str | None:
    """A BIC (SWIFT code) at the start of ``text``: 8 or 11 characters with a real country."""
    t = re.sub(r"^\W+", "", text.upper())
    m = _BIC.match(t)
    if not m or m.group(2) not in _COUNTRIES:
        return None
    return m.group(0)


# VAT identification numbers by country (the EU's VIES formats, plus GB, CH, NO).
_VAT_FORMATS: dict[str, str] = {
    "AT": r"U\d{8}",
    "BE": r"[01]\d{9}",
    "BG": r"\d{9,10}",
    "CY": r"\d{8}[A-Z]",
    "CZ": r"\d{8,10}",
    "DE": r"\d{9}",
    "DK": r"\d{8}",
    "EE": r"\d{9}",
    "EL": r"\d{9}",
    "ES": r"[A-Z0-9]\d{7}[A-Z0-9]",
    "FI": r"\d{8}",
    "FR": r"[A-HJ-NP-Z0-9]{2}\d{9}",
    "HR": r"\d{11}",
    "HU": r"\d{8}",
    "IE": r"\d{7}[A-W][A-I]?|\d[A-Z+*]\d{5}[A-W]",
    "IT": r"\d{11}",
    "LT": r"\d{9}|\d{12}",
    "LU": r"\d{8}",
    "LV": r"\d{11}",
    "MT": r"\d{8}",
    "NL": r"\d{9}B\d{2}",
    "PL": r"\d{10}",
    "PT": r"\d{9}",
    "RO": r"\d{2,10}",
    "SE": r"\d{10}01",
    "SI": r"\d{8}",
    "SK": r"\d{10}",
    "GB": r"\d{9}|\d{12}|GD\d{3}|HA\d{3}",
    "XI": r"\d{9}|\d{12}|GD\d{3}|HA\d{3}",
    "CH": r"E\d{9}(?:MWST|TVA|IVA)?",
    "NO": r"\d{9}(?:MVA)?",
}
_VAT_RES = {cc: re.compile(cc + r"(?:" + fmt + r")") for cc, fmt in _VAT_FORMATS.items()}


def vat_id(text: str) -> str | None:
    """A VAT id at the start of ``text``, compacted ("DE 123 456 789" -> "DE123456789"),
    if it has its country's format; GR is written EL as in VIES."""
    t = re.sub(r"^\W+", "", text.upper())
    m = re.match(r"([A-Z]{2})[\s.\-]?((?:[A-Z0-9+*][\s.\-]?){2,14})", t)
    if not m:
        return None
    cc = "EL" if m.group(1) == "GR" else m.group(1)
    rx = _VAT_RES.get(cc)
    if rx is None:
        return None
    body = m.group(2)
    compact = cc
    # where the printed token could end: at a separator, or at the end
    ends = set()
    for c in body:
        if c in " .-":
            ends.add(len(compact))
        else:
            compact += c
    ends.add(len(compact))
    # the longest printed prefix with the country's format ("DE 123456789 Steuer-Nr" -> "DE123456789")
    for end in sorted(ends, reverse=True):
        if rx.fullmatch(compact[:end]):
            return compact[:end]
    return None


_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}")


def email(text: str) -> str | None:
    """The first e-mail address in ``text`` (domain lower-cased)."""
    m = _EMAIL.search(text)
    if not m:
        return None
    local, _, domain = m.group(0).rpartition("@")
    return f"{local}@{domain.lower()}"


_PHONE = re.compile(r"(?:\+|00)?\(?\d[\d\s./()\-]{5,22}\d")


def phone(text: str) -> str | None:
    """A telephone number at the start of ``text``: digits with an optional
    leading "+" ("00" becomes "+"), 6 to 15 digits as E.164 allows."""
    # "+49 (0)69 ...": the trunk zero is not dialled from abroad
    t = re.sub(r"\(0\)\s*", "", text.strip(" :.\t"))
    m = _PHONE.match(t)
    if not m:
        return None
    raw = m.group(0)
    digits = re.sub(r"\D", "", raw)
    plus = raw.startswith("+") or raw.startswith("00")
    if raw.startswith("00"):
        digits = digits[2:]
    if not 6 <= len(digits) <= 15:
        return None
    return ("+" if plus else "") + digits


def percentage(value: object) -> float | None:
    """A percentage as a number of percent (``"19 %"`` -> 19.0), 0 to 100."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        v = float(value)
    elif isinstance(value, str):
        m = re.match(r"^\s*(-?\d{1,3}(?:[.,]\d{1,4})?)\s*%?\s*$", value)
        if not m:
            return None
        v = float(m.group(1).replace(",", "."))
    else:
        return None
    return v if math.isfinite(v) and 0.0 <= v <= 100.0 else None


def _enum(value: object, choices: Sequence[str]) -> str | None:
    if not isinstance(value, str):
        return None
    folded = value.strip().casefold()
    for c in choices:
        if c.casefold() == folded:
            return c
    return None


def _iso_date(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value.strip()[:10]).isoformat() if len(value.strip()) == 10 else None
    except ValueError:
        return None


def normalize_value(value: Scalar, ftype: FieldType, choices: Sequence[str] = ()) -> Scalar:
    """``value`` normalised for ``ftype``, or None when it is not a valid one.

    Types without a validator (text, number, integer, boolean) pass through.
    """
    if value is None:
        return None
    if ftype is FieldType.DATE:
        return _iso_date(value)
    if ftype is FieldType.CURRENCY:
        return value.upper() if isinstance(value, str) and re.fullmatch(r"[A-Za-z]{3}", value) else None
    if ftype is FieldType.PERCENTAGE:
        return percentage(value)
    if ftype is FieldType.ENUM:
        return _enum(value, choices)
    text_checks = {
        FieldType.IBAN: iban,
        FieldType.BIC: bic,
        FieldType.VAT_ID: vat_id,
        FieldType.EMAIL: email,
        FieldType.PHONE: phone,
    }
    check = text_checks.get(ftype)
    if check is not None:
        return check(value) if isinstance(value, str) else None
    return value
