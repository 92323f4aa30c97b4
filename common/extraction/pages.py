"""A document page as a picture, and where a snippet of its text sits: what the review screen shows.

The page is rendered by PDFium (pypdfium2) and encoded as PNG here, with zlib
only (no imaging library is needed). Boxes are fractions of the page's width
and height from its top-left corner, so a client can draw them over the
picture at any size.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from common.core.errors import UnreadableDocument
from common.extraction.pdfio import _PDFIUM_LOCK

# Rendered pages are at most this many pixels on their longer side.
MAX_SIDE_PX = 2000


@dataclass(frozen=True)
class Box:
    left: float
    top: float
    width: float
    height: float


def _open(data: bytes) -> object:
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise UnreadableDocument(f"not a readable PDF: {exc}", hint="Only PDF documents have pages to show.") from exc


def page_count(data: bytes) -> int:
    with _PDFIUM_LOCK:
        pdf = _open(data)
        try:
            return len(pdf)  # type: ignore[arg-type]
        finally:
            pdf.close()  # type: ignore[attr-defined]


def render_png(data: bytes, page: int, *, width_px: int = 1100) -> bytes:
    """Page ``page`` (1-based) of a PDF as PNG, ``width_px`` wide (bounded by MAX_SIDE_PX)."""
    with _PDFIUM_LOCK:
        pdf = _open(data)
        try:
            n = len(pdf)  # type: ignore[arg-type]
            if not 1 <= page <= n:
                raise IndexError(f"page {page} of {n}")
            p = pdf[page - 1]  # type: ignore[index]
            w, h = p.get_size()
            scale = min(width_px, MAX_SIDE_PX) / max(w, 1.0)
            if h * scale > MAX_SIDE_PX:
                scale = MAX_SIDE_PX / max(h, 1.0)
            bitmap = p.render(scale=scale, rev_byteorder=True)
            raw = bytes(bitmap.buffer)
            return encode_png(raw, bitmap.width, bitmap.height, bitmap.stride, bitmap.n_channels)
        finally:
            pdf.close()  # type: ignore[attr-defined]


def encode_png(raw: bytes, width: int, height: int, stride: int, channels: int) -> bytes:
    """An 8-bit RGB or RGBA PNG from rows of pixels ``stride`` bytes apart."""
    if channels not in (3, 4):
        raise ValueError(f"{channels} channels: only RGB and RGBA are encoded")
    row = width * channels
    body = b"".join(b"\x00" + raw[y * stride : y * stride + row] for y in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    color = 2 if channels == 3 else 6
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(body, 6)) + chunk(b"IEND", b"")


def locate(data: bytes, page: int, needles: list[str]) -> Box | None:
    """Where the first of ``needles`` found on page ``page`` sits (its characters' union), or None."""
    with _PDFIUM_LOCK:
        pdf = _open(data)
        try:
            n = len(pdf)  # type: ignore[arg-type]
            if not 1 <= page <= n:
                return None
            p = pdf[page - 1]  # type: ignore[index]
            w, h = p.get_size()
            text = p.get_textpage()
            for needle in needles:
                found = _find(text, needle.strip())
                if found is None:
                    continue
                start, count = found
                boxes = [text.get_charbox(i) for i in range(start, start + count)]
                left = min(b[0] for b in boxes)
                bottom = min(b[1] for b in boxes)
                right = max(b[2] for b in boxes)
                top = max(b[3] for b in boxes)
                return Box(left / w, (h - top) / h, (right - left) / w, (top - bottom) / h)
            return None
        finally:
            pdf.close()  # type: ignore[attr-defined]


def _find(text: object, needle: str) -> tuple[int, int] | None:
    if not needle:
        return None
    searcher = text.search(needle, match_case=False)  # type: ignore[attr-defined]
    try:
        hit = searcher.get_next()
    finally:
        searcher.close()
    if not hit:
        return None
    start, count = hit
    return int(start), int(count)
