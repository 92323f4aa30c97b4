"""Render Sluice's sample invoices as PDFs, with their expected field values.

Usage: ``python samples/generate.py [OUT_DIR]`` (default: ``samples/invoices``).

Every document is described once, in :data:`INVOICES`; the PDFs and
``expected.json`` are both derived from that description. The PDFs are built
with reportlab's ``invariant=1`` so that re-running the script gives identical
bytes (for a given reportlab version).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "invoices"
EXPECTED_FILE = "expected.json"

CENT = Decimal("0.01")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def _mdy_text(d: date) -> str:
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"


def _dmy_text(d: date) -> str:
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def _dmy_dots(d: date) -> str:
    return f"{d.day:02d}.{d.month:02d}.{d.year}"


def _dmy_slashes(d: date) -> str:
    return f"{d.day:02d}/{d.month:02d}/{d.year}"


def _mdy_slashes(d: date) -> str:
    return f"{d.month:02d}/{d.day:02d}/{d.year}"


@dataclass(frozen=True)
class Locale:
    """How numbers, amounts and dates are printed."""

    thousands: str
    decimal: str
    symbol: str
    symbol_after: bool
    format_date: Callable[[date], str]

    def number(self, value: Decimal) -> str:
        text = f"{value.normalize():f}" if value == value.to_integral() else f"{value}"
        whole, _, frac = text.partition(".")
        grouped = f"{int(whole):,}".replace(",", self.thousands)
        return grouped + (self.decimal + frac if frac else "")

    def money(self, amount: Decimal) -> str:
        sign = "-" if amount < 0 else ""
        whole, frac = f"{abs(amount).quantize(CENT):.2f}".split(".")
        digits = f"{int(whole):,}".replace(",", self.thousands) + self.decimal + frac
        if self.symbol_after:
            return f"{sign}{digits} {self.symbol}"
        return f"{sign}{self.symbol}{digits}"


EN_US = Locale(",", ".", "$", False, _mdy_text)
EN_US_NUMERIC = replace(EN_US, format_date=_mdy_slashes)
EN_GB = Locale(",", ".", "£", False, _dmy_slashes)
EN_IE = Locale(",", ".", "€", False, _dmy_text)
DE_DE = Locale(".", ",", "€", True, _dmy_dots)
FR_FR = Locale(" ", ",", "€", True, _dmy_slashes)


@dataclass(frozen=True)
class Labels:
    """The words printed on a document, in its language."""

    title: str
    number: str
    date: str
    due_date: str
    bill_to: str
    description: str
    quantity: str
    unit_price: str
    amount: str
    subtotal: str
    tax: str  # a template with {rate}
    total: str
    prepaid: str = ""
    due: str = ""  # printed as a separate last row when set
    page: str = "Page {page} of {pages}"
    continued: str = "continued"


EN_LABELS = Labels(
    title="INVOICE",
    number="Invoice number",
    date="Date of issue",
    due_date="Date due",
    bill_to="BILL TO",
    description="Description",
    quantity="Qty",
    unit_price="Unit price",
    amount="Amount",
    subtotal="Subtotal",
    tax="Tax ({rate}%)",
    total="Total",
)
DE_LABELS = Labels(
    title="RECHNUNG",
    number="Rechnungsnummer",
    date="Rechnungsdatum",
    due_date="Zahlbar bis",
    bill_to="Rechnungsempfänger",
    description="Bezeichnung",
    quantity="Menge",
    unit_price="Einzelpreis",
    amount="Gesamt",
    subtotal="Netto",
    tax="zzgl. MwSt. {rate} %",
    total="Gesamtbetrag",
    page="Seite {page} von {pages}",
    continued="Fortsetzung",
)
FR_LABELS = Labels(
    title="FACTURE",
    number="Facture n°",
    date="Date :",
    due_date="Échéance :",
    bill_to="Client",
    description="Désignation",
    quantity="Qté",
    unit_price="Prix unit. HT",
    amount="Montant HT",
    subtotal="Total HT",
    tax="TVA {rate} %",
    total="Total TTC",
    prepaid="Acompte versé",
    due="Net à payer",
    page="Page {page} sur {pages}",
    continued="suite",
)


@dataclass(frozen=True)
class Party:
    name: str
    address: tuple[str, ...]


@dataclass(frozen=True)
class Line:
    description: str
    quantity: Decimal
    unit_price: Decimal

    @property
    def amount(self) -> Decimal:
        return (self.quantity * self.unit_price).quantize(CENT, ROUND_HALF_UP)


@dataclass(frozen=True)
class Invoice:
    file_name: str
    number: str
    issued: date
    currency: str
    seller: Party
    buyer: Party
    lines: tuple[Line, ...]
    tax_percent: Decimal
    labels: Labels
    locale: Locale
    page_size: tuple[float, float] = A4
    due: date | None = None
    prepaid: Decimal = Decimal(0)
    meta: tuple[tuple[str, str], ...] = ()  # extra rows of the header block
    notes: tuple[str, ...] = ()  # payment terms, bank details
    legal: str = ""  # the footer line
    accent: str = "#1f3a5f"

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    @property
    def tax(self) -> Decimal:
        return (self.subtotal * self.tax_percent / 100).quantize(CENT, ROUND_HALF_UP)

    @property
    def gross(self) -> Decimal:
        return self.subtotal + self.tax

    @property
    def amount_due(self) -> Decimal:
        return self.gross - self.prepaid

    def expected(self) -> dict[str, str | float]:
        return {
            "invoice_number": self.number,
            "date": self.issued.isoformat(),
            # "total" is the grand total including tax, as e-invoices' GrandTotalAmount
            # (before prepayments are deducted); the amount due may be lower.
            "total": float(self.gross),
            "currency": self.currency,
            "seller": self.seller.name,
            "buyer": self.buyer.name,
        }


def _items(*rows: tuple[str, str, str]) -> tuple[Line, ...]:
    return tuple(Line(d, Decimal(q), Decimal(p)) for d, q, p in rows)


US_SAAS = Invoice(
    file_name="us_saas_invoice.pdf",
    number="INV-2026-00317",
    issued=date(2026, 3, 3),
    due=date(2026, 4, 2),
    currency="USD",
    seller=Party(
        "Brightloop Analytics, Inc.",
        ("410 Townsend Street, Suite 300", "San Francisco, CA 94107", "United States"),
    ),
    buyer=Party(
        "Northwind Outfitters LLC",
        ("Attn: Accounts Payable", "2200 Westlake Avenue", "Seattle, WA 98121"),
    ),
    lines=_items(
        ("Growth plan, per seat (Mar 3 – Apr 2, 2026)", "25", "49.00"),
        ("Additional dashboard storage, 500 GB", "1", "120.00"),
        ("API calls above plan, per 10,000", "124", "0.40"),
        ("Priority support add-on", "1", "199.00"),
    ),
    tax_percent=Decimal("10.25"),
    labels=replace(EN_LABELS, tax="Sales tax ({rate}%)", due="Amount due"),
    locale=EN_US,
    page_size=LETTER,
    meta=(("Customer ID", "CUS-48213"),),
    notes=(
        "Pay online at pay.brightloop.example/i/INV-2026-00317 or by ACH.",
        "Questions about this invoice? Write to billing@brightloop.example.",
    ),
    legal="Brightloop Analytics, Inc. · EIN 84-3921775",
    accent="#5b3cc4",
)

DE_RECHNUNG = Invoice(
    file_name="de_rechnung.pdf",
    number="RE-2025-1187",
    issued=date(2025, 11, 3),
    due=date(2025, 12, 3),
    currency="EUR",
    seller=Party(
        "Kessler & Voigt Maschinenbau GmbH",
        ("Industriestraße 14", "70565 Stuttgart", "Deutschland"),
    ),
    buyer=Party(
        "Brauerei Haldenwang KG",
        ("z. Hd. Herrn Martin Berger", "Am Mühlbach 3", "87490 Haldenwang"),
    ),
    lines=_items(
        ("Wartung Abfüllanlage AF-300 (Pauschale)", "1", "1450.00"),
        ("Ersatzteil Dichtungssatz DS-12", "4", "86.50"),
        ("Servicetechniker, Arbeitsstunden", "6.5", "78.00"),
        ("Anfahrtspauschale", "1", "65.00"),
    ),
    tax_percent=Decimal(19),
    labels=DE_LABELS,
    locale=DE_DE,
    meta=(("Kundennummer", "K-20417"), ("Leistungsdatum", "28.10.2025")),
    notes=(
        "Zahlbar innerhalb von 30 Tagen ohne Abzug.",
        "Kreissparkasse Esslingen · IBAN DE89 3704 0044 0532 0130 00 · BIC COBADEFFXXX",
    ),
    legal="Sitz Stuttgart · Amtsgericht Stuttgart HRB 731245 · USt-IdNr. DE287114503 · Geschäftsführerin: Jana Kessler",
    accent="#8a1c1c",
)

FR_FACTURE = Invoice(
    file_name="fr_facture.pdf",
    number="F2026-0042",
    issued=date(2026, 1, 12),
    due=date(2026, 2, 11),
    currency="EUR",
    seller=Party(
        "Atelier Lumen SARL",
        ("27 rue des Tanneurs", "69002 Lyon", "France"),
    ),
    buyer=Party(
        "Maison Verbois SAS",
        ("Service comptabilité", "8 avenue de la Gare", "33000 Bordeaux"),
    ),
    lines=_items(
        ("Conception graphique – identité visuelle", "1", "2400.00"),
        ("Déclinaison charte (papeterie, 6 supports)", "6", "180.00"),
        ("Séance photo produits (demi-journée)", "1", "650.00"),
        ("Retouches photo", "24", "15.00"),
    ),
    tax_percent=Decimal(20),
    prepaid=Decimal("1500.00"),
    labels=FR_LABELS,
    locale=FR_FR,
    meta=(("Réf. devis :", "D2025-118"),),
    notes=(
        "Conditions de paiement : 30 jours à réception de facture.",
        "Pénalités de retard : 3 fois le taux d'intérêt légal.",
        "Indemnité forfaitaire pour frais de recouvrement : 40 €.",
        "IBAN FR76 3000 6000 0112 3456 7890 189 · BIC AGRIFRPP",
    ),
    legal="SARL au capital de 10 000 € · RCS Lyon 812 345 678 · TVA intracommunautaire FR42812345678",
    accent="#0f6b5c",
)

UK_INVOICE = Invoice(
    file_name="uk_invoice.pdf",
    number="HF-10482",
    issued=date(2026, 2, 15),
    due=date(2026, 3, 17),
    currency="GBP",
    seller=Party(
        "Hartwell & Finch Ltd",
        ("14 Canal Wharf", "Leeds LS11 5PS", "United Kingdom"),
    ),
    buyer=Party(
        "Pennine Outdoor Co. Ltd",
        ("Unit 7, Calder Business Park", "Huddersfield HD1 6QT"),
    ),
    lines=_items(
        ("Website maintenance retainer – February 2026", "1", "850.00"),
        ("Additional development (hours)", "7.5", "65.00"),
        ("SSL certificate renewal, 1 year", "1", "89.00"),
        ("Managed VPS hosting, quarterly", "1", "240.00"),
    ),
    tax_percent=Decimal(20),
    labels=replace(
        EN_LABELS,
        number="Invoice No.",
        date="Invoice date",
        due_date="Due date",
        bill_to="INVOICE TO",
        tax="VAT @ {rate}%",
        due="Balance due",
    ),
    locale=EN_GB,
    meta=(("Your ref.", "PO 55821"),),
    notes=(
        "Payment within 30 days. Please quote HF-10482 as your reference.",
        "Yorkshire Mutual Bank · Sort code 40-11-62 · Account 71234598",
    ),
    legal="Registered in England and Wales No. 08841273 · VAT Reg. No. GB 318 4471 26",
    accent="#2d4a22",
)

US_CREDIT_NOTE = Invoice(
    file_name="us_credit_note.pdf",
    number="CN-2026-0042",
    issued=date(2026, 3, 18),
    currency="USD",
    seller=Party(
        "Crestline Supply Co.",
        ("1850 Industrial Parkway", "Columbus, OH 43219", "United States"),
    ),
    buyer=Party(
        "Riverbend Dental Group, PC",
        ("415 Main Street, Suite 210", "Dayton, OH 45402"),
    ),
    lines=_items(
        ("Returned: USB-C docking station DK-400", "4", "-129.00"),
        ('Returned: 27" dual monitor arm MA-2', "2", "-64.50"),
        ("Restocking fee (waived)", "1", "0.00"),
    ),
    tax_percent=Decimal("7.5"),
    labels=replace(
        EN_LABELS,
        title="CREDIT NOTE",
        number="Credit note no.",
        date="Date",
        bill_to="CREDIT TO",
        tax="Sales tax ({rate}%)",
        total="Total credit",
    ),
    locale=EN_US_NUMERIC,
    page_size=LETTER,
    meta=(("Original invoice", "INV-2026-1193"), ("RMA", "RMA-7731")),
    notes=(
        "This credit has been applied to your account and will be offset",
        "against your next invoice. No payment is due.",
    ),
    legal="Crestline Supply Co. · 1850 Industrial Parkway, Columbus, OH 43219",
    accent="#9a4d00",
)

_CATALOGUE = (
    ("PK-08DW", "Double-wall cup 8oz, case of 500", "6", "48.90"),
    ("PK-12DW", "Double-wall cup 12oz, case of 500", "8", "56.40"),
    ("PK-16DW", "Double-wall cup 16oz, case of 500", "4", "63.20"),
    ("PK-L08", "Sip lid 8oz, case of 1,000", "3", "31.50"),
    ("PK-L12", "Sip lid 12/16oz, case of 1,000", "5", "34.80"),
    ("PK-SLV", "Kraft cup sleeve, case of 1,000", "2", "27.60"),
    ("PK-CRR", "Four-cup carrier tray, case of 300", "2", "38.25"),
    ("PK-NAP", "Recycled napkins, 2-ply, case of 4,000", "3", "29.95"),
    ("PK-STR", "Wooden stirrers 140mm, box of 1,000", "6", "6.40"),
    ("PK-BAG", "Paper carry bags, medium, pack of 250", "4", "21.70"),
    ("PK-SND", "Sandwich wedge, compostable, case of 500", "2", "42.10"),
    ("PK-SLD", "Salad bowl 750ml with lid, case of 300", "1", "58.90"),
    ("CL-TAB", "Espresso machine cleaning tablets, 100 x 2g", "4", "18.50"),
    ("CL-DSC", "Descaler for coffee machines, 1L", "6", "9.80"),
    ("CL-MLK", "Milk system cleaner, 1L", "6", "11.25"),
    ("CL-GRC", "Grinder cleaning granules, 430g", "3", "14.60"),
    ("CL-BRS", "Group head brush with spoon", "4", "7.90"),
    ("CL-BLF", "Blind filter basket, 58mm", "2", "4.50"),
    ("CL-CLT", "Microfibre cloths, colour-coded, pack of 10", "5", "8.95"),
    ("CL-SAN", "Food-safe surface sanitiser, 5L", "4", "16.40"),
    ("EQ-JG6", "Milk jug 600ml, stainless steel", "6", "15.80"),
    ("EQ-JG9", "Milk jug 900ml, stainless steel", "4", "18.20"),
    ("EQ-TMP", "Tamper 58.5mm, flat base", "2", "39.00"),
    ("EQ-MAT", "Tamping mat, silicone", "2", "12.50"),
    ("EQ-KBX", "Knock box, large", "1", "44.00"),
    ("EQ-THM", "Milk thermometer, clip-on", "4", "6.75"),
    ("EQ-SCL", "Brew scale with timer, 2kg", "2", "54.00"),
    ("EQ-SHT", "Shot glass 2oz, pack of 6", "3", "9.60"),
    ("EQ-BRR", "Replacement burr set, 64mm flat", "1", "118.00"),
    ("EQ-GSK", "Group head gasket, 8.5mm", "6", "3.90"),
    ("EQ-SCR", "Dispersion screen, 58mm", "3", "11.40"),
    ("FL-V60", "Paper filters, cone size 02, pack of 100", "10", "5.20"),
    ("FL-BAT", "Batch brew filter papers, pack of 500", "4", "17.85"),
    ("AP-BIB", "Bib apron, waxed canvas, tan", "6", "24.00"),
    ("AP-CAP", "Baseball cap, embroidered logo", "6", "12.50"),
    ("SG-CHB", "A-board chalk sign, double-sided", "1", "89.00"),
)

IE_TWO_PAGES = Invoice(
    file_name="ie_invoice_two_pages.pdf",
    number="ARC-26-0412",
    issued=date(2026, 2, 27),
    due=date(2026, 3, 29),
    currency="EUR",
    seller=Party(
        "Atlantic Roast Coffee Supply Ltd",
        (
            "Unit 4, Marina Commercial Park",
            "Centre Park Road, Cork T12 X2PK",
            "Ireland",
        ),
    ),
    buyer=Party(
        "Harbour Lane Cafés Ltd",
        ("22 Harbour Lane", "Galway H91 E2K7", "Ireland"),
    ),
    lines=tuple(Line(f"{sku}  {name}", Decimal(qty), Decimal(price)) for sku, name, qty, price in _CATALOGUE),
    tax_percent=Decimal(23),
    labels=replace(
        EN_LABELS,
        number="Invoice no.",
        date="Invoice date",
        due_date="Payment due",
        bill_to="BILL TO",
        tax="VAT {rate}%",
        total="Total due",
    ),
    locale=EN_IE,
    meta=(("Account", "HLC-0031"), ("Delivery note", "DN-88214")),
    notes=(
        "Terms: 30 days from invoice date.",
        "AIB · IBAN IE29 AIBK 9311 5212 3456 78 · BIC AIBKIE2D",
    ),
    legal="Atlantic Roast Coffee Supply Ltd · Registered in Ireland No. 612045 · VAT No. IE 3612045KH",
    accent="#6b3e26",
)

INVOICES: tuple[Invoice, ...] = (
    US_SAAS,
    DE_RECHNUNG,
    FR_FACTURE,
    UK_INVOICE,
    US_CREDIT_NOTE,
    IE_TWO_PAGES,
)

# Layout, in points.
MARGIN = 50.0
HEADER_BLOCK = 215.0  # from the top margin to the table on the first page
CONTINUED_BLOCK = 50.0  # the same on the following pages
TABLE_HEAD = 20.0
ROW = 15.0
BOTTOM = 75.0  # nothing but the footer below this
TOTAL_ROW = 16.0
NOTE_LINE = 11.0
GREY = colors.HexColor("#5f6368")
RULE = colors.HexColor("#d0d4d9")
SHADE = colors.HexColor("#eef1f4")


def _totals(invoice: Invoice) -> list[tuple[str, Decimal]]:
    labels, locale = invoice.labels, invoice.locale
    rows = [
        (labels.subtotal, invoice.subtotal),
        (labels.tax.format(rate=locale.number(invoice.tax_percent)), invoice.tax),
        (labels.total, invoice.gross),
    ]
    if invoice.prepaid:
        rows.append((labels.prepaid, -invoice.prepaid))
    if labels.due:
        rows.append((labels.due, invoice.amount_due))
    return rows


def printed_total(invoice: Invoice) -> str:
    """The grand total exactly as the document prints it."""
    return invoice.locale.money(invoice.gross)


def _tail_height(invoice: Invoice) -> float:
    return len(_totals(invoice)) * TOTAL_ROW + 20 + len(invoice.notes) * NOTE_LINE + 20


def paginate(invoice: Invoice) -> list[range]:
    """Split the line items over pages; the totals and notes follow the last
    item, and never sit alone on a page without one."""
    height = invoice.page_size[1]
    top = height - MARGIN - HEADER_BLOCK
    count = len(invoice.lines)
    pages: list[range] = []
    start = 0
    while True:
        end = min(count, start + int((top - TABLE_HEAD - BOTTOM) // ROW))
        free = top - TABLE_HEAD - (end - start) * ROW - BOTTOM
        if end == count and free >= _tail_height(invoice):
            pages.append(range(start, end))
            return pages
        if end == count:
            end = max(start, end - 1)
        pages.append(range(start, end))
        start = end
        top = height - MARGIN - CONTINUED_BLOCK


class _Page:
    """Drawing helpers over one canvas, with the page's horizontal bounds."""

    def __init__(self, canvas: Canvas, invoice: Invoice) -> None:
        self.c = canvas
        self.inv = invoice
        self.left = MARGIN
        self.right = invoice.page_size[0] - MARGIN
        self.top = invoice.page_size[1] - MARGIN

    def text(
        self,
        x: float,
        y: float,
        value: str,
        size: float = 9,
        bold: bool = False,
        align: str = "left",
        color: colors.Color = colors.black,
    ) -> None:
        self.c.setFont("Helvetica-Bold" if bold else "Helvetica", size)
        self.c.setFillColor(color)
        if align == "right":
            self.c.drawRightString(x, y, value)
        else:
            self.c.drawString(x, y, value)

    def rule(self, y: float, x0: float | None = None, width: float = 0.5) -> None:
        self.c.setStrokeColor(RULE)
        self.c.setLineWidth(width)
        self.c.line(self.left if x0 is None else x0, y, self.right, y)

    def first_header(self) -> float:
        inv, labels, top = self.inv, self.inv.labels, self.top
        accent = colors.HexColor(inv.accent)
        self.text(self.left, top - 16, inv.seller.name, size=15, bold=True, color=accent)
        for i, line in enumerate(inv.seller.address):
            self.text(self.left, top - 32 - 11 * i, line, size=8.5, color=GREY)
        self.text(
            self.right,
            top - 18,
            labels.title,
            size=20,
            bold=True,
            color=accent,
            align="right",
        )

        meta = [
            (labels.number, inv.number),
            (labels.date, inv.locale.format_date(inv.issued)),
        ]
        if inv.due is not None:
            meta.append((labels.due_date, inv.locale.format_date(inv.due)))
        meta.extend(inv.meta)
        for i, (label, value) in enumerate(meta):
            y = top - 44 - 13 * i
            self.text(self.right - 190, y, label, color=GREY)
            self.text(self.right, y, value, bold=i == 0, align="right")

        y = top - 125
        self.text(self.left, y, labels.bill_to, size=7.5, bold=True, color=GREY)
        self.text(self.left, y - 15, inv.buyer.name, size=10.5, bold=True)
        for i, line in enumerate(inv.buyer.address):
            self.text(self.left, y - 29 - 11.5 * i, line)
        return top - HEADER_BLOCK

    def continued_header(self) -> float:
        inv, top = self.inv, self.top
        accent = colors.HexColor(inv.accent)
        self.text(self.left, top - 12, inv.seller.name, size=11, bold=True, color=accent)
        heading = f"{inv.labels.title} {inv.number} ({inv.labels.continued})"
        self.text(self.right, top - 12, heading, color=GREY, align="right")
        self.rule(top - 22)
        return top - CONTINUED_BLOCK

    def columns(self) -> tuple[float, float, float]:
        """Right edges of the quantity, unit price and amount columns."""
        return self.right - 185, self.right - 95, self.right - 6

    def table_head(self, y: float) -> float:
        labels = self.inv.labels
        self.c.setFillColor(SHADE)
        self.c.rect(self.left, y - TABLE_HEAD, self.right - self.left, TABLE_HEAD, 0, 1)
        base = y - 13.5
        qty, unit, amount = self.columns()
        self.text(self.left + 6, base, labels.description, bold=True)
        self.text(qty, base, labels.quantity, bold=True, align="right")
        self.text(unit, base, labels.unit_price, bold=True, align="right")
        self.text(amount, base, labels.amount, bold=True, align="right")
        return y - TABLE_HEAD

    def row(self, y: float, line: Line) -> float:
        locale = self.inv.locale
        qty, unit, amount = self.columns()
        room = qty - 40 - (self.left + 6)
        if stringWidth(line.description, "Helvetica", 9) > room:
            raise ValueError(f"description too long for the table: {line.description!r}")
        base = y - 10.5
        self.text(self.left + 6, base, line.description)
        self.text(qty, base, locale.number(line.quantity), align="right")
        self.text(unit, base, locale.money(line.unit_price), align="right")
        self.text(amount, base, locale.money(line.amount), align="right")
        self.rule(y - ROW, width=0.3)
        return y - ROW

    def tail(self, y: float) -> None:
        rows = _totals(self.inv)
        label_x = self.right - 230
        y -= 8
        for i, (label, value) in enumerate(rows):
            last = i == len(rows) - 1
            if last:
                self.rule(y - 3, x0=label_x, width=0.8)
                y -= 4
            y -= TOTAL_ROW
            self.text(label_x, y + 4, label, size=10 if last else 9, bold=last)
            money = self.inv.locale.money(value)
            self.text(
                self.right - 6,
                y + 4,
                money,
                size=10 if last else 9,
                bold=last,
                align="right",
            )
        y -= 20
        for note in self.inv.notes:
            self.text(self.left, y, note, size=8, color=GREY)
            y -= NOTE_LINE

    def footer(self, page: int, pages: int) -> None:
        self.rule(BOTTOM - 25)
        self.text(self.left, BOTTOM - 38, self.inv.legal, size=7, color=GREY)
        label = self.inv.labels.page.format(page=page, pages=pages)
        self.text(self.right, BOTTOM - 38, label, size=7, color=GREY, align="right")


