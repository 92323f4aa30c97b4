"""One PDF as the auditors see it: pages with their size, text, content boxes, images and fonts.

Read once per auditor with pypdfium2 (PDFium is not thread-safe: every call
holds the extraction's PDFium lock, through ``pdfio._open``). Boxes are in PDF
points with the origin at the top-left of the page as displayed (rotation
applied), so a margin or a logo's place reads as a person sees the page.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.audit.report import Box
from common.extraction.pdfio import MAX_CHARS_PER_PAGE, _open

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import numpy.typing as npt

MM_PER_PT = 25.4 / 72.0


@dataclass(frozen=True)
class Image:
    box: Box
    px_width: int
    px_height: int

    @property
    def dpi(self) -> float:
        """The lower of the two effective resolutions as printed (pixels per inch of page)."""
        w_in = max(self.box.x1 - self.box.x0, 1e-6) / 72.0
        h_in = max(self.box.y1 - self.box.y0, 1e-6) / 72.0
        return min(self.px_width / w_in, self.px_height / h_in)


@dataclass(frozen=True)
class Font:
    name: str
    embedded: bool


@dataclass
class Page:
    number: int  # 1-based
    width: float  # points, as displayed
    height: float
    rotation: int
    text: str
    text_boxes: list[Box] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    fonts: set[Font] = field(default_factory=set)

    @property
    def width_mm(self) -> float:
        return self.width * MM_PER_PT

    @property
    def height_mm(self) -> float:
        return self.height * MM_PER_PT

    def content_box(self) -> Box | None:
        """The union of the text and image boxes, clipped to the page (None: a blank page)."""
        boxes = [*self.text_boxes, *(i.box for i in self.images)]
        if not boxes:
            return None
        return Box(
            x0=max(0.0, min(b.x0 for b in boxes)),
            y0=max(0.0, min(b.y0 for b in boxes)),
            x1=min(self.width, max(b.x1 for b in boxes)),
            y1=min(self.height, max(b.y1 for b in boxes)),
        )


@dataclass
class AuditDocument:
    name: str
    pages: list[Page]


def read_document(name: str, data: bytes) -> AuditDocument:
    """Every page's geometry, text, images and fonts (UnreadableDocument if the PDF cannot be opened)."""
    with _open(data) as pdf:
        return AuditDocument(name=name, pages=[_read_page(pdf[i], i + 1) for i in range(len(pdf))])


def _read_page(page: Any, number: int) -> Page:
    import pypdfium2.raw as raw

    # PDFium gives the size as displayed (rotation applied); object bounds are in unrotated user space.
    shown_w, shown_h = page.get_size()
    rotation = int(page.get_rotation()) % 360
    width, height = (shown_h, shown_w) if rotation in (90, 270) else (shown_w, shown_h)
    to_top_left = _transform(width, height, rotation)
    textpage = page.get_textpage()
    try:
        chars = min(textpage.count_chars(), MAX_CHARS_PER_PAGE)
        text = textpage.get_text_range(0, chars) if chars > 0 else ""
        boxes = [to_top_left(textpage.get_rect(i)) for i in range(textpage.count_rects(0, chars))] if chars else []
    finally:
        textpage.close()
    result = Page(number=number, width=shown_w, height=shown_h, rotation=rotation, text=text, text_boxes=boxes)
    for obj in page.get_objects(filter=[raw.FPDF_PAGEOBJ_IMAGE, raw.FPDF_PAGEOBJ_TEXT], max_depth=4):
        if obj.type == raw.FPDF_PAGEOBJ_IMAGE:
            px_w, px_h = obj.get_px_size()
            result.images.append(Image(box=to_top_left(obj.get_bounds()), px_width=px_w, px_height=px_h))
        else:
            font = raw.FPDFTextObj_GetFont(obj.raw)
            if font:
                result.fonts.add(Font(name=_font_name(raw, font), embedded=bool(raw.FPDFFont_GetIsEmbedded(font))))
    return result


def _font_name(raw: Any, font: Any) -> str:
    size = raw.FPDFFont_GetBaseFontName(font, None, 0)
    if size <= 0:
        return "(unnamed)"
    buf = ctypes.create_string_buffer(size)
    raw.FPDFFont_GetBaseFontName(font, buf, size)
    return buf.value.decode("utf-8", "replace") or "(unnamed)"


def _transform(width: float, height: float, rotation: int) -> Any:
    """PDF user space (origin bottom-left) to the displayed page's top-left coordinates."""

    def convert(bounds: tuple[float, float, float, float]) -> Box:
        left, bottom, right, top = bounds
        if rotation == 90:  # displayed turned clockwise
            return Box(x0=bottom, y0=left, x1=top, y1=right)
        if rotation == 180:
            return Box(x0=width - right, y0=bottom, x1=width - left, y1=top)
        if rotation == 270:
            return Box(x0=height - top, y0=width - right, x1=height - bottom, y1=width - left)
        return Box(x0=left, y0=height - top, x1=right, y1=height - bottom)

    return convert


def render_pages(data: bytes, numbers: list[int], dpi: float) -> dict[int, npt.NDArray[np.uint8]]:
    """The pages named (1-based) rendered in greyscale at ``dpi``, rotation applied, as 2-D arrays."""
    out: dict[int, npt.NDArray[np.uint8]] = {}
    with _open(data) as pdf:
        for number in numbers:
            if 1 <= number <= len(pdf):
                bitmap = pdf[number - 1].render(scale=dpi / 72.0, grayscale=True)
                array = bitmap.to_numpy()
                out[number] = array.reshape(array.shape[0], array.shape[1]).copy()
    return out


def page_count(data: bytes) -> int:
    with _open(data) as pdf:
        return len(pdf)
