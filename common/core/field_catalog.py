"""The fields Sluice knows by name: their type, meaning and printed labels.

``--fields due_date,iban`` gives typed fields (a date, a checked IBAN) found by
their labels in several languages; ``sluice fields`` lists this catalogue. A
name the catalogue does not know is still searched, as the label its words
spell, and :func:`field_warnings` says so, because that search is weak.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from common.core.schema import PRESETS, FieldSpec, FieldType

__all__ = ["CATALOG", "KnownField", "field_warnings", "known_field", "parse_field_names", "type_from_name"]


@dataclass(frozen=True, slots=True)
class KnownField:
    name: str
    type: FieldType
    description: str
    synonyms: tuple[str, ...]  # printed labels, several languages
    aliases: tuple[str, ...] = ()  # other field names that mean this field
    preset: str = ""  # the preset it belongs to, if any

    def spec(self, name: str | None = None) -> FieldSpec:
        return FieldSpec(name=name or self.name, type=self.type, description=self.description)


_PRESET_SYNONYMS: dict[str, tuple[str, ...]] = {
    "invoice_number": (
        "invoice no.",
        "Rechnungsnummer",
        "facture n°",
        "factuurnummer",
        "credit note no.",
        "Gutschrift Nr.",
    ),
    "date": ("invoice date", "issue date", "Rechnungsdatum", "date de facture", "factuurdatum", "Datum"),
    "total": ("grand total", "total incl. VAT", "Gesamtbetrag", "Bruttobetrag", "total TTC", "totaalbedrag"),
    "currency": ("currency", "Währung", "devise", "€ / $ / EUR / USD next to the total"),
    "seller": ("seller", "vendor", "supplier", "Verkäufer", "Lieferant", "fournisseur", "the issuer's letterhead"),
    "buyer": ("bill to", "invoice to", "customer", "Rechnungsempfänger", "Kunde", "facturé à", "client"),
}

_EXTRA: tuple[KnownField, ...] = (
    KnownField(
        "due_date",
        FieldType.DATE,
        "The date by which the invoice must be paid.",
        (
            "due date", "payment due", "pay by", "Fälligkeitsdatum", "fällig am", "zahlbar bis",
            "Zahlungsziel", "Fälligkeit", "Fälligkeitstermin",
            "date d'échéance", "échéance", "vervaldatum", "fecha de vencimiento", "scadenza",
        ),
        aliases=("payment_due_date", "due", "payment_due"),
    ),
    KnownField(
        "delivery_date",
        FieldType.DATE,
        "The date the goods were delivered or the service was performed.",
        (
            "delivery date", "date of supply", "ship date", "Lieferdatum", "Leistungsdatum", "Liefertermin",
            "date de livraison", "leverdatum",
        ),
        aliases=("service_date", "supply_date", "ship_date"),
    ),
    KnownField(
        "order_number",
        FieldType.STRING,
        "The buyer's order (purchase order) number the invoice refers to.",
        (
            "order no.", "order number", "purchase order", "PO number", "your order", "Bestellnummer",
            "Bestell-Nr.", "Bestellung", "order ID", "Auftragsnummer", "Auftrags-Nr.", "Ihre Bestellung",
            "n° de commande",
            "bon de commande", "bestelnummer", "ordernummer",
        ),
        aliases=("po_number", "purchase_order", "purchase_order_number", "order_no", "order_id"),
    ),
    KnownField(
        "customer_number",
        FieldType.STRING,
        "The buyer's customer or account number with the seller.",
        ("customer no.", "customer number", "customer ID", "account number", "Kundennummer", "Kunden-Nr.",
         "n° client", "code client", "klantnummer"),
        aliases=("customer_id", "customer_no", "account_number", "client_number"),
    ),
    KnownField(
        "iban",
        FieldType.IBAN,
        "The IBAN the invoice is to be paid to.",
        ("IBAN",),
        aliases=("iban_number", "bank_account"),
    ),
    KnownField("bic", FieldType.BIC, "The BIC (SWIFT code) of the payee's bank.", ("BIC", "SWIFT", "SWIFT/BIC",
               "BIC/SWIFT", "SWIFT code"), aliases=("swift", "swift_code", "bic_code")),
    KnownField(
        "vat_id",
        FieldType.VAT_ID,
        "The seller's VAT identification number.",
        (
            "VAT ID", "VAT no.", "VAT number", "VAT reg. no.", "USt-IdNr.", "USt-ID", "UID",
            "Umsatzsteuer-Identifikationsnummer", "N° TVA", "TVA intracommunautaire", "BTW-nummer",
            "partita IVA", "NIF", "CIF",
        ),
        aliases=("vat_number", "vat_no", "ust_id", "ust_idnr", "tax_id", "vat_reg_no", "seller_vat_id"),
    ),
    KnownField(
        "net_amount",
        FieldType.NUMBER,
        "The total before tax.",
        ("subtotal", "net amount", "total excl. VAT", "Nettobetrag", "Summe netto", "Total HT", "totaal excl. btw"),
        aliases=("subtotal", "net_total", "total_net"),
    ),
    KnownField(
        "tax_amount",
        FieldType.NUMBER,
        "The total tax (VAT) amount.",
        ("VAT", "tax", "MwSt.", "USt.", "Umsatzsteuer", "TVA", "BTW", "total tax"),
        aliases=("vat_amount", "tax", "total_tax", "vat_total"),
    ),
    KnownField(
        "tax_rate",
        FieldType.PERCENTAGE,
        "The VAT rate in percent.",
        ("VAT rate", "tax rate", "VAT %", "MwSt.-Satz", "Steuersatz", "taux de TVA", "btw-tarief"),
        aliases=("vat_rate", "tax_percent", "vat_percent"),
    ),
    KnownField(
        "amount_due",
        FieldType.NUMBER,
        "The amount left to pay (after any prepayment).",
        ("amount due", "balance due", "please pay", "Zahlbetrag", "zu zahlen", "net à payer", "te betalen"),
        aliases=("balance_due", "amount_payable"),
    ),
    KnownField(
        "email",
        FieldType.EMAIL,
        "The seller's e-mail address.",
        ("e-mail", "email", "mail", "courriel"),
        aliases=("e_mail", "email_address", "seller_email"),
    ),
    KnownField(
        "phone",
        FieldType.PHONE,
        "The seller's telephone number.",
        ("phone", "tel.", "telephone", "Telefon", "téléphone", "telefoon"),
        aliases=("telephone", "tel", "phone_number", "seller_phone"),
    ),
    KnownField(
        "payment_terms",
        FieldType.STRING,
        "The payment terms as printed.",
        ("payment terms", "terms", "Zahlungsbedingungen", "conditions de paiement", "betalingsvoorwaarden"),
    ),
)  # fmt: skip


def _build() -> dict[str, KnownField]:
    out: dict[str, KnownField] = {}
    for preset_name, specs in PRESETS.items():
        for s in specs:
            out[s.name] = KnownField(s.name, s.type, s.description, _PRESET_SYNONYMS.get(s.name, ()), (), preset_name)
    for k in _EXTRA:
        out[k.name] = k
    return out


CATALOG: dict[str, KnownField] = _build()
_ALIASES: dict[str, str] = {a: k.name for k in CATALOG.values() for a in k.aliases}


def known_field(name: str) -> KnownField | None:
    """The catalogue entry for ``name`` or one of its aliases."""
    return CATALOG.get(name) or (CATALOG.get(_ALIASES[name]) if name in _ALIASES else None)


_SUFFIX_TYPES: tuple[tuple[str, FieldType], ...] = (
    (r"(?:^|_)(?:date|datum|day)$", FieldType.DATE),
    (r"(?:^|_)(?:amount|total|price|fee|cost|sum|net|gross)$", FieldType.NUMBER),
    (r"(?:^|_)(?:rate|percent|percentage|pct)$", FieldType.PERCENTAGE),
    (r"(?:^|_)iban$", FieldType.IBAN),
    (r"(?:^|_)(?:bic|swift)$", FieldType.BIC),
    (r"(?:^|_)vat_(?:id|number|no)$", FieldType.VAT_ID),
    (r"(?:^|_)e?_?mail$", FieldType.EMAIL),
    (r"(?:^|_)(?:phone|tel|telephone|fax|mobile)$", FieldType.PHONE),
    (r"(?:^|_)currency$", FieldType.CURRENCY),
)


def type_from_name(name: str) -> FieldType | None:
    """The type a field name implies ("shipping_date" is a date), if any."""
    for pat, t in _SUFFIX_TYPES:
        if re.search(pat, name):
            return t
    return None


def _one(item: str) -> FieldSpec:
    """``name``, ``name:type`` or ``name:enum=a|b|c``."""
    name, _, typ = (p.strip() for p in item.partition(":"))
    if typ:
        kind, _, choices = typ.partition("=")
        try:
            ftype = FieldType(kind.strip().lower())
        except ValueError:
            names = ", ".join(t.value for t in FieldType)
            raise ValueError(f"field {name!r}: unknown type {kind!r}; types: {names}, text, amount") from None
        known = known_field(name)
        desc = known.description if known is not None and known.type is ftype else ""
        opts = tuple(c.strip() for c in choices.split("|") if c.strip())
        return FieldSpec(name=name, type=ftype, description=desc, choices=opts)
    known = known_field(name)
    if known is not None:
        return known.spec(name)
    return FieldSpec(name=name, type=type_from_name(name) or FieldType.STRING)


def parse_field_names(items: Sequence[str]) -> tuple[FieldSpec, ...]:
    """``--fields`` items as typed specs: catalogue names and aliases take their
    type and description; other names take the type their suffix implies."""
    specs = [_one(i) for i in items]
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise ValueError(f"field {s.name!r} is listed twice")
        seen.add(s.name)
    return tuple(specs)


def field_warnings(specs: Sequence[FieldSpec]) -> list[str]:
    """One warning for each field Sluice has no strategy for beyond reading the
    label its name spells: not in the catalogue, no validated type, no description."""
    out = []
    for s in specs:
        if known_field(s.name) is not None or s.description.strip():
            continue
        if s.type not in (FieldType.STRING, FieldType.NUMBER, FieldType.INTEGER, FieldType.BOOLEAN):
            continue  # the type guides the search (dates, IBANs, VAT ids ...)
        label = s.name.replace("_", " ")
        out.append(
            f"field {s.name!r} is not a known field: it will only be found next to a printed label "
            f"like {label!r} (type {s.type.value}). See `sluice fields` for known names, or give a type "
            f"({s.name}:date, {s.name}:amount, ...)."
        )
    return out
