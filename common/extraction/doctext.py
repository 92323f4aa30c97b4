"""A document's text for search ingestion: pages of plain text.

PDF: the text layer read by :func:`common.extraction.pdfio.read_pdf` (the
same PDFium reading as extraction), a page per page, lines top to bottom.
Plain text and Markdown: as they are, one page. HTML: the visible text
(scripts, styles and other non-content elements dropped), headings written
as Markdown ``#`` lines and block elements as paragraphs, so the chunker sees
the same structure whatever the source.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import PurePosixPath

from common.core.chunking import PageText
from common.core.errors import UnreadableDocument
from common.extraction.pdfio import read_pdf

__all__ = ["SUPPORTED_SUFFIXES", "document_pages", "html_to_text", "kind_of"]

SUPPORTED_SUFFIXES = {
    ".pdf": "pdf",
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
}
_MIME = {"application/pdf": "pdf", "text/plain": "text", "text/markdown": "markdown", "text/html": "html"}


def kind_of(name: str, mime: str | None = None) -> str | None:
    """pdf, text, markdown or html; None when the name and type say neither."""
    if mime and mime.split(";")[0].strip() in _MIME:
        return _MIME[mime.split(";")[0].strip()]
    return SUPPORTED_SUFFIXES.get(PurePosixPath(name.lower()).suffix)


def document_pages(data: bytes, *, name: str, mime: str | None = None, max_pages: int = 1000) -> list[PageText]:
    kind = kind_of(name, mime) or ("pdf" if data[:5] == b"%PDF-" else None)
    if kind is None:
        raise UnreadableDocument(
            f"{name}: not a document search can read",
            hint="Ingest PDF, plain text, Markdown or HTML files.",
        )
    if kind == "pdf":
        return _pdf_pages(data, max_pages=max_pages)
    text = _decode(data, name)
    if kind == "html":
        text = html_to_text(text)
    return [PageText(page=1, text=text)]


def _pdf_pages(data: bytes, *, max_pages: int) -> list[PageText]:
    doc = read_pdf(data, max_pages=max_pages).document
    by_page: dict[int, list[str]] = {n: [] for n in range(1, doc.pages + 1)}
    prev_bottom: dict[int, float] = {}
    for line in doc.lines:
        lines = by_page[line.page]
        # A vertical gap of more than a line's height is a paragraph break.
        gap = line.top - prev_bottom.get(line.page, line.top)
        if lines and gap > max(line.height, 1.0):
            lines.append("")
        lines.append(line.text)
        prev_bottom[line.page] = line.bottom
    return [PageText(page=n, text="\n".join(lines)) for n, lines in by_page.items()]


def _decode(data: bytes, name: str) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding).replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError:
            continue
    raise UnreadableDocument(f"{name}: the text is neither UTF-8 nor Windows-1252", hint="Save it as UTF-8.")


_SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object"}
_BLOCK = {
    "p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "li", "ul", "ol",
    "table", "tr", "blockquote", "pre", "br", "hr", "dl", "dt", "dd", "figure", "figcaption", "form",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip_depth += 1
        elif tag in _HEADINGS:
            self.out.append("\n\n" + "#" * _HEADINGS[tag] + " ")
        elif tag in ("td", "th"):
            self.out.append("  ")
        elif tag in _BLOCK:
            self.out.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _HEADINGS or tag in _BLOCK:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.out.append(data)


def html_to_text(source: str) -> str:
    parser = _TextParser()
    parser.feed(source)
    parser.close()
    raw = "".join(parser.out)  # convert_charrefs has decoded the entities: decoding again would turn &amp;lt; into <
    lines = [re.sub(r"[ \t\u00a0]+", " ", ln).strip() for ln in raw.split("\n")]
    text = "\n".join(lines)
    # A heading's text stays on its marker's line.
    text = re.sub(r"^(#{1,6}) *\n+", r"\1 ", text, flags=re.MULTILINE)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
