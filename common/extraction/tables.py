"""Line-item tables from a laid-out document.

A table is found by its header row: a line carrying at least two column
captions (description, quantity, unit price, amount...) in any of the
supported languages. Column positions come from the captions. Each following
line with an amount under the amount column starts an item; lines without
one continue the description of the item above (or, when the item had no
description yet, supply it). The table ends at a totals line or a large
vertical gap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from common.core.schema import FieldSpec, FieldType
from common.extraction.layout import Document, Line, Word
from common.extraction.normalize import find_amounts, find_dates

__all__ = ["LineItem", "column_role", "is_line_item_schema", "line_items"]

_ROLE_WORDS: dict[str, re.Pattern[str]] = {
    "description": re.compile(
        r"^(?:description|desc\.?|item|items|product(?:\s*title)?|article|artikel(?:bezeichnung|beschreibung)?|"
        r"beschreibung|bezeichnung|leistung|désignation|designation|libellé|libelle|omschrijving|service|"
        r"descripción|descrizione|produkt|position)\b",
        re.IGNORECASE,
    ),
    "quantity": re.compile(
        r"^(?:qty|quantity|quantité|qté|menge|anzahl|aantal|cantidad|quantità|nombre|units?|hours|stunden)\b",
        re.IGNORECASE,
    ),
    "unit_price": re.compile(
        r"^(?:unit\s*price|price|rate|preis(?:/einheit)?|einzelpreis|ep|nettopreis|stückpreis|vk-preis|p\.?\s*u\.?|"
        r"prix(?:\s*unitaire)?|prijs(?:\s*per\s*stuk)?|precio|prezzo|unit\s*cost)\b",
        re.IGNORECASE,
    ),
    "amount": re.compile(
        r"^(?:amount|total|line\s*total|betrag|gesamt(?:preis)?|gesamtpreis|summe|zeilenbetrag|nettowert|entgelt|"
        r"positionsbetrag|montant(?:\s*ht)?|total\s*ht|bedrag|importe|importo|net\s*amount|prijs\s*incl)\b",
        re.IGNORECASE,
    ),
}
_END = re.compile(
    r"^(?:sub\s*total|total|summe|zwischensumme|gesamt\w*|netto\w*|brutto\w*|rechnungs\w*|steuer\w*|belegsummen|"
    r"sous[\s-]*total|montant|totaal|subtotaal|exclusief|tax|vat|mwst|ust|tva|btw|warenwert|"
    r"positionssumme|zahlungsbedingungen|payment)\b",
    re.IGNORECASE,
)

# Field names (and description words) that mark a line-item column.
_FIELD_ROLES: dict[str, str] = {
    "description": "description",
    "item": "description",
    "item_description": "description",
    "item_name": "description",
    "product": "description",
    "product_name": "description",
    "article": "description",
    "line_description": "description",
    "quantity": "quantity",
    "qty": "quantity",
    "unit_price": "unit_price",
    "price": "unit_price",
    "rate": "unit_price",
    "amount": "amount",
    "line_total": "amount",
    "line_amount": "amount",
    "item_total": "amount",
    "net_amount": "amount",
}


def column_role(spec: FieldSpec) -> str | None:
    """Which table column a field means, from its name; None for document fields."""
    return _FIELD_ROLES.get(spec.name)


def is_line_item_schema(specs: Sequence[FieldSpec]) -> bool:
    """A schema asks for line items when it has a description-like column and
    at least one of quantity / unit price / line amount."""
    roles = {column_role(s) for s in specs} - {None}
    return "description" in roles and bool(roles & {"quantity", "unit_price", "amount"})


@dataclass(slots=True)
class LineItem:
    page: int
    values: dict[str, Any] = field(default_factory=dict)  # field name -> value
    snippet: str = ""


@dataclass(slots=True)
class _Column:
    role: str | None  # None: a column the schema does not ask for (it still bounds its neighbours)
    x0: float
    x1: float


def _match_role(text: str) -> str | None:
    t = text.rstrip(".:")
    for role, pat in _ROLE_WORDS.items():
        m = pat.match(t)
        if m and m.end() == len(t):
            return role
    return None


def _header_columns(line: Line) -> list[_Column]:
    """Columns of a header line: captions that name a role (up to three words)
    and, between them, the other captions."""
    cols: list[_Column] = []
    for seg in line.segments:
        words = seg.words
        i = 0
        other: list[int] = []  # indices of caption words without a role
        while i < len(words):
            for n in (3, 2, 1):
                if i + n > len(words):
                    continue
                role = _match_role(" ".join(w.text for w in words[i : i + n]))
                if role is not None:
                    _close_other(cols, words, other)
                    if any(c.role == role for c in cols):
                        role = None  # a second "Total" column: keep the first
                    cols.append(_Column(role, words[i].x0, words[i + n - 1].x1))
                    i += n
                    break
            else:
                other.append(i)
                i += 1
        _close_other(cols, words, other)
    return cols


def _close_other(cols: list[_Column], words: Sequence[Word], other: list[int]) -> None:
    """Turn a run of caption words without a role into one (unread) column."""
    if other:
        cols.append(_Column(None, words[other[0]].x0, words[other[-1]].x1))
        other.clear()


def _find_header(doc: Document) -> tuple[int, list[_Column]] | None:
    for ln in doc.lines:
        cols = _header_columns(ln)
        roles = {c.role for c in cols} - {None}
        if ("amount" in roles and len(roles) >= 2) or len(roles) >= 3:
            return ln.index, cols
    return None


def _bounds(cols: list[_Column]) -> list[tuple[float, float]]:
    """Horizontal range of each column. Numbers are right-aligned under their
    caption, so a numeric column owns the space back to the previous caption;
    a description is left-aligned and owns the space up to the next caption."""
    out: list[tuple[float, float]] = []
    for i, c in enumerate(cols):
        prev_x1 = cols[i - 1].x1 if i > 0 else None
        next_x0 = cols[i + 1].x0 if i + 1 < len(cols) else None
        if c.role == "description" or (c.role is None and i == 0):
            left = c.x0 - 40 if prev_x1 is None else (prev_x1 + c.x0) / 2
            right = next_x0 - 2 if next_x0 is not None else 1e9
        else:
            left = prev_x1 + 2 if prev_x1 is not None else c.x0 - 40
            if i > 0 and cols[i - 1].role == "description":
                # a description runs long: the numeric column starts halfway
                # between the captions, not right after "Description"
                left = (cols[i - 1].x1 + c.x0) / 2
            right = c.x1 + 0.5 * (next_x0 - c.x1) if next_x0 is not None else 1e9
        out.append((left, right))
    return out


def line_items(doc: Document, specs: Sequence[FieldSpec]) -> list[LineItem]:  # noqa: C901 (split pending)
    """Items of the first line-item table, one per row, keyed by field name."""
    header = _find_header(doc)
    if header is None:
        return []
    start, cols = header
    cols.sort(key=lambda c: c.x0)
    bounds = _bounds(cols)
    want = {s.name: column_role(s) for s in specs}
    items: list[LineItem] = []
    header_line = doc.lines[start]
    last_bottom = header_line.bottom
    for ln in doc.lines[start + 1 :]:
        if ln.page != header_line.page:
            # a table continues on the next page (usually under a repeated header)
            header_line = ln
            last_bottom = ln.top
            if len({c.role for c in _header_columns(ln)} - {None}) >= 2:
                continue
        if ln.top - last_bottom > 6 * max(ln.height, 1.0):
            break
        first = ln.segments[0].text if ln.segments else ""
        if _END.match(first):
            if items:
                break
            continue
        last_bottom = ln.bottom
        cells: dict[str, str] = {}
        for (lo, hi), c in zip(bounds, cols, strict=True):
            if c.role is not None:
                cells[c.role] = " ".join(w.text for w in ln.words if lo <= (w.x0 + w.x1) / 2 < hi)
        if _money(cells.get("amount", "")):
            item = LineItem(page=ln.page, snippet=ln.text[:160])
            for name, role in want.items():
                if role is not None:
                    item.values[name] = _value(role, cells.get(role, ""), specs, name)
            items.append(item)
        elif items and cells.get("description") and not items[-1].values.get("_continued"):
            # a description printed under (or wrapped from) its row
            for n, r in want.items():
                if r == "description" and not items[-1].values.get(n):
                    items[-1].values[n] = cells["description"]
    for it in items:
        it.values.pop("_continued", None)
    return items


def _money(text: str) -> list[float]:
    """Amounts in a cell, leaving out dates and long article numbers (GTINs)."""
    dates = [(d.start, d.end) for d in find_dates(text)]
    return [
        a.value
        for a in find_amounts(text)
        if not any(s <= a.start < e for s, e in dates) and not (a.decimals == 0 and abs(a.value) >= 1e6)
    ]


def _value(role: str, text: str, specs: Sequence[FieldSpec], name: str) -> Any:
    spec = next(s for s in specs if s.name == name)
    if role == "description":
        t = text.strip()
        return t or None
    nums = _money(text)
    if not nums:
        return None
    v = nums[-1] if role == "amount" else nums[0]
    if spec.type == FieldType.INTEGER:
        return int(v) if v.is_integer() else None
    if spec.type == FieldType.STRING:
        return text.strip()
    return v
