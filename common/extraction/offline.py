"""The offline extractor: Sluice's embedded default, no network, no model.

``extract_pdf`` reads one PDF:

1. cheap checks on the bytes (empty, size, header, truncation, decompression
   bombs) -- :mod:`common.extraction.guards`;
2. PDFium opens it (encrypted / corrupt / too many pages are refused) --
   :mod:`common.extraction.pdfio`;
3. if the PDF carries e-invoice XML (ZUGFeRD, Factur-X, XRechnung), the fields
   come from the XML -- :mod:`common.extraction.einvoice`;
4. otherwise from the text layer, by layout-aware label search --
   :mod:`common.extraction.fields`, with line items from
   :mod:`common.extraction.tables`.

Heavy PDF libraries are imported inside the functions that use them, so
importing this module costs milliseconds (cloud cold starts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from common.core.errors import UnreadableDocument
from common.core.fieldtypes import normalize_value
from common.core.schema import DocumentExtraction, FieldSpec, FieldType, FieldValue
from common.extraction import guards

if TYPE_CHECKING:
    from common.extraction.layout import Document

__all__ = [
    "METHOD_OCR",
    "METHOD_TEXT",
    "METHOD_XML",
    "einvoice_from_attachments",
    "extract_document",
    "extract_image",
    "extract_pdf",
]

METHOD_TEXT = "offline-text"
METHOD_OCR = "offline-ocr"
METHOD_XML = "einvoice-xml"
# A page with fewer visible characters than this in the whole document has no
# usable text layer (a scan, perhaps with a stray page number).
_MIN_TEXT_CHARS = 10


def extract_pdf(
    data: bytes,
    fields: Sequence[FieldSpec],
    *,
    filename: str = "",
    max_pages: int = 200,
    max_bytes: int = 50 * 1024 * 1024,
) -> DocumentExtraction:
    """Extract ``fields`` from the PDF ``data``.

    Raises :class:`~common.core.errors.UnreadableDocument` (a permanent error)
    for empty, non-PDF, truncated, corrupt, encrypted, oversized, over-long,
    bomb-like and image-only documents. ``filename`` is used only in messages.
    """
    from common.extraction.pdfio import read_pdf  # imports pypdfium2 lazily

    t0 = time.perf_counter()
    specs = list(fields)
    if not specs:
        raise ValueError("extract_pdf needs at least one field")
    try:
        guards.check_bytes(data, max_bytes=max_bytes)
        guards.scan_streams(data)
        content = read_pdf(data, max_pages=max_pages)
    except UnreadableDocument as e:
        if filename:
            e.message = f"{filename}: {e.message}"
            e.args = (e.message,)
        raise

    notes = list(content.notes)
    xml = _einvoice(content.attachments, notes)
    if xml is not None:
        result = _from_einvoice(xml, specs, notes)
        result.pages = content.document.pages
        result.latency_ms = round((time.perf_counter() - t0) * 1000, 1)
        return result

    doc = content.document
    method = METHOD_TEXT
    if content.chars < _MIN_TEXT_CHARS:
        from common.extraction import ocr

        where = f"{filename}: " if filename else ""
        if not ocr.available():
            raise UnreadableDocument(
                f"{where}The PDF has no text layer (it looks scanned or image-only) and OCR is not installed.",
                hint="Install Tesseract (`make ocr` or `apt-get install tesseract-ocr`), or use the Gemini backend.",
                code="image_only",
            )
        doc = _ocr(lambda: ocr.ocr_pdf(data, max_pages=max_pages), where)
        method = METHOD_OCR
        notes.append(f"no text layer: read by OCR ({ocr.ENGINE})")
    return _from_document(doc, specs, notes, method, t0)


def extract_image(
    data: bytes, fields: Sequence[FieldSpec], *, filename: str = "", max_pages: int = 200
) -> DocumentExtraction:
    """Extract ``fields`` from a PNG, JPEG or TIFF image (each TIFF frame a page) by OCR."""
    from common.extraction import ocr

    t0 = time.perf_counter()
    specs = list(fields)
    if not specs:
        raise ValueError("extract_image needs at least one field")
    where = f"{filename}: " if filename else ""
    if not data:
        raise UnreadableDocument(f"{where}The file is empty.", code="empty")
    if not ocr.available():
        raise UnreadableDocument(
            f"{where}The document is an image and OCR is not installed.",
            hint="Install Tesseract (`make ocr` or `apt-get install tesseract-ocr`), or use the Gemini backend.",
            code="image_only",
        )
    doc = _ocr(lambda: ocr.ocr_image(data, max_pages=max_pages), where)
    return _from_document(doc, specs, [f"image: read by OCR ({ocr.ENGINE})"], METHOD_OCR, t0)


def extract_document(
    data: bytes,
    fields: Sequence[FieldSpec],
    *,
    filename: str = "",
    max_pages: int = 200,
    max_bytes: int = 50 * 1024 * 1024,
) -> DocumentExtraction:
    """A PDF or an image, told apart by the first bytes."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[:4] in (b"II*\x00", b"MM\x00*"):
        if len(data) > max_bytes:
            raise UnreadableDocument(f"{filename or 'the image'} is larger than {max_bytes // (1024 * 1024)} MB")
        return extract_image(data, fields, filename=filename, max_pages=max_pages)
    return extract_pdf(data, fields, filename=filename, max_pages=max_pages, max_bytes=max_bytes)