def render(invoice: Invoice, path: Path) -> None:
    canvas = Canvas(str(path), pagesize=invoice.page_size, invariant=1)
    canvas.setTitle(f"{invoice.labels.title.title()} {invoice.number}")
    canvas.setAuthor(invoice.seller.name)
    canvas.setSubject(f"{invoice.labels.title.title()} for {invoice.buyer.name}")
    canvas.setCreator("Sluice samples/generate.py")
    pages = paginate(invoice)
    for number, items in enumerate(pages, start=1):
        page = _Page(canvas, invoice)
        y = page.first_header() if number == 1 else page.continued_header()
        if items:
            y = page.table_head(y)
        for index in items:
            y = page.row(y, invoice.lines[index])
        if number == len(pages):
            page.tail(y)
        page.footer(number, len(pages))
        canvas.showPage()
    canvas.save()


def generate(out_dir: Path) -> dict[str, dict[str, str | float]]:
    """Write every sample PDF and ``expected.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = {}
    for invoice in INVOICES:
        render(invoice, out_dir / invoice.file_name)
        expected[invoice.file_name] = invoice.expected()
    text = json.dumps(expected, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    (out_dir / EXPECTED_FILE).write_text(text, encoding="utf-8")
    return expected


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    for name in generate(args.out_dir):
        print(args.out_dir / name)


if __name__ == "__main__":
    main()
