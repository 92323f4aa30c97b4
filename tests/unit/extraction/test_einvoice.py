"""Embedded e-invoice XML (ZUGFeRD / Factur-X / XRechnung) is read exactly."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from common.core.schema import INVOICE_PRESET, FieldSpec, FieldType
from common.extraction.einvoice import EInvoiceError, parse_einvoice
from common.extraction.offline import extract_pdf

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
EINVOICE_DIR = SHARED / "corpus" / "einvoice"
EINVOICES = sorted(EINVOICE_DIR.glob("*.pdf")) if EINVOICE_DIR.is_dir() else []


def _embedded_xml(pdf: bytes) -> bytes:
    """The attachment, read independently of the extractor (with pypdf)."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    (data,) = [d for name, ds in reader.attachments.items() if name.lower().endswith(".xml") for d in ds]
    return data


def _first(root: ET.Element, local: str) -> str:
    el = next(e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == local)
    assert el.text is not None
    return el.text.strip()


@pytest.mark.skipif(not EINVOICES, reason=f"e-invoice corpus not found at {EINVOICE_DIR}")
@pytest.mark.parametrize("path", EINVOICES, ids=lambda p: p.stem[-40:])
def test_corpus_einvoice_values_come_from_the_xml(path: Path) -> None:
    data = path.read_bytes()
    root = ET.fromstring(_embedded_xml(data))
    doc = next(e for e in root.iter() if e.tag.rsplit("}", 1)[-1] in ("ExchangedDocument", "HeaderExchangedDocument"))
    raw_date = _first(doc, "DateTimeString")
    want = {
        "invoice_number": _first(doc, "ID"),
        "date": f"{raw_date[:4]}-{raw_date[4:6]}-{raw_date[6:8]}",
        "total": float(_first(root, "GrandTotalAmount")),
        "currency": _first(root, "InvoiceCurrencyCode"),
        "seller": _first(next(e for e in root.iter() if e.tag.endswith("SellerTradeParty")), "Name"),
        "buyer": _first(next(e for e in root.iter() if e.tag.endswith("BuyerTradeParty")), "Name"),
    }
    res = extract_pdf(data, INVOICE_PRESET)
    assert res.method == "einvoice-xml"
    assert dict(zip(res.columns, res.results[0], strict=True)) == want
    assert all(v.source == "einvoice_xml" and v.confidence == 1.0 for v in res.fields.values())
    assert any("embedded" in n and "XML" in n for n in res.notes)


@pytest.mark.skipif(not EINVOICES, reason=f"e-invoice corpus not found at {EINVOICE_DIR}")
def test_corpus_einvoice_line_items() -> None:
    specs = (
        FieldSpec(name="invoice_number"),
        FieldSpec(name="description"),
        FieldSpec(name="quantity", type=FieldType.NUMBER),
        FieldSpec(name="amount", type=FieldType.NUMBER),
    )
    data = next(p for p in EINVOICES if "EN16931_Einfach" in p.name).read_bytes()
    root = ET.fromstring(_embedded_xml(data))
    items = [e for e in root.iter() if e.tag.endswith("IncludedSupplyChainTradeLineItem")]
    res = extract_pdf(data, specs)
    assert len(res.results) == len(items)
    assert [r[1] for r in res.results] == [_first(i, "Name") for i in items]
    assert [r[3] for r in res.results] == [float(_first(i, "LineTotalAmount")) for i in items]


UBL = b"""<?xml version="1.0" encoding="UTF-8"?>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
  <cbc:ID>XR-2024-17</cbc:ID>
  <cbc:IssueDate>2024-05-02</cbc:IssueDate>
  <cbc:DocumentCurrencyCode>EUR</cbc:DocumentCurrencyCode>
  <cac:AccountingSupplierParty><cac:Party><cac:PartyLegalEntity>
    <cbc:RegistrationName>Muster Verkauf GmbH</cbc:RegistrationName></cac:PartyLegalEntity></cac:Party>
  </cac:AccountingSupplierParty>
  <cac:AccountingCustomerParty><cac:Party><cac:PartyName><cbc:Name>Stadt Beispiel</cbc:Name></cac:PartyName>
  </cac:Party></cac:AccountingCustomerParty>
  <cac:LegalMonetaryTotal>
    <cbc:TaxExclusiveAmount currencyID="EUR">100.00</cbc:TaxExclusiveAmount>
    <cbc:TaxInclusiveAmount currencyID="EUR">119.00</cbc:TaxInclusiveAmount>
    <cbc:PayableAmount currencyID="EUR">119.00</cbc:PayableAmount>
  </cac:LegalMonetaryTotal>
  <cac:InvoiceLine><cbc:ID>1</cbc:ID><cbc:InvoicedQuantity unitCode="H87">2</cbc:InvoicedQuantity>
    <cbc:LineExtensionAmount currencyID="EUR">100.00</cbc:LineExtensionAmount>
    <cac:Item><cbc:Name>Beratung</cbc:Name></cac:Item><cac:Price><cbc:PriceAmount>50.00</cbc:PriceAmount></cac:Price>
  </cac:InvoiceLine>
</Invoice>"""


def test_ubl_invoice_is_read() -> None:
    inv = parse_einvoice(UBL)
    assert (inv.syntax, inv.invoice_number, inv.date, inv.currency, inv.total) == (
        "UBL",
        "XR-2024-17",
        "2024-05-02",
        "EUR",
        119.0,
    )
    assert (inv.seller, inv.buyer) == ("Muster Verkauf GmbH", "Stadt Beispiel")
    (line,) = inv.lines
    assert (line.description, line.quantity, line.unit_price, line.amount) == ("Beratung", 2.0, 50.0, 100.0)


def test_xml_with_doctype_is_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        b"<Invoice>&lol2;</Invoice>"
    )
    with pytest.raises(EInvoiceError, match="document type"):
        parse_einvoice(bomb)


def test_non_invoice_xml_is_refused() -> None:
    with pytest.raises(EInvoiceError, match="not a CII or UBL"):
        parse_einvoice(b"<Order><ID>1</ID></Order>")


def test_malformed_xml_is_refused() -> None:
    with pytest.raises(EInvoiceError, match="well-formed"):
        parse_einvoice(b"<Invoice><ID>1</Invoice>")


def test_pdf_with_embedded_ubl_uses_the_xml() -> None:
    from pypdf import PdfReader, PdfWriter

    from tests.unit.extraction._pdfs import text_pdf

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(text_pdf([[(50, 80, "Invoice No: WRONG-1", 11)]]))).pages:
        writer.add_page(page)
    writer.add_attachment("xrechnung.xml", UBL)
    buf = io.BytesIO()
    writer.write(buf)
    res = extract_pdf(buf.getvalue(), INVOICE_PRESET)
    assert res.method == "einvoice-xml"
    assert res.results == [["XR-2024-17", "2024-05-02", 119.0, "EUR", "Muster Verkauf GmbH", "Stadt Beispiel"]]
