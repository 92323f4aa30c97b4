"""Structured e-invoice XML: ZUGFeRD 1 / ZUGFeRD 2 / Factur-X / XRechnung.

Two syntaxes exist:

* UN/CEFACT **CII** (``CrossIndustryInvoice``; ZUGFeRD 1 used
  ``CrossIndustryDocument``), the syntax of ZUGFeRD and Factur-X;
* OASIS **UBL** (``Invoice`` / ``CreditNote``), one of XRechnung's two.

Elements are matched by local name, so the reader is indifferent to the
namespace prefixes and to the 1.0 / 2.x namespace URIs.

Parsing is defensive: the input size is capped and any document type
declaration is refused before parsing, which rules out entity-expansion
("billion laughs") and external-entity attacks without needing defusedxml.
(ElementTree never fetches external entities; refusing ``<!DOCTYPE`` also
removes internal entity expansion.) Real CII/UBL invoices never carry a DTD.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from common.extraction.normalize import parse_date

__all__ = ["MAX_XML_BYTES", "EInvoice", "EInvoiceLine", "is_einvoice_xml", "parse_einvoice"]

MAX_XML_BYTES = 10 * 1024 * 1024
_DOCTYPE = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


class EInvoiceError(ValueError):
    """The XML is not a readable CII/UBL invoice."""


@dataclass(slots=True)
class EInvoiceLine:
    description: str | None = None
    quantity: float | None = None
    unit: str | None = None
    unit_price: float | None = None
    amount: float | None = None  # line net amount
    product_id: str | None = None


@dataclass(slots=True)
class EInvoice:
    syntax: str  # "CII" or "UBL"
    invoice_number: str | None = None
    date: str | None = None  # ISO
    due_date: str | None = None
    type_code: str | None = None
    currency: str | None = None
    total: float | None = None  # grand total including tax
    amount_due: float | None = None
    net_total: float | None = None
    tax_total: float | None = None
    seller: str | None = None
    seller_vat_id: str | None = None
    buyer: str | None = None
    buyer_reference: str | None = None
    order_number: str | None = None
    iban: str | None = None
    lines: list[EInvoiceLine] = field(default_factory=list)

    def as_fields(self) -> dict[str, str | float | None]:
        """Values keyed by the names the extractor's field schemas use."""
        return {
            "invoice_number": self.invoice_number,
            "date": self.date,
            "due_date": self.due_date,
            "total": self.total,
            "amount_due": self.amount_due,
            "net_total": self.net_total,
            "tax_total": self.tax_total,
            "tax": self.tax_total,
            "vat": self.tax_total,
            "currency": self.currency,
            "seller": self.seller,
            "seller_vat_id": self.seller_vat_id,
            "vat_id": self.seller_vat_id,
            "buyer": self.buyer,
            "buyer_reference": self.buyer_reference,
            "order_number": self.order_number,
            "po_number": self.order_number,
            "purchase_order": self.order_number,
            "iban": self.iban,
            "document_type": self.type_code,
        }


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> Iterator[ET.Element]:
    for c in el:
        if _local(c.tag) == name:
            yield c


def _path(el: ET.Element | None, *names: str) -> ET.Element | None:
    """Follow child elements by local name; None when a step is missing."""
    cur = el
    for n in names:
        if cur is None:
            return None
        cur = next(_children(cur, n), None)
    return cur


def _either(*els: ET.Element | None) -> ET.Element | None:
    """The first element that exists. (Elements without children are falsy,
    so ``a or b`` would skip a present leaf element.)"""
    return next((e for e in els if e is not None), None)


def _paths(el: ET.Element | None, *names: str) -> list[ET.Element]:
    cur: list[ET.Element] = [el] if el is not None else []
    for n in names:
        cur = [c for e in cur for c in _children(e, n)]
    return cur


