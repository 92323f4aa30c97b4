"""MIME types come from the bytes; the declared type only where the bytes say nothing."""

from __future__ import annotations

import pytest

from common.imports.sniff import is_archive, sniff
from tests.unit.imports import zipcraft


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"%PDF-1.7\n", "application/pdf"),
        (b"\xef\xbb\xbf\r\n%PDF-1.4", "application/pdf"),  # junk before the header, as readers accept
        (b"PK\x03\x04\x14\x00", "application/zip"),
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0JFIF", "image/jpeg"),
        (b"II*\x00\x08\x00", "image/tiff"),
        (b"MM\x00*\x00\x00", "image/tiff"),
    ],
)
def test_known_formats_come_from_their_magic(head: bytes, expected: str) -> None:
    assert sniff(head, declared="application/octet-stream", name="whatever.bin") == expected


def test_a_pdf_declared_as_something_else_is_a_pdf() -> None:
    assert sniff(b"%PDF-1.4", declared="image/png", name="scan.png") == "application/pdf"


def test_content_that_is_not_a_pdf_is_not_trusted_as_one() -> None:
    assert sniff(b"<html>hello", declared="application/pdf", name="invoice.pdf") == "application/octet-stream"


def test_unknown_content_keeps_the_declared_type_without_parameters() -> None:
    assert sniff(b"Hi there.", declared="text/plain; charset=utf-8", name="note") == "text/plain"


def test_unknown_content_without_a_declared_type_uses_the_extension() -> None:
    assert sniff(b"a,b\n1,2\n", name="rows.csv") == "text/csv"


def test_office_documents_are_zips_but_not_archives_to_expand() -> None:
    xlsx = zipcraft.with_zipfile([("[Content_Types].xml", b"<Types/>"), ("xl/workbook.xml", b"<w/>")])
    mime = sniff(xlsx[:2048], declared="application/octet-stream", name="book.xlsx")
    assert mime.startswith("application/vnd.openxmlformats")
    assert not is_archive(mime)
    assert is_archive(sniff(zipcraft.with_zipfile([("a.pdf", b"%PDF-")])[:2048], name="invoices.zip"))


def test_a_stored_zip_holding_a_pdf_is_a_zip() -> None:
    data = zipcraft.build([zipcraft.Raw("a.pdf", b"%PDF-1.4 stored, not deflated")])
    assert b"%PDF-" in data[:1024]
    assert sniff(data[:2048], declared="application/pdf", name="a.pdf") == "application/zip"