def _ocr(read: Callable[[], Document], where: str) -> Document:
    try:
        doc = read()
    except UnreadableDocument as e:
        e.message = f"{where}{e.message}"
        e.args = (e.message,)
        raise
    if sum(len(w.text) for ln in doc.lines for s in ln.segments for w in s.words) < _MIN_TEXT_CHARS:
        raise UnreadableDocument(
            f"{where}OCR found no text in the document; the Gemini backend may still read it.",
            hint="Check that the scan is legible, or use the Gemini backend.",
            code="image_only",
        )
    return doc


def _from_document(
    doc: Document, specs: list[FieldSpec], notes: list[str], method: str, t0: float
) -> DocumentExtraction:
    from common.extraction.fields import extract_fields
    from common.extraction.tables import is_line_item_schema, line_items

    values = extract_fields(doc, specs)
    if method == METHOD_OCR:
        # OCR misreads characters the text layer cannot: the same evidence is worth less
        values = {
            k: v.model_copy(update={"confidence": round(v.confidence * 0.9, 2)}) if v else v for k, v in values.items()
        }
    columns = [s.name for s in specs]
    field_values = {k: v for k, v in values.items() if v is not None}
    doc_row = [v.value if v is not None else None for v in (values[c] for c in columns)]

    results: list[list[Any]] = [doc_row]
    row_pages: list[int | None] = [_first_page(values)]
    if is_line_item_schema(specs):
        items = line_items(doc, specs)
        if items:
            results, row_pages = [], []
            for item in items:
                row = [
                    item.values.get(c, doc_row[i]) if c in item.values else doc_row[i] for i, c in enumerate(columns)
                ]
                results.append(row)
                row_pages.append(item.page)
            for name, v in items[0].values.items():
                if v is not None:
                    field_values[name] = FieldValue(
                        value=v, confidence=0.6, page=items[0].page, snippet=items[0].snippet
                    )
            notes.append(f"{len(items)} line items read from a table")
        else:
            notes.append("no line-item table found; one row for the document")
    return DocumentExtraction(
        columns=columns,
        results=results,
        fields=field_values,
        row_pages=row_pages,
        pages=doc.pages,
        method=method,
        latency_ms=round((time.perf_counter() - t0) * 1000, 1),
        notes=notes,
    )


def _discount(v: FieldValue | None, factor: float) -> FieldValue | None:
    return v.model_copy(update={"confidence": round(v.confidence * factor, 2)}) if v is not None else None


def einvoice_from_attachments(
    attachments: list[tuple[str, bytes]], fields: Sequence[FieldSpec]
) -> DocumentExtraction | None:
    """The fields from the first attachment that is e-invoice XML; None if none is.

    The Gemini path asks this first: structured XML is exact and free, a model
    call is neither.
    """
    t0 = time.perf_counter()
    notes: list[str] = []
    xml = _einvoice(attachments, notes)
    if xml is None:
        return None
    result = _from_einvoice(xml, list(fields), notes)
    result.latency_ms = round((time.perf_counter() - t0) * 1000, 1)
    return result