def _text(el: ET.Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    t = " ".join(el.text.split()) if "\n" not in el.text.strip() else el.text.strip()
    return t or None


def _num(el: ET.Element | None) -> float | None:
    t = _text(el)
    if t is None:
        return None
    try:
        return float(t)
    except ValueError:
        return None


def _first_num(els: Iterable[ET.Element], currency: str | None) -> float | None:
    """The first amount, preferring one in the invoice currency (CII may state
    the tax total twice: in invoice and in accounting currency)."""
    els = list(els)
    for e in els:
        if currency and e.get("currencyID") not in (None, currency):
            continue
        v = _num(e)
        if v is not None:
            return v
    return _num(els[0]) if els else None


def _date(el: ET.Element | None) -> str | None:
    t = _text(el)
    return parse_date(t) if t else None


def _safe_parse(data: bytes) -> ET.Element:
    if len(data) > MAX_XML_BYTES:
        raise EInvoiceError(f"XML larger than {MAX_XML_BYTES} bytes")
    if _DOCTYPE.search(data[:65536]) or _DOCTYPE.search(data):
        raise EInvoiceError("XML with a document type declaration is refused")
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise EInvoiceError(f"not well-formed XML: {e}") from None


def is_einvoice_xml(data: bytes) -> bool:
    """Cheap sniff: does this look like CII or UBL invoice XML?"""
    head = data[:65536]  # licence comments before the root element can be long
    return bool(re.search(rb"<(?:\w+:)?(?:CrossIndustryInvoice|CrossIndustryDocument|Invoice|CreditNote)[\s>]", head))


def parse_einvoice(data: bytes) -> EInvoice:
    """Read a CII or UBL invoice. Raises EInvoiceError for anything else."""
    root = _safe_parse(data)
    name = _local(root.tag)
    if name in ("CrossIndustryInvoice", "CrossIndustryDocument"):
        return _parse_cii(root)
    if name in ("Invoice", "CreditNote"):
        return _parse_ubl(root, credit=name == "CreditNote")
    raise EInvoiceError(f"root element {name!r} is not a CII or UBL invoice")


# --------------------------------------------------------------------------- CII


def _parse_cii(root: ET.Element) -> EInvoice:
    # ZUGFeRD 1: HeaderExchangedDocument + SpecifiedSupplyChainTradeTransaction
    # with ApplicableSupplyChainTrade* children; ZUGFeRD 2 / Factur-X:
    # ExchangedDocument + ApplicableHeaderTrade*.
    doc = _either(_path(root, "ExchangedDocument"), _path(root, "HeaderExchangedDocument"))
    tx = _either(_path(root, "SupplyChainTradeTransaction"), _path(root, "SpecifiedSupplyChainTradeTransaction"))
    agreement = _either(_path(tx, "ApplicableHeaderTradeAgreement"), _path(tx, "ApplicableSupplyChainTradeAgreement"))
    settlement = _either(
        _path(tx, "ApplicableHeaderTradeSettlement"), _path(tx, "ApplicableSupplyChainTradeSettlement")
    )
    inv = EInvoice(syntax="CII")
    inv.invoice_number = _text(_path(doc, "ID"))
    inv.type_code = _text(_path(doc, "TypeCode"))
    inv.date = _date(_path(doc, "IssueDateTime", "DateTimeString"))
    inv.currency = _text(_path(settlement, "InvoiceCurrencyCode"))
    summ = _either(
        _path(settlement, "SpecifiedTradeSettlementHeaderMonetarySummation"),
        _path(settlement, "SpecifiedTradeSettlementMonetarySummation"),
    )
    inv.total = _first_num(_children(summ, "GrandTotalAmount") if summ is not None else [], inv.currency)
    inv.amount_due = _first_num(_children(summ, "DuePayableAmount") if summ is not None else [], inv.currency)
    inv.net_total = _first_num(_children(summ, "TaxBasisTotalAmount") if summ is not None else [], inv.currency)
    inv.tax_total = _first_num(_children(summ, "TaxTotalAmount") if summ is not None else [], inv.currency)
    seller = _path(agreement, "SellerTradeParty")
    buyer = _path(agreement, "BuyerTradeParty")
    inv.seller = _text(_path(seller, "Name"))
    inv.buyer = _text(_path(buyer, "Name"))
    for reg in _paths(seller, "SpecifiedTaxRegistration", "ID"):
        if reg.get("schemeID") == "VA":
            inv.seller_vat_id = _text(reg)
    inv.buyer_reference = _text(_path(agreement, "BuyerReference"))
    inv.order_number = _text(_path(agreement, "BuyerOrderReferencedDocument", "IssuerAssignedID")) or _text(
        _path(agreement, "BuyerOrderReferencedDocument", "ID")
    )
    inv.iban = _text(
        _path(settlement, "SpecifiedTradeSettlementPaymentMeans", "PayeePartyCreditorFinancialAccount", "IBANID")
    )
    inv.due_date = _date(_path(settlement, "SpecifiedTradePaymentTerms", "DueDateDateTime", "DateTimeString"))
    for item in _paths(tx, "IncludedSupplyChainTradeLineItem"):
        agreement_l = _either(
            _path(item, "SpecifiedLineTradeAgreement"), _path(item, "SpecifiedSupplyChainTradeAgreement")
        )
        delivery_l = _either(
            _path(item, "SpecifiedLineTradeDelivery"), _path(item, "SpecifiedSupplyChainTradeDelivery")
        )
        settle_l = _either(
            _path(item, "SpecifiedLineTradeSettlement"), _path(item, "SpecifiedSupplyChainTradeSettlement")
        )
        qty_el = _path(delivery_l, "BilledQuantity")
        line = EInvoiceLine(
            description=_text(_path(item, "SpecifiedTradeProduct", "Name")),
            product_id=_text(_path(item, "SpecifiedTradeProduct", "SellerAssignedID")),
            quantity=_num(qty_el),
            unit=qty_el.get("unitCode") if qty_el is not None else None,
            unit_price=_num(_path(agreement_l, "NetPriceProductTradePrice", "ChargeAmount")),
            amount=_num(
                _either(
                    _path(settle_l, "SpecifiedTradeSettlementLineMonetarySummation", "LineTotalAmount"),
                    _path(settle_l, "SpecifiedTradeSettlementMonetarySummation", "LineTotalAmount"),
                )
            ),
        )
        inv.lines.append(line)
    return inv


# --------------------------------------------------------------------------- UBL


def _ubl_party_name(party: ET.Element | None) -> str | None:
    return _text(_path(party, "PartyLegalEntity", "RegistrationName")) or _text(_path(party, "PartyName", "Name"))


def _parse_ubl(root: ET.Element, *, credit: bool) -> EInvoice:
    inv = EInvoice(syntax="UBL")
    inv.invoice_number = _text(_path(root, "ID"))
    inv.type_code = _text(_path(root, "InvoiceTypeCode")) or _text(_path(root, "CreditNoteTypeCode"))
    inv.date = _date(_path(root, "IssueDate"))
    inv.due_date = _date(_path(root, "DueDate")) or _date(_path(root, "PaymentMeans", "PaymentDueDate"))
    inv.currency = _text(_path(root, "DocumentCurrencyCode"))
    total = _path(root, "LegalMonetaryTotal")
    inv.total = _num(_path(total, "TaxInclusiveAmount"))
    inv.amount_due = _num(_path(total, "PayableAmount"))
    if inv.total is None:
        inv.total = inv.amount_due
    inv.net_total = _num(_path(total, "TaxExclusiveAmount"))
    inv.tax_total = _first_num(_paths(root, "TaxTotal", "TaxAmount"), inv.currency)
    seller = _path(root, "AccountingSupplierParty", "Party")
    buyer = _path(root, "AccountingCustomerParty", "Party")
    inv.seller = _ubl_party_name(seller)
    inv.buyer = _ubl_party_name(buyer)
    inv.seller_vat_id = _text(_path(seller, "PartyTaxScheme", "CompanyID"))
    inv.buyer_reference = _text(_path(root, "BuyerReference"))
    inv.order_number = _text(_path(root, "OrderReference", "ID"))
    inv.iban = _text(_path(root, "PaymentMeans", "PayeeFinancialAccount", "ID"))
    for item in [*_paths(root, "InvoiceLine"), *_paths(root, "CreditNoteLine")]:
        qty_el = _either(_path(item, "InvoicedQuantity"), _path(item, "CreditedQuantity"))
        inv.lines.append(
            EInvoiceLine(
                description=_text(_path(item, "Item", "Name")) or _text(_path(item, "Item", "Description")),
                product_id=_text(_path(item, "Item", "SellersItemIdentification", "ID")),
                quantity=_num(qty_el),
                unit=qty_el.get("unitCode") if qty_el is not None else None,
                unit_price=_num(_path(item, "Price", "PriceAmount")),
                amount=_num(_path(item, "LineExtensionAmount")),
            )
        )
    del credit  # amounts stay as printed in the XML (credit notes carry positive amounts by convention)
    return inv
