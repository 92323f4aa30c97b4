"""Text for search ingestion: PDF pages with their numbers and paragraph breaks, HTML's
visible text with headings and blocks, plain text in either encoding, refusals."""

from __future__ import annotations

import pytest

from common.core.chunking import ChunkSettings, chunk_document
from common.core.errors import UnreadableDocument
from common.extraction.doctext import document_pages, html_to_text
from tests.unit.extraction._pdfs import text_pdf


def test_a_pdf_gives_one_page_of_text_per_page_with_its_number() -> None:
    pdf = text_pdf(
        [
            [(72, 80, "Invoice INV-2041", 14), (72, 110, "Seller: Acme GmbH", 11)],
            [(72, 80, "Terms and conditions", 11)],
        ]
    )
    pages = document_pages(pdf, name="x.pdf")
    assert [p.page for p in pages] == [1, 2]
    assert pages[0].text.splitlines()[0] == "Invoice INV-2041"
    assert "Seller: Acme GmbH" in pages[0].text
    assert pages[1].text == "Terms and conditions"


def test_a_pdfs_vertical_gap_is_a_paragraph_break_and_close_lines_are_not() -> None:
    pdf = text_pdf([[(72, 80, "First line", 11), (72, 94, "second line", 11), (72, 200, "After a gap", 11)]])
    (page,) = document_pages(pdf, name="x.pdf")
    assert page.text == "First line\nsecond line\n\nAfter a gap"


def test_a_pdf_is_known_by_its_bytes_whatever_its_name() -> None:
    pdf = text_pdf([[(72, 80, "Hello", 11)]])
    assert document_pages(pdf, name="upload")[0].text == "Hello"


def test_chunks_of_a_pdf_keep_the_page_they_come_from() -> None:
    pdf = text_pdf([[(72, 80 + 14 * i, f"Page one line {i} words here", 11) for i in range(20)],
                    [(72, 80 + 14 * i, f"Page two line {i} words here", 11) for i in range(20)]])  # fmt: skip
    chunks = chunk_document("h" * 64, document_pages(pdf, name="x.pdf"), ChunkSettings(max_tokens=40, overlap_tokens=0))
    assert {c.page for c in chunks if "Page two" in c.text and "Page one" not in c.text} == {2}
    assert {c.page for c in chunks if "Page one" in c.text} == {1}


def test_html_keeps_visible_text_headings_and_paragraphs_only() -> None:
    source = """<!doctype html><html><head><title>Not content</title><style>p{color:red}</style></head>
    <body><nav>Home</nav><h1>Annual <b>report</b></h1><p>Revenue grew   by 5%.</p>
    <script>var secret = 1;</script><p>Second<br>line</p><table><tr><td>Q1</td><td>10</td></tr></table></body></html>"""
    text = html_to_text(source)
    assert "# Annual report" in text.splitlines()
    assert "Revenue grew by 5%." in text.splitlines()
    assert "Not content" not in text and "secret" not in text and "color" not in text
    assert "Second\nline" in text
    assert "Q1 10" in text
    assert "\n\n\n" not in text


def test_html_entities_are_decoded_once() -> None:
    assert html_to_text("<p>AT&amp;T &lt;b&gt; and &amp;lt;i&amp;gt;</p>") == "AT&T <b> and &lt;i&gt;"


def test_an_html_file_is_one_page_through_document_pages() -> None:
    pages = document_pages(b"<h2>Title</h2><p>Body</p>", name="page.HTML")
    assert [(p.page, p.text) for p in pages] == [(1, "## Title\n\nBody")]


def test_plain_text_in_windows_1252_is_read() -> None:
    pages = document_pages("Caf\u00e9 au lait\r\nsecond".encode("cp1252"), name="menu.txt")
    assert pages[0].text == "Caf\u00e9 au lait\nsecond"


def test_an_unknown_kind_is_unreadable_with_a_hint() -> None:
    with pytest.raises(UnreadableDocument) as err:
        document_pages(b"PK\x03\x04zip", name="archive.zip")
    assert "PDF, plain text, Markdown or HTML" in (err.value.hint or "")