def _first_page(values: dict[str, FieldValue | None]) -> int | None:
    pages = [v.page for v in values.values() if v is not None and v.page is not None]
    return min(pages) if pages else None


def _einvoice(attachments: list[tuple[str, bytes]], notes: list[str]) -> Any | None:
    """The first attachment that parses as CII/UBL invoice XML."""
    if not attachments:
        return None
    from common.extraction.einvoice import EInvoiceError, is_einvoice_xml, parse_einvoice

    for name, data in attachments:
        if not is_einvoice_xml(data):
            continue
        try:
            inv = parse_einvoice(data)
        except EInvoiceError as e:
            notes.append(f"embedded XML {name!r} ignored: {e}")
            continue
        notes.append(f"values came from the embedded {inv.syntax} e-invoice XML {name!r}, not from the printed page")
        return inv
    return None


_LINE_KEYS = {
    "description": "description",
    "item": "description",
    "item_description": "description",
    "product": "description",
    "article": "description",
    "name": "description",
    "quantity": "quantity",
    "qty": "quantity",
    "unit": "unit",
    "unit_price": "unit_price",
    "price": "unit_price",
    "amount": "amount",
    "line_total": "amount",
    "line_amount": "amount",
    "net_amount": "amount",
    "sku": "product_id",
    "product_id": "product_id",
    "article_number": "product_id",
}


def _from_einvoice(inv: Any, specs: list[FieldSpec], notes: list[str]) -> DocumentExtraction:
    from common.extraction.einvoice import EInvoice
    from common.extraction.tables import is_line_item_schema

    assert isinstance(inv, EInvoice)
    columns = [s.name for s in specs]
    doc_values = inv.as_fields()
    fields: dict[str, FieldValue] = {}
    row: list[Any] = []
    for s in specs:
        v = _coerce(doc_values.get(s.name), s.type, s.choices)
        row.append(v)
        if v is not None:
            fields[s.name] = FieldValue(value=v, confidence=1.0, source="einvoice_xml", snippet=f"XML {s.name}")
    missing = [s.name for s in specs if s.name not in doc_values]
    if missing:
        notes.append(f"not carried by the e-invoice XML: {', '.join(missing)}")
    results = [row]
    row_pages: list[int | None] = [None]
    if is_line_item_schema(specs) and inv.lines:
        results, row_pages = [], []
        for ln in inv.lines:
            lv = {k: getattr(ln, attr) for k, attr in _LINE_KEYS.items()}
            results.append([_coerce(lv[s.name], s.type) if s.name in lv else row[i] for i, s in enumerate(specs)])
            row_pages.append(None)
        first = dict(zip(columns, results[0], strict=True))
        for s in specs:
            if s.name in _LINE_KEYS and first[s.name] is not None:
                fields[s.name] = FieldValue(
                    value=first[s.name], confidence=1.0, source="einvoice_xml", snippet=f"XML line 1 {s.name}"
                )
    return DocumentExtraction(
        columns=columns, results=results, fields=fields, row_pages=row_pages, method=METHOD_XML, notes=notes
    )


def _coerce(v: Any, t: FieldType, choices: tuple[str, ...] = ()) -> Any:
    """An XML value as the schema's type; None where it cannot be one."""
    if v is None:
        return None
    if t == FieldType.STRING:
        return str(v)
    if t == FieldType.NUMBER and isinstance(v, int | float):
        return float(v)
    if t == FieldType.INTEGER and isinstance(v, int | float) and float(v).is_integer():
        return int(v)
    if t in (FieldType.DATE, FieldType.CURRENCY) and isinstance(v, str):
        return v
    if t is FieldType.PERCENTAGE and isinstance(v, int | float):
        return normalize_value(float(v), t)
    if isinstance(v, str) and t not in (FieldType.NUMBER, FieldType.INTEGER, FieldType.BOOLEAN):
        return normalize_value(v, t, choices)
    return None
